"""Day plans and the queue of session starts.

Each simulated UTC day, every user draws Poisson(activity) sessions; each session's
local time of day comes from a diurnal curve (evening peak, night trough) shifted by
the user's UTC offset. Follow-up sessions (binges, first sessions of new accounts)
are pushed into the same queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DAY = 86_400

# Relative share of sessions starting in each local hour 0..23 (streaming peaks after dinner).
DIURNAL = np.array(
    [
        0.60,
        0.35,
        0.20,
        0.12,
        0.10,
        0.12,
        0.20,
        0.35,
        0.45,
        0.50,
        0.55,
        0.60,
        0.70,
        0.70,
        0.70,
        0.75,
        0.85,
        1.00,
        1.30,
        1.60,
        1.80,
        1.70,
        1.35,
        0.95,
    ]
)


def plan_day(
    day_start: float,
    activity: np.ndarray,
    utc_offset: np.ndarray,
    created_at: np.ndarray,
    rng: np.random.Generator,
    diurnal: np.ndarray = DIURNAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Session starts (times, user rows) of one UTC day for users 0..len(activity)-1, sorted by time."""
    n_sessions = rng.poisson(activity)
    rows = np.repeat(np.arange(len(activity), dtype=np.int32), n_sessions)
    p = diurnal / diurnal.sum()
    hour = rng.choice(24, size=len(rows), p=p)
    local = hour * 3600.0 + rng.random(len(rows)) * 3600.0
    utc = np.mod(local - utc_offset[rows].astype(np.float64) * 3600.0, DAY)
    times = day_start + utc
    keep = times >= created_at[rows]
    times, rows = times[keep], rows[keep]
    order = np.argsort(times, kind="stable")
    return times[order], rows[order]


@dataclass
class SessionQueue:
    """Session starts waiting for their time: the day plans plus pushed follow-ups."""

    _plan_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    _plan_u: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    _pos: int = 0
    _push_t: list[np.ndarray] = field(default_factory=list)
    _push_u: list[np.ndarray] = field(default_factory=list)

    def add_plan(self, times: np.ndarray, rows: np.ndarray) -> None:
        """Append a day plan (sorted, later than every plan already added)."""
        self._plan_t = np.concatenate([self._plan_t[self._pos :], times])
        self._plan_u = np.concatenate([self._plan_u[self._pos :], rows]).astype(np.int32)
        self._pos = 0

    def push(self, times: np.ndarray, rows: np.ndarray) -> None:
        """Add follow-up sessions at any future times."""
        if len(times):
            self._push_t.append(np.asarray(times, np.float64))
            self._push_u.append(np.asarray(rows, np.int32))

    def pop_until(self, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        """Every queued session start before t_end, sorted by time."""
        end = int(np.searchsorted(self._plan_t, t_end, side="left"))
        parts_t, parts_u = [self._plan_t[self._pos : end]], [self._plan_u[self._pos : end]]
        self._pos = end
        if self._push_t:
            pt, pu = np.concatenate(self._push_t), np.concatenate(self._push_u)
            due = pt < t_end
            parts_t.append(pt[due])
            parts_u.append(pu[due])
            self._push_t, self._push_u = ([pt[~due]], [pu[~due]]) if (~due).any() else ([], [])
        t, u = np.concatenate(parts_t), np.concatenate(parts_u)
        order = np.argsort(t, kind="stable")
        return t[order], u[order]

    def __len__(self) -> int:
        return len(self._plan_t) - self._pos + sum(len(p) for p in self._push_t)
