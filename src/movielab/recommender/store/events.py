"""The event store: an append-only DuckDB database of validated events, their quarantine, and snapshots.

Writes are batches in one transaction, idempotent by (topic, partition, offset), so a replayed
batch changes nothing. A snapshot names a time window as of an ingestion point (`seq`), so
events that arrive later never change it; its id is a prefix of the SHA-256 of its content.
Derived views (watch sessions, ratings, requests, training data) read one snapshot, and the
user and movie records as they were when the snapshot was taken.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from movielab.recommender.training.data import TrainingData, segment_of
from movielab.recommender.ingest.worldapi import MovieInfo, UserInfo

logger = logging.getLogger(__name__)

DEFAULT_RUNTIME = 120  # minutes, for movies whose runtime the world API does not give
HASH_FORMAT = b"movielab-snapshot-v1\n"

_DDL = """
-- No NOT NULL on the hot tables: DuckDB checks them row by row, halving the insert rate; the
-- batches are built non-null where it matters (see validate.py), and keys are NOT NULL anyway.
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT, topic VARCHAR, partition INTEGER, "offset" BIGINT, time TIMESTAMP, user_id BIGINT, kind VARCHAR,
    movie_id VARCHAR, minute INTEGER, rating INTEGER, server VARCHAR, status INTEGER, recommendations VARCHAR[],
    error VARCHAR, response_ms INTEGER, nanosecond SMALLINT, PRIMARY KEY (topic, partition, "offset"));
-- Stores made before time stamps kept their sub-microsecond digits get the column (NULL: none).
ALTER TABLE events ADD COLUMN IF NOT EXISTS nanosecond SMALLINT;
CREATE TABLE IF NOT EXISTS quarantine (
    topic VARCHAR, partition INTEGER, "offset" BIGINT, line BLOB, reason_kind VARCHAR, reason VARCHAR,
    ingested_at TIMESTAMP, PRIMARY KEY (topic, partition, "offset"));
CREATE TABLE IF NOT EXISTS users (
    user_id BIGINT PRIMARY KEY, age INTEGER, gender VARCHAR, occupation VARCHAR, fetched_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS movies (
    movie_id VARCHAR PRIMARY KEY, runtime INTEGER, genres VARCHAR[], title VARCHAR, fetched_at TIMESTAMP NOT NULL);
-- Records replaced by a refresh, kept so a snapshot still reads the details it was taken with.
CREATE TABLE IF NOT EXISTS user_history (
    user_id BIGINT, age INTEGER, gender VARCHAR, occupation VARCHAR, fetched_at TIMESTAMP NOT NULL,
    replaced_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS movie_history (
    movie_id VARCHAR, runtime INTEGER, genres VARCHAR[], title VARCHAR, fetched_at TIMESTAMP NOT NULL,
    replaced_at TIMESTAMP NOT NULL);
-- When each stored record was last asked for again (its fetched_at changes only when its details do).
CREATE TABLE IF NOT EXISTS record_checks (
    kind VARCHAR, id VARCHAR, checked_at TIMESTAMP NOT NULL, PRIMARY KEY (kind, id));
-- 2026 edition fields (added after the tables above, so stores made before get them too).
ALTER TABLE movies ADD COLUMN IF NOT EXISTS license_cost DOUBLE;
ALTER TABLE movies ADD COLUMN IF NOT EXISTS year INTEGER;
ALTER TABLE movie_history ADD COLUMN IF NOT EXISTS license_cost DOUBLE;
ALTER TABLE movie_history ADD COLUMN IF NOT EXISTS year INTEGER;
ALTER TABLE users ADD COLUMN IF NOT EXISTS likes VARCHAR;
ALTER TABLE users ADD COLUMN IF NOT EXISTS dislikes VARCHAR;
ALTER TABLE user_history ADD COLUMN IF NOT EXISTS likes VARCHAR;
ALTER TABLE user_history ADD COLUMN IF NOT EXISTS dislikes VARCHAR;
-- First lists of new users from their self-descriptions (see coldstart.py), with what made them.
CREATE TABLE IF NOT EXISTS coldstart_lists (
    user_id BIGINT PRIMARY KEY, movies VARCHAR[] NOT NULL, liked VARCHAR[], disliked VARCHAR[], genres VARCHAR[],
    matcher VARCHAR NOT NULL, fallback VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, start_time TIMESTAMP, end_time TIMESTAMP,
    max_seq BIGINT NOT NULL, "rows" BIGINT NOT NULL, content_hash VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
"""

CONTENT_COLUMNS = ("time", "user_id", "kind", "movie_id", "minute", "rating", "server", "status", "recommendations",
                   "error", "response_ms", "nanosecond")  # what a line says: identical lines, identical content  # fmt: skip
EVENT_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()), ("time", pa.timestamp("us")),
    ("user_id", pa.int64()), ("kind", pa.string()), ("movie_id", pa.string()), ("minute", pa.int32()),
    ("rating", pa.int32()), ("server", pa.string()), ("status", pa.int32()), ("recommendations", pa.list_(pa.string())),
    ("error", pa.string()), ("response_ms", pa.int32()),
    ("nanosecond", pa.int16()),  # sub-microsecond digits of the time stamp (7–9 fractional digits); NULL: none
])  # fmt: skip
QUARANTINE_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()), ("line", pa.binary()),
    ("reason_kind", pa.string()), ("reason", pa.string()),
])  # fmt: skip

# One line of text per event, in (topic, partition, offset) order, is what a snapshot's hash covers.
# Fields are tab-separated, NULL is \N, and backslashes and tabs in free text are escaped; sub-microsecond
# digits, where a line had them, follow as one more field (so hashes of lines without them are unchanged).
_CANONICAL_ROW = r"""concat_ws(chr(9), topic, partition::VARCHAR, "offset"::VARCHAR,
    strftime(time, '%Y-%m-%dT%H:%M:%S.%f'), user_id::VARCHAR, kind, coalesce(movie_id, '\N'),
    coalesce(minute::VARCHAR, '\N'), coalesce(rating::VARCHAR, '\N'), coalesce(server, '\N'),
    coalesce(status::VARCHAR, '\N'), coalesce(array_to_string(recommendations, ','), '\N'),
    coalesce(replace(replace(error, '\', '\\'), chr(9), '\t'), '\N'),
    coalesce(response_ms::VARCHAR, '\N')) || coalesce(chr(9) || nullif(nanosecond, 0)::VARCHAR, '') || chr(10)"""
# Rows of batch `b` whose key is in `table` already (the offset range lets DuckDB skip old row groups).
_NEW_KEYS = """WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x.topic = b.topic AND x.partition = b.partition
                AND x."offset" = b."offset" AND x."offset" BETWEEN (SELECT min("offset") FROM {batch})
                AND (SELECT max("offset") FROM {batch}))"""
_IN_SNAPSHOT = "seq <= $max_seq AND time >= $start AND time < $end"


class StoreError(RuntimeError):
    """Base class of the event store's errors."""


class UnknownSnapshot(StoreError, LookupError):
    """No snapshot has this name or id."""

    def __init__(self, name_or_id: str) -> None:
        self.name_or_id = name_or_id
        super().__init__(f"unknown snapshot {name_or_id!r}: no snapshot has this name or id")


class SnapshotConflict(StoreError):
    """A snapshot name already names other content (or the content already has another name)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"snapshot {name!r} cannot be created: {reason}")


@dataclass(frozen=True)
class Snapshot:
    """An immutable, named view of the store: events in [start, end) ingested up to `max_seq`."""

    id: str
    name: str
    start: datetime | None
    end: datetime | None
    max_seq: int
    rows: int
    content_hash: str
    created_at: datetime


@dataclass
class Batch:
    """What one `append` writes: good events, quarantined lines, and user/movie records learned meanwhile."""

    events: pa.Table
    quarantine: pa.Table
    movies: list[MovieInfo] = field(default_factory=list)
    users: list[UserInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Appended:
    """Rows an `append` actually added (replayed rows are not counted)."""

    events: int
    quarantined: int


class EventStore:
    """Append-only event store over DuckDB; `path=None` keeps it in memory (tests)."""

    def __init__(self, path: Path | str | None = None, default_runtime: int = DEFAULT_RUNTIME,
                 threads: int | None = None) -> None:  # fmt: skip
        """Open (or create) the store; `threads` caps DuckDB's threads (1 suits a process that mostly ingests)."""
        self.path = None if path is None else Path(path)
        self.default_runtime = default_runtime
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(":memory:" if self.path is None else str(self.path))
        except duckdb.Error as exc:
            raise StoreError(f"event store {self.path} cannot be opened: {exc}") from exc
        self._lock = threading.RLock()
        if threads is not None:
            self._con.execute(f"SET threads = {int(threads)}")
        self._con.execute(_DDL)
        self._next_seq = int(self._con.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0])

    def close(self) -> None:
        """Close the database (a checkpoint makes the file self-contained)."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------
    def append(self, batch: Batch) -> Appended:
        """Write a batch in one transaction; rows whose (topic, partition, offset) are stored are ignored."""
        events = batch.events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        quarantine = batch.quarantine.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
        now = _utcnow()
        with self._lock:
            seq = pa.array(np.arange(self._next_seq, self._next_seq + len(events), dtype=np.int64))
            events = events.add_column(0, "seq", seq)
            con = self._con
            con.register("_batch_events", events)
            con.register("_batch_quarantine", quarantine)
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    # A line is decided once: a replay never moves it between the two tables.
                    new = _NEW_KEYS.format(table="quarantine", batch="_batch_events")
                    sql = f"INSERT OR IGNORE INTO events SELECT * FROM _batch_events b {new}"
                    n_ev = con.execute(sql).fetchone()[0]
                    n_q = 0
                    if quarantine.num_rows:
                        new = _NEW_KEYS.format(table="events", batch="_batch_quarantine")
                        sql = f"INSERT OR IGNORE INTO quarantine SELECT *, $now FROM _batch_quarantine b {new}"
                        n_q = con.execute(sql, {"now": now}).fetchone()[0]
                    self._insert_records(batch.movies, batch.users, now)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            finally:
                con.unregister("_batch_events")
                con.unregister("_batch_quarantine")
            self._next_seq += len(events)
        return Appended(int(n_ev), int(n_q))

    def add_records(self, movies: Iterable[MovieInfo] = (), users: Iterable[UserInfo] = ()) -> None:
        """Store new movie and user records (an id already stored keeps its record: see `refresh_records`)."""
        with self._lock:
            self._insert_records(list(movies), list(users), _utcnow())

    def refresh_records(self, movies: Iterable[MovieInfo] = (), users: Iterable[UserInfo] = ()) -> None:
        """Store records fetched again: changed details become the current record (the old one goes to history,
        so snapshots keep reading what they were taken with); every given id counts as checked now."""
        movies, users = list(movies), list(users)
        now = _utcnow()
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                for kind, records, fields in (("movies", movies, _MOVIE_FIELDS), ("users", users, _USER_FIELDS)):
                    if records:
                        self._replace_changed(kind, _records_table(kind, records), fields, now)
                        self._checked(kind, [getattr(r, fields[0]) for r in records], now)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def _replace_changed(self, kind: str, table: pa.Table, fields: tuple[str, ...], now: datetime) -> None:
        key, history = fields[0], _HISTORY[kind]
        changed = " OR ".join(f"c.{f} IS DISTINCT FROM r.{f}" for f in fields[1:])
        cols = ", ".join(fields)
        self._con.register("_records", table)
        try:
            self._con.execute(f"""INSERT INTO {history} ({cols}, fetched_at, replaced_at)
                                  SELECT {", ".join("c." + f for f in fields)}, c.fetched_at, $now
                                  FROM {kind} c JOIN (SELECT DISTINCT ON ({key}) * FROM _records) r USING ({key})
                                  WHERE {changed}""", {"now": now})  # fmt: skip
            self._con.execute(f"""INSERT OR REPLACE INTO {kind} ({cols}, fetched_at) SELECT {cols}, $now FROM (
                                      SELECT DISTINCT ON ({key}) r.* FROM _records r LEFT JOIN {kind} c USING ({key})
                                      WHERE c.{key} IS NULL OR {changed})""", {"now": now})  # fmt: skip
        finally:
            self._con.unregister("_records")

    def mark_checked(self, kind: str, ids: Iterable[int | str]) -> None:
        """Record that `users` or `movies` ids were asked for again now (e.g. the API no longer knows them)."""
        _check_kind(kind)
        with self._lock:
            self._checked(kind, list(ids), _utcnow())

    def _checked(self, kind: str, ids: list, now: datetime) -> None:
        if not ids:
            return
        self._con.register("_ids", pa.table({"id": pa.array([str(i) for i in ids], pa.string())}))
        try:
            self._con.execute("INSERT OR REPLACE INTO record_checks SELECT DISTINCT $kind, id, $now FROM _ids",
                              {"kind": kind, "now": now})  # fmt: skip
        finally:
            self._con.unregister("_ids")

    def stale_records(self, kind: str, checked_before: datetime, limit: int = 200) -> list:
        """Ids of up to `limit` stored `users` or `movies` records last fetched or checked before
        `checked_before`, oldest first (what a refresh asks for next)."""
        _check_kind(kind)
        key = "user_id" if kind == "users" else "movie_id"
        rows = self._query(f"""SELECT {key} FROM {kind} LEFT JOIN record_checks c ON c.kind = $kind
                                   AND c.id = {key}::VARCHAR
                               WHERE coalesce(c.checked_at, fetched_at) < $before
                               ORDER BY coalesce(c.checked_at, fetched_at), {key} LIMIT $limit""",
                           {"kind": kind, "before": checked_before, "limit": int(limit)})  # fmt: skip
        return [r[0] for r in rows]

    def _insert_records(self, movies: list[MovieInfo], users: list[UserInfo], now: datetime) -> None:
        if movies:
            self._insert_table("movies", _records_table("movies", movies), now)
        if users:
            self._insert_table("users", _records_table("users", users), now)

    def _insert_table(self, name: str, table: pa.Table, now: datetime) -> None:
        self._con.register("_records", table)
        try:
            cols = ", ".join(table.column_names)
            self._con.execute(f"INSERT OR IGNORE INTO {name} ({cols}, fetched_at) SELECT DISTINCT ON (1) *, $now "
                              "FROM _records", {"now": now})  # fmt: skip
        finally:
            self._con.unregister("_records")

    # --- what ingestion needs to resume ----------------------------------------------------------
    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read per (topic, partition): one past the last stored or quarantined line."""
        rows = self._query("""SELECT topic, partition, max(o) + 1 FROM (
                                SELECT topic, partition, max("offset") AS o FROM events GROUP BY ALL UNION ALL
                                SELECT topic, partition, max("offset") FROM quarantine GROUP BY ALL) GROUP BY ALL""")
        return {(t, int(p)): int(o) for t, p, o in rows}

    def latest_times(self) -> dict[tuple[str, int], datetime]:
        """The latest event time stored per (topic, partition)."""
        rows = self._query("SELECT topic, partition, max(time) FROM events GROUP BY ALL")
        return {(t, int(p)): m for t, p, m in rows}

    def duplicates(self, rows: pa.Table) -> dict[int, tuple[str, int, int, bool]]:
        """Rows (`idx`, key, content columns) whose content a stored event at another key or an earlier row has.

        Returns idx → (topic, partition, offset of the original, whether the original is stored).
        """
        if rows.num_rows == 0:
            return {}
        same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM b.{c}" for c in CONTENT_COLUMNS[3:])
        content = ", ".join(CONTENT_COLUMNS)
        sql = f"""WITH s AS (
                SELECT b.idx, arg_min(e.topic, e.seq) AS topic, arg_min(e.partition, e.seq) AS partition,
                       arg_min(e."offset", e.seq) AS "offset"
                FROM _rows b JOIN events e ON e.time = b.time AND e.user_id = b.user_id AND e.kind = b.kind AND {same}
                     AND NOT (e.topic = b.topic AND e.partition = b.partition AND e."offset" = b."offset")
                WHERE e.time BETWEEN $lo AND $hi GROUP BY b.idx),
              f AS (
                SELECT idx, row_number() OVER w AS n, first_value(topic) OVER w AS topic,
                       first_value(partition) OVER w AS partition, first_value("offset") OVER w AS "offset"
                FROM _rows WINDOW w AS (PARTITION BY {content} ORDER BY idx))
            SELECT f.idx, coalesce(s.topic, f.topic), coalesce(s.partition, f.partition),
                   coalesce(s."offset", f."offset"), s.idx IS NOT NULL
            FROM f LEFT JOIN s ON s.idx = f.idx WHERE s.idx IS NOT NULL OR f.n > 1"""
        times = rows["time"]
        params = {"lo": pc.min(times).as_py(), "hi": pc.max(times).as_py()}
        with self._lock:
            self._con.register("_rows", rows)
            try:
                found = self._con.execute(sql, params).fetchall()
            finally:
                self._con.unregister("_rows")
        return {int(i): (t, int(p), int(o), bool(st)) for i, t, p, o, st in found}

    def movie_records(self) -> list[MovieInfo]:
        """Every stored movie record (to prime an API cache after a restart)."""
        rows = self._query("SELECT movie_id, runtime, genres, title, license_cost, year FROM movies")
        return [MovieInfo(m, r, tuple(g or ()), t, c, y) for m, r, g, t, c, y in rows]

    def movie_costs(self) -> dict[str, float]:
        """License cost in USD per play of every stored movie whose record gives one (2026 edition)."""
        return {m: float(c) for m, c in self._query("SELECT movie_id, license_cost FROM movies "
                                                    "WHERE license_cost IS NOT NULL")}  # fmt: skip

    def user_record(self, user_id: int) -> UserInfo | None:
        """The stored record of one user, None if none is stored."""
        rows = self._query("SELECT user_id, age, gender, occupation, likes, dislikes FROM users WHERE user_id = $u",
                           {"u": int(user_id)})  # fmt: skip
        return UserInfo(*rows[0]) if rows else None

    # --- cold start ------------------------------------------------------------------------------
    def segment_popularity(self, since: datetime | None = None, n: int = 100) -> dict[int, list[str]]:
        """Up to `n` movie ids per demographic segment (-1: everyone), by distinct users who watched or rated
        them since `since` (all events when None), most first (ties by id): the demographic fallback."""
        rows = self._query("""WITH u AS (SELECT user_id, coalesce(age, -1) AS age,
                                         CASE gender WHEN 'F' THEN 0 WHEN 'M' THEN 1 ELSE -1 END AS gender FROM users),
                                   e AS (SELECT DISTINCT user_id, movie_id FROM events
                                         WHERE kind IN ('watch', 'rate') AND time >= $since)
                              SELECT e.movie_id, u.age, u.gender, count(*) FROM e LEFT JOIN u USING (user_id)
                              GROUP BY ALL""", {"since": since or datetime.min})  # fmt: skip
        if not rows:
            return {-1: []}
        movies = [r[0] for r in rows]
        seg = segment_of(np.array([-1 if r[1] is None else r[1] for r in rows]),
                         np.array([-1 if r[2] is None else r[2] for r in rows]))  # fmt: skip
        counts: dict[int, dict[str, int]] = {}
        for movie, s, c in zip(movies, seg.tolist(), (r[3] for r in rows), strict=True):
            for key in {-1, s}:
                counts.setdefault(key, {})
                counts[key][movie] = counts[key].get(movie, 0) + int(c)
        return {k: [m for m, _ in sorted(v.items(), key=lambda mc: (-mc[1], mc[0]))[:n]] for k, v in counts.items()}

    def save_coldstart(self, lists: Iterable) -> int:
        """Store cold-start lists (`coldstart.ColdStartList`s); a user's newer list replaces the older one.
        Returns how many were written."""
        lists = list(lists)
        if not lists:
            return 0
        table = pa.table({
            "user_id": pa.array([c.user_id for c in lists], pa.int64()),
            "movies": pa.array([list(c.movies) for c in lists], pa.list_(pa.string())),
            "liked": pa.array([list(c.liked) for c in lists], pa.list_(pa.string())),
            "disliked": pa.array([list(c.disliked) for c in lists], pa.list_(pa.string())),
            "genres": pa.array([list(c.genres) for c in lists], pa.list_(pa.string())),
            "matcher": pa.array([c.matcher for c in lists], pa.string()),
            "fallback": pa.array([c.fallback for c in lists], pa.string()),
        })  # fmt: skip
        with self._lock:
            self._con.register("_cold", table)
            try:
                self._con.execute("INSERT OR REPLACE INTO coldstart_lists SELECT DISTINCT ON (user_id) *, $now "
                                  "FROM _cold", {"now": _utcnow()})  # fmt: skip
            finally:
                self._con.unregister("_cold")
        return len(lists)

    def coldstart_lists(self) -> dict[int, tuple[list[str], str]]:
        """Every stored cold-start list: user id → (movie ids best first, matcher that made it)."""
        return {int(u): (list(m), str(k)) for u, m, k in self._query("SELECT user_id, movies, matcher "
                                                                      "FROM coldstart_lists")}  # fmt: skip

    def user_segments(self) -> dict[int, int]:
        """Demographic segment (`segment_of`) of every user the world API has described, -1 when unknown."""
        users = self._arrow("""SELECT user_id, coalesce(age, -1) AS age,
                                      CASE gender WHEN 'F' THEN 0 WHEN 'M' THEN 1 ELSE -1 END AS gender FROM users""")
        seg = segment_of(users["age"].to_numpy(), users["gender"].to_numpy())
        return dict(zip(users["user_id"].to_numpy().tolist(), seg.tolist(), strict=True))

    def user_ids(self) -> set[int]:
        """Ids of the users whose record is stored."""
        return {int(u) for (u,) in self._query("SELECT user_id FROM users")}

    def users_without_record(self) -> set[int]:
        """Ids of users with events but no stored record (to fetch after a restart)."""
        rows = self._query("SELECT DISTINCT user_id FROM events ANTI JOIN users USING (user_id)")
        return {int(u) for (u,) in rows}

    # --- snapshots -------------------------------------------------------------------------------
    def create_snapshot(self, name: str, start: datetime | None, end: datetime | None) -> Snapshot:
        """Freeze the events with time in [start, end) stored so far as `name`; None leaves a side open.

        The id is the first 16 hex digits of the SHA-256 of the events' canonical text. Asking again for
        a name with the same content returns the snapshot; with other content it is a SnapshotConflict.
        Content that an existing snapshot already has returns that snapshot (under its own name).
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"snapshot name {name!r} is invalid: give a non-empty string")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"snapshot {name!r}: end {end} is not after start {start}")
        with self._lock:
            max_seq = self._next_seq - 1
            content_hash, rows = self._content_hash(max_seq, start, end)
            snap = Snapshot(content_hash[:16], name, start, end, max_seq, rows, content_hash, _utcnow())
            existing = self._find_snapshot(name)
            if existing is not None:
                if existing.content_hash == content_hash:
                    return existing
                raise SnapshotConflict(name, f"the name is taken by snapshot {existing.id} with other content ("
                                             f"{existing.rows} rows in [{_iso(existing.start)}, {_iso(existing.end)}) "
                                             f"as of seq {existing.max_seq})")  # fmt: skip
            same = self._find_snapshot(snap.id)
            if same is not None:  # content-addressed: the same events are the same snapshot, whatever its name
                logger.info("snapshot %r has exactly the content of snapshot %r (%s); reusing it", name, same.name,
                            same.id)  # fmt: skip
                return same
            self._con.execute("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              [snap.id, name, start, end, max_seq, rows, content_hash, snap.created_at])  # fmt: skip
        logger.info("snapshot %s (%s): %d events in [%s, %s)", name, snap.id, rows, _iso(start), _iso(end))
        return snap

    def verify_snapshot(self, snapshot: str | Snapshot) -> bool:
        """True when the snapshot's events still hash to its recorded content hash (a provenance audit)."""
        snap = self.snapshot(snapshot)
        with self._lock:
            content_hash, rows = self._content_hash(snap.max_seq, snap.start, snap.end)
        return content_hash == snap.content_hash and rows == snap.rows

    def _content_hash(self, max_seq: int, start: datetime | None, end: datetime | None) -> tuple[str, int]:
        """SHA-256 (hex) of the canonical text of the events in a snapshot definition, and their number."""
        digest = hashlib.sha256(HASH_FORMAT)
        rows = 0
        reader = self._con.execute(f'SELECT {_CANONICAL_ROW} FROM events WHERE {_IN_SNAPSHOT} '
                                   f'ORDER BY topic, partition, "offset"', _window(max_seq, start, end)
                                   ).to_arrow_reader(65_536)  # fmt: skip
        for chunk in reader:
            _hash_strings(digest, chunk.column(0))
            rows += chunk.num_rows
        return digest.hexdigest(), rows

    def snapshot(self, name_or_id: str | Snapshot) -> Snapshot:
        """The snapshot with this name (or id); raise UnknownSnapshot."""
        if isinstance(name_or_id, Snapshot):
            return name_or_id
        with self._lock:
            snap = self._find_snapshot(name_or_id)
        if snap is None:
            raise UnknownSnapshot(name_or_id)
        return snap

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first."""
        return [Snapshot(*row) for row in self._query("SELECT * FROM snapshots ORDER BY created_at, id")]

    def _find_snapshot(self, name_or_id: str) -> Snapshot | None:
        row = self._con.execute("SELECT * FROM snapshots WHERE name = $k OR id = $k ORDER BY (name = $k) DESC LIMIT 1",
                                {"k": name_or_id}).fetchone()  # fmt: skip
        return None if row is None else Snapshot(*row)

    # --- derived views ---------------------------------------------------------------------------
    def watch_sessions(self, snapshot: str | Snapshot) -> pa.Table:
        """Per (user, movie): distinct minutes, max minute, first/last time, runtime, completion (≤ 1)."""
        snap = self.snapshot(snapshot)
        table = self._arrow(_sessions_sql(), self._params(snap))
        unknown = table.filter(pc.is_null(table["runtime"]))
        if unknown.num_rows:
            movies = len(set(unknown["movie_id"].to_pylist()))
            logger.warning("snapshot %s: %d movie(s) without a known runtime; completion uses %d minutes",
                           snap.name, movies, self.default_runtime)  # fmt: skip
        return table

    def ratings(self, snapshot: str | Snapshot) -> pa.Table:
        """The latest rating per (user, movie), with its time (ties go to the later ingested line)."""
        return self._arrow(f"{_ratings_sql()} ORDER BY user_id, movie_id", self._params(self.snapshot(snapshot)))

    def requests(self, snapshot: str | Snapshot) -> pa.Table:
        """Recommendation requests, their outcome, and the user's pick: the first watch before the next request."""
        sql = f"""WITH r AS (SELECT user_id, time, seq, server, status, recommendations, error, response_ms,
                       lead(time) OVER (PARTITION BY user_id ORDER BY time, seq) AS next_time
                     FROM events WHERE kind = 'recommendation' AND {_IN_SNAPSHOT}),
                 w AS (SELECT user_id, time AS watch_time, movie_id FROM events WHERE kind = 'watch' AND {_IN_SNAPSHOT})
            SELECT r.user_id, r.time, r.server, r.status, r.error IS NULL AS ok,
                   CASE WHEN r.error IS NULL THEN 'ok' WHEN r.status = 0 THEN 'no_answer' ELSE 'bad_answer' END
                       AS outcome,
                   r.recommendations, r.error, r.response_ms,
                   CASE WHEN r.next_time IS NULL OR w.watch_time < r.next_time THEN w.movie_id END AS picked,
                   coalesce(list_contains(r.recommendations, picked), false) AS picked_recommended
            FROM r ASOF LEFT JOIN w ON r.user_id = w.user_id AND w.watch_time >= r.time
            ORDER BY r.time, r.seq"""
        return self._arrow(sql, self._params(self.snapshot(snapshot)))

    def training_data(self, snapshot: str | Snapshot) -> TrainingData:
        """The snapshot as `TrainingData`: watch shares, latest ratings, last times, demographic segments."""
        snap = self.snapshot(snapshot)
        params = self._params(snap)
        sql = f"""WITH s AS ({_sessions_sql()}), r AS ({_ratings_sql()})
            SELECT user_id, movie_id, coalesce(s.completion, 0)::FLOAT AS watched,
                   coalesce(r.rating, 0)::FLOAT AS rating, epoch_us(greatest(s.last_time, r.time)) / 1e6 AS t
            FROM s FULL OUTER JOIN r USING (user_id, movie_id)"""
        triples = self._arrow(sql, params)
        users = self._arrow(f"""SELECT user_id, coalesce(age, -1) AS age,
                                      CASE gender WHEN 'F' THEN 0 WHEN 'M' THEN 1 ELSE -1 END AS gender
                               FROM ({_as_of("users")})""", {"created": snap.created_at})  # fmt: skip
        seg = segment_of(users["age"].to_numpy(), users["gender"].to_numpy())
        segments = dict(zip(users["user_id"].to_numpy().tolist(), seg.tolist(), strict=True))
        movies = triples["movie_id"].to_numpy(zero_copy_only=False)
        costs = {m: float(c) for m, c in self._query(f"""SELECT movie_id, license_cost FROM ({_as_of("movies")})
                                                        WHERE license_cost IS NOT NULL""",
                                                     {"created": snap.created_at})}  # fmt: skip
        return TrainingData.from_triples(triples["user_id"].to_numpy(), movies, triples["watched"].to_numpy(),
                                         triples["rating"].to_numpy(), triples["t"].to_numpy(), segments,
                                         snapshot_id=snap.id, item_cost=costs or None)  # fmt: skip

    # --- reports ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per table and events per kind (`events.watch`, …)."""
        out = {t: int(self._query(f"SELECT count(*) FROM {t}")[0][0])
               for t in ("events", "quarantine", "users", "movies", "snapshots")}  # fmt: skip
        out.update({f"events.{k}": int(n) for k, n in self._query("SELECT kind, count(*) FROM events GROUP BY kind")})
        return out

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined lines per reason kind."""
        rows = self._query("SELECT reason_kind, count(*) FROM quarantine GROUP BY 1 ORDER BY 1")
        return {k: int(n) for k, n in rows}

    def quarantined(self, reason_kind: str | None = None,
                    limit: int = 1000) -> list[tuple[str, int, int, bytes, str, str]]:  # fmt: skip
        """Quarantined lines as (topic, partition, offset, line, reason_kind, reason), in topic order."""
        return self._query("""SELECT topic, partition, "offset", line, reason_kind, reason FROM quarantine
                              WHERE $kind IS NULL OR reason_kind = $kind ORDER BY ALL LIMIT $limit""",
                           {"kind": reason_kind, "limit": limit})  # fmt: skip

    def event_keys(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every stored event, in order (tests and audits)."""
        return self._query('SELECT topic, partition, "offset" FROM events ORDER BY ALL')

    # --- helpers ---------------------------------------------------------------------------------
    def _params(self, snap: Snapshot) -> dict[str, object]:
        return {**_window(snap.max_seq, snap.start, snap.end), "created": snap.created_at,
                "default_runtime": self.default_runtime}  # fmt: skip

    def read(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        """Rows of a read-only query (`$name` parameters), under the lock the ingest writer takes too."""
        return self._query(sql, params)

    def _query(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, _bind(sql, params)).fetchall()

    def _arrow(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        with self._lock:
            return self._con.execute(sql, _bind(sql, params)).to_arrow_table()

    # --- online experiment metrics (read the live events, not a snapshot) -----------------------
    def ingested_seq(self) -> int:
        """The ingestion point: the `seq` of the last event stored so far (0 when empty)."""
        with self._lock:
            return self._next_seq - 1

    def request_users(self, start: datetime, end: datetime, max_seq: int) -> np.ndarray:
        """Distinct ids of users with a recommendation request in [start, end) ingested up to `max_seq`."""
        table = self._arrow("""SELECT DISTINCT user_id FROM events WHERE kind = 'recommendation'
                               AND time >= $start AND time < $end AND seq <= $max_seq ORDER BY 1""",
                            {"start": start, "end": end, "max_seq": max_seq})  # fmt: skip
        return table["user_id"].to_numpy()

    def arm_request_metrics(self, arms: pa.Table, start: datetime, end: datetime, conversion_window: timedelta,
                            max_seq: int) -> tuple[pa.Table, pa.Table]:  # fmt: skip
        """Per arm and per user of each arm: request outcomes, conversions, completion, ratings.

        `arms` maps `user_id` → `arm`; requests are those in [start, end) ingested up to `max_seq`. See
        `_arm_requests_sql` for what counts as a conversion. Returns two tables:
        - per arm: users, requests, ok, errors by kind, latency p50/p99, conversions, completion, ratings;
        - per user (the unit of randomization): arm, user_id, requests, ok, conversions, latency_ms (sum).
        Arms and users without requests have no row.
        """
        arms = arms.select(["user_id", "arm"]).cast(pa.schema([("user_id", pa.int64()), ("arm", pa.string())]))
        params = {"start": start, "end": end, "max_seq": max_seq, "window": conversion_window,
                  "default_runtime": self.default_runtime}  # fmt: skip
        with self._lock:
            self._con.register("_arms", arms)
            try:
                requests = self._con.execute(_arm_requests_sql(), params).to_arrow_table()
                self._con.register("_arm_requests", requests)
                plays = self._con.execute(_PLAYS_SQL, _bind(_PLAYS_SQL, params)).to_arrow_table()
                self._con.register("_arm_plays", plays)
                return (self._con.execute(_PER_ARM_SQL).to_arrow_table(),
                        self._con.execute(_PER_USER_SQL).to_arrow_table())  # fmt: skip
            finally:
                self._con.unregister("_arms")
                self._con.unregister("_arm_requests")
                self._con.unregister("_arm_plays")

    def window_cost(self, start: datetime, end: datetime) -> dict[str, float]:
        """License cost of the plays in [start, end) (stream time), every user: `plays` (distinct user × movie
        with a watch line), `costed_plays` (of movies whose record gives a cost), `license_cost` (USD, sum over
        the costed plays) and `requests` (recommendation requests)."""
        arms = pa.table({"user_id": pa.array([], pa.int64()), "arm": pa.array([], pa.string())})
        sql = _PLAYS_SQL.replace("JOIN _arms a USING (user_id)", "CROSS JOIN (SELECT 'all' AS arm) a").replace(
            "AND user_id IN (SELECT user_id FROM _arms)", "")
        params = {"start": start, "end": end, "max_seq": self.ingested_seq()}
        with self._lock:
            self._con.register("_arms", arms)
            try:
                row = self._con.execute(sql, _bind(sql, params)).fetchone()
            finally:
                self._con.unregister("_arms")
            requests = self._con.execute("""SELECT count(*) FROM events WHERE kind = 'recommendation'
                                            AND time >= $start AND time < $end""",
                                         {"start": start, "end": end}).fetchone()[0]  # fmt: skip
        plays, costed, cost = (0, 0, 0.0) if row is None else row[1:]
        return {"plays": int(plays), "costed_plays": int(costed), "license_cost": float(cost),
                "requests": int(requests)}  # fmt: skip


_USER_FIELDS = ("user_id", "age", "gender", "occupation", "likes", "dislikes")
_MOVIE_FIELDS = ("movie_id", "runtime", "genres", "title", "license_cost", "year")
_HISTORY = {"users": "user_history", "movies": "movie_history"}


def _check_kind(kind: str) -> None:
    if kind not in _HISTORY:
        raise ValueError(f"record kind {kind!r} is unknown: choose users or movies")


def _records_table(kind: str, records: list) -> pa.Table:
    """Arrow rows of `users` (UserInfo) or `movies` (MovieInfo) records, in the table's column order."""
    if kind == "movies":
        return pa.table({"movie_id": pa.array([m.movie_id for m in records], pa.string()),
                         "runtime": pa.array([m.runtime for m in records], pa.int32()),
                         "genres": pa.array([list(m.genres) for m in records], pa.list_(pa.string())),
                         "title": pa.array([m.title for m in records], pa.string()),
                         "license_cost": pa.array([m.license_cost for m in records], pa.float64()),
                         "year": pa.array([m.year for m in records], pa.int32())})  # fmt: skip
    return pa.table({"user_id": pa.array([u.user_id for u in records], pa.int64()),
                     "age": pa.array([u.age for u in records], pa.int32()),
                     "gender": pa.array([u.gender for u in records], pa.string()),
                     "occupation": pa.array([u.occupation for u in records], pa.string()),
                     "likes": pa.array([u.likes for u in records], pa.string()),
                     "dislikes": pa.array([u.dislikes for u in records], pa.string())})  # fmt: skip


def _as_of(kind: str) -> str:
    """`users` or `movies` as they were at `$created`: the record then current (current or replaced later)."""
    cols = ", ".join(_USER_FIELDS if kind == "users" else _MOVIE_FIELDS)
    return f"""SELECT {cols} FROM {kind} WHERE fetched_at <= $created
               UNION ALL SELECT {cols} FROM {_HISTORY[kind]} WHERE fetched_at <= $created AND replaced_at > $created"""


def _bind(sql: str, params: dict[str, object] | None) -> dict[str, object] | None:
    """The parameters `sql` uses (DuckDB refuses unused named parameters)."""
    return None if params is None else {k: v for k, v in params.items() if f"${k}" in sql}


def _sessions_sql() -> str:
    return f"""SELECT w.*, m.runtime,
                   least(1.0, w.minutes / coalesce(m.runtime, $default_runtime))::DOUBLE AS completion
            FROM (SELECT user_id, movie_id, count(DISTINCT minute)::INTEGER AS minutes, max(minute) AS max_minute,
                         min(time) AS first_time, max(time) AS last_time
                  FROM events WHERE kind = 'watch' AND {_IN_SNAPSHOT} GROUP BY user_id, movie_id) w
            LEFT JOIN ({_as_of("movies")}) m ON m.movie_id = w.movie_id
            ORDER BY w.user_id, w.movie_id"""


def _ratings_sql() -> str:
    return f"""SELECT user_id, movie_id, rating, time FROM events WHERE kind = 'rate' AND {_IN_SNAPSHOT}
               QUALIFY row_number() OVER (PARTITION BY user_id, movie_id ORDER BY time DESC, seq DESC) = 1"""


def _window(max_seq: int, start: datetime | None, end: datetime | None) -> dict[str, object]:
    return {"max_seq": max_seq, "start": start or datetime.min, "end": end or datetime.max}


def _hash_strings(digest: hashlib._Hash, column: pa.Array | pa.ChunkedArray) -> None:
    """Feed the concatenated values of a string column to `digest` without making Python strings."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for arr in chunks:
        if len(arr) == 0:
            continue
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            width = np.int32 if pa.types.is_string(arr.type) else np.int64
            _, offsets, data = arr.buffers()
            offs = np.frombuffer(offsets, width, count=len(arr) + 1, offset=arr.offset * np.dtype(width).itemsize)
            digest.update(memoryview(data)[int(offs[0]):int(offs[-1])])
        else:  # e.g. string views: slower, same bytes
            digest.update("".join(arr.to_pylist()).encode())


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.isoformat()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _arm_requests_sql() -> str:
    """One row per request with its arm and outcome, and last-touch conversions (see `arm_request_metrics`).

    A watch line is credited to the user's latest request at or before it (last touch, so a refresh
    never counts one watch twice). A request converts when such a line is of one of its recommended
    movies, within `$window` of the request; only lines before `$end` count (what the stream has shown).
    Completion is the distinct minutes of the converted movie watched from then until `$end` over its
    runtime; the rating is the user's latest rating of that movie after the conversion.
    """
    return """WITH r AS (
            SELECT e.user_id, a.arm, e.time, e.seq, e.error, e.response_ms, e.recommendations,
                   CASE WHEN e.error IS NULL THEN NULL
                        WHEN e.status = 0 AND starts_with(e.error, 'Request timeout') THEN 'timeout'
                        WHEN e.status = 0 AND (starts_with(e.error, 'Connection refused')
                                               OR starts_with(e.error, 'Cannot connect')) THEN 'connect'
                        WHEN e.status = 0 THEN 'no_answer'
                        WHEN e.status <> 200 THEN 'http_' || e.status::VARCHAR
                        ELSE 'invalid_body' END AS error_kind
            FROM events e JOIN _arms a USING (user_id)
            WHERE e.kind = 'recommendation' AND e.time >= $start AND e.time < $end AND e.seq <= $max_seq),
        w AS (SELECT user_id, movie_id, minute, time FROM events
              WHERE kind = 'watch' AND time >= $start AND time < $end AND seq <= $max_seq
                AND user_id IN (SELECT user_id FROM _arms)),
        hit AS (
            SELECT r.seq AS rseq, any_value(r.user_id) AS user_id, arg_min(w.movie_id, w.time) AS movie_id,
                   min(w.time) AS at
            FROM w ASOF JOIN r ON w.user_id = r.user_id AND w.time >= r.time
            WHERE r.error IS NULL AND w.time < r.time + $window AND list_contains(r.recommendations, w.movie_id)
            GROUP BY r.seq),
        done AS (
            SELECT h.rseq, least(1.0, count(DISTINCT w.minute)
                                 / coalesce(any_value(m.runtime), $default_runtime))::DOUBLE AS completion
            FROM hit h JOIN w ON w.user_id = h.user_id AND w.movie_id = h.movie_id AND w.time >= h.at
                 LEFT JOIN movies m ON m.movie_id = h.movie_id
            GROUP BY h.rseq),
        rated AS (
            SELECT h.rseq, arg_max(e.rating, e.seq) AS rating
            FROM hit h JOIN events e ON e.user_id = h.user_id AND e.movie_id = h.movie_id AND e.kind = 'rate'
                 AND e.time >= h.at AND e.time < $end AND e.seq <= $max_seq
            GROUP BY h.rseq)
        SELECT r.arm, r.user_id, r.error IS NULL AS ok, r.error_kind, r.response_ms, h.rseq IS NOT NULL AS converted,
               d.completion, t.rating
        FROM r LEFT JOIN hit h ON h.rseq = r.seq LEFT JOIN done d ON d.rseq = r.seq LEFT JOIN rated t ON t.rseq = r.seq"""


# A play is a (user, movie) pair with a watch line in the window (a resumed or rewound viewing is one play);
# its license cost is the movie's current record's. Plays of movies without a cost are counted, not priced.
_PLAYS_SQL = """
SELECT a.arm, count(*) AS plays, count(m.license_cost) AS costed_plays,
       coalesce(sum(m.license_cost), 0)::DOUBLE AS license_cost
FROM (SELECT DISTINCT user_id, movie_id FROM events WHERE kind = 'watch' AND time >= $start AND time < $end
      AND seq <= $max_seq AND user_id IN (SELECT user_id FROM _arms)) p
JOIN _arms a USING (user_id) LEFT JOIN movies m USING (movie_id) GROUP BY a.arm"""

_PER_ARM_SQL = """
SELECT r.*, coalesce(p.plays, 0) AS plays, coalesce(p.costed_plays, 0) AS costed_plays,
       coalesce(p.license_cost, 0.0) AS license_cost
FROM (SELECT arm, count(DISTINCT user_id) AS users, count(*) AS requests, count(*) FILTER (WHERE ok) AS ok,
       quantile_cont(response_ms, 0.5)::DOUBLE AS latency_p50_ms,
       quantile_cont(response_ms, 0.99)::DOUBLE AS latency_p99_ms,
       count(*) FILTER (WHERE converted) AS conversions, avg(completion)::DOUBLE AS completion_mean,
       count(rating) AS ratings, avg(rating)::DOUBLE AS rating_mean,
       histogram(error_kind) FILTER (WHERE error_kind IS NOT NULL) AS errors
      FROM _arm_requests GROUP BY arm) r LEFT JOIN _arm_plays p USING (arm) ORDER BY arm"""

_PER_USER_SQL = """
SELECT arm, user_id, count(*) AS requests, count(*) FILTER (WHERE ok) AS ok,
       count(*) FILTER (WHERE converted) AS conversions, coalesce(sum(response_ms), 0)::DOUBLE AS latency_ms
FROM _arm_requests GROUP BY arm, user_id ORDER BY arm, user_id"""
