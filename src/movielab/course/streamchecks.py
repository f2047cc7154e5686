"""The course's stream-side checks of every team, from the team's own topic read back from the broker.

`movielab course score FILE` calls `stream_checks`: each team's topic is read once from its first offset to
the end offset it had when the read began (every partition, no consumer group, nothing committed), each line
goes through `scoring.coursechecks.StreamChecks`, and the takedown times come from the hidden manifest's
takedown records. This runs off the world's hot path (a separate process, on the instructor's command). Its
cost grows with the topic: it is one pass over every line the course produced (see `benchmarks/scoring.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from movielab.course.errors import CourseError
from movielab.world.manifest import manifest_lines
from movielab.world.scoring.coursechecks import StreamChecks

logger = logging.getLogger(__name__)


class StreamReadError(CourseError, RuntimeError):
    """A team's topic could not be read to its end; names the topic, the broker and the reason."""


def read_to_end(bootstrap: str, topic: str, timeout: float = 600.0, batch: int = 10_000):
    """Yield every value (bytes) of `topic`, from each partition's first offset to its end offset at the start.

    No consumer group is joined and nothing is committed. StreamReadError when the broker cannot be reached or the
    end is not reached within `timeout` seconds (naming how many lines were read). A missing topic yields nothing.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "movielab-course-checks",  # required by librdkafka; never joined (assign, no commits)
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.queue.backoff.ms": 50,
            "logger": logger,
        }
    )
    read = 0
    try:
        try:
            meta = consumer.list_topics(topic, timeout=min(timeout, 10))
            parts = meta.topics.get(topic)
            if parts is None or parts.error is not None:
                return
            ends: dict[int, int] = {}
            starts = []
            for p in sorted(parts.partitions):
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=min(timeout, 10))
                if hi > lo:
                    ends[p] = hi
                    starts.append(TopicPartition(topic, p, lo))
        except KafkaException as exc:
            raise StreamReadError(f"topic {topic!r} on {bootstrap}: cannot read its offsets: {exc}") from None
        if not starts:
            return
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise StreamReadError(
                    f"topic {topic!r} on {bootstrap}: end not reached after {timeout:.0f} s "
                    f"({read:,} lines read; partitions left: {sorted(ends)})"
                )
            for msg in consumer.consume(num_messages=batch, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise StreamReadError(f"topic {topic!r} on {bootstrap}: {err.str()}")
                p, offset = msg.partition(), msg.offset()
                end = ends.get(p)
                if end is None or offset >= end:  # lines produced after the read began: the next score reads them
                    continue
                read += 1
                yield msg.value()
                if offset + 1 >= end:
                    del ends[p]
    finally:
        consumer.close()


def takedowns(manifest: str | Path) -> list[tuple[str, datetime]]:
    """(movie id, naive UTC time) of every takedown in a manifest: the earliest start record of each movie.

    A restart re-simulating minutes writes a takedown's start again; teams were told at the first one, so it counts.
    CourseError names the file and line of a takedown record without a movie or a readable start.
    """
    path = Path(manifest)
    if not path.exists():
        return []
    first: dict[str, datetime] = {}
    try:
        for n, rec in manifest_lines(path):
            if not (isinstance(rec, dict) and rec.get("event") == "start" and rec.get("kind") == "takedown"):
                continue
            movie = (rec.get("params") or {}).get("movie") or next(iter(rec.get("ids") or []), None)
            try:
                since = datetime.fromisoformat(str(rec.get("start")))
            except ValueError:
                since = None
            if not isinstance(movie, str) or since is None:
                raise CourseError(f"manifest {path} line {n}: a takedown needs its movie and an ISO-8601 start")
            since = since.astimezone(UTC).replace(tzinfo=None) if since.tzinfo else since
            first[movie] = min(since, first.get(movie, since))
    except (OSError, ValueError) as exc:
        if isinstance(exc, CourseError):
            raise
        raise CourseError(f"manifest {path}: {exc}") from None
    return sorted(first.items(), key=lambda x: x[1])


@dataclass
class StreamResult:
    """Each team's checks per day, with what was read and how long it took."""

    rows: dict[str, list[dict]] = field(default_factory=dict)  # day (YYYY-MM-DD) -> one row per team
    lines: dict[str, int] = field(default_factory=dict)  # topic -> lines read
    seconds: float = 0.0
    takedowns: list[tuple[str, datetime]] = field(default_factory=list)


def stream_checks(
    bootstrap: str, topics: list[str], manifest: str | Path | None = None, timeout: float = 600.0
) -> StreamResult:
    """The course's checks per team (topic N-1 is team N) and per day found on any topic; see `StreamChecks.day`.

    Each row: day, team, topic, and `stream_*` figures (`stream_unparsable`/`stream_other_lines` are the topic's
    totals). StreamReadError when a topic cannot be read to its end.
    """
    t0 = time.perf_counter()
    downs = takedowns(manifest) if manifest is not None else []
    checks: list[StreamChecks] = []
    out = StreamResult(takedowns=downs)
    for topic in topics:
        c = StreamChecks(downs)
        n = 0
        for value in read_to_end(bootstrap, topic, timeout=timeout):
            c.add(value)
            n += 1
        checks.append(c)
        out.lines[topic] = n
    days: set[date] = {d for c in checks for d in c.days}
    for d in sorted(days):
        rows = []
        for i, (topic, c) in enumerate(zip(topics, checks, strict=True), start=1):
            got = c.day(d)
            row = {"day": d.isoformat(), "team": i, "topic": topic}
            row.update({f"stream_{k}": v for k, v in got.items()})
            row["stream_unparsable"] = c.unparsable
            row["stream_other_lines"] = c.other_lines
            rows.append(row)
        out.rows[d.isoformat()] = rows
    out.seconds = time.perf_counter() - t0
    return out


def score_stream(config, timeout: float = 600.0) -> StreamResult | None:
    """Compute the course's checks from the topics of `config` (a CourseConfig) and write them to its scoreboard
    (`<reports>/stream/<day>.json`, `stream.csv`); None when the course has no external broker to read back.
    """
    from movielab.world.scoring.board import Scoreboard

    if config.kafka.bootstrap is None:
        return None
    result = stream_checks(config.kafka.bootstrap, config.topics(), config.manifest_path, timeout=timeout)
    Scoreboard(config.reports_dir).add_stream(result.rows)
    return result
