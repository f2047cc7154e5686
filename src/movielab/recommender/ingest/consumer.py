"""Ingestion: Kafka consumer group → contract parser and checks → event store, then commit.

Each batch is written to the store in one transaction and only then are its offsets committed,
so a crash between the two replays the batch, and the store ignores rows it already has. On
assignment each partition starts at the later of the group's committed offset and the store's
own next offset, so the store, not Kafka, is the authority on what has been ingested.
When the world API is down the batch is retried as it is (nothing quarantined, nothing committed).

Consumer lag is end offsets − committed offsets, both in the broker's offset space: `EndOffsets` reads
each partition's end (high watermark) from the broker in a thread of its own, so the figure keeps growing
while ingestion is stuck and stays right when a producer restarts (a producer's own line counter starts
again at 0, the topic's offsets do not).

The command line is `movielab recommender ingest` (`--topic`, `--group`, `--batch-size`, `--until-idle`). The
end offsets are read by `ingest.offsets`, user records fetched and refreshed by `ingest.users`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, TopicPartition

from movielab.contract.editions import CURRENT, Edition
from movielab.kafka import consumer_config
from movielab.recommender.errors import IngestError, WorldApiUnavailable
from movielab.recommender.ingest.coldstart import ColdStartWorker
from movielab.recommender.ingest.offsets import EndOffsets
from movielab.recommender.ingest.users import UserFetcher
from movielab.recommender.ingest.validation import ConsumedLine, Prepared, Validator
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import Appended, Batch, EventStore

logger = logging.getLogger(__name__)


class Ingestor:
    """Consumes topics into an `EventStore`; counters are attributes for monitoring."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        store: EventStore,
        api: WorldApi,
        group_id: str = "recommender-ingest",
        batch_size: int = 20_000,
        batch_timeout: float = 1.0,
        *,
        fetch_users: bool = True,
        retry_max: float = 10.0,
        refresh_after: float | None = 24 * 3600.0,
        edition: Edition = CURRENT,
        coldstart: bool = False,
        **consumer_overrides: object,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.store = store
        self.api = api
        self.group_id = group_id
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.fetch_users = fetch_users
        self.retry_max = retry_max
        self.refresh_after = refresh_after  # seconds after which stored user/movie records are fetched again
        self.validator = Validator(api, store, edition=edition)  # the edition fixes the rating scale
        self._overrides = consumer_overrides
        self._consumer: Consumer | None = None
        self.assigned = threading.Event()  # set once the group gave this consumer its partitions
        # Set by an operator (control port `POST /ingest/pause`): `run` stops consuming, offsets stay committed.
        # Kafka drops a consumer that has not polled for max.poll.interval.ms (5 min); it rejoins on resume.
        self.paused = threading.Event()
        self.users: UserFetcher | None = None  # started with the consumer when fetch_users
        self.make_coldstart = coldstart  # new accounts' first lists from their self-descriptions
        self.coldstart: ColdStartWorker | None = None  # started with the consumer when coldstart
        self.end_offsets: EndOffsets | None = None  # started with the consumer: the topics' end offsets
        self._writer: ThreadPoolExecutor | None = None
        self._pending: _InFlight | None = None
        # Counters (monitoring exports them).
        self.lines_consumed = 0
        self.events_stored = 0
        self.quarantined: Counter[str] = Counter()
        self.replayed = 0  # lines of replayed batches the store already had
        self.batches = 0
        self.api_outages = 0
        self.last_batch_seconds = 0.0
        self.last_batch_size = 0
        self.stage_seconds: Counter[str] = Counter()  # consume, validate, store (writer), wait for store, commit

    # --- running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Ingest until `stop` is set; then close the consumer."""
        try:
            while not stop.is_set():
                if self.paused.is_set():
                    self._finish_pending()  # the batch in flight is stored and committed, then nothing more
                    stop.wait(0.2)
                    continue
                self.step(stop)
        finally:
            self.close()

    def run_until_idle(self, idle_seconds: float = 2.0, timeout: float = 300.0) -> int:
        """Ingest until no line came for `idle_seconds` after the assignment (or `timeout` s); return lines handled."""
        stop = threading.Event()
        deadline = time.monotonic() + timeout
        handled = 0
        last = None
        try:
            while time.monotonic() < deadline:
                n = self.step(stop)
                handled += n
                now = time.monotonic()
                if n or last is None and self.assigned.is_set():
                    last = now
                if last is not None and now - last >= idle_seconds:
                    break
            else:
                logger.warning("ingest of %s stopped by its %s s time-out, not idle yet", self.topics, timeout)
            self._finish_pending()
            if self.users is not None and not self.users.drain(10.0):
                logger.warning("user records still being fetched after 10 s; the rest after the next start")
            if self.coldstart is not None and not self.coldstart.drain(10.0):
                logger.warning("cold-start lists still being built after 10 s; the rest get the fallback")
        finally:
            self.close()
        return handled

    def step(self, stop: threading.Event | None = None) -> int:
        """Consume one batch, check it and hand it to the writer; return the number of messages handled.

        The writer stores batch N while batch N+1 is parsed and checked; N's offsets are committed once
        N is stored, and before N+1's duplicate check (which must see N in the store).
        """
        t0 = time.perf_counter()
        records = self._consume()
        t1 = time.perf_counter()
        self.stage_seconds["consume"] += t1 - t0
        if not records:
            self._finish_pending()
            return 0
        prepared = self._prepare(records, stop)
        if prepared is None:  # stopped while the API was down: nothing stored, nothing committed
            return 0
        t2 = time.perf_counter()
        self._finish_pending()
        t3 = time.perf_counter()
        batch = self.validator.finish(prepared)
        t4 = time.perf_counter()
        self.stage_seconds.update({"validate": (t2 - t1) + (t4 - t3), "wait for store": t3 - t2})
        assert self._writer is not None
        self._pending = _InFlight(self._writer.submit(self._store, batch), batch, _ends(records), len(records), t0)
        return len(records)

    def close(self) -> None:
        """Store and commit the batch in flight, leave the consumer group and stop fetching users."""
        try:
            self._finish_pending()
        finally:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.shutdown(wait=True)
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                consumer.close()
                self.assigned.clear()
            users, self.users = self.users, None
            if users is not None:
                users.stop()
            cold, self.coldstart = self.coldstart, None
            if cold is not None:
                cold.stop()
            ends, self.end_offsets = self.end_offsets, None
            if ends is not None:
                ends.stop()

    # --- internals -------------------------------------------------------------------------------
    def _start(self) -> Consumer:
        if self.fetch_users and self.users is None:
            api = WorldApi(self.api.base_url, self.api.timeout, negative_ttl=0, cache_users=False)
            self.users = UserFetcher(self.store, api, refresh_after=self.refresh_after)
            self.users.start()
        if self.make_coldstart and self.coldstart is None:
            self.coldstart = ColdStartWorker(
                self.store, WorldApi(self.api.base_url, self.api.timeout, negative_ttl=0, cache_users=False)
            )
            self.coldstart.start()
        if self.end_offsets is None:
            self.end_offsets = EndOffsets(
                self.bootstrap, self.topics, f"{self.group_id}-end-offsets", **self._overrides
            )
            self.end_offsets.start()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
        if self._consumer is None:
            settings = consumer_config(self.bootstrap, self.group_id, **{**self._overrides, "logger": logger})
            settings["enable.auto.commit"] = False  # the store decides what is ingested, not a timer
            self._consumer = Consumer(settings)
            self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return self._consumer

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._finish_pending()  # commit what is stored while the partitions are still ours

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._finish_pending()
        stored = self.store.committed_offsets()
        try:
            committed = {(p.topic, p.partition): p.offset for p in consumer.committed(partitions, timeout=10.0)}
        except Exception as exc:  # the store alone is enough to resume correctly
            logger.warning("group %s: committed offsets unavailable (%s); resuming from the store", self.group_id, exc)
            committed = {}
        for p in partitions:
            key = (p.topic, p.partition)
            ours, theirs = stored.get(key), committed.get(key, -1)
            theirs = theirs if theirs is not None and theirs >= 0 else None
            if ours is not None and theirs is not None and theirs > ours:
                logger.warning(
                    "%s/%d: group %s committed offset %d but the store ends at %d; offsets %d..%d are "
                    "not in this store",
                    p.topic,
                    p.partition,
                    self.group_id,
                    theirs,
                    ours,
                    ours,
                    theirs - 1,
                )
            start = max((o for o in (ours, theirs) if o is not None), default=None)
            if start is not None:
                p.offset = start
            logger.info("assigned %s/%d from offset %s", p.topic, p.partition, "earliest" if start is None else start)
        consumer.assign(partitions)
        self.assigned.set()

    def _consume(self) -> list[ConsumedLine]:
        """Up to batch_size records: wait up to batch_timeout for the first, then take what arrives at once; a
        batch never gathers for longer than batch_timeout (a steady trickle kept it open until batch_size lines
        had come: 60 s at 350 lines/s, found by the incident drill)."""
        consumer = self._start()
        records: list[ConsumedLine] = []
        deadline = time.monotonic() + self.batch_timeout
        while len(records) < self.batch_size:
            if records and time.monotonic() >= deadline:
                break
            # Short waits: librdkafka's consume waits for a full batch, at the end of a topic the whole time-out.
            messages = consumer.consume(num_messages=self.batch_size - len(records), timeout=0.05)
            if not messages:
                if records or time.monotonic() >= deadline:
                    break
                continue
            for msg in messages:
                err = msg.error()
                if err is None:
                    records.append((msg.topic(), msg.partition(), msg.offset(), msg.value()))
                elif err.code() == KafkaError._PARTITION_EOF:
                    continue
                elif err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise IngestError(f"consuming {self.topics} on {self.bootstrap} failed: {err.str()}")
                else:
                    logger.warning("consuming %s on %s: %s", self.topics, self.bootstrap, err.str())
        return records

    def _prepare(self, records: list[ConsumedLine], stop: threading.Event | None) -> Prepared | None:
        """Validator.prepare, waiting out world API outages with the same records (None if stopped meanwhile)."""
        delay = 0.5
        while True:
            try:
                return self.validator.prepare(records)
            except WorldApiUnavailable as exc:
                self.api_outages += 1
                logger.warning("%s; retrying the same %d line(s) in %.1f s", exc, len(records), delay)
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    return None
                delay = min(delay * 2, self.retry_max)

    def _store(self, batch: Batch) -> tuple[Appended, float]:
        t = time.perf_counter()
        return self.store.append(batch), time.perf_counter() - t

    def _finish_pending(self) -> None:
        """Wait for the batch in flight to be stored (re-raising a failure), then commit its offsets."""
        flight, self._pending = self._pending, None
        if flight is None:
            return
        appended, seconds = flight.future.result()
        self.validator.stored(flight.batch)
        t = time.perf_counter()
        self._commit(flight.ends)
        now = time.perf_counter()
        self.stage_seconds.update({"store": seconds, "commit": now - t})
        kinds = Counter(flight.batch.quarantine.column("reason_kind").to_pylist())
        self.lines_consumed += flight.lines
        self.events_stored += appended.events
        self.quarantined.update(kinds)
        self.replayed += flight.lines - appended.events - appended.quarantined
        self.batches += 1
        self.last_batch_size = flight.lines
        self.last_batch_seconds = now - flight.started
        logger.info(
            "stored batch %d: %d line(s), %d event(s), quarantined %s, %.3f s",
            self.batches,
            flight.lines,
            appended.events,
            dict(kinds),
            self.last_batch_seconds,
        )
        if self.users is not None:
            self.users.offer(flight.batch.events.column("user_id").unique().to_pylist())
        if self.coldstart is not None:  # stored first: the worker reads the store as of this batch
            events = flight.batch.events
            accounts = pc.filter(events.column("user_id"), pc.equal(events.column("kind"), "account"))
            self.coldstart.offer(accounts.to_pylist())

    def _commit(self, ends: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)  # type: ignore[union-attr]
        except Exception as exc:  # the store has the batch: a later commit, or the store itself, covers it
            logger.warning("group %s: commit of %s failed: %s", self.group_id, offsets, exc)


@dataclass
class _InFlight:
    """A batch handed to the writer, not yet known to be stored."""

    future: Future
    batch: Batch
    ends: dict[tuple[str, int], int]  # next offset per (topic, partition)
    lines: int
    started: float


def _ends(records: list[ConsumedLine]) -> dict[tuple[str, int], int]:
    """The offset after the last record of each (topic, partition)."""
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset, _ in records:
        if offset >= ends.get((topic, partition), -1):
            ends[(topic, partition)] = offset + 1
    return ends


def run_ingest(
    bootstrap: str,
    topics: Sequence[str],
    store_path: Path | str,
    api_url: str,
    stop: threading.Event | None = None,
    until_idle: float | None = None,
    **options: object,
) -> Ingestor:
    """Ingest `topics` into the store at `store_path` until `stop` is set (or SIGINT/SIGTERM), or with
    `until_idle` until that many seconds pass without new lines; `options` go to `Ingestor`."""
    previous = {}
    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EventStore(store_path, threads=1) as store, WorldApi(api_url) as api:
            ingestor = Ingestor(bootstrap, topics, store, api, **options)  # type: ignore[arg-type]
            if until_idle is None:
                ingestor.run(stop)
            else:
                ingestor.run_until_idle(until_idle)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return ingestor
