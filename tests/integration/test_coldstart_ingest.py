"""Cold start on the ingest path with real parts: a 2026 world publishes new accounts to the embedded broker,
the ingestor builds each new user's first list from the world API's self-description, and the recommendation
service answers it over HTTP before the user's first request; movie records keep their license cost."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import numpy as np
import pytest

from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.serving import app as serve
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.state import set_coldstart
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import create
from movielab.recommender.training.provenance import Provenance
from movielab.webserver import ServerThread
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.sinks import MemorySink, TeeSink

pytestmark = pytest.mark.integration

TOPIC = "movielog1"


def test_new_accounts_get_their_self_description_list_before_their_first_request(universe, tmp_path) -> None:
    config = WorldConfig(users=800, days=None, arrivals_per_day=0.3, allow_download=False, edition="2026")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [TOPIC], partitions=2)
        memory = MemorySink()
        world, _ = build_world(config, universe=universe, sink=TeeSink(KafkaSink(broker.bootstrap, TOPIC), memory))
        rate, world.arrivals_per_day = world.arrivals_per_day, 0.0
        history_end = world.now + 3 * 3600  # three hours of the old users first: what the version trains on
        while world.now < history_end:
            world.step()
        world.arrivals_per_day = rate
        world.run(until=world.now + 4 * 3600)  # new accounts arrive; run() flushes and closes the sink
        accounts = {int(line.split(",")[1]) for line in memory.lines if line.endswith("GET /create_account")}
        assert len(accounts) >= 20
        with (
            ServerThread(create_app(world.pop, universe.catalog, taste=universe.taste)) as api,
            EventStore(tmp_path / "store.duckdb") as store,
            WorldApi(api.url) as wapi,
        ):
            ingestor = Ingestor(broker.bootstrap, [TOPIC], store, wapi, group_id="cold", coldstart=True)
            stop_at = ingestor.run_until_idle(idle_seconds=2.0, timeout=120.0)
            assert stop_at == len(memory.lines)
            stored = store.coldstart_lists()
            assert set(stored) == accounts  # every new account, none dropped
            records = {u: store.user_record(u) for u in accounts}
            described = [u for u, r in records.items() if r.likes]
            assert described and all(r.likes is not None for r in records.values())  # 2026: the field is there
            assert {k for _, k in stored.values()} == {"lexical-v1"}
            # The liked titles found in the text lead the list. Only movies seen on the stream (so stored) can
            # be matched, and vague or empty answers name none: after a few hours, a minority of lists have one.
            rows = store.read("SELECT user_id, liked, movies FROM coldstart_lists")
            with_titles = [(u, liked, movies) for u, liked, movies in rows if liked]
            assert len(with_titles) >= 3
            assert all(set(movies[: len(liked)]) == set(liked) for _, liked, movies in with_titles)
            costs = store.movie_costs()
            catalog = {s: i for i, s in enumerate(universe.catalog.slug)}
            assert costs and all(
                np.isclose(c, universe.catalog.license_cost[catalog[m]], atol=1e-4) for m, c in costs.items()
            )
            # Serving: a popularity version trained before the first new account (so it knows none of them),
            # plus the worker's lists; a user the version knows keeps the model's answer.
            end = datetime.fromtimestamp(history_end, UTC).replace(tzinfo=None)
            data = TrainingData.from_snapshot(store, store.create_snapshot("before", None, end))
            assert not accounts & set(data.users.tolist())
            model = create("popularity").fit(data)
            table = AnswerTable.build(model, Provenance("popularity", "1", data.snapshot_id, "test", "2026-03-20"))
            app = serve.create_app(table)
            assert set_coldstart(app, _lists(store)) == len(accounts)
            user, _, movies = with_titles[0]
            with ServerThread(app) as server:
                r = httpx.get(f"{server.url}/recommend/{user}", timeout=10)
                old = httpx.get(f"{server.url}/recommend/{int(data.users[0])}", timeout=10)
            assert r.status_code == 200 and r.text == ",".join(movies[:20])
            assert "source=coldstart" in r.headers["x-model"] and "matcher=lexical-v1" in r.headers["x-model"]
            assert "source=model" in old.headers["x-model"]


def _lists(store: EventStore):
    from movielab.recommender.ingest.coldstart import ColdStartList

    for u, m, liked, disliked, genres, matcher, fallback in store.read(
        "SELECT user_id, movies, liked, disliked, genres, matcher, fallback FROM coldstart_lists"
    ):
        yield ColdStartList(u, tuple(m), tuple(liked), tuple(disliked), tuple(genres), matcher, fallback)
