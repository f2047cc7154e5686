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

    python -m movielab.recommender.ingest --kafka HOST:PORT --topic movielog1 --store events.duckdb \
        --api http://127.0.0.1:8080 [--until-idle 5]
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from movielab.contract.editions import CURRENT, Edition
from movielab.kafka import consumer_config
from movielab.recommender.coldstart import ColdStartWorker
from movielab.recommender.store import Appended, Batch, EventStore, StoreError
from movielab.recommender.validate import Prepared, Record, Validator
from movielab.recommender.worker import ApiWorker
from movielab.recommender.worldapi import WorldApi, WorldApiUnavailable

logger = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """Ingestion cannot go on (a fatal Kafka error); names the topics and the reason."""


class Ingestor:
    """Consumes topics into an `EventStore`; counters are attributes for monitoring."""

    def __init__(self, bootstrap: str, topics: Sequence[str], store: EventStore, api: WorldApi,
                 group_id: str = "recommender-ingest", batch_size: int = 20_000, batch_timeout: float = 1.0, *,
                 fetch_users: bool = True, retry_max: float = 10.0, refresh_after: float | None = 24 * 3600.0,
                 edition: Edition = CURRENT, coldstart: bool = False,
                 **consumer_overrides: object) -> None:  # fmt: skip
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
            self.coldstart = ColdStartWorker(self.store, WorldApi(self.api.base_url, self.api.timeout, negative_ttl=0,
                                                                  cache_users=False))  # fmt: skip
            self.coldstart.start()
        if self.end_offsets is None:
            self.end_offsets = EndOffsets(self.bootstrap, self.topics, f"{self.group_id}-end-offsets",
                                          **self._overrides)  # fmt: skip
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
                logger.warning("%s/%d: group %s committed offset %d but the store ends at %d; offsets %d..%d are "
                               "not in this store", p.topic, p.partition, self.group_id, theirs, ours, ours,
                               theirs - 1)  # fmt: skip
            start = max((o for o in (ours, theirs) if o is not None), default=None)
            if start is not None:
                p.offset = start
            logger.info("assigned %s/%d from offset %s", p.topic, p.partition, "earliest" if start is None else start)
        consumer.assign(partitions)
        self.assigned.set()

    def _consume(self) -> list[Record]:
        """Up to batch_size records: wait up to batch_timeout for the first, then take what arrives at once; a
        batch never gathers for longer than batch_timeout (a steady trickle kept it open until batch_size lines
        had come: 60 s at 350 lines/s, found by the incident drill)."""
        consumer = self._start()
        records: list[Record] = []
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

    def _prepare(self, records: list[Record], stop: threading.Event | None) -> Prepared | None:
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
        logger.info("stored batch %d: %d line(s), %d event(s), quarantined %s, %.3f s", self.batches, flight.lines,
                    appended.events, dict(kinds), self.last_batch_seconds)  # fmt: skip
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


def _ends(records: list[Record]) -> dict[tuple[str, int], int]:
    """The offset after the last record of each (topic, partition)."""
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset, _ in records:
        if offset >= ends.get((topic, partition), -1):
            ends[(topic, partition)] = offset + 1
    return ends


class EndOffsets(threading.Thread):
    """Reads every partition's end offset (high watermark) of `topics` from the broker every `every` seconds.

    Its own consumer, never subscribed (no group join, nothing committed), in its own thread: the ends
    keep moving while the ingest loop is stuck, which is when lag matters. `ends` maps (topic, partition)
    to the offset the next produced message will get; `read_at` is the wall time (epoch s) of the last
    complete read, 0 before the first. A failed read is logged and leaves the last values.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], group_id: str, every: float = 5.0,
                 timeout: float = 5.0, **consumer_overrides: object) -> None:  # fmt: skip
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
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.timeout,
                                                         cached=False)  # fmt: skip
                ends[(topic, partition)] = int(high)
        self.ends = ends  # one assignment: a scrape sees the old read or the new one, never half
        self.read_at = time.time()
        return ends

    def stop(self) -> None:
        """Stop reading and close the consumer."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=self.timeout + 5.0)


class UserFetcher(ApiWorker):
    """Fetches and stores the records of users seen on the stream, off the ingest path (never blocks it).

    When idle it also refreshes stored records (users and movies) older than `refresh_after` seconds,
    a bulk request at a time, since the world may change a user's or a movie's details; None never refreshes.
    Ids still queued at `stop` are fetched after the next start (the store knows who has no record).
    """

    def __init__(self, store: EventStore, api: WorldApi, per_request: int = 200, retry_after: float = 30.0,
                 refresh_after: float | None = 24 * 3600.0, refresh_every: float = 60.0) -> None:  # fmt: skip
        super().__init__("ingest-users", api)
        self.store = store
        self.per_request = per_request
        self.retry_after = retry_after
        self.refresh_after = refresh_after
        self.refresh_every = refresh_every
        self.refreshed = 0  # records fetched again and replaced
        self._next_refresh = 0.0
        self.fetched = 0
        self.unknown = 0  # ids the API did not know when asked (asked again later)
        self._lock = threading.Lock()
        self._known: set[int] = set()
        self._pending: set[int] = set()

    def start(self) -> None:
        """Load what the store knows (records, and users still without one), then start fetching."""
        self._known = self.store.user_ids()
        self._pending = self.store.users_without_record()
        super().start()

    def offer(self, user_ids: Iterable[int]) -> None:
        """Queue the ids without a record yet."""
        with self._lock:
            new = set(user_ids) - self._known - self._pending - self._later.keys()
            if new:
                self._pending |= new
                self._idle.clear()
                self._wake.set()

    def run(self) -> None:
        """Fetch queued ids in bulk until stopped; an API outage is waited out, not fatal."""
        delay = 0.5
        while not self._stopping.is_set():
            with self._lock:
                self._pending.update(self._due())
                ids = [self._pending.pop() for _ in range(min(self.per_request, len(self._pending)))]
                if not ids:
                    self._idle.set()
                    self._wake.clear()
            if not ids:
                if not self._refresh():
                    self._wake.wait(1.0)
                continue
            try:
                known, unknown = self.api.users(ids)
                if self._stopping.is_set():  # the store may be closing
                    return
                self.store.add_records(users=known.values())
            except (WorldApiUnavailable, StoreError, duckdb.Error) as exc:
                logger.warning("user records not fetched now (retrying in %.1f s): %s", delay, exc)
                with self._lock:
                    self._pending.update(ids)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            with self._lock:
                self._known.update(known)
                self.fetched += len(known)
                self.unknown += len(unknown)
                self._retry_later(unknown)  # the API may lag behind a new account


    def _refresh(self) -> bool:
        """Fetch again one bulk of records older than `refresh_after`; True if there was anything to refresh."""
        now = time.monotonic()
        if self.refresh_after is None or now < self._next_refresh:
            return False
        before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=self.refresh_after)
        try:
            users = self.store.stale_records("users", before, self.per_request)
            movies = self.store.stale_records("movies", before, self.per_request)
            if not users and not movies:
                self._next_refresh = now + self.refresh_every
                return False
            if len(users) < self.per_request and len(movies) < self.per_request:  # the last bulk of this pass
                self._next_refresh = now + self.refresh_every
            known_users, gone_users = self.api.users(users, fresh=True) if users else ({}, set())
            known_movies, gone_movies = self.api.movies(movies, fresh=True) if movies else ({}, set())
            if self._stopping.is_set():
                return False
            self.store.refresh_records(movies=known_movies.values(), users=known_users.values())
            # Ids the API no longer knows keep their last record (better than none); their fetch time moves
            # on so the oldest-first scan reaches the others, and they are asked again next period.
            self.store.mark_checked("users", gone_users)
            self.store.mark_checked("movies", gone_movies)
        except (WorldApiUnavailable, StoreError, duckdb.Error) as exc:
            logger.warning("records not refreshed now (next try in %.0f s): %s", self.refresh_every, exc)
            self._next_refresh = now + self.refresh_every
            return False
        self.refreshed += len(known_users) + len(known_movies)
        if gone_users or gone_movies:
            logger.warning("the world API no longer knows %d users and %d movies whose records are stored; "
                           "their old records are kept, e.g. %s", len(gone_users), len(gone_movies),
                           sorted(map(str, gone_users | gone_movies))[:5])  # fmt: skip
        return True


def run_ingest(bootstrap: str, topics: Sequence[str], store_path: Path | str, api_url: str,
               stop: threading.Event | None = None, **options: object) -> Ingestor:  # fmt: skip
    """Ingest `topics` into the store at `store_path` until `stop` is set (or SIGINT/SIGTERM)."""
    previous = {}
    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EventStore(store_path, threads=1) as store, WorldApi(api_url) as api:
            ingestor = Ingestor(bootstrap, topics, store, api, **options)  # type: ignore[arg-type]
            ingestor.run(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return ingestor


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: `python -m movielab.recommender.ingest --kafka … --topic … --store … --api …`."""
    ap = argparse.ArgumentParser(description="Ingest movielab topics into a DuckDB event store.")
    ap.add_argument("--kafka", required=True, help="bootstrap host:port")
    ap.add_argument("--topic", action="append", required=True, help="topic to ingest (repeatable)")
    ap.add_argument("--store", required=True, type=Path, help="DuckDB file of the event store")
    ap.add_argument("--api", required=True, help="base URL of the world's user/movie API")
    ap.add_argument("--group", default="recommender-ingest")
    ap.add_argument("--batch-size", type=int, default=20_000)
    ap.add_argument("--until-idle", type=float, default=None, help="exit after this many seconds without lines")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.until_idle is None:
        run_ingest(args.kafka, args.topic, args.store, args.api, group_id=args.group, batch_size=args.batch_size)
        return
    with EventStore(args.store, threads=1) as store, WorldApi(args.api) as api:
        Ingestor(args.kafka, args.topic, store, api, args.group, args.batch_size).run_until_idle(args.until_idle)


if __name__ == "__main__":
    main()
