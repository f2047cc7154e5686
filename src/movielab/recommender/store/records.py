"""Users and movies as the world API described them, with history, and what is derived from them.

A record changed on a later fetch becomes the current one and the old one goes to a history table, so a
snapshot reads the records as they were when it was taken (`as_of`). Also the demographic segment of a user
(`segment_of`: the cold-start fallback's unit) and the stored cold-start lists. `RecordStore` is a part of
`EventStore` (one DuckDB connection and lock); it is not used alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

# Demographic segments for cold-start popularity: ML-1M age buckets × gender.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
N_SEGMENTS = (len(AGE_EDGES) + 1) * 2

USER_FIELDS = ("user_id", "age", "gender", "occupation", "likes", "dislikes")
MOVIE_FIELDS = ("movie_id", "runtime", "genres", "title", "license_cost", "year")
_HISTORY = {"users": "user_history", "movies": "movie_history"}
# SQL: a user's segment inputs, age (-1 unknown) and gender (0 = F, 1 = M, -1 unknown).
SEGMENT_COLUMNS = """user_id, coalesce(age, -1) AS age,
                     CASE gender WHEN 'F' THEN 0 WHEN 'M' THEN 1 ELSE -1 END AS gender"""


def segment_of(age: np.ndarray, gender: np.ndarray) -> np.ndarray:
    """Segment index 0..13 from age in years and gender (0 = F, 1 = M); -1 where either is unknown (< 0)."""
    age, gender = np.asarray(age), np.asarray(gender)
    seg = np.searchsorted(np.asarray(AGE_EDGES), age, side="right") * 2 + gender
    return np.where((age < 0) | (gender < 0), -1, seg).astype(np.int16)


@dataclass(frozen=True, slots=True)
class MovieInfo:
    """What the recommender keeps of a movie record: runtime in minutes (None if absent), genre names, title,
    license cost in USD per play (2026 edition; None before or if absent) and release year (None if absent)."""

    movie_id: str
    runtime: int | None
    genres: tuple[str, ...]
    title: str | None
    license_cost: float | None = None
    year: int | None = None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What the world API tells about a user; `likes`/`dislikes` are the 2026 edition's free-text answers
    (None before 2026 or when the record has none, "" when the user left the answer empty)."""

    user_id: int
    age: int | None
    gender: str | None
    occupation: str | None
    likes: str | None = None
    dislikes: str | None = None


def check_kind(kind: str) -> None:
    """Raise ValueError unless `kind` is `users` or `movies`."""
    if kind not in _HISTORY:
        raise ValueError(f"record kind {kind!r} is unknown: choose users or movies")


def _records_table(kind: str, records: list) -> pa.Table:
    """Arrow rows of `users` (UserInfo) or `movies` (MovieInfo) records, in the table's column order."""
    if kind == "movies":
        return pa.table(
            {
                "movie_id": pa.array([m.movie_id for m in records], pa.string()),
                "runtime": pa.array([m.runtime for m in records], pa.int32()),
                "genres": pa.array([list(m.genres) for m in records], pa.list_(pa.string())),
                "title": pa.array([m.title for m in records], pa.string()),
                "license_cost": pa.array([m.license_cost for m in records], pa.float64()),
                "year": pa.array([m.year for m in records], pa.int32()),
            }
        )
    return pa.table(
        {
            "user_id": pa.array([u.user_id for u in records], pa.int64()),
            "age": pa.array([u.age for u in records], pa.int32()),
            "gender": pa.array([u.gender for u in records], pa.string()),
            "occupation": pa.array([u.occupation for u in records], pa.string()),
            "likes": pa.array([u.likes for u in records], pa.string()),
            "dislikes": pa.array([u.dislikes for u in records], pa.string()),
        }
    )


def as_of(kind: str) -> str:
    """`users` or `movies` as they were at `$created`: the record then current (current or replaced later)."""
    cols = ", ".join(USER_FIELDS if kind == "users" else MOVIE_FIELDS)
    return f"""SELECT {cols} FROM {kind} WHERE fetched_at <= $created
               UNION ALL SELECT {cols} FROM {_HISTORY[kind]} WHERE fetched_at <= $created AND replaced_at > $created"""


def utcnow() -> datetime:
    """Now in UTC as a naive datetime (how the store keeps times)."""
    return datetime.now(UTC).replace(tzinfo=None)


class RecordStore:
    """The user/movie record and cold-start-list part of `EventStore` (needs its `_con`, `_lock`, `_query`)."""

    def add_records(self, movies: Iterable[MovieInfo] = (), users: Iterable[UserInfo] = ()) -> None:
        """Store new movie and user records (an id already stored keeps its record: see `refresh_records`)."""
        with self._lock:
            self._insert_records(list(movies), list(users), utcnow())

    def refresh_records(self, movies: Iterable[MovieInfo] = (), users: Iterable[UserInfo] = ()) -> None:
        """Store records fetched again: changed details become the current record (the old one goes to history,
        so snapshots keep reading what they were taken with); every given id counts as checked now."""
        movies, users = list(movies), list(users)
        now = utcnow()
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                for kind, records, fields in (("movies", movies, MOVIE_FIELDS), ("users", users, USER_FIELDS)):
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
            self._con.execute(
                f"""INSERT INTO {history} ({cols}, fetched_at, replaced_at)
                                  SELECT {", ".join("c." + f for f in fields)}, c.fetched_at, $now
                                  FROM {kind} c JOIN (SELECT DISTINCT ON ({key}) * FROM _records) r USING ({key})
                                  WHERE {changed}""",
                {"now": now},
            )
            self._con.execute(
                f"""INSERT OR REPLACE INTO {kind} ({cols}, fetched_at) SELECT {cols}, $now FROM (
                                      SELECT DISTINCT ON ({key}) r.* FROM _records r LEFT JOIN {kind} c USING ({key})
                                      WHERE c.{key} IS NULL OR {changed})""",
                {"now": now},
            )
        finally:
            self._con.unregister("_records")

    def mark_checked(self, kind: str, ids: Iterable[int | str]) -> None:
        """Record that `users` or `movies` ids were asked for again now (e.g. the API no longer knows them)."""
        check_kind(kind)
        with self._lock:
            self._checked(kind, list(ids), utcnow())

    def _checked(self, kind: str, ids: list, now: datetime) -> None:
        if not ids:
            return
        self._con.register("_ids", pa.table({"id": pa.array([str(i) for i in ids], pa.string())}))
        try:
            self._con.execute(
                "INSERT OR REPLACE INTO record_checks SELECT DISTINCT $kind, id, $now FROM _ids",
                {"kind": kind, "now": now},
            )
        finally:
            self._con.unregister("_ids")

    def stale_records(self, kind: str, checked_before: datetime, limit: int = 200) -> list:
        """Ids of up to `limit` stored `users` or `movies` records last fetched or checked before
        `checked_before`, oldest first (what a refresh asks for next)."""
        check_kind(kind)
        key = "user_id" if kind == "users" else "movie_id"
        rows = self._query(
            f"""SELECT {key} FROM {kind} LEFT JOIN record_checks c ON c.kind = $kind
                                   AND c.id = {key}::VARCHAR
                               WHERE coalesce(c.checked_at, fetched_at) < $before
                               ORDER BY coalesce(c.checked_at, fetched_at), {key} LIMIT $limit""",
            {"kind": kind, "before": checked_before, "limit": int(limit)},
        )
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
            self._con.execute(
                f"INSERT OR IGNORE INTO {name} ({cols}, fetched_at) SELECT DISTINCT ON (1) *, $now FROM _records",
                {"now": now},
            )
        finally:
            self._con.unregister("_records")

    def movie_records(self) -> list[MovieInfo]:
        """Every stored movie record (to prime an API cache after a restart)."""
        rows = self._query("SELECT movie_id, runtime, genres, title, license_cost, year FROM movies")
        return [MovieInfo(m, r, tuple(g or ()), t, c, y) for m, r, g, t, c, y in rows]

    def movie_costs(self) -> dict[str, float]:
        """License cost in USD per play of every stored movie whose record gives one (2026 edition)."""
        return {
            m: float(c)
            for m, c in self._query("SELECT movie_id, license_cost FROM movies WHERE license_cost IS NOT NULL")
        }

    def user_record(self, user_id: int) -> UserInfo | None:
        """The stored record of one user, None if none is stored."""
        rows = self._query(
            "SELECT user_id, age, gender, occupation, likes, dislikes FROM users WHERE user_id = $u",
            {"u": int(user_id)},
        )
        return UserInfo(*rows[0]) if rows else None

    # --- cold start ------------------------------------------------------------------------------
    def segment_popularity(self, since: datetime | None = None, n: int = 100) -> dict[int, list[str]]:
        """Up to `n` movie ids per demographic segment (-1: everyone), by distinct users who watched or rated
        them since `since` (all events when None), most first (ties by id): the demographic fallback."""
        rows = self._query(
            f"""WITH u AS (SELECT {SEGMENT_COLUMNS} FROM users),
                                   e AS (SELECT DISTINCT user_id, movie_id FROM events
                                         WHERE kind IN ('watch', 'rate') AND time >= $since)
                              SELECT e.movie_id, u.age, u.gender, count(*) FROM e LEFT JOIN u USING (user_id)
                              GROUP BY ALL""",
            {"since": since or datetime.min},
        )
        if not rows:
            return {-1: []}
        movies = [r[0] for r in rows]
        seg = segment_of(
            np.array([-1 if r[1] is None else r[1] for r in rows]),
            np.array([-1 if r[2] is None else r[2] for r in rows]),
        )
        counts: dict[int, dict[str, int]] = {}
        for movie, s, c in zip(movies, seg.tolist(), (r[3] for r in rows), strict=True):
            for key in {-1, s}:
                counts.setdefault(key, {})
                counts[key][movie] = counts[key].get(movie, 0) + int(c)
        return {k: [m for m, _ in sorted(v.items(), key=lambda mc: (-mc[1], mc[0]))[:n]] for k, v in counts.items()}

    def save_coldstart(self, lists: Iterable) -> int:
        """Store cold-start lists (`ingest.coldstart.ColdStartList`s); a user's newer list replaces the older one.
        Returns how many were written."""
        lists = list(lists)
        if not lists:
            return 0
        table = pa.table(
            {
                "user_id": pa.array([c.user_id for c in lists], pa.int64()),
                "movies": pa.array([list(c.movies) for c in lists], pa.list_(pa.string())),
                "liked": pa.array([list(c.liked) for c in lists], pa.list_(pa.string())),
                "disliked": pa.array([list(c.disliked) for c in lists], pa.list_(pa.string())),
                "genres": pa.array([list(c.genres) for c in lists], pa.list_(pa.string())),
                "matcher": pa.array([c.matcher for c in lists], pa.string()),
                "fallback": pa.array([c.fallback for c in lists], pa.string()),
            }
        )
        with self._lock:
            self._con.register("_cold", table)
            try:
                self._con.execute(
                    "INSERT OR REPLACE INTO coldstart_lists SELECT DISTINCT ON (user_id) *, $now FROM _cold",
                    {"now": utcnow()},
                )
            finally:
                self._con.unregister("_cold")
        return len(lists)

    def coldstart_lists(self) -> dict[int, tuple[list[str], str]]:
        """Every stored cold-start list: user id → (movie ids best first, matcher that made it)."""
        return {u: (movies, matcher) for u, movies, _, _, _, matcher, _ in self.coldstart_rows()}

    def coldstart_rows(self) -> list[tuple[int, list[str], list[str], list[str], list[str], str, str]]:
        """Every stored cold-start list in full, oldest first: (user id, movies, liked, disliked, genres, matcher,
        fallback), the fields of `ingest.coldstart.ColdStartList` (the operator serves them again after a restart)."""
        return [
            (int(u), list(m), list(li or ()), list(d or ()), list(g or ()), str(k), str(f))
            for u, m, li, d, g, k, f in self._query(
                "SELECT user_id, movies, liked, disliked, genres, matcher, fallback FROM coldstart_lists ORDER BY created_at, user_id"
            )
        ]

    def user_segments(self) -> dict[int, int]:
        """Demographic segment (`segment_of`) of every user the world API has described, -1 when unknown."""
        users = self._arrow(f"SELECT {SEGMENT_COLUMNS} FROM users")
        seg = segment_of(users["age"].to_numpy(), users["gender"].to_numpy())
        return dict(zip(users["user_id"].to_numpy().tolist(), seg.tolist(), strict=True))

    def user_ids(self) -> set[int]:
        """Ids of the users whose record is stored."""
        return {int(u) for (u,) in self._query("SELECT user_id FROM users")}

    def users_without_record(self) -> set[int]:
        """Ids of users with events but no stored record (to fetch after a restart)."""
        rows = self._query("SELECT DISTINCT user_id FROM events ANTI JOIN users USING (user_id)")
        return {int(u) for (u,) in rows}
