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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from movielab.course.errors import CourseError
from movielab.kafka.consumer import consumer_config
from movielab.world.manifest import manifest_lines
from movielab.world.scoring.coursechecks import StreamChecks, availability_window

logger = logging.getLogger(__name__)


class StreamReadError(CourseError, RuntimeError):
    """A team's topic could not be read to its end; names the topic, the broker and the reason."""


def _stamp(value: bytes | None) -> datetime | None:
    """The time stamp of a line (its first field), None when it has none."""
    try:
        return datetime.fromisoformat(value.split(b",", 1)[0].decode("ascii")[:19])
    except (AttributeError, ValueError, UnicodeDecodeError):
        return None


def _first_at(consumer: Consumer, topic: str, p: int, lo: int, hi: int, since: datetime, timeout: float) -> int:
    """The first offset in [lo, hi) whose line is stamped at or after `since` (binary search: lines of a partition
    come in time order, bar small disorder, which the caller's slack covers); `hi` when none is."""
    while lo < hi:
        mid = (lo + hi) // 2
        consumer.assign([TopicPartition(topic, p, mid)])
        stamp, deadline = None, time.monotonic() + timeout
        while stamp is None and time.monotonic() < deadline:  # the first stamped line at or after mid
            msgs = [m for m in consumer.consume(num_messages=20, timeout=1.0) if m.error() is None]
            if not msgs:
                continue
            stamp = next((t for t in map(_stamp, (m.value() for m in msgs)) if t is not None), None)
            if stamp is None:
                break  # 20 lines without a stamp: treat as before `since` (read, then counted as unparsable)
        if stamp is None and time.monotonic() >= deadline:
            raise StreamReadError(f"topic {topic!r} partition {p}: no answer for offset {mid} in {timeout:.0f} s")
        if stamp is not None and stamp >= since:
            hi = mid
        else:
            lo = mid + 1
    return lo


def read_to_end(bootstrap: str, topic: str, timeout: float = 600.0, batch: int = 10_000, since: datetime | None = None):
    """Yield every value (bytes) of `topic`, from each partition's first offset to its end offset at the start.

    `since` (naive UTC): start each partition at its first line stamped at or after it instead (found by binary
    search over the offsets; lines before it that came out of order are not read). No consumer group is joined
    and nothing is committed. StreamReadError when the broker cannot be reached or the end is not reached within
    `timeout` seconds (naming how many lines were read). A missing topic yields nothing.
    """
    settings = consumer_config(  # the group id is required by librdkafka; never joined (assign, no commits)
        bootstrap,
        "movielab-course-checks",
        **{
            "enable.partition.eof": False,
            "log_level": 2,  # failures reach the caller as StreamReadError; a broker that is down is not logged per try
            "logger": logger,
        },
    )
    consumer = Consumer(settings)
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
                if since is not None and hi > lo:
                    lo = _first_at(consumer, topic, p, lo, hi, since, min(timeout, 30))
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
    other_lines: dict[str, int] = field(default_factory=dict)  # topic -> lines read that are not requests
    unparsable: dict[str, int] = field(default_factory=dict)  # topic -> request-like lines read that do not parse
    undated: dict[str, int] = field(default_factory=dict)  # topic -> other or unparsable lines read without a date
    seconds: float = 0.0
    takedowns: list[tuple[str, datetime]] = field(default_factory=list)
    since: date | None = None  # the first day read again (None: every line of the topics was read)
    kept: int = 0  # days whose figures came from the earlier result (final: before `since`)


#: Days re-read before the newest graded day: lines come out of order by minutes (partitions) to hours (a
#: replayed stream pause), so the newest days' figures can still change; older days are final.
REREAD_DAYS = 1


def stream_checks(
    bootstrap: str,
    topics: list[str],
    manifest: str | Path | None = None,
    timeout: float = 600.0,
    earlier: dict[str, list[dict]] | None = None,
) -> StreamResult:
    """The course's checks per team (topic N-1 is team N) and per day found on any topic; see `StreamChecks.day`.

    `earlier` (day -> rows, as returned before): its days older than the newest minus `REREAD_DAYS` are final and
    kept; the topics are read from one day before the first day graded again (a slack day for lines out of
    order, itself not re-graded), so the cost is that of the last few days, not of the whole course. The
    availability windows are computed again over every day. Each row: day, team, topic, and `stream_*` figures
    (`stream_unparsable`/`stream_other_lines`: that day's lines of each kind, dated by their first ten characters;
    the result's `other_lines`/`unparsable`/`undated` count them over the whole read, those without a date
    included). StreamReadError when a topic cannot be read.
    """
    t0 = time.perf_counter()
    downs = takedowns(manifest) if manifest is not None else []
    earlier = {d: rows for d, rows in (earlier or {}).items() if rows and all("stream_requests" in r for r in rows)}
    since = None
    if earlier:
        since = date.fromisoformat(max(earlier)) - timedelta(days=REREAD_DAYS)
    read_from = datetime.combine(since - timedelta(days=1), datetime.min.time()) if since else None
    checks: list[StreamChecks] = []
    out = StreamResult(takedowns=downs, since=since)
    for topic in topics:
        c = StreamChecks(downs)
        n = 0
        for value in read_to_end(bootstrap, topic, timeout=timeout, since=read_from):
            c.add(value)
            n += 1
        checks.append(c)
        out.lines[topic] = n
        out.other_lines[topic], out.unparsable[topic] = c.other_lines, c.unparsable
        out.undated[topic] = sum(c.undated().values())
    fresh = {d for c in checks for d in c.dates() if since is None or d >= since}
    kept = {date.fromisoformat(d) for d in earlier if since is not None and date.fromisoformat(d) < since}
    out.kept = len(kept)
    by_team: dict[int, dict[date, dict]] = {}
    for i, (topic, c) in enumerate(zip(topics, checks, strict=True), start=1):
        mine = by_team.setdefault(i, {})
        for d in kept:
            row = next((r for r in earlier[d.isoformat()] if r["team"] == i), None)
            mine[d] = dict(row) if row is not None else {"day": d.isoformat(), "team": i, "topic": topic}
        for d in fresh:
            got = c.day(d)
            row = {"day": d.isoformat(), "team": i, "topic": topic}
            row.update({f"stream_{k}": v for k, v in got.items()})
            mine[d] = row
        counts = {d: (r.get("stream_requests") or 0, r.get("stream_answered_24h") or 0) for d, r in mine.items()}
        for d, row in mine.items():  # the windows over every day, final and fresh
            row.update({f"stream_{k}": v for k, v in availability_window(counts, d).items()})
    for d in sorted(kept | fresh):
        out.rows[d.isoformat()] = [by_team[i][d] for i in sorted(by_team)]
    out.seconds = time.perf_counter() - t0
    return out


def score_stream(config, timeout: float = 600.0, full: bool = False) -> StreamResult | None:
    """Compute the course's checks from the topics of `config` (a CourseConfig) and write them to its scoreboard
    (`<reports>/stream/<day>.json`, `stream.csv`); None when the course has no external broker to read back.

    The days graded before are read again only from the newest minus `REREAD_DAYS` (`full`: every line).
    """
    from movielab.world.scoring.board import Scoreboard

    if config.kafka.bootstrap is None:
        return None
    board = Scoreboard(config.reports_dir)
    result = stream_checks(
        config.kafka.bootstrap,
        config.topics(),
        config.manifest_path,
        timeout=timeout,
        earlier=None if full else board.stream,
    )
    board.add_stream(result.rows)
    return result
