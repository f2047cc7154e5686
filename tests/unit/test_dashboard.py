"""The Grafana dashboard and the alert rules only use metric names that our code (or a recording rule) defines."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from movielab.kafka.metrics import ProducedLinesCollector
from movielab.recommender.monitoring.exporter import IngestorCollector, OperatorMetrics
from movielab.recommender.serving.metrics import ServeMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "movielab.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for every target
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("", "_sum", "_count", "_created"),
}


class FakeIngestor:
    lines_consumed = events_stored = replayed = batches = api_outages = 0
    last_batch_seconds = 0.0
    quarantined: ClassVar[Counter[str]] = Counter()
    end_offsets = SimpleNamespace(ends={("movielog1", 0): 0}, read_at=1.0)


class FakeSink:
    topic, delivered, failed = "movielog1", 0, 0


def defined_names() -> set[str]:
    """Every sample name our registries can expose, plus recording rules and Prometheus's own series."""
    operator = OperatorMetrics()
    operator.registry.register(IngestorCollector(FakeIngestor()))
    operator.registry.register(ProducedLinesCollector([FakeSink()]))
    names = set(PROMETHEUS_OWN) | set(re.findall(r"^\s*- record: (\S+)\s*$", RULES.read_text(), re.MULTILINE))
    for registry in (operator.registry, ServeMetrics().registry):
        for family in registry.collect():
            names.update(family.name + s for s in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (label matchers, strings, ranges, grouping lists and functions removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\boffset\s+\w+", "", e)
    tokens = re.findall(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()", e)
    return {t for t in tokens if t.lower() not in KEYWORDS}


def panel_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    text = RULES.read_text()
    single = re.findall(r"^\s*expr: (?!>-)(.+)$", text, re.MULTILINE)
    folded = [
        " ".join(line.strip() for line in block.splitlines())
        for block in re.findall(r"^\s*expr: >-\n((?:\s{10,}.+\n?)+)", text, re.MULTILINE)
    ]
    return single + folded


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (le, job) (rate(recommend_latency_seconds_bucket{job="x"}[5m])) > 0.3') == {
        "recommend_latency_seconds_bucket"
    }
    assert metric_names("a:b:c - on () group_left () (0.8 * max(x_total offset 1h))") == {"a:b:c", "x_total"}
    assert metric_names("time() - monitor_last_update_timestamp_seconds > 1e3") == {
        "monitor_last_update_timestamp_seconds"
    }


def test_dashboard_is_provisioning_ready_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    assert "id" not in dash or dash["id"] is None  # provisioning assigns ids
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dash["panels"]:
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "table", "gauge"}, panel
        assert panel["targets"] and all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    provisioning = (DEPLOY / "grafana" / "provisioning.yml").read_text()
    assert "apiVersion: 1" in provisioning and "type: file" in provisioning


@pytest.mark.parametrize(("title", "expr"), panel_exprs())
def test_dashboard_uses_only_defined_metrics(title: str, expr: str) -> None:
    used = metric_names(expr)
    assert used, f"panel {title!r}: no metric in {expr!r}"
    unknown = used - defined_names()
    assert not unknown, f"panel {title!r} reads metrics no code defines: {sorted(unknown)}"


def test_alert_rules_use_only_defined_metrics() -> None:
    exprs = rule_exprs()
    assert len(exprs) == len(re.findall(r"^\s*- (?:alert|record): ", RULES.read_text(), re.MULTILINE))
    defined = defined_names()
    unknown = {name: expr for expr in exprs for name in metric_names(expr) - defined}
    assert not unknown, f"rules read metrics no code defines: {unknown}"


def test_the_check_catches_an_unknown_metric() -> None:
    assert metric_names("rate(recommend_request_total[5m])") - defined_names() == {"recommend_request_total"}
