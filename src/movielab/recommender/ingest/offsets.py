"""The topics' end offsets (high watermarks) read from the broker, for consumer lag (end − committed offsets)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition

from movielab.kafka import consumer_config
from movielab.recommender.errors import IngestError

logger = logging.getLogger(__name__)


class EndOffsets(threading.Thread):
    """Reads every partition's end offset (high watermark) of `topics` from the broker every `every` seconds.

    Its own consumer, never subscribed (no group join, nothing committed), in its own thread: the ends
    keep moving while the ingest loop is stuck, which is when lag matters. `ends` maps (topic, partition)
    to the offset the next produced message will get; `read_at` is the wall time (epoch s) of the last
    complete read, 0 before the first. A failed read is logged and leaves the last values.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        every: float = 5.0,
        timeout: float = 5.0,
        **consumer_overrides: object,
    ) -> None:
        super().__init__(name="ingest-end-offsets", daemon=True)
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.every = every
        self.timeout = timeout
        self.ends: dict[tuple[str, int], int] = {}
        self.read_at = 0.0
        self.failures = 0
        self._settings = consumer_config(bootstrap, group_id, **{**consumer_overrides, "logger": logger})
        self._stopping = threading.Event()

    def run(self) -> None:
        """Read until `stop`; the consumer lives and dies in this thread."""
        consumer = Consumer(self._settings)
        try:
            while not self._stopping.is_set():
                try:
                    self.read(consumer)
                except (KafkaException, IngestError, KeyError) as exc:  # a broker hiccup: the next read tries again
                    self.failures += 1
                    logger.warning("end offsets of %s on %s cannot be read: %s", self.topics, self.bootstrap, exc)
                self._stopping.wait(self.every)
        finally:
            consumer.close()

    def read(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """One read of every partition's end offset; returns and keeps them."""
        ends = {}
        for topic in self.topics:
            meta = consumer.list_topics(topic, timeout=self.timeout).topics[topic]
            if meta.error is not None:
                raise IngestError(f"topic {topic}: {meta.error.str()}")
            for partition in sorted(meta.partitions):
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout, cached=False
                )
                ends[(topic, partition)] = int(high)
        self.ends = ends  # one assignment: a scrape sees the old read or the new one, never half
        self.read_at = time.time()
        return ends

    def stop(self) -> None:
        """Stop reading and close the consumer."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=self.timeout + 5.0)
