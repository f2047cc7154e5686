"""The event store: an append-only DuckDB database of validated events and their quarantine.

Writes are batches in one transaction, idempotent by (topic, partition, offset), so a replayed
batch changes nothing. `EventStore` also holds the user/movie records with history (`records`) and the
snapshots and their derived views (`snapshots`): one DuckDB connection, one lock, one writing process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from movielab.recommender.errors import StoreError
from movielab.recommender.store.records import MovieInfo, RecordStore, UserInfo, utcnow
from movielab.recommender.store.snapshots import SnapshotStore

logger = logging.getLogger(__name__)

DEFAULT_RUNTIME = 120  # minutes, for movies whose runtime the world API does not give
_DDL = """
-- No NOT NULL on the hot tables: DuckDB checks them row by row, halving the insert rate; the
-- batches are built non-null where it matters (see ingest/validation.py), and keys are NOT NULL anyway.
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
-- First lists of new users from their self-descriptions (see ingest/coldstart.py), with what made them.
CREATE TABLE IF NOT EXISTS coldstart_lists (
    user_id BIGINT PRIMARY KEY, movies VARCHAR[] NOT NULL, liked VARCHAR[], disliked VARCHAR[], genres VARCHAR[],
    matcher VARCHAR NOT NULL, fallback VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, start_time TIMESTAMP, end_time TIMESTAMP,
    max_seq BIGINT NOT NULL, "rows" BIGINT NOT NULL, content_hash VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
"""

CONTENT_COLUMNS = (
    "time",
    "user_id",
    "kind",
    "movie_id",
    "minute",
    "rating",
    "server",
    "status",
    "recommendations",
    "error",
    "response_ms",
    "nanosecond",
)  # what a line says: identical lines, identical content
EVENT_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("time", pa.timestamp("us")),
        ("user_id", pa.int64()),
        ("kind", pa.string()),
        ("movie_id", pa.string()),
        ("minute", pa.int32()),
        ("rating", pa.int32()),
        ("server", pa.string()),
        ("status", pa.int32()),
        ("recommendations", pa.list_(pa.string())),
        ("error", pa.string()),
        ("response_ms", pa.int32()),
        ("nanosecond", pa.int16()),  # sub-microsecond digits of the time stamp (7–9 fractional digits); NULL: none
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("line", pa.binary()),
        ("reason_kind", pa.string()),
        ("reason", pa.string()),
    ]
)


# Rows of batch `b` whose key is in `table` already (the offset range lets DuckDB skip old row groups).
_NEW_KEYS = """WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x.topic = b.topic AND x.partition = b.partition
                AND x."offset" = b."offset" AND x."offset" BETWEEN (SELECT min("offset") FROM {batch})
                AND (SELECT max("offset") FROM {batch}))"""


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


class EventStore(RecordStore, SnapshotStore):
    """Append-only event store over DuckDB; `path=None` keeps it in memory (tests)."""

    def __init__(
        self,
        path: Path | str | None = None,
        default_runtime: int = DEFAULT_RUNTIME,
        threads: int | None = None,
        existing: bool = False,
    ) -> None:
        """Open (or create) the store; `threads` caps DuckDB's threads (1 suits a process that mostly ingests).

        `existing=True` is for commands that only read it (train, evaluate, retrain): a file that does not exist
        raises StoreError naming it, and nothing is created.
        """
        self.path = None if path is None else Path(path)
        self.default_runtime = default_runtime
        if self.path is not None and existing and not self.path.is_file():
            raise StoreError(
                f"no event store at {self.path}: run `movielab recommender ingest` (or `operate`) first, "
                "or pass --store"
            )
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
        now = utcnow()
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

    # --- reports ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per table and events per kind (`events.watch`, …)."""
        out = {
            t: int(self._query(f"SELECT count(*) FROM {t}")[0][0])
            for t in ("events", "quarantine", "users", "movies", "snapshots")
        }
        out.update({f"events.{k}": int(n) for k, n in self._query("SELECT kind, count(*) FROM events GROUP BY kind")})
        return out

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined lines per reason kind."""
        rows = self._query("SELECT reason_kind, count(*) FROM quarantine GROUP BY 1 ORDER BY 1")
        return {k: int(n) for k, n in rows}

    def quarantined(
        self, reason_kind: str | None = None, limit: int = 1000
    ) -> list[tuple[str, int, int, bytes, str, str]]:
        """Quarantined lines as (topic, partition, offset, line, reason_kind, reason), in topic order."""
        return self._query(
            """SELECT topic, partition, "offset", line, reason_kind, reason FROM quarantine
                              WHERE $kind IS NULL OR reason_kind = $kind ORDER BY ALL LIMIT $limit""",
            {"kind": reason_kind, "limit": limit},
        )

    def event_keys(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every stored event, in order (tests and audits)."""
        return self._query('SELECT topic, partition, "offset" FROM events ORDER BY ALL')

    # --- helpers ---------------------------------------------------------------------------------
    def read(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        """Rows of a read-only query (`$name` parameters), under the lock the ingest writer takes too."""
        return self._query(sql, params)

    def _query(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, _bind(sql, params)).fetchall()

    def _arrow(self, sql: str, params: dict[str, object] | None = None) -> pa.Table:
        with self._lock:
            return self._con.execute(sql, _bind(sql, params)).to_arrow_table()

    def read_arrow(
        self, sql: str, params: dict[str, object] | None = None, tables: dict[str, pa.Table] | None = None
    ) -> pa.Table:
        """The result of a read-only query (`$name` parameters) as an Arrow table, with `tables` (name → Arrow
        table) visible to it by name for its duration, under the lock the ingest writer takes too."""
        tables = tables or {}
        with self._lock:
            for name, table in tables.items():
                self._con.register(name, table)
            try:
                return self._con.execute(sql, _bind(sql, params)).to_arrow_table()
            finally:
                for name in tables:
                    self._con.unregister(name)

    # --- online experiment metrics (read the live events, not a snapshot) -----------------------
    def ingested_seq(self) -> int:
        """The ingestion point: the `seq` of the last event stored so far (0 when empty)."""
        with self._lock:
            return self._next_seq - 1

    def request_users(self, start: datetime, end: datetime, max_seq: int) -> np.ndarray:
        """Distinct ids of users with a recommendation request in [start, end) ingested up to `max_seq`."""
        table = self._arrow(
            """SELECT DISTINCT user_id FROM events WHERE kind = 'recommendation'
                               AND time >= $start AND time < $end AND seq <= $max_seq ORDER BY 1""",
            {"start": start, "end": end, "max_seq": max_seq},
        )
        return table["user_id"].to_numpy()


def _bind(sql: str, params: dict[str, object] | None) -> dict[str, object] | None:
    """The parameters `sql` uses (DuckDB refuses unused named parameters)."""
    return None if params is None else {k: v for k, v in params.items() if f"${k}" in sql}
