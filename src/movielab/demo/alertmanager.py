"""Running the real Alertmanager on a loopback port with movielab's routing (`deploy/alertmanager/alertmanager.yml`).

    cfg = local_config(pager_url="http://127.0.0.1:8085", timings=DRILL_TIMINGS)
    with AlertmanagerServer(cfg) as am:
        PrometheusServer(jobs, rules, alertmanagers=[am.address])  # Prometheus sends firing/resolved alerts here
        am.alerts()                                                  # what Alertmanager holds now

The shipped file routes by the rules' `severity` label (page / ticket), groups by alert and team and inhibits
symptoms of a known cause; its receivers are webhooks of the local pager (`movielab.recommender.monitoring.pager`).
`local_config` points them at another pager URL and, for drills and tests, shortens the grouping timings.
Clustering is switched off (`--cluster.listen-address=`): an Alertmanager would otherwise gossip on port 9094
of every interface. Debian ships the binary as `prometheus-alertmanager`; upstream calls it `alertmanager`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml

from movielab.demo.process import ReadyServer
from movielab.errors import MovielabError
from movielab.webserver import free_port

logger = logging.getLogger(__name__)

ALERTMANAGER_ENV = "MOVIELAB_ALERTMANAGER"  # path of the binary, when it is not on PATH
BINARIES = ("alertmanager", "prometheus-alertmanager")
CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "alertmanager" / "alertmanager.yml"  # in a source checkout
# Drills and tests: first notification after 1 s, news about a group every 2 s (so a resolution is sent within
# seconds), no repeats during a drill.
DRILL_TIMINGS = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}


class AlertmanagerError(MovielabError, RuntimeError):
    """Alertmanager could not be found, configured, started or queried; names what and why."""


def find_alertmanager() -> Path | None:
    """The Alertmanager binary: $MOVIELAB_ALERTMANAGER, then `alertmanager` or `prometheus-alertmanager` on PATH."""
    configured = os.environ.get(ALERTMANAGER_ENV)
    if configured and Path(configured).is_file() and os.access(configured, os.X_OK):
        return Path(configured)
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def load_config(path: Path | str = CONFIG) -> dict[str, Any]:
    """The Alertmanager configuration in `path` as a dict; AlertmanagerError naming the file if it is not one."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AlertmanagerError(f"alertmanager config {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or "route" not in data or "receivers" not in data:
        raise AlertmanagerError(f"alertmanager config {path}: expected a mapping with 'route' and 'receivers'")
    return data


def local_config(
    pager_url: str | None = None, timings: dict[str, str] | None = None, path: Path | str = CONFIG
) -> dict[str, Any]:
    """The config in `path` with every webhook pointed at `pager_url` (scheme and host:port replaced, each
    receiver's path kept) and, when given, `timings` (group_wait, group_interval, repeat_interval) set on the
    root route and every child route that sets them."""
    cfg = copy.deepcopy(load_config(path))
    if timings:
        unknown = set(timings) - set(DRILL_TIMINGS)
        if unknown:
            raise AlertmanagerError(f"unknown route timing(s) {sorted(unknown)}; known: {sorted(DRILL_TIMINGS)}")
        routes = [cfg["route"]]
        while routes:
            route = routes.pop()
            for key, value in timings.items():
                if route is cfg["route"] or key in route:
                    route[key] = value
            routes.extend(route.get("routes", []))
    if pager_url is not None:
        base = urlsplit(pager_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise AlertmanagerError(f"pager URL {pager_url!r} must be http(s)://host:port")
        for receiver in cfg["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = urlunsplit((base.scheme, base.netloc, urlsplit(hook["url"]).path, "", ""))
    return cfg


class AlertmanagerServer(ReadyServer):
    """An Alertmanager process on 127.0.0.1:`port` with a temporary config and data directory; `stop()` ends it."""

    name = "alertmanager"
    error = AlertmanagerError

    def __init__(
        self, config: dict[str, Any] | None = None, *, port: int | None = None, binary: Path | str | None = None
    ) -> None:
        self.binary = Path(binary) if binary else find_alertmanager()
        if self.binary is None:
            raise AlertmanagerError(
                f"alertmanager binary not found on PATH (or ${ALERTMANAGER_ENV}); install the "
                "Debian package 'prometheus-alertmanager' (or get it from prometheus.io)"
            )
        super().__init__()
        self.config = config if config is not None else load_config()
        self.port = port or free_port()

    @property
    def address(self) -> str:
        """host:port, as Prometheus's `alerting.alertmanagers` targets name it."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> AlertmanagerServer:
        """Write the config, start the process and return once `/-/ready` answers 200."""
        work = self._workdir()
        config_file = work / "alertmanager.yml"
        config_file.write_text(json.dumps(self.config, indent=2))  # JSON is YAML
        cmd = [
            str(self.binary),
            f"--config.file={config_file}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]
        return self._launch(cmd, timeout)

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now (API v2), inhibited ones included: each with `labels`, `annotations`,
        `status.state` ('active' or 'suppressed', with `inhibitedBy`), `startsAt`, `endsAt`."""
        params = {"active": "true", "silenced": "true", "inhibited": "true", "unprocessed": "true"}
        try:
            resp = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5.0)
        except httpx.HTTPError as exc:
            raise AlertmanagerError(f"alertmanager {self.url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise AlertmanagerError(f"alertmanager /api/v2/alerts answered {resp.status_code}: {resp.text[:200]}")
        return resp.json()
