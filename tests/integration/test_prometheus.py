"""The real Prometheus scrapes a real serving replica, the operator's metrics and the world API, evaluates the
project's rules, and raises alerts when the service breaks (and clears them when it is back)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
from batches import lines_batch
from prometheus_client import CollectorRegistry

from movielab.contract import format_time_us, recommendation_line
from movielab.demo.prometheus import PrometheusServer, ScrapeJob, find_prometheus
from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics
from movielab.kafka.metrics import ProducedLinesCollector
from movielab.recommender.ingest.offsets import EndOffsets
from movielab.recommender.monitoring.exporter import EndOffsetsCollector, OperatorMetrics, create_metrics_app
from movielab.recommender.monitoring.monitor import MonitorLoop
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.app import create_app as serve_app
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.provenance import Provenance
from movielab.webserver import ServerThread
from movielab.world.api import create_app as world_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_prometheus() is None, reason="prometheus is not installed (Debian package)"),
]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
T0 = datetime(2026, 3, 20, 8, 0, 0)
PRODUCED = 100  # lines on movielog1 in the broker (offsets 0..99)
STORED = 40  # lines the operator's store holds (offsets 0..39)


class TinyModel:
    """Three users, five movies, everyone gets the same ranking."""

    name = "tiny"
    users: ClassVar[np.ndarray] = np.array([1, 2, 3], np.int64)
    items: ClassVar[list[str]] = [f"movie+{i}+2000" for i in range(5)]

    def recommend_rows(self, rows: np.ndarray, n: int = 20, exclude_seen: bool = True) -> np.ndarray:
        return np.tile(np.arange(len(self.items), dtype=np.int32), (len(rows), 1))[:, :n]

    def fallback(self, segment: int) -> list[str]:
        return self.items

    def params(self) -> dict:
        return {}


class SentLines:
    """Stands in for the world's KafkaSink counters (no broker in this test): a topic and lines acknowledged."""

    def __init__(self, topic: str, delivered: int) -> None:
        self.topic, self.delivered, self.failed = topic, delivered, 0


def request_lines(n: int, status: int, first_minute: int = 0) -> list[str]:
    result = "movie+0+2000, movie+1+2000" if status == 200 else "Internal Server Error"
    return [
        recommendation_line(
            format_time_us(T0 + timedelta(minutes=first_minute + i)), 1 + i % 3, "team1.local:8082", status, result, 12
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def operator():
    """The operator's /metrics over a real store holding STORED healthy request lines, and the end offsets of a
    real broker's movielog1 holding PRODUCED lines (read by the ingestor's own reader)."""
    store = EventStore(None)
    store.append(lines_batch(request_lines(STORED, 200), first=0))
    metrics = OperatorMetrics()
    loop = MonitorLoop(metrics)
    loop.update(store)
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1"], partitions=1)
        with KafkaSink(broker.bootstrap, "movielog1") as sink:
            for line in request_lines(PRODUCED, 200):  # one line per request: the embedded broker's watermark is exact
                sink.write([1], [line])
                sink.flush()
        ends = EndOffsets(broker.bootstrap, ["movielog1"], "prometheus-test-ends", every=0.5)
        ends.start()
        metrics.registry.register(EndOffsetsCollector(ends))
        try:
            with ServerThread(create_metrics_app(metrics)) as server:
                server.store, server.loop = store, loop
                yield server
        finally:
            ends.stop()
    store.close()


@pytest.fixture(scope="module")
def world_api(universe):
    world, _ = build_world(WorldConfig(users=50, allow_download=False), universe=universe)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ProducedLinesCollector([SentLines("movielog1", PRODUCED)]))
    with ServerThread(
        world_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=None, metrics=registry)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> Path:
    """The project's rules with every `for:` set to 0 s: the same expressions, without minutes of waiting."""
    path = tmp_path_factory.mktemp("rules") / "alerts.yml"
    text, n = re.subn(r"\bfor: \d+[smh]\b", "for: 0s", RULES.read_text())
    assert n >= 10
    path.write_text(text)
    return path


def serving_app():
    prov = Provenance("tiny", "1", "snap-1", "abc123", "2026-03-20T08:12:38")
    return serve_app(AnswerTable.build(TinyModel(), prov, user_segments={}))


def test_alerts_fire_when_the_service_breaks_and_clear_when_fixed(operator, world_api, rules) -> None:
    serving = ServerThread(serving_app()).start()
    port = serving.port
    jobs = [
        ScrapeJob("recommender", [f"127.0.0.1:{port}"]),
        ScrapeJob("operator", [f"127.0.0.1:{operator.port}"]),
        ScrapeJob("world", [f"127.0.0.1:{world_api.port}"]),
    ]
    try:
        with PrometheusServer(jobs, [rules]) as prom:
            assert {g["name"] for g in prom.rule_groups()} >= {"movielab-serving", "movielab-recording"}
            prom.wait_for(lambda: all(t["health"] == "up" for t in prom.targets()), 20, "all three targets up")
            with httpx.Client(base_url=serving.url) as http:
                assert http.get("/recommend/1").status_code == 200
            prom.wait_for(
                lambda: prom.value('sum(recommend_requests_total{job="recommender"})') == 1,
                20,
                "the serving request counted by Prometheus",
            )
            # Lag in the broker's offset space: end offsets read from the broker minus offsets stored.
            prom.wait_for(
                lambda: prom.value('topic:consumer_lag:lines{topic="movielog1"}') is not None,
                20,
                "the lag recording rule",
            )
            assert prom.value('topic:consumer_lag:lines{topic="movielog1"}') == PRODUCED - STORED
            assert prom.alert_state("ServingReplicaDown") == "inactive"
            assert prom.alert_state("RecommendationErrorsInStream") == "inactive"

            # Break 1: the replica goes away.
            serving.stop()
            prom.wait_for(lambda: prom.alert_state("ServingReplicaDown") == "firing", 30, "ServingReplicaDown firing")
            firing = [a for a in prom.alerts() if a["labels"]["alertname"] == "ServingReplicaDown"]
            assert [a["labels"]["instance"] for a in firing] == [f"127.0.0.1:{port}"]
            assert firing[0]["labels"]["severity"] == "page"

            # Fixed: a replica is back on the same port.
            serving = ServerThread(serving_app(), port=port).start()
            prom.wait_for(
                lambda: prom.alert_state("ServingReplicaDown") == "inactive", 30, "ServingReplicaDown resolved"
            )

            # Break 2: the stream shows the service answering 500s; the operator's monitor counts them.
            operator.store.append(lines_batch(request_lines(20, 500, first_minute=STORED), first=STORED))
            operator.loop.update(operator.store)
            prom.wait_for(
                lambda: prom.alert_state("RecommendationErrorsInStream") == "firing",
                30,
                "RecommendationErrorsInStream firing",
            )
            # The recording rule is evaluated on its own tick: wait for the new offsets to reach it.
            lag = 'topic:consumer_lag:lines{topic="movielog1"}'
            prom.wait_for(lambda: prom.value(lag) == PRODUCED - STORED - 20, 30, "consumer lag down by 20 lines")
    finally:
        serving.stop()
