"""Day plans follow the diurnal curve in local time; the queue hands out sessions in time order."""

from __future__ import annotations

import numpy as np

from movielab.world.clock import SimClock, parse_start, second_stamps, stamp_us
from movielab.world.schedule import DAY, SessionQueue, plan_day


def test_plan_day_peaks_in_the_local_evening() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    day = parse_start("2026-03-20")
    offsets = np.full(n, -5, np.int8)
    times, rows = plan_day(day, np.full(n, 0.5, np.float32), offsets, np.zeros(n), rng)
    assert np.all(np.diff(times) >= 0) and times.min() >= day and times.max() < day + DAY
    local_hour = ((times - day) / 3600 - 5) % 24
    per_hour = np.bincount(local_hour.astype(int), minlength=24)
    assert per_hour[20] > 5 * per_hour[4]
    assert abs(len(rows) / n - 0.5) < 0.01


def test_plan_day_skips_users_not_yet_created() -> None:
    rng = np.random.default_rng(0)
    day = parse_start("2026-03-20")
    created = np.array([day + DAY, 0.0])
    times, rows = plan_day(day, np.array([50.0, 50.0], np.float32), np.zeros(2, np.int8), created, rng)
    assert set(rows.tolist()) == {1}


def test_queue_merges_plan_and_pushes_in_time_order() -> None:
    q = SessionQueue()
    q.add_plan(np.array([10.0, 20.0, 30.0]), np.array([1, 2, 3], np.int32))
    q.push(np.array([15.0, 100.0]), np.array([7, 8], np.int32))
    t, u = q.pop_until(25.0)
    assert t.tolist() == [10.0, 15.0, 20.0] and u.tolist() == [1, 7, 2]
    assert len(q) == 2
    t, u = q.pop_until(1000.0)
    assert u.tolist() == [3, 8] and len(q) == 0


def test_clock_paces_against_the_wall_clock() -> None:
    slept: list[float] = []
    wall = [100.0]
    clock = SimClock(1000.0, speed=10.0, sleep=slept.append, now=lambda: wall[0])
    clock.wait_until(1050.0)  # 50 simulated seconds at ×10 = 5 wall seconds
    assert slept == [5.0]
    fast = SimClock(1000.0, speed=None, sleep=slept.append)
    fast.wait_until(10**9)
    assert slept == [5.0] and not fast.paced


def test_stamps() -> None:
    t = parse_start("2026-03-20T23:59:58")
    assert second_stamps(int(t), 3) == ["2026-03-20T23:59:58", "2026-03-20T23:59:59", "2026-03-21T00:00:00"]
    assert stamp_us(t + 0.25) == "2026-03-20T23:59:58.250000"
