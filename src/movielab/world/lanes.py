"""Adding a team to a running world: one more lane, users re-split by id modulo the new number of teams.

Users belong to team `(id - 1) % teams` (`client.team_of`, `sinks.TeamRouter`, the engine's lanes), so
a new team re-splits the population: about teams/(teams + 1) of the users change team. They keep
everything they are (taste, paused movies, viewings in progress, pending ratings, queued sessions): their
state moves to the lane of their new team, and their next lines go to the new team's topic. Existing
lanes keep their random streams; the new lane's stream is drawn from lane 0's, so the run stays
reproducible from the seed and the time of the change.
"""

from __future__ import annotations

import numpy as np

from movielab.world.engine import World, _Lane, _Viewings
from movielab.world.errors import WorldError


class LaneChangeError(WorldError, RuntimeError):
    """Lanes cannot be changed now (not every lane at the same simulated minute)."""


def add_lane(world: World) -> int:
    """Give `world` one more lane and move every user's state to the lane of `row % lanes`; return users moved.

    Call it between ticks with every lane at the same time (in `World.run`'s `on_checkpoint`, or before or after
    `run`); raises `LaneChangeError` otherwise.
    """
    lanes = world.lanes
    now = {lane.now for lane in lanes}
    planned = {lane.planned_until for lane in lanes}
    if len(now) != 1 or len(planned) != 1:
        raise LaneChangeError(f"lanes are at different times ({sorted(now)}): add a team at a checkpoint boundary")
    k_old, k = len(lanes), len(lanes) + 1
    t = now.pop()
    plan_t = np.concatenate([lane.queue._plan_t[lane.queue._pos :] for lane in lanes])
    plan_u = np.concatenate([lane.queue._plan_u[lane.queue._pos :] for lane in lanes])
    push_t = np.concatenate([np.empty(0), *[p for lane in lanes for p in lane.queue._push_t]])
    push_u = np.concatenate([np.empty(0, np.int32), *[p for lane in lanes for p in lane.queue._push_u]])
    views = {name: np.concatenate([getattr(lane.viewings, name) for lane in lanes]) for name in _Viewings.FIELDS}
    pending = [r for lane in lanes for r in lane.pending_rates]
    seed = int(lanes[0].rng.integers(2**62))
    new = _Lane(k_old, np.random.default_rng([seed, 7, k_old]), t)
    new.planned_until = lanes[0].planned_until
    lanes.append(new)
    order = np.argsort(plan_t, kind="stable")
    plan_t, plan_u = plan_t[order], plan_u[order].astype(np.int32)
    for lane in lanes:
        i = lane.index
        mine = plan_u % k == i
        lane.queue._plan_t, lane.queue._plan_u, lane.queue._pos = plan_t[mine], plan_u[mine], 0
        mine = push_u % k == i
        lane.queue._push_t, lane.queue._push_u = (
            ([push_t[mine]], [push_u[mine].astype(np.int32)]) if mine.any() else ([], [])
        )
        mine = views["user"] % k == i
        v = _Viewings()
        for name in _Viewings.FIELDS:
            setattr(v, name, views[name][mine])
        lane.viewings = v
        lane.pending_rates = [r for r in pending if r[1] % k == i]
    # New accounts: from now on drawn by minute from their own stream, split between the k lanes.
    if world._arrivals_rng is None:
        world._arrivals_rng = np.random.default_rng([seed, 8])
        world._arrived, world._size_before, world._arrived_until = {}, {}, t
    for minute, entry in world._arrived.items():
        if entry[0] != k_old:
            raise LaneChangeError(f"accounts of minute {minute} were taken by some lanes only")
        times = np.concatenate([p[0] for p in entry[1:]])
        ids = np.concatenate([p[1] for p in entry[1:]])
        order = np.argsort(times, kind="stable")
        times, ids = times[order], ids[order]
        world._arrived[minute] = [k, *[(times[(ids - 1) % k == i], ids[(ids - 1) % k == i]) for i in range(k)]]
    rows = np.arange(world.pop.size)
    return int((rows % k != rows % k_old).sum())
