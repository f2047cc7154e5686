"""Running the real Prometheus on a loopback port: config, start, readiness, queries, clean stop.

    with PrometheusServer([ScrapeJob("recommender", ["127.0.0.1:8082"])], rule_files=["deploy/prometheus/alerts.yml"]) as prom:
        prom.query("up")          # instant vector as a list of {"metric": {...}, "value": [t, "1"]}
        prom.alerts()             # active alerts (pending or firing)

The config is written as JSON, which is valid YAML, so no YAML library is needed. Tests and demos
use 1 s scrape and rule-evaluation intervals; the data directory is temporary unless one is given.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from movielab.demo.process import ReadyServer
from movielab.errors import MovielabError
from movielab.webserver import free_port

logger = logging.getLogger(__name__)

DEFAULT_BINARY = "prometheus"
PROMETHEUS_ENV = "MOVIELAB_PROMETHEUS"  # path of the binary, when it is not on PATH


class PrometheusError(MovielabError, RuntimeError):
    """Prometheus could not be found, started or queried; names what and why."""


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: a name (the `job` label) and host:port targets serving `metrics_path`."""

    name: str
    targets: Sequence[str]
    metrics_path: str = "/metrics"


def find_prometheus(name: str = DEFAULT_BINARY) -> Path | None:
    """The Prometheus (or promtool, by `name`) binary: $MOVIELAB_PROMETHEUS's directory, then PATH; None if absent."""
    configured = os.environ.get(PROMETHEUS_ENV)
    if configured:
        candidate = Path(configured).with_name(name) if name != DEFAULT_BINARY else Path(configured)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def config(
    jobs: Iterable[ScrapeJob],
    rule_files: Iterable[Path | str] = (),
    interval: str = "1s",
    alertmanagers: Sequence[str] = (),
) -> dict[str, Any]:
    """A Prometheus configuration: global scrape/evaluation `interval`, the rule files, one scrape config a job,
    and the Alertmanagers (host:port) that firing and resolved alerts are sent to, if any."""
    jobs = list(jobs)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise PrometheusError(f"scrape job names must be unique, got {names}")
    for job in jobs:
        if not job.targets:
            raise PrometheusError(f"scrape job {job.name!r} has no targets")
    out = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": [
            {"job_name": j.name, "metrics_path": j.metrics_path, "static_configs": [{"targets": list(j.targets)}]}
            for j in jobs
        ],
    }
    if alertmanagers:
        out["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return out


class PrometheusServer(ReadyServer):
    """A Prometheus process on 127.0.0.1:`port` with a temporary data directory; `stop()` ends it cleanly."""

    name = "prometheus"
    error = PrometheusError

    def __init__(
        self,
        jobs: Iterable[ScrapeJob],
        rule_files: Iterable[Path | str] = (),
        *,
        interval: str = "1s",
        port: int | None = None,
        binary: Path | str | None = None,
        data_dir: Path | str | None = None,
        retention: str = "2h",
        alertmanagers: Sequence[str] = (),
    ) -> None:
        self.binary = Path(binary) if binary else find_prometheus()
        if self.binary is None:
            raise PrometheusError(
                f"prometheus binary not found on PATH (or ${PROMETHEUS_ENV}); install the "
                f"Debian package 'prometheus' or download it from prometheus.io"
            )
        super().__init__()
        self.config = config(jobs, rule_files, interval, alertmanagers)
        self.port = port or free_port()
        self.retention = retention
        self._data_dir = Path(data_dir) if data_dir else None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Write the config, start the process and return once `/-/ready` answers 200."""
        work = self._workdir()
        data = self._data_dir or work / "data"
        config_file = work / "prometheus.yml"
        config_file.write_text(json.dumps(self.config, indent=2))
        cmd = [
            str(self.binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={self.host}:{self.port}",
            f"--storage.tsdb.retention.time={self.retention}",
            "--web.enable-lifecycle",
        ]
        return self._launch(cmd, timeout)

    # --- HTTP API ----------------------------------------------------------------------------------
    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET /api/v1/`path` and return its `data`; raise PrometheusError with Prometheus's error text."""
        try:
            resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5.0)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"prometheus {self.url}/api/v1/{path} unreachable: {exc}") from exc
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"prometheus /api/v1/{path} {params or ''} failed ({resp.status_code}): "
                f"{body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate `expr` now; the instant vector as [{"metric": {labels}, "value": [time, "text"]}]."""
        data = self.api("query", {"query": expr})
        if data["resultType"] != "vector":
            raise PrometheusError(f"query {expr!r} gave a {data['resultType']}, expected an instant vector")
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The single value of `expr` now (None when the vector is empty; error when it has several series)."""
        result = self.query(expr)
        if len(result) > 1:
            raise PrometheusError(f"query {expr!r} gave {len(result)} series, expected at most one")
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts: each with `labels` (incl. alertname), `annotations`, `state` (pending/firing), `activeAt`."""
        return self.api("alerts")["alerts"]

    def alert_state(self, name: str) -> str:
        """'firing', 'pending' or 'inactive' for the alert rule `name` (the strongest state of its alerts)."""
        states = {a["state"] for a in self.alerts() if a["labels"].get("alertname") == name}
        return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with their `health` ('up', 'down', 'unknown') and `lastError`."""
        return self.api("targets")["activeTargets"]

    def rule_groups(self) -> list[dict[str, Any]]:
        """Loaded rule groups (checks that the rule files were read)."""
        return self.api("rules")["groups"]

    def wait_for(self, check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        """Poll `check` every 0.25 s until it is true; raise PrometheusError naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise PrometheusError(f"{what} not reached within {timeout} s")
            time.sleep(0.25)
