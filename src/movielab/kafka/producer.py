"""KafkaSink: the world's event sink on a Kafka topic, batched for throughput, never dropping a line."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Self

from confluent_kafka import KafkaError, Producer

from movielab.kafka.errors import MovielabKafkaError

logger = logging.getLogger(__name__)

#: Producer settings tuned for many small lines (see benchmarks/kafka_produce.py); callers may override any.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 10,
    "batch.num.messages": 100_000,
    "batch.size": 1_000_000,
    "compression.type": "none",
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    # Idempotence keeps each user's lines in order and unduplicated across retries.
    "enable.idempotence": True,
    # Same key → same partition as the Java client, so other tools agree on where a user lives.
    "partitioner": "murmur2_random",
    # Successful deliveries are counted, not reported one by one: a Python callback per line costs.
    "delivery.report.only.error": True,
}


class DeliveryError(MovielabKafkaError, RuntimeError):
    """Lines did not reach the topic: some failed or were still queued when the flush timed out."""

    def __init__(self, topic: str, bootstrap: str, failed: int, undelivered: int, reason: str | None) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.failed = failed
        self.undelivered = undelivered
        self.reason = reason
        parts = []
        if failed:
            parts.append(f"{failed} message(s) failed (first: {reason})")
        if undelivered:
            parts.append(f"{undelivered} message(s) still undelivered when the flush timed out")
        if not parts:
            parts.append(reason or "unknown reason")
        super().__init__(f"topic {topic!r} on {bootstrap}: " + "; ".join(parts))


class KafkaSink:
    """Writes (user id, line) batches to one topic; `close()` flushes and raises DeliveryError on any loss."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        flush_timeout: float = 60.0,
        on_delivered: Callable[[Any], None] | None = None,
        **config: Any,
    ) -> None:
        """`on_delivered(msg)` (optional) is called with each message the cluster confirmed, from inside the
        producer's poll/flush in the thread that writes; it turns on per-message delivery reports (slower)."""
        if not topic:
            raise ValueError("KafkaSink needs a topic name")
        self.bootstrap = bootstrap
        self.topic = topic
        self.flush_timeout = flush_timeout
        self._sent = 0
        self._failed = 0
        self._first_error: str | None = None
        self._fatal: str | None = None
        self._client_error: str | None = None
        self._closed = False
        self._on_delivered = on_delivered
        if on_delivered is not None:
            config = {**config, "delivery.report.only.error": False}
        settings = {
            **PRODUCER_DEFAULTS,
            **config,
            "bootstrap.servers": bootstrap,
            "logger": logger,
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
        }
        self._producer = Producer(settings)

    @property
    def sent(self) -> int:
        """Lines handed to the producer so far."""
        return self._sent

    @property
    def failed(self) -> int:
        """Lines whose delivery failed (reported by the client)."""
        return self._failed

    @property
    def delivered(self) -> int:
        """Lines acknowledged by the cluster so far (sent, minus failed, minus those still in flight)."""
        pending = 0 if self._closed else len(self._producer)
        return self._sent - self._failed - pending

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Queue a batch: key = the user id as text, value = the line (UTF-8, no newline); blocks when full."""
        if self._closed:
            raise RuntimeError(f"KafkaSink for topic {self.topic!r} is closed")
        if self._fatal is not None:
            raise DeliveryError(self.topic, self.bootstrap, self._failed, len(self._producer), self._reason())
        if len(keys) != len(lines):
            raise ValueError(f"KafkaSink.write got {len(keys)} keys for {len(lines)} lines")
        produce = self._producer.produce
        topic = self.topic
        for key, line in zip(keys, lines, strict=False):
            try:
                produce(topic, line, str(key))
            except BufferError:
                self._produce_when_room(line, str(key))
        self._sent += len(lines)
        self._producer.poll(0)

    def flush(self, timeout: float | None = None) -> int:
        """Wait up to `timeout` s (default `flush_timeout`) for queued lines; return how many remain."""
        return self._producer.flush(self.flush_timeout if timeout is None else timeout)

    def close(self) -> None:
        """Flush (up to `flush_timeout` s) and release the producer; raise DeliveryError if any line was lost."""
        if self._closed:
            return
        undelivered = self.flush()
        failed = self._failed
        if undelivered:
            # Give up on what is left: purging turns each into a failed delivery report, so none is silent.
            logger.warning(
                "KafkaSink %s: %d line(s) undelivered after %s s; purging", self.topic, undelivered, self.flush_timeout
            )
            self._producer.purge()
            self._producer.flush(1.0)
        if hasattr(self._producer, "close"):  # newer confluent-kafka only; older ones clean up on GC
            self._producer.close()
        self._closed = True
        logger.info("KafkaSink %s: %d sent, %d failed", self.topic, self._sent, self._failed)
        if failed or undelivered:
            raise DeliveryError(self.topic, self.bootstrap, failed, undelivered, self._reason())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _produce_when_room(self, line: str, key: str) -> None:
        # The local queue is full: serve the client until it has room; never drop the line.
        while True:
            self._producer.poll(0.005)
            try:
                self._producer.produce(self.topic, line, key)
                return
            except BufferError:
                continue

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            if self._on_delivered is not None:
                self._on_delivered(msg)
            return
        self._failed += 1
        if self._first_error is None:
            self._first_error = err.str()
            logger.warning("delivery to %s failed: %s", self.topic, self._first_error)

    def _on_error(self, err: KafkaError) -> None:
        # Client-level trouble (broker down, refused connection): librdkafka logs it already; keep it for errors.
        self._client_error = err.str()
        if err.fatal():
            self._fatal = self._fatal or err.str()
            logger.error("Kafka producer for %s hit a fatal error: %s", self.topic, err.str())
        else:
            logger.debug("Kafka producer for %s: %s", self.topic, err.str())

    def _reason(self) -> str | None:
        """The first failure, and the last client error when it tells more (e.g. why nothing got through)."""
        first = self._fatal or self._first_error
        if self._client_error and self._client_error != first:
            return f"{first}; last client error: {self._client_error}" if first else self._client_error
        return first
