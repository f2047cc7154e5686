"""The incident mitigations (`movielab recommender control …`) against a real operator: a real event store, MLflow
registry on sqlite, retrainer and in-process serving, behind the real control listener and its token."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import httpx
import numpy as np
import pytest
from batches import lines_batch

from movielab.auth import ensure_tokens
from movielab.cli import main
from movielab.recommender.release.control import create_control_app
from movielab.recommender.release.operator import Operator
from movielab.recommender.serving.server import OneServer
from movielab.recommender.store.events import EventStore
from movielab.recommender.training import pipeline
from movielab.recommender.training.gate import RetrainPolicy
from movielab.recommender.training.registry import Registry
from movielab.recommender.training.retrain import Retrainer
from movielab.webserver import ServerThread

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 20, 8, 0, 0)


def watch_lines(n_users: int = 60, n_movies: int = 30, seed: int = 0) -> list[str]:
    """Each user watches 6 movies, drawn with a popularity skew, one minute each, over two days."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_movies + 1)
    lines = []
    for user in range(1, n_users + 1):
        for movie in rng.choice(n_movies, 6, replace=False, p=p / p.sum()):
            t = T0 + timedelta(seconds=int(rng.integers(0, 2 * 86400)))
            lines.append(f"{t:%Y-%m-%dT%H:%M:%S},{user},GET /data/m/film+{movie}+1999/1.mpg")
    return sorted(lines)


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    """An initialized MLflow sqlite database; each test copies it (the schema migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def control(tmp_path, monkeypatch, mlflow_db):
    """The control listener of an operator serving its first champion (popularity, registry version 1)."""
    monkeypatch.delenv("MOVIELAB_TOKEN", raising=False)
    shutil.copy(mlflow_db, tmp_path / "mlflow.db")
    store = EventStore(tmp_path / "store.duckdb")
    store.append(lines_batch(watch_lines()))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = Registry(uri, "movielab-team1", tmp_path / "cache", tmp_path / "mlruns")
    policy = RetrainPolicy(model="popularity", min_events=100, min_users=10, min_items=10)
    retrainer = Retrainer(store, registry, tmp_path / "models", policy, tmp_path / "retrain.jsonl")
    servers: list[OneServer] = []

    def start_serving(version):
        servers.append(OneServer(version))
        return servers[-1]

    operator = Operator(store, retrainer, start_serving, tmp_path / "operator")
    record = operator.retrain("first")
    assert record.status == "accepted" and servers, record.reason
    tokens = ensure_tokens(tmp_path / "access.tokens", "oncall")
    server = ServerThread(create_control_app(operator, tokens)).start()
    server.operator, server.serving, server.tokens = operator, servers[0], tokens.path
    try:
        yield server
    finally:
        server.stop()
        for s in servers:
            s.stop()
        store.close()


def run(control, capsys, action: str, *extra: str) -> tuple[int, dict]:
    code = main(["recommender", "control", action, *extra, "--operator", control.url, "--tokens", str(control.tokens)])
    return code, json.loads(capsys.readouterr().out)


def served(control) -> str:
    r = httpx.get(f"{control.serving.url}/recommend/1", timeout=5)
    assert r.status_code == 200
    return r.headers["x-model"].split(";")[0]


def test_pin_rollback_fallback_freeze_through_the_cli(control, capsys) -> None:
    operator = control.operator
    first = served(control)
    v2 = operator.registry.register(pipeline.train(operator.store, "popularity", operator.retrainer.artifacts))
    assert served(control) == first  # registering serves nothing

    code, answer = run(control, capsys, "pin", "--version", v2.version, "--reason", "drill")
    assert code == 0 and answer["schedule_paused"] is True and answer["registry_version"] == v2.version
    assert served(control) == answer["serving"] != first
    assert operator.registry.champion_version().version == v2.version and operator.schedule_paused
    assert operator.updates[-1].kind == "pin" and "by oncall: drill" in operator.updates[-1].detail

    code, answer = run(control, capsys, "rollback", "--reason", "pinned the wrong one")
    assert code == 0 and answer["serving"] == first == served(control)
    assert operator.registry.champion_version().version == "1"
    assert operator.updates[-1].kind == "rollback"

    code, answer = run(control, capsys, "unfreeze")
    assert code == 0 and answer == {"schedule_paused": False} and not operator.schedule_paused
    code, answer = run(control, capsys, "fallback", "--reason", "no model can be trusted")
    assert code == 0 and answer["schedule_paused"] is True and answer["serving"].startswith("popularity/")
    assert served(control) == answer["serving"] not in (first,)
    fallback = operator.registry.get(answer["registry_version"])
    assert "no model can be trusted" in fallback.tags["fallback"]
    assert operator.registry.champion_version().version == fallback.version

    code, answer = run(control, capsys, "status")
    assert code == 0 and answer["schedule_paused"] is True
    assert [u["kind"] for u in answer["updates"]][-3:] == ["pin", "rollback", "fallback"]


def test_mitigations_that_cannot_apply_say_why(control, capsys) -> None:
    code, answer = run(control, capsys, "pin", "--version", "99")
    assert code == 1 and "99" in answer["error"]
    code, answer = run(control, capsys, "restart-replicas")
    assert code == 1 and "not a fleet" in answer["error"]
    code, answer = run(control, capsys, "ingest-pause")
    assert code == 1 and "no ingestor" in answer["error"]
    code, answer = run(control, capsys, "rollback")  # this operator has served one version only
    assert code == 1 and "no earlier champion" in answer["error"]
    assert main(["recommender", "control", "pin", "--operator", control.url, "--tokens", str(control.tokens)]) != 0
    assert "control pin needs --version <registered version number>, got None" in capsys.readouterr().err


def test_mitigations_need_a_token_and_a_well_formed_body(control) -> None:
    assert httpx.post(f"{control.url}/serving/pin", json={"version": 1}, timeout=5).status_code == 401
    headers = {"authorization": f"Bearer {control.tokens.read_text().split()[-1]}"}
    r = httpx.post(f"{control.url}/serving/pin", json={"version": "one"}, headers=headers, timeout=5)
    assert r.status_code == 400 and "version" in r.json()["error"]
    r = httpx.post(f"{control.url}/serving/rollback", json={"why": "x"}, headers=headers, timeout=5)
    assert r.status_code == 400 and "why" in r.json()["error"]
    r = httpx.post(f"{control.url}/serving/reboot", headers=headers, timeout=5)
    assert r.status_code == 404 and "pin, rollback, fallback or restart" in r.json()["error"]
    r = httpx.post(f"{control.url}/ingest/flush", headers=headers, timeout=5)
    assert r.status_code == 404


def test_stored_coldstart_lists_are_served_by_the_first_champion_and_after_a_restart(tmp_path, mlflow_db) -> None:
    from types import SimpleNamespace

    from movielab.recommender.ingest.coldstart import ColdStartList

    shutil.copy(mlflow_db, tmp_path / "mlflow.db")
    store = EventStore(tmp_path / "store.duckdb")
    store.append(lines_batch(watch_lines()))
    new_user = 5000  # no watch line: the model does not know this user
    store.save_coldstart(
        [ColdStartList(new_user, ("film+3+1999", "film+7+1999"), ("Film 3",), (), (), "lexical-v1", "global")]
    )
    registry = Registry(
        f"sqlite:///{tmp_path / 'mlflow.db'}", "movielab-team1", tmp_path / "cache", tmp_path / "mlruns"
    )
    policy = RetrainPolicy(model="popularity", min_events=100, min_users=10, min_items=10)
    servers: list[OneServer] = []

    def start_serving(version):
        servers.append(OneServer(version))
        return servers[-1]

    def operator() -> Operator:
        retrainer = Retrainer(store, registry, tmp_path / "models", policy, tmp_path / "retrain.jsonl")
        op = Operator(store, retrainer, start_serving, tmp_path / "operator")
        op.ingestor = SimpleNamespace(coldstart=object())  # cold start on the ingest path (its worker is not needed)
        return op

    try:
        assert operator().retrain("first").status == "accepted"  # the first champion starts serving
        restarted = operator()
        restarted.resume()  # a new process: serves the registry's champion again
        assert len(servers) == 2
        for server in servers:
            got = httpx.get(f"{server.url}/recommend/{new_user}")
            assert got.text == "film+3+1999,film+7+1999" and "source=coldstart" in got.headers["x-model"]
    finally:
        for server in servers:
            server.stop()
        store.close()
