"""Simulated time: real time (×1), accelerated (×N) or as fast as possible.

Simulated time is float unix seconds (UTC). The clock maps it to wall time so a
paced run emits each event when its simulated moment comes.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime


def parse_start(text: str) -> float:
    """Unix seconds of an ISO-8601 start date (`2026-03-20` or `2026-03-20T08:00:00`, taken as UTC)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start {text!r} is not an ISO-8601 date or date-time") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


class SimClock:
    """Paces simulated time against the wall clock; `speed=None` runs as fast as possible."""

    def __init__(self, start: float, speed: float | None = None, sleep=time.sleep, now=time.monotonic) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"clock speed must be positive or None (as fast as possible), got {speed!r}")
        self.start = start
        self.speed = speed
        self._sleep = sleep
        self._now = now
        self._wall0 = now()

    @property
    def paced(self) -> bool:
        """True unless the clock runs as fast as possible."""
        return self.speed is not None

    def rebase(self, sim_time: float) -> None:
        """Make `sim_time` the simulated time of this wall-clock moment (a restored world resumes without a jump)."""
        self.start = sim_time
        self._wall0 = self._now()

    def wait_until(self, sim_time: float) -> None:
        """Block until the wall clock reaches `sim_time` (no-op when unpaced or already late)."""
        if self.speed is None:
            return
        due = self._wall0 + (sim_time - self.start) / self.speed
        delay = due - self._now()
        if delay > 0:
            self._sleep(delay)


def second_stamps(t0: int, n: int) -> list[str]:
    """`YYYY-MM-DDTHH:MM:SS` for the n whole seconds from unix second t0 (cheap: one strftime each)."""
    base = datetime.fromtimestamp(t0, tz=UTC)
    day_prefix = base.strftime("%Y-%m-%dT")
    sod = base.hour * 3600 + base.minute * 60 + base.second
    if sod + n <= 86400:
        return [f"{day_prefix}{(s // 3600):02d}:{(s // 60) % 60:02d}:{s % 60:02d}" for s in range(sod, sod + n)]
    return [datetime.fromtimestamp(t0 + i, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") for i in range(n)]


def stamp_us(t: float) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffff` of a simulated time (recommendation lines up to the 2023 edition)."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def fraction_stamp(t: float, digits: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.f…` of a simulated time with `digits` (1–9) fractional digits.

    Nine digits are the float's nanoseconds (below ~100 ns they are rounding, but deterministic).
    """
    if digits == 6:
        return stamp_us(t)
    whole = math.floor(t)
    ns = min(int(round((t - whole) * 1e9)), 999_999_999)
    base = datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns:09d}"[: len(base) + 1 + digits]
