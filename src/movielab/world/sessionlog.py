"""The hidden session log: one record per recommendation request, for scoring teams from the truth.

The engine appends, per tick and per lane, one batch of requests (`requests`), the picks of that
batch (`picks`) and, when viewings end, how much was watched (`ended`): three array calls, no
per-event Python. Records are kept in columnar per-day buffers (the day is the UTC day of the
request) and written by `flush` as one `.npz` file per day under `<state>/sessions/` (numeric
arrays only, read back with `allow_pickle=False`). Viewing ends are stored in the day they end,
keyed by the session id they belong to, so a viewing that crosses midnight needs no rewrite.

Never served to teams: it holds the true scores of their users' picks.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from movielab.world.errors import WorldError

logger = logging.getLogger(__name__)

DAY = 86400
MAX_RECS = 20
_DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.npz")

#: Columns of a day's sessions: name → dtype (`served` is (n, MAX_RECS), -1 padded).
SESSION_COLUMNS: dict[str, type] = {
    "sid": np.int64,  # session id, unique in the run
    "time": np.float64,  # unix seconds of the request
    "team": np.int16,  # team index, 0-based (user id - 1) % teams
    "row": np.int32,  # user row (user id - 1)
    "status": np.int16,  # HTTP status, 0 without an HTTP answer
    "ms": np.int32,  # response time in whole ms
    "ok": np.bool_,  # 200 with a valid list within the time-out
    "served": np.int32,  # (n, MAX_RECS) catalog rows served, best first, -1 padded
    "picked": np.bool_,  # the session started a viewing (new pick or resume)
    "movie": np.int32,  # catalog row picked, -1 when none
    "resumed": np.bool_,  # the viewing resumed a paused movie
    "from_list": np.bool_,  # a new pick (not a resume) of a movie in the served list
    "rank": np.int8,  # 0-based rank of the picked movie in the served list, -1 if not in it
    "true_score": np.float32,  # the pick's true score (stars, mu + b_u + b_i + p·q at pick time), nan if none
}
#: Columns of a day's viewing ends, joined to sessions by `sid`.
END_COLUMNS: dict[str, type] = {"end_sid": np.int64, "end_time": np.float64, "minutes": np.int32, "completed": np.bool_}


class SessionLogError(WorldError, ValueError):
    """A session-log call or file that does not fit the log (wrong shapes, unknown day file); names it."""


def day_of(t: float) -> str:
    """The UTC day `YYYY-MM-DD` of unix time `t` (seconds)."""
    return dt.datetime.fromtimestamp(float(t), dt.UTC).strftime("%Y-%m-%d")


def day_start(day: str) -> float:
    """Unix seconds of 00:00 UTC of `day` (`YYYY-MM-DD`); SessionLogError when malformed."""
    try:
        return dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise SessionLogError(f"day {day!r}: expected YYYY-MM-DD") from None


@dataclass
class DayLog:
    """One day's records as arrays: `sessions` (SESSION_COLUMNS) and `ends` (END_COLUMNS)."""

    day: str
    sessions: dict[str, np.ndarray]
    ends: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.sessions["sid"])

    @classmethod
    def concat(cls, day: str, parts: list[DayLog]) -> DayLog:
        """Several logs' records as one (sessions and ends concatenated in order)."""
        return cls(
            day, _concat([p.sessions for p in parts], SESSION_COLUMNS), _concat([p.ends for p in parts], END_COLUMNS)
        )


def _concat(chunks: list[dict[str, np.ndarray]], columns: dict[str, type]) -> dict[str, np.ndarray]:
    out = {}
    for name, dtype in columns.items():
        parts = [c[name] for c in chunks]
        if parts:
            out[name] = np.concatenate(parts).astype(dtype, copy=False)
        else:
            out[name] = np.empty((0, MAX_RECS) if name == "served" else 0, dtype)
    return out


class SessionLog:
    """Columnar per-day buffers of sessions and viewing ends, for `n_teams` teams; flushed to `state_dir`.

    Without `state_dir` everything stays in memory (`day(...)` still answers). A user has at most one
    viewing in progress, so a viewing end is matched to its session through the user's row.
    """

    def __init__(self, n_teams: int, state_dir: str | Path | None = None) -> None:
        if n_teams < 1:
            raise SessionLogError(f"a session log needs at least one team, got {n_teams}")
        self.n_teams = n_teams
        self.dir = Path(state_dir) / "sessions" if state_dir is not None else None
        self._sessions: dict[str, list[dict[str, np.ndarray]]] = {}
        self._ends: dict[str, list[dict[str, np.ndarray]]] = {}
        self._flushed: set[str] = set()
        self._next_sid = 0
        self._last: dict[str, np.ndarray] | None = None  # the batch `picks` fills
        self._open = np.full(0, -1, np.int64)  # row → sid of its viewing in progress
        self._names: dict[int, str] = {}  # day number → YYYY-MM-DD
        self._io = threading.Lock()  # day files: the scoring thread writes, `day` reads

    # --- appended by the engine -----------------------------------------------------------
    def requests(
        self, times: np.ndarray, rows: np.ndarray, status: np.ndarray, ms: np.ndarray, served: np.ndarray
    ) -> None:
        """One batch of requests: times (n,) s, user rows (n,), status (n,), ms (n,), served rows (n, ≤20) -1 padded."""
        n = len(rows)
        served = np.asarray(served, np.int32)
        if not (len(times) == len(status) == len(ms) == served.shape[0] == n) or served.ndim != 2:
            raise SessionLogError(f"requests: {n} rows need as many times, statuses, ms and served lists")
        if served.shape[1] < MAX_RECS:
            served = np.hstack([served, np.full((n, MAX_RECS - served.shape[1]), -1, np.int32)])
        rows = np.asarray(rows, np.int32)
        status = np.asarray(status, np.int16)
        batch = {
            "sid": np.arange(self._next_sid, self._next_sid + n, dtype=np.int64),
            "time": np.asarray(times, np.float64),
            "team": (rows % self.n_teams).astype(np.int16),
            "row": rows,
            "status": status,
            "ms": np.asarray(ms, np.int32),
            "ok": (status == 200) & (served[:, 0] >= 0),
            "served": served[:, :MAX_RECS],
            "picked": np.zeros(n, np.bool_),
            "movie": np.full(n, -1, np.int32),
            "resumed": np.zeros(n, np.bool_),
            "from_list": np.zeros(n, np.bool_),
            "rank": np.full(n, -1, np.int8),
            "true_score": np.full(n, np.nan, np.float32),
        }
        self._next_sid += n
        self._commit()
        self._last = batch  # appended at the next batch, read or flush: `picks` fills it first

    def _commit(self) -> None:
        if self._last is not None and len(self._last["sid"]):
            self._append(self._sessions, self._last, self._last["time"])
        self._last = None

    def picks(self, go: np.ndarray, movie: np.ndarray, resumed: np.ndarray, true_score: np.ndarray) -> None:
        """The last batch's picks: `go` (n,) mask of sessions that started a viewing, and per such session its
        movie row, whether it resumed a paused movie and its true score (stars)."""
        b = self._last
        go = np.asarray(go, np.bool_)
        if b is None or len(go) != len(b["sid"]) or not (len(movie) == len(resumed) == len(true_score) == go.sum()):
            raise SessionLogError("picks: needs the mask of the last requests batch and one movie per pick")
        idx = np.flatnonzero(go)
        movie = np.asarray(movie, np.int32)
        resumed = np.asarray(resumed, np.bool_)
        hit = b["served"][idx] == movie[:, None]
        in_list = hit.any(axis=1)
        b["picked"][idx] = True
        b["movie"][idx] = movie
        b["resumed"][idx] = resumed
        b["from_list"][idx] = in_list & ~resumed
        b["rank"][idx] = np.where(in_list, hit.argmax(axis=1), -1)
        b["true_score"][idx] = true_score
        rows = b["row"][idx]
        if len(rows) and rows.max() >= len(self._open):
            grown = np.full(max(int(rows.max()) + 1, 2 * len(self._open)), -1, np.int64)
            grown[: len(self._open)] = self._open
            self._open = grown
        self._open[rows] = b["sid"][idx]

    def ended(self, rows: np.ndarray, minutes: np.ndarray, completed: np.ndarray, end_time: np.ndarray) -> None:
        """Viewings that ended: user rows (n,), minutes watched, completed (watched the last minute), end time (s)."""
        rows = np.asarray(rows, np.int64)
        known = rows < len(self._open)
        sid = np.full(len(rows), -1, np.int64)
        sid[known] = self._open[rows[known]]
        has = sid >= 0
        if not has.all():  # a viewing started before the log was attached
            rows, sid = rows[has], sid[has]
            minutes, completed, end_time = (np.asarray(a)[has] for a in (minutes, completed, end_time))
        if len(rows) == 0:
            return
        self._open[rows] = -1
        batch = {
            "end_sid": sid,
            "end_time": np.asarray(end_time, np.float64),
            "minutes": np.asarray(minutes, np.int32),
            "completed": np.asarray(completed, np.bool_),
        }
        self._append(self._ends, batch, batch["end_time"])

    def _append(self, store: dict[str, list], batch: dict[str, np.ndarray], times: np.ndarray) -> None:
        first, last = int(times.min() // DAY), int(times.max() // DAY)
        days = np.floor(times / DAY).astype(np.int64) if first != last else None  # a tick lies within one day
        for d in range(first, last + 1):
            name = self._names.get(d) or self._names.setdefault(d, day_of(d * DAY))
            if name in self._flushed:
                logger.warning(
                    "session log: a record of %s arrived after the day was taken; kept for the next flush", name
                )
                self._flushed.discard(name)
            if days is None:
                store.setdefault(name, []).append(batch)
            elif (sel := days == d).any():
                store.setdefault(name, []).append({k: v[sel] for k, v in batch.items()})

    # --- reading and writing -----------------------------------------------------------------
    def day(self, day: str) -> DayLog:
        """The records of `day` (`YYYY-MM-DD`): from its file if flushed, plus what is still in memory."""
        self._commit()
        parts = []
        with self._io:
            if self.dir is not None and (self.dir / f"{day}.npz").exists():
                parts.append(read_day(self.dir / f"{day}.npz"))
        parts.append(
            DayLog(
                day,
                _concat(self._sessions.get(day, []), SESSION_COLUMNS),
                _concat(self._ends.get(day, []), END_COLUMNS),
            )
        )
        return DayLog.concat(day, parts)

    def days(self) -> list[str]:
        """Every day with records, in order (flushed or in memory)."""
        self._commit()
        on_disk = (
            {m.group(1) for p in self.dir.glob("*.npz") if (m := _DAY_FILE.fullmatch(p.name))} if self.dir else set()
        )
        return sorted(on_disk | set(self._sessions) | set(self._ends))

    def take(self, day: str) -> DayLog:
        """Remove `day`'s records from memory and return them (call from the engine's thread; then `write` anywhere)."""
        self._commit()
        log = DayLog(
            day, _concat(self._sessions.pop(day, []), SESSION_COLUMNS), _concat(self._ends.pop(day, []), END_COLUMNS)
        )
        self._flushed.add(day)
        return log

    def write(self, log: DayLog) -> Path | None:
        """Write a taken day to `<state>/sessions/<day>.npz` (merged with the file if there is one; dir 0700, file
        0600: hidden truth). Touches no buffer, so a scoring thread may call it. None without a state dir."""
        if self.dir is None:
            return None
        with self._io:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.dir / f"{log.day}.npz"
            if path.exists():
                log = _merge(read_day(path), log)
            tmp = path.with_suffix(".tmp.npz")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                np.savez(f, **log.sessions, **log.ends)
            tmp.replace(path)
        return path

    def state(self) -> dict[str, np.ndarray]:
        """What a checkpoint keeps (arrays): the next session id and each user's viewing in progress.

        The buffered records are written to their day files first (a state dir is needed), so after a restore
        a re-simulated session replaces its record of the same id instead of doubling it.
        """
        self._commit()
        if self.dir is None:
            raise SessionLogError("checkpointing a session log needs a state dir for its buffered days")
        for name in sorted(set(self._sessions) | set(self._ends)):
            self.write(
                DayLog(
                    name,
                    _concat(self._sessions.pop(name, []), SESSION_COLUMNS),
                    _concat(self._ends.pop(name, []), END_COLUMNS),
                )
            )
        return {"next_sid": np.array([self._next_sid], np.int64), "open": self._open.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state()` of a checkpoint; SessionLogError when it lacks a field."""
        try:
            self._next_sid, self._open = int(state["next_sid"][0]), np.asarray(state["open"], np.int64).copy()
        except (KeyError, IndexError, TypeError) as exc:
            raise SessionLogError(f"session-log checkpoint state is incomplete: {exc!r}") from None
        self._sessions, self._ends, self._last = {}, {}, None

    def flush(self, before: float) -> list[Path]:
        """Write every day that ends at or before unix time `before` (`math.inf`: every day) and drop it from memory.

        A day already on disk is merged with its new records. Without a state dir, nothing is written.
        """
        self._commit()
        if self.dir is None:
            return []
        names = [d for d in sorted(set(self._sessions) | set(self._ends)) if day_start(d) + DAY <= before]
        return [self.write(self.take(name)) for name in names]


def _merge(old: DayLog, new: DayLog) -> DayLog:
    """`old` then `new`, a record of `new` replacing one of `old` with the same session id (replayed after a restore)."""
    keep_s = ~np.isin(old.sessions["sid"], new.sessions["sid"])
    keep_e = ~np.isin(old.ends["end_sid"], new.ends["end_sid"])
    old = DayLog(old.day, {k: v[keep_s] for k, v in old.sessions.items()}, {k: v[keep_e] for k, v in old.ends.items()})
    return DayLog.concat(new.day, [old, new])


def read_day(path: str | Path) -> DayLog:
    """A day's records from a `.npz` file written by `SessionLog.flush` (no pickles); SessionLogError if malformed."""
    path = Path(path)
    m = _DAY_FILE.fullmatch(path.name)
    if m is None:
        raise SessionLogError(f"session file {path}: name must be YYYY-MM-DD.npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise SessionLogError(f"session file {path} cannot be read: {exc}") from None
    missing = [c for c in (*SESSION_COLUMNS, *END_COLUMNS) if c not in data]
    if missing:
        raise SessionLogError(f"session file {path} lacks columns {', '.join(missing)}")
    return DayLog(m.group(1), {c: data[c] for c in SESSION_COLUMNS}, {c: data[c] for c in END_COLUMNS})


def read_days(state_dir: str | Path) -> list[DayLog]:
    """Every flushed day under `<state_dir>/sessions/`, in order."""
    folder = Path(state_dir) / "sessions"
    return [read_day(p) for p in sorted(folder.glob("*.npz")) if _DAY_FILE.fullmatch(p.name)]
