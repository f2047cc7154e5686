"""The world calls real team services over HTTP: every outcome is logged, bad teams never slow good ones."""

from __future__ import annotations

import time

import numpy as np
import pytest

from movielab.contract import RecommendationEvent, parse_line
from movielab.world.audit import audit
from movielab.world.bootstrap import build_world, run_until
from movielab.world.client import HttpRecommender, Team, TeamConfigError, check_body
from movielab.world.config import WorldConfig
from movielab.world.sinks import MemorySink, TeamRouter

pytestmark = pytest.mark.integration


def _index(universe) -> dict[str, int]:
    return {s: i for i, s in enumerate(universe.catalog.slug)}


def test_each_outcome_becomes_the_right_line(stub_teams, universe) -> None:
    good, slow, garbage, down = stub_teams
    teams = [Team.parse(i + 1, u) for i, u in enumerate(stub_teams)]
    with HttpRecommender(teams, _index(universe), timeout_ms=600) as client:
        ids = np.arange(1, 9)  # users 1..8: two per team (team = (id - 1) % 4)
        t = time.perf_counter()
        ans = client.recommend(ids, np.zeros(8))
        wall = time.perf_counter() - t
    assert wall < 1.0  # all in flight at once: the slow team costs one time-out, not two
    by_team = {i % 4: i for i in range(8)}
    g, s, b, d = (by_team[k] for k in range(4))
    assert ans.status[g] == 200 and len(ans.movies[g]) == 20 and ans.ms[g] < 600
    assert ans.result[g] == ", ".join(universe.catalog.slug[:20])
    assert ans.status[s] == 0 and ans.result[s] == f"Request timeout to {teams[1].server} after 600 ms"
    assert 600 <= ans.ms[s] < 700
    assert ans.status[b] == 200 and ans.result[b].startswith(f"Invalid response from {teams[2].server}: body")
    assert ans.status[d] == 0 and ans.result[d] == f"Connection refused to {teams[3].server}"
    assert ans.servers[:4] == [t.server for t in teams]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"\xff", "not UTF-8"),
        (b"a+1, b+2", "not a comma-separated"),
        (b"a+1,a+1", "repeat"),
        (b"nope+1999", "unknown movie id 'nope+1999'"),
        (b"toy+story+1995\n", "not a comma-separated"),
    ],
)
def test_bad_bodies_are_named(body: bytes, reason: str) -> None:
    got = check_body(body, {"a+1": 0, "toy+story+1995": 1})
    assert isinstance(got, str) and reason in got


def test_more_than_twenty_ids_is_invalid() -> None:
    index = {f"m+{i}": i for i in range(21)}
    assert check_body(",".join(index).encode(), index) == "21 movie ids, at most 20"


def test_team_urls_are_validated() -> None:
    assert Team.parse(1, "127.0.0.1:8082").url == "http://127.0.0.1:8082"
    assert Team.parse(2, "http://team2.local:9000/api/").server == "team2.local:9000"
    for bad in ("ftp://x:1", "http://", "http://x:99999", "http://x:1/?q=1", "not a url", "http://a,b:80", "x:1/a b"):
        with pytest.raises(TeamConfigError, match="team 3"):
            Team.parse(3, bad)


def test_world_with_four_teams_logs_every_failure_and_good_users_keep_watching(stub_teams, universe) -> None:
    teams = [Team.parse(i + 1, u) for i, u in enumerate(stub_teams)]
    sinks = [MemorySink() for _ in teams]
    journal: list[tuple] = []
    config = WorldConfig(users=2000, days=1 / 24, allow_download=False, arrivals_per_day=0)
    with HttpRecommender(teams, _index(universe)) as client:
        world, _ = build_world(config, universe=universe, service=client, sink=TeamRouter(sinks), journal=journal)
        stats = world.run(until=run_until(config))
    assert stats.sessions > 50
    for n, sink in enumerate(sinks):
        assert all((k - 1) % 4 == n for k in sink.keys)  # each team sees only its own users
    expected = {0: None, 1: "Request timeout", 2: "Invalid response", 3: "Connection refused"}
    for n, sink in enumerate(sinks):
        recs = [e for e in map(parse_line, sink.lines) if isinstance(e, RecommendationEvent)]
        assert recs, f"team {n + 1} got no requests"
        if expected[n] is None:
            assert all(e.ok and len(e.recommendations) == 20 and e.response_ms < 600 for e in recs)
        else:
            assert all(not e.ok and e.error.startswith(expected[n]) for e in recs)
    # Users of failing teams still pick movies on their own; good-team users pick recommended ones.
    for n, sink in enumerate(sinks):
        assert any("/data/m/" in line for line in sink.lines), f"team {n + 1}'s users watched nothing"
    good_ms = [e.response_ms for e in map(parse_line, sinks[0].lines) if isinstance(e, RecommendationEvent)]
    assert np.percentile(good_ms, 99) < 100  # the slow team does not slow the good team's requests
    merged = sorted((line for s in sinks for line in s.lines), key=lambda x: x.split(",", 1)[0])
    assert audit(merged, journal, world.pop.size, set(universe.catalog.slug)) == []
