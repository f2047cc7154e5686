"""The local pager: Alertmanager's webhook notifications become lines of the pages file; bad ones a 400."""

from __future__ import annotations

import json
import warnings

from movielab.recommender.monitoring.pager import Pages, create_app

with warnings.catch_warnings():  # Starlette's TestClient warns that it drives httpx in a deprecated way; not ours
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def notification(status: str = "firing", n: int = 2) -> dict:
    """What Alertmanager 0.25 posts (webhook format version 4), with `n` alerts of one group."""
    alerts = [
        {
            "status": status,
            "labels": {
                "alertname": "ServingReplicaDown",
                "severity": "page",
                "team": "serving",
                "instance": f"127.0.0.1:{8000 + i}",
                "job": "recommender",
            },
            "annotations": {"summary": f"Serving replica 127.0.0.1:{8000 + i} is down"},
            "startsAt": "2026-12-01T01:05:50.93Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://p",
            "fingerprint": f"f{i}",
        }
        for i in range(n)
    ]
    return {
        "version": "4",
        "status": status,
        "receiver": "pager",
        "groupKey": '{}:{alertname="ServingReplicaDown"}',
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": "ServingReplicaDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": alerts,
    }


def test_each_alert_of_a_notification_is_one_page_line(tmp_path) -> None:
    pages = Pages(tmp_path / "pages.jsonl")
    with TestClient(create_app(pages)) as client:
        assert client.post("/page", json=notification()).json() == {"written": 2}
        assert client.post("/ticket", json=notification("resolved", 1)).json() == {"written": 1}
        listed = client.get("/pages").json()
    lines = [json.loads(x) for x in (tmp_path / "pages.jsonl").read_text().splitlines()]
    assert lines == listed and len(lines) == 3
    assert [(p["kind"], p["status"], p["labels"]["instance"]) for p in lines] == [
        ("page", "firing", "127.0.0.1:8000"),
        ("page", "firing", "127.0.0.1:8001"),
        ("ticket", "resolved", "127.0.0.1:8000"),
    ]
    assert lines[0]["alertname"] == "ServingReplicaDown" and lines[0]["team"] == "serving"
    assert lines[0]["summary"] == "Serving replica 127.0.0.1:8000 is down" and lines[0]["receiver"] == "pager"


def test_malformed_notifications_are_refused_with_the_reason_and_not_written(tmp_path) -> None:
    pages = Pages(tmp_path / "pages.jsonl")
    with TestClient(create_app(pages)) as client:
        r = client.post("/page", content=b"not json")
        assert r.status_code == 400 and "not an Alertmanager webhook notification" in r.json()["error"]
        bad = notification()
        bad["alerts"][1]["status"] = "burning"
        r = client.post("/page", json=bad)
        assert r.status_code == 400 and "alerts.1.status" in r.json()["error"]
        r = client.post("/page", json={**notification(), "version": "3"})
        assert r.status_code == 400 and "version" in r.json()["error"]
        r = client.post("/page", json={**notification(), "alerts": []})
        assert r.status_code == 400 and "alerts" in r.json()["error"]
        r = client.post("/sms", json=notification())
        assert r.status_code == 404 and "/page or /ticket" in r.json()["error"]
        r = client.post("/page", content=b"x" * 1_048_577)
        assert r.status_code == 413
    assert pages.read() == []
