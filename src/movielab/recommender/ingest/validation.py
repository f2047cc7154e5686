"""Validation of consumed lines: the contract's parser, then semantic checks; bad lines go to quarantine.

A line is quarantined with the first reason that applies, checked in this order:
- `malformed`: the contract parser refused it (its reason is kept verbatim);
- `bad_rating`: a rating the contract parses (1..10) but the course edition does not allow (1..5 before 2026);
- `bad_time`: before 1995-01-01, or more than a day after the latest time seen on its partition.
  The world runs in simulated time, so times are only ever compared with other event times, never
  with the wall clock. A partition's reference is the latest time stored for it (for a partition new
  to the store: the latest of any partition, else the median of the batch), raised by each accepted
  line. When most lines of a partition (and at least `min_jump_lines`) would fail, the world's clock
  jumped (e.g. a world restarted at a later date): the reference moves to their median, with a warning;
- `unknown_movie`: a watch or rate line for a movie the world API does not know;
- `duplicate`: a line saying exactly what a stored event at another offset says, or an earlier line of
  the batch (identical content: time, user and every field; for the contract's canonical lines that
  is an identical line). A replayed line at its own (topic, partition, offset) is not a duplicate.

Users are not checked: a user id the API does not know yet is kept (the API may lag behind a new
account), so `unknown_user` is never a quarantine reason; user records are fetched lazily.
An API outage raises `WorldApiUnavailable` before anything is decided or remembered, so no line is
ever quarantined because the API was down.

Parsing is columnar for speed: watch, rate and account lines in their canonical ASCII form are
matched and converted with Arrow kernels (RE2 patterns that accept a subset of what the contract's
parser accepts, with dates checked by a round trip); every other line goes through
`movielab.contract.parse_line`, which stays the authority (tests check that both agree).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from movielab.contract import MalformedEvent, RateEvent, RecommendationEvent, WatchEvent, parse_line
from movielab.contract.editions import CURRENT, Edition
from movielab.contract.slug import MAX_MOVIE_ID_LENGTH, MOVIE_ID_PATTERN
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import CONTENT_COLUMNS, EVENT_SCHEMA, QUARANTINE_SCHEMA, Batch, EventStore
from movielab.recommender.store.records import MovieInfo

logger = logging.getLogger(__name__)

EARLIEST = datetime(1995, 1, 1)
MAX_AHEAD = timedelta(days=1)
REASON_KINDS = ("malformed", "bad_rating", "bad_time", "unknown_movie", "duplicate")

#: One consumed message: (topic, partition, offset, value).
ConsumedLine = tuple[str, int, int, bytes | None]

#: A parsed batch: `idx` is the record index; the other columns are those of the events table.
PARSED_SCHEMA = pa.schema([pa.field("idx", pa.int64())] + [EVENT_SCHEMA.field(n) for n in CONTENT_COLUMNS])

_TIME = r"(?P<time>[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
_USER = r"(?P<user>[1-9][0-9]{0,9})"
_FAST = {  # ASCII-only, anchored: a subset of the contract's line shapes (its \d also takes other digits)
    "watch": rf"^{_TIME},{_USER},GET /data/m/(?P<movie>{MOVIE_ID_PATTERN})/(?P<minute>[1-9][0-9]{{0,4}})\.mpg$",
    "rate": rf"^{_TIME},{_USER},GET /rate/(?P<movie>{MOVIE_ID_PATTERN})=(?P<rating>10|[1-9])$",
    "account": rf"^{_TIME},{_USER},GET /create_account$",
}
_EPOCH = datetime(1970, 1, 1)


def parse_values(values: Sequence[bytes | str | None]) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Parse raw values: (PARSED_SCHEMA table in value order, [(index, reason)] of malformed values)."""
    raw = pa.array(values, pa.binary())
    tables, rest = [], np.arange(len(values))
    for kind, pattern in _FAST.items():
        if len(rest) == 0:
            break
        table, ok = _fast(kind, pattern, raw.take(rest), rest)
        tables.append(table)
        rest = rest[~ok]
    events, malformed = [], []
    for i in rest.tolist():  # everything else: the contract's parser decides
        try:
            events.append((i, parse_line(values[i])))
        except MalformedEvent as exc:
            malformed.append((i, exc.reason))
    tables.append(_events_columns(events))
    parsed = pa.concat_tables(tables)
    return parsed.take(pc.sort_indices(parsed["idx"])), malformed


def _fast(kind: str, pattern: str, raw: pa.Array, idx: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """Rows of `raw` in the canonical shape of `kind`, converted; returns (table, mask of rows taken)."""
    m = pc.extract_regex(raw, pattern)
    ok = pc.is_valid(m)
    if not pc.any(ok).as_py():
        return PARSED_SCHEMA.empty_table(), np.zeros(len(raw), bool)
    text = pc.cast(pc.struct_field(m, "time"), pa.string())
    t = pc.strptime(text, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    # Arrow's strptime rolls 02-30 over to 03-02 and :60 to the next minute: a valid stamp reads back the same.
    for part, lo, hi in (
        (pc.month, 5, 7),
        (pc.day, 8, 10),
        (pc.hour, 11, 13),
        (pc.minute, 14, 16),
        (pc.second, 17, 19),
    ):
        same = pc.equal(part(t), pc.cast(pc.utf8_slice_codeunits(text, lo, hi), pa.int64()))
        ok = pc.and_kleene(ok, pc.fill_null(same, False))
    movie = None
    if kind != "account":
        movie = pc.cast(pc.struct_field(m, "movie"), pa.string())
        ok = pc.and_kleene(ok, pc.less_equal(pc.utf8_length(movie), MAX_MOVIE_ID_LENGTH))
    ok = pc.fill_null(ok, False)
    mask = ok.to_numpy(zero_copy_only=False)
    n = int(mask.sum())
    number = lambda name, typ: pc.cast(pc.cast(pc.struct_field(m, name), pa.string()), typ).filter(ok)  # noqa: E731
    columns = {
        "idx": pa.array(idx[mask]),
        "time": t.filter(ok),
        "user_id": number("user", pa.int64()),
        "kind": pa.array([kind] * n, pa.string()),
        "movie_id": movie.filter(ok) if movie is not None else pa.nulls(n, pa.string()),
        "minute": number("minute", pa.int32()) if kind == "watch" else pa.nulls(n, pa.int32()),
        "rating": number("rating", pa.int32()) if kind == "rate" else pa.nulls(n, pa.int32()),
    }
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in PARSED_SCHEMA}, PARSED_SCHEMA), mask


def _events_columns(events: list[tuple[int, object]]) -> pa.Table:
    """PARSED_SCHEMA columns from (index, typed event) pairs."""
    cols: dict[str, list] = {name: [] for name in PARSED_SCHEMA.names}
    for i, ev in events:
        cls = type(ev)
        rec = cls is RecommendationEvent
        cols["idx"].append(i)
        cols["time"].append(ev.time)  # type: ignore[attr-defined]
        cols["user_id"].append(ev.user_id)  # type: ignore[attr-defined]
        cols["kind"].append(
            {WatchEvent: "watch", RateEvent: "rate", RecommendationEvent: "recommendation"}.get(cls, "account")
        )
        cols["movie_id"].append(getattr(ev, "movie_id", None))
        cols["minute"].append(getattr(ev, "minute", None))
        cols["rating"].append(getattr(ev, "rating", None))
        cols["server"].append(ev.server if rec else None)  # type: ignore[attr-defined]
        cols["status"].append(ev.status if rec else None)  # type: ignore[attr-defined]
        cols["recommendations"].append(list(ev.recommendations) if rec else None)  # type: ignore[attr-defined]
        cols["error"].append(ev.error if rec else None)  # type: ignore[attr-defined]
        cols["response_ms"].append(ev.response_ms if rec else None)  # type: ignore[attr-defined]
        cols["nanosecond"].append(ev.nanosecond or None)  # type: ignore[attr-defined]
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in PARSED_SCHEMA}, PARSED_SCHEMA)


@dataclass
class Prepared:
    """A batch between `Validator.prepare` and `Validator.finish`."""

    records: Sequence[ConsumedLine]
    parsed: pa.Table
    keys: dict[str, np.ndarray]
    good: np.ndarray
    quarantine: list[tuple[int, str, str]]
    movies: dict[str, MovieInfo]
    stored_until: int | None


class Validator:
    """Turns consumed records into a `Batch` of good events and quarantined lines with reasons."""

    def __init__(
        self,
        api: WorldApi,
        store: EventStore,
        *,
        earliest: datetime = EARLIEST,
        max_ahead: timedelta = MAX_AHEAD,
        min_jump_lines: int = 20,
        edition: Edition = CURRENT,
    ) -> None:
        self.api = api
        self.edition = edition
        self.store = store
        self.earliest = earliest
        self.max_ahead = max_ahead
        self.min_jump_lines = min_jump_lines
        self._refs: dict[tuple[str, int], int] | None = None  # latest accepted time (µs) per partition
        self._stored_movies: set[str] | None = None

    def check(self, records: Sequence[ConsumedLine]) -> Batch:
        """Parse and check records; raise WorldApiUnavailable (deciding nothing) if the API cannot answer."""
        return self.finish(self.prepare(records))

    def prepare(self, records: Sequence[ConsumedLine]) -> Prepared:
        """Every check but duplicates (which needs the previous batch stored); may raise WorldApiUnavailable."""
        if self._refs is None:
            self._load_state()
        assert self._refs is not None
        parsed, malformed = parse_values([r[3] for r in records])
        quarantine = [(i, "malformed", reason) for i, reason in malformed]
        has_movie = pc.is_in(parsed["kind"], value_set=pa.array(["watch", "rate"]))
        known, unknown = self.api.movies(pc.unique(parsed["movie_id"].filter(has_movie)).to_pylist())  # may raise
        idx = parsed["idx"].to_numpy()
        keys = _keys(records, idx)
        stored_until = max(self._refs.values(), default=None)  # no stored event is later than this
        good = self._check_ratings(parsed, quarantine)
        good &= self._check_times(keys, parsed, quarantine, good)
        if unknown:
            bad = pc.is_in(parsed["movie_id"], value_set=pa.array(sorted(unknown), pa.string()))
            bad = pc.and_(has_movie, bad).to_numpy() & good
            for i, movie in zip(idx[bad].tolist(), parsed["movie_id"].filter(bad).to_pylist(), strict=True):
                reason = f"movie {movie!r} is unknown to the world API {self.api.base_url}"
                quarantine.append((i, "unknown_movie", reason))
            good &= ~bad
        return Prepared(records, parsed, keys, good, quarantine, known, stored_until)

    def finish(self, prepared: Prepared) -> Batch:
        """Drop duplicates (of stored events and earlier lines) and build the batch to append."""
        p = prepared
        self._drop_duplicates(p.keys, p.parsed, p.good, p.stored_until, p.quarantine)
        events = p.parsed.filter(p.good).drop_columns(["idx"])
        for name, column in p.keys.items():
            events = events.append_column(name, pa.array(column[p.good]))
        stored = self._stored_movies or set()
        new_movies = [info for movie, info in p.movies.items() if movie not in stored]
        return Batch(events.select(EVENT_SCHEMA.names), _quarantine_table(p.records, p.quarantine), new_movies)

    def stored(self, batch: Batch) -> None:
        """Tell the validator that `batch` is in the store (its movie records need not be written again)."""
        if self._stored_movies is not None:
            self._stored_movies.update(m.movie_id for m in batch.movies)

    # --- checks ----------------------------------------------------------------------------------
    def _load_state(self) -> None:
        self._refs = {key: _micros(t) for key, t in self.store.latest_times().items()}
        movies = self.store.movie_records()
        self._stored_movies = {m.movie_id for m in movies}
        self.api.prime(movies=movies)

    def _check_ratings(self, parsed: pa.Table, quarantine: list) -> np.ndarray:
        """Mask of parsed rows whose rating (if any) is on the edition's scale; the others are `bad_rating`."""
        rating = parsed["rating"].to_numpy(zero_copy_only=False)
        rate = parsed["kind"].to_numpy(zero_copy_only=False) == "rate"
        bad = rate & (np.nan_to_num(rating, nan=1) > self.edition.rating_max)
        idx = parsed["idx"].to_numpy()
        for row in np.flatnonzero(bad).tolist():
            quarantine.append((int(idx[row]), "bad_rating", self.edition.check_rating(int(rating[row]))))
        return ~bad

    def _check_times(
        self, keys: dict[str, np.ndarray], parsed: pa.Table, quarantine: list, considered: np.ndarray
    ) -> np.ndarray:
        """Mask of parsed rows with a sane time; the others (of those `considered`) are quarantined as `bad_time`."""
        refs = self._refs
        assert refs is not None
        t_all = pc.cast(parsed["time"], pa.int64()).to_numpy()
        idx = parsed["idx"].to_numpy()
        good = np.ones(len(t_all), bool)
        earliest, ahead = _micros(self.earliest), self.max_ahead // timedelta(microseconds=1)
        fallback = max(refs.values(), default=None)
        topics, partitions = keys["topic"], keys["partition"]
        for topic in np.unique(topics[considered]).tolist():
            in_topic = (topics == topic) & considered
            for partition in np.unique(partitions[in_topic]).tolist():
                key, rows = (topic, partition), np.flatnonzero(in_topic & (partitions == partition))
                t = t_all[rows]
                early = t < earliest
                ref = refs.get(key, fallback)
                if ref is None and (~early).any():  # nothing stored at all: the batch is its own reference
                    ref = int(np.median(t[~early]))
                late = _too_late(t, early, ref, ahead)
                n_late = int(late.sum())
                if n_late >= self.min_jump_lines and n_late * 2 > len(t):
                    jump = int(np.median(t[late]))
                    logger.warning(
                        "%s/%d: event times jump from %s to about %s (%d of %d lines); following the jump",
                        topic,
                        partition,
                        _iso(ref),
                        _iso(jump),
                        n_late,
                        len(t),
                    )
                    ref = jump
                    late = _too_late(t, early, ref, ahead)
                accepted = ~(early | late)
                if accepted.any():
                    refs[key] = max(int(t[accepted].max()), ref if ref is not None else earliest)
                for row, tt, is_early in zip(
                    rows[~accepted].tolist(), t[~accepted].tolist(), early[~accepted].tolist(), strict=True
                ):
                    if is_early:
                        reason = f"time {_iso(tt)} is before {self.earliest.date().isoformat()}"
                    else:
                        reason = (
                            f"time {_iso(tt)} is more than {self.max_ahead} after the latest time "
                            f"{_iso(ref)} seen on {topic}/{partition}"
                        )
                    quarantine.append((int(idx[row]), "bad_time", reason))
                good[rows[~accepted]] = False
        return good

    def _drop_duplicates(
        self,
        keys: dict[str, np.ndarray],
        parsed: pa.Table,
        good: np.ndarray,
        stored_until: int | None,
        quarantine: list,
    ) -> None:
        """Clear from `good` (and quarantine) the rows repeating a stored event or an earlier row."""
        rows = np.flatnonzero(good)
        if len(rows) == 0:
            return
        t = pc.cast(parsed["time"], pa.int64()).to_numpy()[rows]
        # Only rows sharing (time, user) with another row, or not later than every stored event, can repeat one.
        # A wrapping int64 mix of the two is enough to find them: a collision only makes an extra suspect.
        with np.errstate(over="ignore"):
            who = t * np.int64(0x9E3779B97F4A7C15 - (1 << 64)) + parsed["user_id"].to_numpy()[rows]
        order = np.argsort(who, kind="stable")
        same = np.diff(who[order]) == 0
        suspect = np.zeros(len(rows), bool)
        suspect[order[1:][same]] = True
        suspect[order[:-1][same]] = True
        if stored_until is not None:
            suspect |= t <= stored_until
        if not suspect.any():
            return
        chosen = rows[suspect]
        table = parsed.take(pa.array(chosen)).select(["idx", *CONTENT_COLUMNS])
        for name, column in keys.items():
            table = table.append_column(name, pa.array(column[chosen]))
        row_of = dict(zip(parsed["idx"].to_numpy()[chosen].tolist(), chosen.tolist(), strict=True))
        for i, (tp, p, o, stored) in sorted(self.store.duplicates(table).items()):
            where = f"the stored line at {tp}/{p}@{o}" if stored else f"the line at {tp}/{p}@{o} earlier in the batch"
            quarantine.append((i, "duplicate", f"identical to {where}"))
            good[row_of[i]] = False


def _too_late(t: np.ndarray, early: np.ndarray, ref: int | None, ahead: int) -> np.ndarray:
    """Lines more than `ahead` after the running latest accepted time, which starts at `ref`."""
    late = np.zeros(len(t), bool)
    if ref is None or not ((t > ref + ahead) & ~early).any():
        return late
    latest = ref
    for j, (tt, e) in enumerate(zip(t.tolist(), early.tolist(), strict=True)):  # rare: only when something is late
        if e:
            continue
        if tt > latest + ahead:
            late[j] = True
        elif tt > latest:
            latest = tt
    return late


def _keys(records: Sequence[ConsumedLine], idx: np.ndarray) -> dict[str, np.ndarray]:
    """topic, partition and offset of the parsed rows, as arrays."""
    rows = [records[i] for i in idx.tolist()]
    n = len(rows)
    return {
        "topic": np.array([r[0] for r in rows], dtype=object),
        "partition": np.fromiter((r[1] for r in rows), np.int32, n),
        "offset": np.fromiter((r[2] for r in rows), np.int64, n),
    }


def _quarantine_table(records: Sequence[ConsumedLine], quarantine: list[tuple[int, str, str]]) -> pa.Table:
    """Columns of QUARANTINE_SCHEMA, in record order."""
    quarantine.sort()
    rows = [(records[i], kind, reason) for i, kind, reason in quarantine]
    return pa.table(
        {
            "topic": pa.array([r[0] for r, _, _ in rows], pa.string()),
            "partition": pa.array([r[1] for r, _, _ in rows], pa.int32()),
            "offset": pa.array([r[2] for r, _, _ in rows], pa.int64()),
            "line": pa.array([_raw(r[3]) for r, _, _ in rows], pa.binary()),
            "reason_kind": pa.array([k for _, k, _ in rows], pa.string()),
            "reason": pa.array([reason for _, _, reason in rows], pa.string()),
        },
        schema=QUARANTINE_SCHEMA,
    )


def _raw(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)  # type: ignore[arg-type]


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _iso(us: int | None) -> str:
    return "none" if us is None else (_EPOCH + timedelta(microseconds=us)).isoformat()
