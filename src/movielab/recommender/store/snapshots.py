"""Snapshots: immutable, named, content-hashed views of the event store, and the views derived from one.

A snapshot names a time window as of an ingestion point (`seq`), so events that arrive later never change it;
its id is a prefix of the SHA-256 of its content. Derived views (watch sessions, ratings, requests) read one
snapshot, and the user and movie records as they were when the snapshot was taken. `SnapshotStore` is a part
of `EventStore` (one DuckDB connection and lock); it is not used alone.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from movielab.recommender.errors import SnapshotConflict, UnknownSnapshot
from movielab.recommender.store.outcomes import answered_sql
from movielab.recommender.store.records import as_of, utcnow

logger = logging.getLogger(__name__)

HASH_FORMAT = b"movielab-snapshot-v1\n"
# One line of text per event, in (topic, partition, offset) order, is what a snapshot's hash covers.
# Fields are tab-separated, NULL is \N, and backslashes and tabs in free text are escaped; sub-microsecond
# digits, where a line had them, follow as one more field (so hashes of lines without them are unchanged).
_CANONICAL_ROW = r"""concat_ws(chr(9), topic, partition::VARCHAR, "offset"::VARCHAR,
    strftime(time, '%Y-%m-%dT%H:%M:%S.%f'), user_id::VARCHAR, kind, coalesce(movie_id, '\N'),
    coalesce(minute::VARCHAR, '\N'), coalesce(rating::VARCHAR, '\N'), coalesce(server, '\N'),
    coalesce(status::VARCHAR, '\N'), coalesce(array_to_string(recommendations, ','), '\N'),
    coalesce(replace(replace(error, '\', '\\'), chr(9), '\t'), '\N'),
    coalesce(response_ms::VARCHAR, '\N')) || coalesce(chr(9) || nullif(nanosecond, 0)::VARCHAR, '') || chr(10)"""
IN_SNAPSHOT = "seq <= $max_seq AND time >= $start AND time < $end"


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


class SnapshotStore:
    """The snapshot part of `EventStore` (needs its `_con`, `_lock`, `_query`, `_arrow`, `_next_seq`)."""

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
            snap = Snapshot(content_hash[:16], name, start, end, max_seq, rows, content_hash, utcnow())
            existing = self._find_snapshot(name)
            if existing is not None:
                if existing.content_hash == content_hash:
                    return existing
                raise SnapshotConflict(
                    name,
                    f"the name is taken by snapshot {existing.id} with other content ("
                    f"{existing.rows} rows in [{_iso(existing.start)}, {_iso(existing.end)}) "
                    f"as of seq {existing.max_seq})",
                )
            same = self._find_snapshot(snap.id)
            if same is not None:  # content-addressed: the same events are the same snapshot, whatever its name
                logger.info(
                    "snapshot %r has exactly the content of snapshot %r (%s); reusing it", name, same.name, same.id
                )
                return same
            self._con.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [snap.id, name, start, end, max_seq, rows, content_hash, snap.created_at],
            )
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
        reader = self._con.execute(
            f'SELECT {_CANONICAL_ROW} FROM events WHERE {IN_SNAPSHOT} ORDER BY topic, partition, "offset"',
            window(max_seq, start, end),
        ).to_arrow_reader(65_536)
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
        row = self._con.execute(
            "SELECT * FROM snapshots WHERE name = $k OR id = $k ORDER BY (name = $k) DESC LIMIT 1", {"k": name_or_id}
        ).fetchone()
        return None if row is None else Snapshot(*row)

    # --- derived views ---------------------------------------------------------------------------
    def watch_sessions(self, snapshot: str | Snapshot) -> pa.Table:
        """Per (user, movie): distinct minutes, max minute, first/last time, runtime, completion (≤ 1)."""
        snap = self.snapshot(snapshot)
        table = self._arrow(sessions_sql(), self.snapshot_params(snap))
        unknown = table.filter(pc.is_null(table["runtime"]))
        if unknown.num_rows:
            movies = len(set(unknown["movie_id"].to_pylist()))
            logger.warning(
                "snapshot %s: %d movie(s) without a known runtime; completion uses %d minutes",
                snap.name,
                movies,
                self.default_runtime,
            )
        return table

    def ratings(self, snapshot: str | Snapshot) -> pa.Table:
        """The latest rating per (user, movie), with its time (ties go to the later ingested line)."""
        return self._arrow(f"{ratings_sql()} ORDER BY user_id, movie_id", self.snapshot_params(self.snapshot(snapshot)))

    def requests(self, snapshot: str | Snapshot) -> pa.Table:
        """Recommendation requests, their outcome, and the user's pick: the first watch before the next request."""
        sql = f"""WITH r AS (SELECT user_id, time, seq, server, status, recommendations, error, response_ms,
                       lead(time) OVER (PARTITION BY user_id ORDER BY time, seq) AS next_time
                     FROM events WHERE kind = 'recommendation' AND {IN_SNAPSHOT}),
                 w AS (SELECT user_id, time AS watch_time, movie_id FROM events WHERE kind = 'watch' AND {IN_SNAPSHOT})
            SELECT r.user_id, r.time, r.server, r.status, {answered_sql("r")} AS ok,
                   CASE WHEN r.error IS NULL THEN 'ok' WHEN r.status = 0 THEN 'no_answer' ELSE 'bad_answer' END
                       AS outcome,
                   r.recommendations, r.error, r.response_ms,
                   CASE WHEN r.next_time IS NULL OR w.watch_time < r.next_time THEN w.movie_id END AS picked,
                   coalesce(list_contains(r.recommendations, picked), false) AS picked_recommended
            FROM r ASOF LEFT JOIN w ON r.user_id = w.user_id AND w.watch_time >= r.time
            ORDER BY r.time, r.seq"""
        return self._arrow(sql, self.snapshot_params(self.snapshot(snapshot)))

    def snapshot_params(self, snap: Snapshot) -> dict[str, object]:
        """Query parameters of a snapshot's window (`IN_SNAPSHOT`, `sessions_sql`, `ratings_sql`, `as_of`)."""
        return {
            **window(snap.max_seq, snap.start, snap.end),
            "created": snap.created_at,
            "default_runtime": self.default_runtime,
        }


def sessions_sql() -> str:
    """Per (user, movie) of a snapshot: distinct minutes, max minute, first/last time, runtime, completion."""
    return f"""SELECT w.*, m.runtime,
                   least(1.0, w.minutes / coalesce(m.runtime, $default_runtime))::DOUBLE AS completion
            FROM (SELECT user_id, movie_id, count(DISTINCT minute)::INTEGER AS minutes, max(minute) AS max_minute,
                         min(time) AS first_time, max(time) AS last_time
                  FROM events WHERE kind = 'watch' AND {IN_SNAPSHOT} GROUP BY user_id, movie_id) w
            LEFT JOIN ({as_of("movies")}) m ON m.movie_id = w.movie_id
            ORDER BY w.user_id, w.movie_id"""


def ratings_sql() -> str:
    """The latest rating per (user, movie) of a snapshot, with its time."""
    return f"""SELECT user_id, movie_id, rating, time FROM events WHERE kind = 'rate' AND {IN_SNAPSHOT}
               QUALIFY row_number() OVER (PARTITION BY user_id, movie_id ORDER BY time DESC, seq DESC) = 1"""


def window(max_seq: int, start: datetime | None, end: datetime | None) -> dict[str, object]:
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
            digest.update(memoryview(data)[int(offs[0]) : int(offs[-1])])
        else:  # e.g. string views: slower, same bytes
            digest.update("".join(arr.to_pylist()).encode())


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.isoformat()
