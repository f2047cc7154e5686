"""The live world with real parts: embedded broker, world API, four stub teams, topics read back."""

from __future__ import annotations

import json
import urllib.request

import pytest

from movielab.contract import RecommendationEvent, parse_line
from movielab.kafka.consumer import read_topic
from movielab.world.audit import audit
from movielab.world.config import WorldConfig
from movielab.world.live import run_live

pytestmark = pytest.mark.integration


def test_live_world_end_to_end(stub_teams, universe) -> None:
    config = WorldConfig(
        users=1500, days=1 / 24, teams=stub_teams, api_port=0, partitions=2, arrivals_per_day=0.5, allow_download=False
    )
    journal: list[tuple] = []
    seen: dict[str, object] = {}

    def on_ready(live) -> None:
        with urllib.request.urlopen(f"{live.api_url}/user/1,2", timeout=5) as r:
            seen["users"] = json.loads(r.read())
        with urllib.request.urlopen(f"{live.api_url}/movie/{universe.catalog.slug[0]}", timeout=5) as r:
            seen["movie"] = json.loads(r.read())

    def after(live, stats) -> None:
        seen["topics"] = {t: read_topic(live.bootstrap, t, group_id=f"test-{t}") for t in live.topics}
        seen["stats"] = stats
        seen["world"] = live.world

    run_live(config, universe=universe, on_ready=on_ready, after=after, journal=journal)
    assert [u["user_id"] for u in seen["users"]] == [1, 2]
    assert seen["movie"]["id"] == universe.catalog.slug[0]
    topics, stats, world = seen["topics"], seen["stats"], seen["world"]
    assert list(topics) == ["movielog1", "movielog2", "movielog3", "movielog4"]
    total = sum(len(records) for records in topics.values())
    assert total == sum(stats.lines.values())  # nothing lost, nothing doubled
    expected = {
        "movielog1": None,
        "movielog2": (0, "Request timeout to "),
        "movielog3": (200, "Invalid response from "),
        "movielog4": (0, "Connection refused to "),
    }
    for topic, records in topics.items():
        team = int(topic.removeprefix("movielog"))
        events = [parse_line(value) for _, value, _, _ in records]  # every line parses
        assert all((e.user_id - 1) % 4 == team - 1 for e in events)
        assert all(key == str(e.user_id).encode() for (key, _, _, _), e in zip(records, events, strict=True))
        recs = [e for e in events if isinstance(e, RecommendationEvent)]
        assert recs and any("/data/m/" in v.decode() for _, v, _, _ in records)
        if expected[topic] is None:
            assert all(e.ok and e.status == 200 and e.response_ms < 600 for e in recs)
        else:
            status, prefix = expected[topic]
            assert all(not e.ok and e.status == status and e.error.startswith(prefix) for e in recs)
        lines = [value.decode() for _, value, _, _ in records]
        mine = [j for j in journal if (j[2] - 1) % 4 == team - 1]
        assert audit(lines, mine, world.pop.size, set(universe.catalog.slug)) == []
    assert any(
        line.endswith("/create_account")
        for records in topics.values()
        for _, v, _, _ in records
        for line in [v.decode()]
    )
