"""Adding a lane (a team) to a running world: users re-split by id modulo, nothing lost, the stream stays sound."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.world.audit import audit
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.lanes import add_lane
from movielab.world.recs import FixedService
from movielab.world.sinks import MemorySink


def _inventory(world) -> tuple:
    users = np.concatenate([lane.viewings.user for lane in world.lanes]).tolist()
    movies = np.concatenate([lane.viewings.movie for lane in world.lanes]).tolist()
    views = sorted(zip(users, movies, strict=True))
    rates = sorted(r for lane in world.lanes for r in lane.pending_rates)
    queued = sum(len(lane.queue) for lane in world.lanes)
    return views, rates, queued


@pytest.mark.parametrize("teams", [1, 2])
def test_added_lane_takes_its_users_and_the_world_runs_on_soundly(universe, teams) -> None:
    config = WorldConfig(
        users=3000,
        seed=2,
        days=None,
        arrivals_per_day=0.05,
        allow_download=False,
        teams=[f"http://127.0.0.1:{9001 + i}" for i in range(teams)],
    )
    k = teams + 1
    sink, journal = MemorySink(), []
    world, _ = build_world(
        config,
        universe=universe,
        sink=sink,
        journal=journal,
        service=FixedService(list(range(20)), universe.catalog.slug),
    )
    world.run(until=world.now + 4 * 3600)
    before = _inventory(world)
    assert before[0] and before[2]
    moved = add_lane(world)
    assert len(world.lanes) == k
    assert moved == int(((np.arange(world.pop.size) % k) != (np.arange(world.pop.size) % teams)).sum())
    assert _inventory(world) == before  # nothing dropped or duplicated, only moved
    for lane in world.lanes:
        assert (lane.viewings.user % k == lane.index).all()
        assert all(r[1] % k == lane.index for r in lane.pending_rates)
        times, rows = lane.queue.pop_until(np.inf)
        assert (rows % k == lane.index).all()
        lane.queue.push(times, rows)
    n_before = len(sink.lines)
    world.run(until=world.now + 4 * 3600)
    assert len(sink.lines) > n_before + 10_000
    new_lines = sink.keys[n_before:]
    assert any((u - 1) % k == teams for u in new_lines)  # the new lane's users act
    assert audit(sink.lines, journal, world.pop.size, set(universe.catalog.slug)) == []
