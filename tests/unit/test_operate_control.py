"""The operator's HTTP control: status, overrides, hand-started canaries, the schedule freeze, bad requests."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from movielab.recommender.operate import OperatorError, create_control_app
from movielab.recommender.registry import RegistryError

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
def control():
    op = FakeOperator()
    with TestClient(create_control_app(op)) as c:
        yield c, op


def test_overrides_record_who_and_why_and_refusals_are_409(control) -> None:
    c, op = control
    r = c.post("/canary/rollback", json={"by": "alice", "reason": "looks off"})
    assert r.status_code == 200 and r.json() == {"action": "rollback", "by": "alice"}
    assert op.calls[-1] == ("override", "rollback", "alice", "looks off")
    r = c.post("/canary/resume")
    assert r.status_code == 409 and "no running experiment" in r.json()["error"]


def test_a_canary_is_started_by_registered_version_and_bad_versions_are_named(control) -> None:
    c, op = control
    r = c.post("/canary/start", json={"version": 7})
    assert r.status_code == 200 and r.json()["experiment"] == "canary-v7" and op.calls[-1] == ("start", "7")
    r = c.post("/canary/start", json={"version": "8"})
    assert r.status_code == 404 and "no version 8" in r.json()["error"]
    for body in ({}, {"version": ""}, {"version": True}):
        r = c.post("/canary/start", json=body)
        assert r.status_code == 409 and "needs {\"version\"" in r.json()["error"]


def test_bad_bodies_are_400_and_never_500(control) -> None:
    c, _ = control
    assert c.post("/canary/promote", content=b"{not json").status_code == 400
    assert c.post("/canary/promote", json=[1, 2]).status_code == 400


def test_the_schedule_freeze_and_status(control) -> None:
    c, op = control
    assert c.post("/schedule/pause").json() == {"schedule_paused": True} and op.schedule_paused
    assert c.get("/status").json() == {"schedule_paused": True}
    assert c.post("/schedule/resume").json() == {"schedule_paused": False} and not op.schedule_paused
    assert c.post("/schedule/stop").status_code == 404
    assert c.post("/retrain").json() == {"status": "accepted"} and op.calls[-1] == ("retrain", "on demand")
    assert c.get("/metrics").text.startswith("# HELP")
