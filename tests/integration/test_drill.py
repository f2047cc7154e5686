"""The incident drill end to end (`scripts/drill`, shortened): a real broker, world, operator with two replicas
behind nginx, Prometheus, Alertmanager and the local pager, each on free loopback ports. For each scenario the
drill log must show: the break, the alert firing in Prometheus, the page received through Alertmanager, the
mitigation command, the recovery and the resolved page, in that order."""

from __future__ import annotations

import json

import pytest

from movielab.demo.alertmanager import find_alertmanager
from movielab.demo.drill import SCENARIOS, DrillConfig, run_drill
from movielab.demo.prometheus import find_prometheus
from movielab.recommender.serving.nginx import find_nginx

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(find_prometheus() is None, reason="prometheus is not installed (Debian package prometheus)"),
    pytest.mark.skipif(find_alertmanager() is None, reason="alertmanager is not installed (Debian package)"),
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"),
]

STEPS = [
    "break",
    "signal",
    "alert firing",
    "page received",
    "mitigation started",
    "mitigation done",
    "recovered",
    "resolved page",
]
ALERTS = {"replica": "ServingReplicaDown", "ingest": "ConsumerLagGrowing", "garbage": "RecommendationErrorsInStream"}
COMMANDS = {
    "replica": "control restart-replicas",
    "ingest": "control ingest-resume",
    "garbage": "control pin --version",
}


def test_each_scenario_fires_pages_is_mitigated_and_resolves(tmp_path) -> None:
    results = run_drill(tmp_path, DrillConfig(users=1500, scale=120.0, step_timeout=90.0))
    steps = [json.loads(line) for line in (tmp_path / "drill.jsonl").read_text().splitlines()]
    assert [r["scenario"] for r in results] == list(SCENARIOS)
    for result in results:
        name, alert = result["scenario"], ALERTS[result["scenario"]]
        mine = [s for s in steps if s["scenario"] == name]
        assert [s["step"] for s in mine] == STEPS, name
        assert [s["t"] for s in mine] == sorted(s["t"] for s in mine), name
        firing, resolved = (next(s for s in mine if s["step"] == k) for k in ("page received", "resolved page"))
        assert firing["page"]["alertname"] == resolved["page"]["alertname"] == alert == result["alert"]
        assert (firing["page"]["status"], resolved["page"]["status"]) == ("firing", "resolved")
        assert firing["page"]["kind"] == "page" and firing["page"]["severity"] == "page"
        assert firing["alertmanager"] and set(firing["alertmanager"]) <= {"active", "suppressed"}
        assert next(s for s in mine if s["step"] == "alert firing")["alert_state"] == "firing"
        assert COMMANDS[name] in result["command"]
        started = next(s for s in mine if s["step"] == "mitigation started")
        assert resolved["page"]["received_at"] > started["time"]  # resolved after the fix began, not before
        assert 0 < result["signal_s"] <= result["fired_s"] <= result["time_to_detect_s"] <= result["resolved_s"]
        assert 0 < result["time_to_recover_s"] == pytest.approx(result["resolved_s"] - result["mitigated_s"], abs=0.11)
    table = (tmp_path / "drill.md").read_text()
    assert all(f"| {name} | {ALERTS[name]} |" in table for name in SCENARIOS)
    pages = [json.loads(line) for line in (tmp_path / "pages.jsonl").read_text().splitlines()]
    for alert in ALERTS.values():
        assert {p["status"] for p in pages if p["alertname"] == alert} == {"firing", "resolved"}
