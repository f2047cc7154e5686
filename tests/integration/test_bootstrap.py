"""The recommender's composition root: `build` wires the operated system from a `RecommenderConfig` without
connecting anywhere, and `run` (the `operate` command) serves the control app until stopped."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import httpx
import pytest

from movielab.auth import read_tokens
from movielab.kafka.admin import ensure_topics
from movielab.kafka.broker import EmbeddedBroker
from movielab.recommender.bootstrap import TOKEN_FILE, build, run
from movielab.recommender.config import RecommenderConfig
from movielab.recommender.release.canary import CanaryPlan
from movielab.recommender.training.gate import RetrainPolicy
from movielab.webserver import free_port

pytestmark = pytest.mark.integration


def config(tmp_path: Path, **given) -> RecommenderConfig:
    return RecommenderConfig(
        store=tmp_path / "rec" / "store.duckdb",
        artifacts=tmp_path / "rec" / "models",
        world_api="http://127.0.0.1:9",  # nothing listens: building must not call it
        **given,
    )


def test_build_wires_every_part_from_the_config_and_connects_nowhere(tmp_path) -> None:
    c = config(tmp_path, kafka="127.0.0.1:9", team=3, edition="2025", model="popularity", retrain_every_hours=2.0)
    system = build(c, replicas=0)
    try:
        base = tmp_path / "rec"
        assert system.ingestor.topics == ["movielog3"] and system.ingestor.bootstrap == "127.0.0.1:9"
        assert system.ingestor.make_coldstart is False  # the 2025 edition has no self-descriptions
        assert system.retrainer.policy == RetrainPolicy.from_config(c)
        assert (system.retrainer.policy.model, system.retrainer.policy.every_hours) == ("popularity", 2.0)
        assert system.retrainer.log_path == base / "retrain.jsonl" and system.retrainer.registry is system.registry
        assert system.registry.name == "movielab-team3" and system.registry.cache == (base / "registry-cache").resolve()
        assert system.operator.folder == base / "operator" and system.operator.plan == CanaryPlan()
        assert system.operator.serving is None and system.servings == []  # serving starts with a first version
        assert stat.S_IMODE((base / TOKEN_FILE).stat().st_mode) == 0o600
        assert system.control is None and system.ingest_thread is None  # nothing runs before start()
    finally:
        system.close()


def test_build_takes_the_overrides_of_the_demo_and_the_tests(tmp_path) -> None:
    plan, policy = CanaryPlan(steps=(0.5, 1.0)), RetrainPolicy(model="ease", every_hours=10.0)
    system = build(config(tmp_path), replicas=0, plan=plan, policy=policy, monitor_every=1, coldstart=False)
    try:
        assert system.operator.plan is plan and system.retrainer.policy is policy
        assert system.operator.monitor_every == 1 and system.ingestor.make_coldstart is False
    finally:
        system.close()


def test_run_serves_metrics_and_token_guarded_control_until_stopped(tmp_path) -> None:
    seen: dict[str, object] = {}
    stop = threading.Event()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1"])  # the world creates the team topics
        c = config(tmp_path, kafka=broker.bootstrap, port=free_port())

        def ready(operator, url: str) -> None:
            try:
                headers = read_tokens(tmp_path / "rec" / TOKEN_FILE).headers()
                seen["metrics"] = httpx.get(f"{url}/metrics", timeout=10).status_code
                seen["anonymous"] = httpx.get(f"{url}/status", timeout=10).status_code
                status = httpx.get(f"{url}/status", headers=headers, timeout=30)
                seen["status"] = (status.status_code, status.json()["champion"], status.json()["runs"])
            finally:
                stop.set()

        operator = run(c, replicas=0, control_port=free_port(), tick_seconds=0.5, stop=stop, on_ready=ready)
    assert seen == {"metrics": 200, "anonymous": 401, "status": (200, None, [])}
    assert operator.serving is None  # no event came, so nothing was trained or served
