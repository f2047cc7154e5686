"""Which injections act in a simulated minute [t0, t1): those whose window [start, end) overlaps it
(end +inf for open ones). The world acts minute by minute, so a window acts on whole minutes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Windowed(Protocol):
    start: float
    end: float


def is_active(item: Windowed, t0: float, t1: float) -> bool:
    """Whether a window [start, end) overlaps the minute [t0, t1)."""
    return item.start < t1 and t0 < item.end


def active_at(items: Iterable[Windowed], t0: float, t1: float) -> list:
    """The items whose window overlaps [t0, t1), in declaration order."""
    return [x for x in items if is_active(x, t0, t1)]


def due_to_begin(items: Iterable, t0: float, t1: float) -> list:
    """Items not yet begun whose window overlaps [t0, t1) (one that passed unseen, before the run, never begins)."""
    return [x for x in items if x.begun_at is None and not x.finished and is_active(x, t0, t1)]


def due_to_finish(items: Iterable, slowest: float) -> list:
    """Begun items every lane has passed the end of (`slowest`: the slowest lane's time) that hold nothing back."""
    return [x for x in items if x.begun_at is not None and not x.finished and slowest >= x.end and not x.pending()]
