"""Per-team pacing: one team's slow answers hold back no other team, and each team's stream is reproducible."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import numpy as np
import pytest

from movielab.world.bootstrap import build_world, run_until
from movielab.world.config import WorldConfig
from movielab.world.engine import TICK
from movielab.world.recs import RecAnswers
from movielab.world.sinks import MemorySink

TEAMS = ["http://127.0.0.1:1", "http://127.0.0.1:2"]  # never called: the services below answer in process


class TwoTeams:
    """Team 1 (odd ids) answers at once; team 2 (even ids) answers as told: held until released, or failing."""

    def __init__(self, rows: list[int], slugs: list[str], team2: str = "good") -> None:
        self.rows = np.asarray(rows, np.int32)
        self.text = ", ".join(slugs[r] for r in rows)
        self.team2 = team2
        self.held: list[tuple[Future, np.ndarray]] = []
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.answered_team2 = 0

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        n = len(user_ids)
        good = (np.asarray(user_ids) % 2 == 1) | (self.team2 != "failing")
        return RecAnswers(
            ["t:1" if u % 2 else "t:2" for u in user_ids],
            np.where(good, 200, 0).astype(np.int32),
            np.ones(n, np.int32),
            [self.rows if g else np.empty(0, np.int32) for g in good],
            [self.text if g else "Request timeout to t:2 after 600 ms" for g in good],
        )

    def submit(self, user_ids: np.ndarray, times: np.ndarray) -> Future:
        future: Future = Future()
        team2 = bool(len(user_ids)) and int(user_ids[0]) % 2 == 0
        with self.lock:
            if team2 and self.team2 == "held" and not self.released.is_set():
                self.held.append((future, user_ids))
                return future
        if team2:
            self.answered_team2 += 1
        future.set_result(self.recommend(user_ids, times))
        return future

    def release(self) -> None:
        with self.lock:
            self.released.set()
            held, self.held = self.held, []
        for future, ids in held:
            self.answered_team2 += 1
            future.set_result(self.recommend(ids, np.zeros(len(ids))))


def _run(universe, team2: str, pacing: str = "team", hours: float = 3.0):
    config = WorldConfig(
        users=3000, days=hours / 24, teams=TEAMS, pacing=pacing, arrivals_per_day=0.05, allow_download=False
    )
    sink = MemorySink()
    world, _ = build_world(config, universe=universe, sink=sink)
    service = TwoTeams(list(range(20)), universe.catalog.slug, team2)
    world.service = service
    until = run_until(config)
    seen = {}
    if team2 == "held":

        def release_when_team1_is_done() -> None:
            while world.lanes[0].now < until:  # no time limit here: the world thread must get there first
                threading.Event().wait(0.005)
            seen.update(team2_answered=service.answered_team2, team2_now=world.lanes[1].now, held=len(service.held))
            service.release()

        watcher = threading.Thread(target=release_when_team1_is_done, daemon=True)
        watcher.start()
    stats = world.run(until=until)
    by_team = {1: [], 2: []}
    for key, line in zip(sink.keys, sink.lines, strict=True):
        by_team[2 - key % 2].append(line)
    return world, stats, by_team, seen


def test_a_held_team_holds_back_only_its_own_users(universe) -> None:
    world, stats, lines, seen = _run(universe, "held")
    start = world.clock.start // TICK * TICK
    # Team 1 simulated all three hours while team 2's very first request was still unanswered.
    assert seen == {"team2_answered": 0, "team2_now": start, "held": 1}
    assert [lane.now for lane in world.lanes] == [start + 3 * 3600] * 2  # then team 2 caught up
    assert stats.ticks == 180 and world.now == start + 3 * 3600
    assert len(lines[1]) > 1000 and len(lines[2]) > 1000


def test_each_teams_stream_depends_only_on_its_own_answers(universe) -> None:
    _, _, held, _ = _run(universe, "held")
    _, _, good, _ = _run(universe, "good")
    _, _, failing, _ = _run(universe, "failing")
    assert held[1] == good[1] == failing[1]  # team 1's stream: the same whatever team 2 does
    assert held[2] == good[2] != failing[2]
    for team in (1, 2):
        times = [line.split(",", 1)[0][:19] for line in held[team]]
        assert times == sorted(times)  # each team's lines in time order


def test_pacing_together_is_one_clock_and_reproducible(universe) -> None:
    _, stats, a, _ = _run(universe, "good", pacing="together", hours=1)
    _, _, b, _ = _run(universe, "good", pacing="together", hours=1)
    assert a == b and stats.ticks == 60


def test_lanes_must_be_positive(universe) -> None:
    world, _ = build_world(WorldConfig(users=100, allow_download=False), universe=universe)
    with pytest.raises(ValueError, match="at least one lane"):
        type(world)(
            slugs=world.slugs,
            runtime=world.runtime,
            browse_weights=np.ones(len(world.slugs)),
            familiarity=world.familiarity,
            taste=world.taste,
            population=world.pop,
            demographics=world.demographics,
            activity=world.activity,
            service=world.service,
            sink=world.sink,
            clock=world.clock,
            lanes=0,
        )
