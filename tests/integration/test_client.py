"""The world's client judges a team's whole answer, however its bytes arrive (real sockets on loopback)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from teamservers import CASES, INDEX, RESULT, CaseServers, run_cases

from movielab.world.client import HttpRecommender

pytestmark = pytest.mark.integration
TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[int, int, str]]:
    """Every case asked once, all in flight at once (one time-out for the whole batch).

    1.5 s, not the default 600 ms: valid answers must not time out on a busy machine; the cases that
    must time out trickle for 48 s or stay silent for 2 s.
    """
    return {case.name: (status, ms, result) for case, status, ms, result in run_cases(timeout_ms=TIMEOUT_MS)}


@pytest.mark.parametrize(("name", "status", "pattern"), [(n, s, r) for n, _, s, r in CASES], ids=[c[0] for c in CASES])
def test_each_way_of_answering_gets_its_line(outcomes, name: str, status: int, pattern: str) -> None:
    got_status, ms, result = outcomes[name]
    assert (got_status, result) == (status, result) and re.fullmatch(pattern, result), (name, got_status, result)
    if "timeout" in pattern:
        assert result.endswith(f"after {TIMEOUT_MS} ms")
        assert ms >= TIMEOUT_MS  # judged at the time-out, not when the first bytes came


def test_an_answer_in_two_writes_is_judged_whole_every_time() -> None:
    cases = [c for c in CASES if c[0] in ("valid, two writes 20 ms apart", "valid, two chunks 20 ms apart")]
    with CaseServers(cases) as servers, HttpRecommender(servers.teams(), INDEX, timeout_ms=5000) as client:
        users = np.arange(1, 41)  # 20 requests per case, concurrently
        ans = client.recommend(users, np.zeros(len(users)))
    assert ans.status.tolist() == [200] * 40
    assert ans.result == [RESULT] * 40
    assert all(len(m) == 20 for m in ans.movies)


def test_keep_alive_connections_are_reused_and_answers_stay_whole() -> None:
    cases = [c for c in CASES if c[0] in ("valid, one write (kept alive)", "valid, gzip-encoded")]
    with CaseServers(cases) as servers, HttpRecommender(servers.teams(), INDEX, timeout_ms=5000) as client:
        for _ in range(5):  # one request per team at a time: each reuses the team's connection
            ans = client.recommend(np.array([1, 2]), np.zeros(2))
            assert ans.status.tolist() == [200, 200] and ans.result == [RESULT, RESULT]
        assert [c.requests for c in servers.cases] == [5, 5]
        assert [c.connections for c in servers.cases] == [1, 1]
