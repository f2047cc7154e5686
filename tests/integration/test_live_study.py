"""Both course experiments on a tiny live 2026 world: broker, world API, recommender ingest and its HTTP service.

No figure is asserted: the report must exist with both arms of both experiments populated, and every count
in it must add up to what the stream (read back from the world's own copy of the lines) holds.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from movielab.contract import AccountEvent, RecommendationEvent, parse_line
from movielab.demo.study import LiveStudyConfig, run_live_study
from movielab.recommender.store.events import EventStore
from movielab.world.sinks import MemorySink

pytestmark = pytest.mark.integration


def test_tiny_live_study_writes_a_report_whose_counts_add_up_to_the_stream(universe, tmp_path) -> None:
    config = LiveStudyConfig(users=800, movies=3000, history_days=0.25, pre_days=0.25, days=0.4, arrivals=0.4)
    memory = MemorySink()
    study = run_live_study(config, tmp_path, universe=universe, extra_sink=memory)
    assert study.report.is_file() and (tmp_path / "coldstart.svg").is_file() and (tmp_path / "costaware.svg").is_file()
    assert study.lines_produced == len(memory.lines) == study.events_stored + study.quarantined
    a, b = study.results
    text = study.report.read_text()
    assert a.design.name in text and b.design.name in text and text.count("**Decision: ") == 2
    assert json.loads((tmp_path / "results.json").read_text())[1]["design"]["trade_off"] == config.trade_off

    events = [parse_line(line) for line in memory.lines]
    start, end = a.design.start, a.design.end
    created = {e.user_id: e.time for e in events if isinstance(e, AccountEvent)}
    assert created and all(start <= t < end for t in created.values())  # accounts arrive in the experiment only
    # A: accounts per arm by the hash, and each new user's first (up to) 3 requests.
    treated = dict(zip(created, a.design.treated(np.array(list(created))).tolist(), strict=True))
    accounts = Counter(treated.values())
    assert (a.counts["demographic"].accounts, a.counts["selfdesc"].accounts) == (accounts[False], accounts[True])
    assert min(accounts.values()) > 0 and a.counts["demographic"].users > 0 and a.counts["selfdesc"].users > 0
    sessions: dict[bool, int] = Counter()
    requests = defaultdict(list)
    for e in events:
        if isinstance(e, RecommendationEvent) and start <= e.time < end:
            requests[e.user_id].append(e)
    for user, arm in treated.items():
        sessions[arm] += min(3, len([r for r in requests[user] if r.time >= created[user]]))
    assert (a.counts["demographic"].requests, a.counts["selfdesc"].requests) == (sessions[False], sessions[True])
    assert sum(study.served.values()) == len(created)  # every new account got a list pushed by its arm
    # B: requests in the window of users who are not new, per arm by B's hash; served over HTTP, answered.
    old = [u for u in requests if u not in created]
    b_arm = dict(zip(old, b.design.treated(np.array(old)).tolist(), strict=True))
    per_arm = Counter()
    for u in old:
        per_arm[b_arm[u]] += len(requests[u])
    assert (b.counts["plain"].requests, b.counts["costaware"].requests) == (per_arm[False], per_arm[True])
    assert (b.counts["plain"].users, b.counts["costaware"].users) == (
        Counter(b_arm.values())[False],
        Counter(b_arm.values())[True],
    )
    assert min(b.counts["plain"].users, b.counts["costaware"].users) > 0
    window = [r for rs in requests.values() for r in rs]
    assert window and all(r.server.startswith("127.0.0.1:") for r in window)
    assert sum(r.status == 200 for r in window) / len(window) > 0.95
    # What a self-description-arm user got on the stream is the list the worker built and stored for them;
    # a demographic-arm user got a list without any liked title of their own.
    with EventStore(tmp_path / "store.duckdb") as store:
        rows = store.read("SELECT user_id, movies, liked FROM coldstart_lists")
    stored = {u: movies for u, movies, _ in rows}
    liked = {u: set(titles) for u, _, titles in rows}
    same, differs = 0, []
    for user, arm in treated.items():
        first = [r for r in requests[user] if r.time >= created[user]][:1]
        if first and first[0].ok and arm:
            assert list(first[0].recommendations) == list(stored[user])[:20]
            same += 1
        elif first and first[0].ok and liked[user]:  # the fallback alone, not the list led by the titles they named
            differs.append(list(first[0].recommendations) != list(stored[user])[:20])
    assert same > 0 and differs and sum(differs) > len(differs) / 2
