"""The operator's HTTP control: status, overrides, hand-started canaries, the schedule freeze, bad requests."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from movielab.auth import ensure_tokens
from movielab.recommender.errors import OperatorError, RegistryError
from movielab.recommender.release.control import create_control_app

with warnings.catch_warnings():
    # Starlette's TestClient warns that it drives httpx in a way httpx deprecates; not our code.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


class FakeOperator:
    """The operator as the control app uses it, recording what it was asked."""

    def __init__(self) -> None:
        self.schedule_paused = False
        self.calls: list[tuple] = []
        self.metrics = SimpleNamespace(exposition=lambda: b"# HELP x\n")
        self.registry = SimpleNamespace(get=self._get)

    def _get(self, version: str):
        if version != "7":
            raise RegistryError(f"movielab-team1 has no version {version}")
        return SimpleNamespace(version="7")

    def status(self) -> dict:
        return {"schedule_paused": self.schedule_paused}

    def override(self, action: str, by: str, reason: str) -> dict:
        self.calls.append(("override", action, by, reason))
        if action == "resume":
            raise OperatorError("no running experiment to resume")
        return {"action": action, "by": by}

    def start_canary(self, registered):
        self.calls.append(("start", registered.version))
        return SimpleNamespace(name="canary-v7", challenger="ease/v0007", share=0.1, salt=42)

    def retrain(self, trigger: str):
        self.calls.append(("retrain", trigger))
        return SimpleNamespace(as_dict=lambda: {"status": "accepted"})


@pytest.fixture
def tokens(tmp_path):
    path = ensure_tokens(tmp_path / "access.tokens", "operator").path
    with path.open("a") as f:
        f.write("alice " + "a" * 43 + "\n")
    return ensure_tokens(path)


@pytest.fixture
def app(tokens):
    op = FakeOperator()
    return create_control_app(op, tokens), op


@pytest.fixture
def control(app, tokens):
    with TestClient(app[0], headers=tokens.headers("alice")) as c:
        yield c, app[1]


def test_overrides_record_the_authenticated_identity_and_refusals_are_409(control) -> None:
    c, op = control
    r = c.post("/canary/rollback", json={"reason": "looks off"})
    assert r.status_code == 200 and r.json() == {"action": "rollback", "by": "alice"}
    assert op.calls[-1] == ("override", "rollback", "alice", "looks off")
    r = c.post("/canary/rollback", json={"by": "mallory", "reason": "x"})  # a name in the body is no identity
    assert r.status_code == 400 and "by: Extra inputs are not permitted" in r.json()["error"]
    assert op.calls[-1] == ("override", "rollback", "alice", "looks off")
    r = c.post("/canary/resume")
    assert r.status_code == 409 and "no running experiment" in r.json()["error"]
    assert c.post("/canary/explode").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/status"),
        ("POST", "/canary/start"),
        ("POST", "/canary/rollback"),
        ("POST", "/retrain"),
        ("POST", "/schedule/pause"),
    ],
)
def test_every_control_endpoint_but_metrics_needs_a_token(app, method, path) -> None:
    with TestClient(app[0]) as anon:
        for headers in ({}, {"authorization": "Bearer " + "b" * 43}):
            r = anon.request(method, path, json={"version": 7} if path.endswith("start") else None, headers=headers)
            assert r.status_code == 401, (path, r.text)
        assert app[1].calls == [] and not app[1].schedule_paused
        assert anon.get("/metrics").status_code == 200  # Prometheus scrapes without a token


def test_a_canary_is_started_by_registered_version_and_bad_versions_are_named(control) -> None:
    c, op = control
    r = c.post("/canary/start", json={"version": 7})
    assert r.status_code == 200 and r.json()["experiment"] == "canary-v7" and op.calls[-1] == ("start", "7")
    r = c.post("/canary/start", json={"version": "8"})
    assert r.status_code == 404 and "no version 8" in r.json()["error"]
    for body in ({}, {"version": ""}, {"version": True}, {"version": "../7"}, {"version": 7, "by": "x"}):
        r = c.post("/canary/start", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith("bad request body: "), (body, r.text)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b"[" * 1000,
        b'{"reason": ""}',
        b'{"reason": 5}',
        b'{"reason": "' + b"x" * 501 + b'"}',
        b"x" * 20_000,
    ],
)
def test_bad_bodies_are_4xx_and_never_500(control, body) -> None:
    c, op = control
    for path in ("/canary/promote", "/canary/start", "/retrain", "/schedule/pause"):
        r = c.post(path, content=body)
        assert r.status_code in (400, 413) and "error" in r.json(), (path, r.text)
    assert op.calls == []


def test_the_schedule_freeze_and_status(control) -> None:
    c, op = control
    assert c.post("/schedule/pause").json() == {"schedule_paused": True} and op.schedule_paused
    assert c.get("/status").json() == {"schedule_paused": True}
    assert c.post("/schedule/resume").json() == {"schedule_paused": False} and not op.schedule_paused
    assert c.post("/schedule/stop").status_code == 404
    assert c.post("/retrain").json() == {"status": "accepted"} and op.calls[-1] == ("retrain", "on demand by alice")
    assert c.get("/metrics").text.startswith("# HELP")
