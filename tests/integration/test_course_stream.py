"""Every edition's lines on one real topic: each is stored or quarantined with a reason, none lost or miscounted.

The topic holds what three worlds (the 2019–2023, 2024–2025 and 2026 editions) published, the real
course lines kept by student teams (two of them broken), and lines in the shapes the real stream has
(minutes-only stamps, 3- and 9-digit fractions, 10-star ratings, ids with `_ . -` and a trailing `+`).
The recommender ingests it through the embedded broker and the world API over HTTP.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from movielab.contract import RateEvent, edition, parse_line
from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics, read_topic
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore
from movielab.webserver import ServerThread
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world, run_until
from movielab.world.config import WorldConfig
from movielab.world.recs import FixedService
from movielab.world.sinks import MemorySink

pytestmark = pytest.mark.integration

TOPIC = "movielog1"
COURSE_LINES = Path(__file__).parent.parent / "data" / "course" / "lines.txt"


def _world_lines(universe, name: str, seed: int) -> list[str]:
    config = WorldConfig(
        users=400, days=2 / 24, allow_download=False, edition=name, start="2026-03-20T08:00:00", seed=seed
    )
    sink = MemorySink()
    world, _ = build_world(
        config, universe=universe, sink=sink, service=FixedService(list(range(20)), universe.catalog.slug)
    )
    world.run(until=run_until(config))
    return sink.lines


def _course_shaped(universe) -> list[str]:
    """Known movies in every stamp precision and the 2026 rating scale, as the real stream writes them."""
    a, b = universe.catalog.slug[0], universe.catalog.slug[1]
    return [
        f"2026-03-20T10:22,7,GET /data/m/{a}/3.mpg",
        f"2026-03-20T10:22:05.426,7,GET /data/m/{a}/4.mpg",
        f"2026-03-20T10:22:06.122692921,7,recommendation request t.example.edu:8082, status 200, "
        f"result: {a}, {b}, 25 ms",
        f"2026-03-20T10:23:00,7,GET /rate/{a}=10",
        f"2026-03-20T10:23:01,8,GET /rate/{b}=11",  # beyond every scale: malformed
        "2026-03-20T10:23:02,8,GET /data/m/ben-hur+1959/5.mpg",  # in ml-100k: the world's catalog has it
        "2026-03-20T10:23:03,8,GET /data/m/the+hunger+games+mockingjay+-+part+1+2014/5.mpg",  # not in ml-100k
    ]


@pytest.fixture(scope="module")
def topic(universe):
    lines = [line for seed, name in enumerate(("2019", "2024", "2026")) for line in _world_lines(universe, name, seed)]
    lines += [line for line in COURSE_LINES.read_text("utf-8").splitlines() if line and not line.startswith("#")]
    lines += _course_shaped(universe)
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [TOPIC], partitions=2)
        with KafkaSink(broker.bootstrap, TOPIC) as sink:
            sink.write([int(line.split(",")[1]) if line.split(",")[1].isdigit() else 0 for line in lines], lines)
        on_topic = [v for _, v, _, _ in read_topic(broker.bootstrap, TOPIC, group_id="truth")]
        world, _ = build_world(WorldConfig(users=400, allow_download=False), universe=universe)
        with ServerThread(create_app(world.pop, universe.catalog, taste=universe.taste)) as api:
            yield broker.bootstrap, api.url, lines, on_topic


@pytest.mark.parametrize("name", ["2026", "2019"])
def test_stored_plus_quarantined_is_every_line_on_the_topic(topic, tmp_path, name) -> None:
    bootstrap, api_url, lines, on_topic = topic
    assert len(on_topic) == len(lines) and Counter(on_topic) == Counter(line.encode() for line in lines)
    with EventStore(tmp_path / "events.duckdb") as store, WorldApi(api_url) as api:
        ingestor = Ingestor(
            bootstrap,
            [TOPIC],
            store,
            api,
            group_id=f"mixed-{name}",
            batch_size=2000,
            fetch_users=False,
            edition=edition(name),
        )
        handled = ingestor.run_until_idle(idle_seconds=2.0, timeout=90.0)
        stored = len(store.event_keys())
        quarantine = store.quarantine_counts()
        reasons = {line.decode(): (kind, reason) for _, _, _, line, kind, reason in store.quarantined(limit=100_000)}
    assert handled == len(on_topic)
    assert stored + sum(quarantine.values()) == len(on_topic)  # nothing dropped, nothing counted twice
    assert ingestor.events_stored == stored and sum(ingestor.quarantined.values()) == sum(quarantine.values())
    broken = [line for line in lines if line.startswith(("2024-10-14T15 :", "2024-10-14T16G:"))]
    assert len(broken) == 2 and all(reasons[line][0] == "malformed" for line in broken)
    assert reasons["2026-03-20T10:23:03,8,GET /data/m/the+hunger+games+mockingjay+-+part+1+2014/5.mpg"] == (
        "unknown_movie",
        f"movie 'the+hunger+games+mockingjay+-+part+1+2014' is unknown to the world API {api_url}",
    )
    assert "2026-03-20T10:23:02,8,GET /data/m/ben-hur+1959/5.mpg" not in reasons  # stored
    assert quarantine.get("duplicate", 0) == 0
    ten_star = [line for line in lines if isinstance(ev := _parsed(line), RateEvent) and ev.rating > 5]
    assert ten_star  # the 2026 world rated on 1..10
    if name == "2026":
        assert "bad_rating" not in quarantine
    else:  # a 2019 consumer refuses every rating above 5, saying why
        assert quarantine["bad_rating"] == len(ten_star)
        assert all(
            reasons[line] == ("bad_rating", edition("2019").check_rating(_parsed(line).rating)) for line in ten_star
        )


def _parsed(line: str):
    try:
        return parse_line(line)
    except ValueError:
        return None
