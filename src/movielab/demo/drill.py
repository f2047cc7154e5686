"""The incident drill: break the running recommender on purpose, watch the page arrive, mitigate, watch it resolve.

`scripts/drill` (or `python -m movielab.demo.drill`) starts a small operated system on free loopback ports, each part
a real process: the embedded Kafka broker, the world (`movielab world run`, accelerated), the recommender's
operator (`movielab recommender operate`: ingest, retraining, a fleet of replicas behind nginx), the local pager,
Alertmanager with `deploy/alertmanager/alertmanager.yml` and Prometheus with `deploy/prometheus/alerts.yml`.
Then, for each scenario, it breaks one thing, waits for the alert to fire in Prometheus and for the page to reach
the pager through Alertmanager, runs the mitigation as an engineer would (`movielab recommender control …`,
the exact command is logged) and waits for the resolved page:

1. `replica`: SIGKILL of a serving replica → `ServingReplicaDown` → `control restart-replicas`;
2. `ingest`: ingestion stalls (`control ingest-pause` stands in for a stuck consumer) → `ConsumerLagGrowing`
   → `control ingest-resume`;
3. `garbage`: a version whose movie ids lost their year (a stale export) is loaded by hand on every replica,
   past the gate → the world gets unknown ids → `RecommendationErrorsInStream` → `control pin --version <the
   last good registered version>`.

Alert rules wait minutes in production (`for: 10m`, `rate(…[5m])`); the drill runs a profile of the same rules
with every duration divided by `--scale` (default 60: `for: 10m` → 10 s, ranges at least 20 s), Prometheus
scraping and evaluating every second, and Alertmanager grouping for 1 s and re-notifying every 2 s. The drill
log (`drill.jsonl`, one step a line, and `drill.md`, a table per scenario) gives the time of each step, the alert
state, the page received, the command and the times to detect (break → page) and to recover (mitigation →
resolved page).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from movielab.errors import MovielabError

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]  # a source checkout: deploy/ is next to src/
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCENARIOS = ("replica", "ingest", "garbage")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DrillError(MovielabError, RuntimeError):
    """A part of the drill's system did not start, or a step did not happen in time; names which and why."""


# --- the rules' drill profile --------------------------------------------------------------------
def _seconds(number: str, unit: str) -> int:
    return int(number) * UNITS[unit]


def drill_rules(text: str, scale: float = 60.0, min_range_s: int = 20) -> str:
    """The rule file `text` with every duration divided by `scale`: `for:` (at least 1 s), range selectors
    `[…]` (at least `min_range_s`) and `offset` (at least 1 s). The floor keeps several samples of the slowest
    input in a window: the ingestor reads the topics' end offsets every 5 s, and a `deriv` over 10 s of that
    staircase turns negative now and then, resetting `ConsumerLagGrowing`'s `for:` (seen: 19–42 s to fire)."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")

    def scaled(number: str, unit: str, floor: int) -> str:
        return f"{max(floor, round(_seconds(number, unit) / scale))}s"

    text = re.sub(r"\bfor: (\d+)([smhd])\b", lambda m: f"for: {scaled(m[1], m[2], 1)}", text)
    text = re.sub(r"\[(\d+)([smhd])\]", lambda m: f"[{scaled(m[1], m[2], min_range_s)}]", text)
    return re.sub(r"\boffset (\d+)([smhd])\b", lambda m: f"offset {scaled(m[1], m[2], 1)}", text)


# --- the drill log -------------------------------------------------------------------------------
class DrillLog:
    """Steps as JSON lines (`drill.jsonl`) and the per-scenario summary (`drill.md`) in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "drill.jsonl"
        self.t0 = time.monotonic()
        self.results: list[dict[str, Any]] = []

    def step(self, scenario: str, step: str, observed: str, **extra: Any) -> dict[str, Any]:
        """Append one step: wall time, seconds since the drill began, what was observed, and `extra` fields."""
        row = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "t": round(time.monotonic() - self.t0, 2),
            "scenario": scenario,
            "step": step,
            "observed": observed,
            **extra,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        logger.info("[%s] %s: %s", scenario, step, observed)
        print(f"{row['t']:7.1f} s  [{scenario}] {step}: {observed}", flush=True)
        return row

    def summary(self, result: dict[str, Any]) -> None:
        """Keep one scenario's result and rewrite `drill.md`."""
        self.results.append(result)
        header = (
            "| scenario | alert | signal (s) | fired (s) | paged (s) | mitigation | mitigation began (s) | "
            "recovered (s) | time to detect (s) | time to recover (s) |"
        )
        lines = ["# Incident drill", "", header, "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.results:
            lines.append(
                f"| {r['scenario']} | {r['alert']} | {r['signal_s']} | {r['fired_s']} | {r['paged_s']} | "
                f"`{r['command']}` | "
                f"{r['mitigated_s']} | {r['resolved_s']} | {r['time_to_detect_s']} | "
                f"{r['time_to_recover_s']} |"
            )
        note = (
            "Times are seconds after the break. Signal: the raw metric shows the break in Prometheus (the "
            "baseline of detection); time to detect: break → page received; recovered: the service "
            "checks out again and the resolved page was received; time to recover: mitigation began → recovered. "
            "Steps: drill.jsonl."
        )
        lines += ["", note]
        (self.folder / "drill.md").write_text("\n".join(lines) + "\n")


# --- the system under drill ----------------------------------------------------------------------
@dataclass
class DrillConfig:
    """The system's size and the drill profile's timing."""

    users: int = 2000  # small: the machine the drill runs on also runs the world, the operator and Prometheus
    speed: float = 200.0  # simulated seconds per second
    replicas: int = 2
    scale: float = 60.0  # alert durations divided by this
    seed: int = 0
    step_timeout: float = 90.0  # seconds any one step may take

    def __post_init__(self) -> None:
        for name in ("users", "speed", "replicas", "scale", "step_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def check_scenarios(names: tuple[str, ...]) -> None:
    """ValueError unless `names` is a non-empty sequence of known drill scenarios (`SCENARIOS`)."""
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        problem = f"unknown {unknown}" if unknown else "none given"
        raise ValueError(f"scenarios: {problem}; known: {', '.join(SCENARIOS)}")


@dataclass
class System:
    """The running parts and how to reach them; `stop()` ends every process it started, in reverse order."""

    folder: Path
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)
    serving_url: str = ""
    control_url: str = ""
    world_url: str = ""
    tokens: Path | None = None
    prom: Any = None
    am: Any = None
    pages: Any = None

    @property
    def state(self) -> Path:
        """The operator's state folder (store, token file, fleet, registry)."""
        return self.folder / "recommender"

    def fleet(self) -> dict[str, Any]:
        """The fleet's `fleet.json`: replica pids and ports, the champion's folder."""
        return json.loads((self.state / "fleet" / "fleet.json").read_text())

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `python -m movielab <args>` with its output in `<folder>/<name>.log`."""
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it; closed after spawn
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "movielab", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        """DrillError naming a part that exited, with the end of its log."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.folder / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise DrillError(f"{name} exited with {proc.returncode}: " + " | ".join(tail))

    def stop(self) -> None:
        """Stop Prometheus, Alertmanager, the pager, then the world, the operator and the broker (SIGTERM, SIGKILL
        after 2 minutes), then whatever serving processes outlived the operator."""
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # stopping the rest matters more
                logger.exception("stopping a drill part failed")
        self.closers.clear()
        order = {"world": 0, "operator": 1, "broker": 2}  # the publisher first, the broker they both use last
        for _, proc in sorted(self.procs, key=lambda p: order.get(p[0], -1)):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:  # the operator stops its ingest and fleet first: up to a minute on a busy machine
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        self._stop_leftover_fleet()

    def _stop_leftover_fleet(self) -> None:
        """Stop replicas and nginx that outlived the operator (serving outlives a killed operator on purpose;
        the drill started them, so it stops them): the pids in `fleet.json` and nginx's pid file, each only if
        its command line still names this drill's folder (a reused pid is left alone)."""
        from movielab.recommender.serving.nginx import cmdline, stop_pid_group

        fleet = self.state / "fleet"
        try:
            pids = [int(r["pid"]) for r in self.fleet()["replicas"]]
        except (OSError, ValueError, KeyError, TypeError):
            pids = []
        try:
            pids.append(int((fleet / "nginx" / "nginx.pid").read_text().strip()))
        except (OSError, ValueError):
            pass
        for pid in pids:
            if str(self.state) in (cmdline(pid) or ""):
                logger.warning("stopping pid %d left running by the drill's operator", pid)
                stop_pid_group(pid, signal.SIGTERM, 10.0)


def wait_until(
    check: Callable[[], Any], timeout: float, what: str, system: System | None = None, every: float = 0.25
) -> Any:
    """Poll `check` until it returns something truthy (returned); DrillError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if system is not None:
            system.check_alive()
        try:
            value = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            value = None  # not up yet
        if value:
            return value
        if time.monotonic() > deadline:
            raise DrillError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def start_system(folder: Path, cfg: DrillConfig) -> System:
    """Start broker, world, operator (fleet behind nginx), pager, Alertmanager and Prometheus; return once the
    fleet serves a first champion and Prometheus scrapes every replica."""
    from movielab.demo.alertmanager import DRILL_TIMINGS, AlertmanagerServer, local_config
    from movielab.demo.prometheus import PrometheusServer, ScrapeJob
    from movielab.recommender.monitoring.pager import Pages, create_app
    from movielab.webserver import ServerThread, free_port

    folder.mkdir(parents=True, exist_ok=True)
    s = System(folder)
    try:
        kafka, api, serving, control = free_port(), free_port(), free_port(), free_port()
        s.spawn("broker", ["broker", "--port", str(kafka)])
        s.serving_url, s.control_url, s.world_url = (f"http://127.0.0.1:{p}" for p in (serving, control, api))
        wait_until(lambda: _connectable(kafka), 30, "the Kafka broker listening", s)
        s.spawn(
            "world",
            [
                "world",
                "run",
                "--kafka",
                f"127.0.0.1:{kafka}",
                "--teams",
                s.serving_url,
                "--users",
                str(cfg.users),
                "--speed",
                str(cfg.speed),
                "--forever",
                "--api-port",
                str(api),
                "--seed",
                str(cfg.seed),
            ],
        )
        state = s.state
        # Retrain every simulated half hour until the first champion serves; the drill then freezes the schedule.
        s.spawn(
            "operator",
            [
                "recommender",
                "operate",
                "--kafka",
                f"127.0.0.1:{kafka}",
                "--world-api",
                s.world_url,
                "--store",
                str(state / "store.duckdb"),
                "--artifacts",
                str(state / "models"),
                "--model",
                "popularity",
                "--replicas",
                str(cfg.replicas),
                "--port",
                str(serving),
                "--control-port",
                str(control),
                "--tick",
                "0.5",
            ],
            env={"MOVIELAB_REC_RETRAIN_EVERY_HOURS": "0.5", "MOVIELAB_REC_RETRAIN_MIN_EVENTS": "200"},
        )
        s.tokens = state / "access.tokens"
        s.pages = Pages(folder / "pages.jsonl")
        pager = ServerThread(create_app(s.pages)).start()
        s.closers.append(pager.stop)
        s.am = AlertmanagerServer(local_config(pager.url, DRILL_TIMINGS)).start()
        s.closers.append(s.am.stop)
        wait_until(
            lambda: httpx.get(f"{s.serving_url}/healthz", timeout=2).status_code == 200,
            240,
            "the fleet serving a first champion through nginx",
            s,
            every=1.0,
        )
        replicas = [f"127.0.0.1:{r['port']}" for r in s.fleet()["replicas"]]
        rules = folder / "alerts-drill.yml"
        rules.write_text(drill_rules(RULES.read_text(), cfg.scale))
        s.prom = PrometheusServer(
            [ScrapeJob("recommender", replicas), ScrapeJob("operator", [f"127.0.0.1:{control}"])],
            [rules],
            alertmanagers=[s.am.address],
        ).start()
        s.closers.append(s.prom.stop)

        def scraped() -> bool:
            targets = s.prom.targets()
            return len(targets) == len(replicas) + 1 and all(t["health"] == "up" for t in targets)

        wait_until(scraped, 60, "Prometheus scraping every replica and the operator", s)
        return s
    except BaseException:
        s.stop()
        raise


def _connectable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- the drill -----------------------------------------------------------------------------------
class Drill:
    """Runs scenarios against a started `System` and writes the drill log."""

    def __init__(self, system: System, log: DrillLog, cfg: DrillConfig) -> None:
        self.s = system
        self.log = log
        self.cfg = cfg

    def control(self, action: str, *extra: str) -> tuple[str, dict]:
        """Run `movielab recommender control <action>` as an engineer would; (the command line, its JSON answer)."""
        args = [
            "recommender",
            "control",
            action,
            *extra,
            "--operator",
            self.s.control_url,
            "--tokens",
            str(self.s.tokens),
        ]
        shown = "movielab " + " ".join(args)
        done = subprocess.run(
            [sys.executable, "-m", "movielab", *args], capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0:
            raise DrillError(f"`{shown}` failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
        return shown, json.loads(done.stdout)

    def pages_for(self, alert: str, status: str, since: str) -> list[dict]:
        """Pages of `alert` with `status` received at or after `since` (ISO time)."""
        return [
            p
            for p in self.s.pages.read()
            if p["alertname"] == alert and p["status"] == status and p["received_at"] >= since
        ]

    def run_scenario(
        self,
        name: str,
        alert: str,
        breaks: Callable[[], str],
        raw: str,
        mitigation: tuple[str, ...],
        recovered: Callable[[], str | None],
    ) -> dict[str, Any]:
        """Break, see the `raw` signal (PromQL) in Prometheus, the alert fire and the page arrive, mitigate, see
        recovery and the resolved page. The signal is the baseline: how soon the metrics show the break at all."""
        log, prom, timeout = self.log, self.s.prom, self.cfg.step_timeout
        wait_until(lambda: prom.alert_state(alert) == "inactive", timeout, f"{alert} inactive before {name}", self.s)
        since = datetime.now(UTC).isoformat(timespec="milliseconds")
        t0 = time.time()
        log.step(name, "break", breaks(), alert_state=prom.alert_state(alert))
        wait_until(lambda: prom.query(raw), timeout, f"the signal {raw} in Prometheus", self.s)
        seen = time.time() - t0
        log.step(name, "signal", f"Prometheus: {raw}", alert_state=prom.alert_state(alert), seconds=round(seen, 1))
        wait_until(lambda: prom.alert_state(alert) == "firing", timeout, f"{alert} firing in Prometheus", self.s)
        fired = time.time() - t0
        log.step(name, "alert firing", f"Prometheus: {alert} firing", alert_state="firing", seconds=round(fired, 1))
        page = wait_until(lambda: self.pages_for(alert, "firing", since), timeout, f"a page for {alert}", self.s)[0]
        paged = _at(page) - t0
        am = [a["status"]["state"] for a in self.s.am.alerts() if a["labels"].get("alertname") == alert]
        log.step(
            name,
            "page received",
            f"{page['kind']} via receiver {page['receiver']}: {page['summary']}",
            alert_state="firing",
            alertmanager=am,
            page=page,
            seconds=round(paged, 1),
        )
        # A resolution counts only after the mitigation began: an alert that flaps before it proves nothing.
        fixing = datetime.now(UTC).isoformat(timespec="milliseconds")
        mitigated = time.time() - t0
        log.step(
            name,
            "mitigation started",
            "running `movielab recommender control " + " ".join(mitigation) + " …`",
            alert_state=prom.alert_state(alert),
            seconds=round(mitigated, 1),
        )
        shown, answer = self.control(*mitigation)
        log.step(
            name, "mitigation done", f"ran `{shown}`", command=shown, answer=answer, seconds=round(time.time() - t0, 1)
        )
        observed = wait_until(recovered, timeout, f"recovery after {name}", self.s)
        log.step(name, "recovered", observed, alert_state=prom.alert_state(alert), seconds=round(time.time() - t0, 1))
        resolved_page = wait_until(
            lambda: self.pages_for(alert, "resolved", fixing), timeout, f"the resolved page for {alert}", self.s
        )[0]
        recovered_at = time.time() - t0
        resolved = max(recovered_at, _at(resolved_page) - t0)  # recovered: the check passed and the page came
        log.step(
            name,
            "resolved page",
            f"{resolved_page['kind']} resolved at {resolved_page['received_at']}: {alert}",
            alert_state=prom.alert_state(alert),
            page=resolved_page,
            seconds=round(resolved, 1),
        )
        result = {
            "scenario": name,
            "alert": alert,
            "signal_s": round(seen, 1),
            "fired_s": round(fired, 1),
            "paged_s": round(paged, 1),
            "command": shown,
            "mitigated_s": round(mitigated, 1),
            "resolved_s": round(resolved, 1),
            "time_to_detect_s": round(paged, 1),
            "time_to_recover_s": round(resolved - mitigated, 1),
        }
        log.summary(result)
        return result

    # --- scenarios ---
    def kill_replica(self) -> dict[str, Any]:
        """Scenario `replica`: SIGKILL one replica; the operator's fleet restarts it on command."""
        victim = self.s.fleet()["replicas"][0]

        def breaks() -> str:
            os.kill(victim["pid"], signal.SIGKILL)
            return f"SIGKILL to replica pid {victim['pid']} (port {victim['port']})"

        def recovered() -> str | None:
            target = f"127.0.0.1:{victim['port']}"
            up = [t for t in self.s.prom.targets() if t["labels"]["instance"] == target and t["health"] == "up"]
            ok = httpx.get(f"{self.s.serving_url}/recommend/1", timeout=2).status_code == 200
            new = self.s.fleet()["replicas"][0]["pid"]
            return f"replica on port {victim['port']} back as pid {new}; Prometheus scrapes it" if up and ok else None

        raw = f'up{{job="recommender",instance="127.0.0.1:{victim["port"]}"}} == 0'
        return self.run_scenario("replica", "ServingReplicaDown", breaks, raw, ("restart-replicas",), recovered)

    def stall_ingest(self) -> dict[str, Any]:
        """Scenario `ingest`: ingestion stops while the world keeps publishing; lag grows until resumed."""

        def breaks() -> str:
            shown, _ = self.control("ingest-pause")
            return f"ingestion stalled (`{shown}` stands in for a stuck consumer)"

        def recovered() -> str | None:
            lag = self.s.prom.value("sum(topic:consumer_lag:lines)")
            return f"consumer lag back to {lag:.0f} lines" if lag is not None and lag < 1000 else None

        raw = "sum(clamp_min(ingest_end_offset - ingest_committed_offset, 0)) > 1000"
        return self.run_scenario("ingest", "ConsumerLagGrowing", breaks, raw, ("ingest-resume",), recovered)

    def serve_garbage(self) -> dict[str, Any]:
        """Scenario `garbage`: a stale export (movie ids without their year) loaded by hand on every replica;
        the mitigation pins the last good registered version."""
        from movielab.auth import read_tokens

        fleet = self.s.fleet()
        good = self._registered_champion()
        bad = garbage_version(Path(fleet["champion"]), self.s.state / "models" / "drill-garbage")
        headers = read_tokens(self.s.tokens).headers()

        def breaks() -> str:
            for r in fleet["replicas"]:
                resp = httpx.post(
                    f"http://127.0.0.1:{r['admin_port']}/admin/load",
                    headers=headers,
                    timeout=120,
                    json={"folder": str(bad), "arm": "champion"},
                )
                if resp.status_code != 200:
                    raise DrillError(
                        f"loading the garbage version on replica {r['port']}: {resp.status_code} {resp.text}"
                    )
            n = len(fleet["replicas"])
            return f"version {bad.name} (movie ids without their year) loaded by hand on {n} replicas"

        def recovered() -> str | None:
            r = httpx.get(f"{self.s.serving_url}/recommend/1", timeout=2)
            model = r.headers.get("x-model", "")
            quiet = self.s.prom.alert_state("RecommendationErrorsInStream") == "inactive"
            if r.status_code == 200 and "garbage" not in model and quiet:
                return f"answers come from {model.split(';')[0]} again; error share back under 1%"
            return None

        raw = 'sum(increase(stream_recommendation_requests_total{outcome=~"error_status|bad_answer"}[10s])) > 0'
        return self.run_scenario(
            "garbage", "RecommendationErrorsInStream", breaks, raw, ("pin", "--version", good), recovered
        )

    def _registered_champion(self) -> str:
        """The registry's champion version number, from the operator's /status."""
        _, status = self.control("status")
        champion = status.get("champion")
        if not champion:
            raise DrillError("the operator has no registered champion to pin")
        return str(champion["version"])


def _at(page: dict) -> float:
    """When the pager received `page` (POSIX seconds)."""
    return datetime.fromisoformat(page["received_at"]).timestamp()


def garbage_version(champion: Path, into: Path) -> Path:
    """A copy of the `champion` version folder whose movie ids lost their year (`ben-hur+1959` → `ben-hur`), as a
    stale catalog export would have them: the world knows none of them. Its version name ends in `-garbage`."""
    manifest = json.loads((champion / "manifest.json").read_text())
    name = f"{manifest['version']}-garbage"
    folder = into / manifest["model"] / name
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(champion, folder)
    items = np.load(folder / "items.npy", allow_pickle=False)
    stale = np.asarray([re.sub(r"\+(\d{4})?$", "", str(i)) or f"{i}-old" for i in items], dtype=str)
    np.save(folder / "items.npy", stale, allow_pickle=False)
    manifest["version"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def run_drill(folder: Path, cfg: DrillConfig | None = None, scenarios: tuple[str, ...] = SCENARIOS) -> list[dict]:
    """Start the system in `folder`, freeze scheduled retraining, run `scenarios` in order, stop everything;
    the per-scenario results (also in `folder/drill.md`, steps in `folder/drill.jsonl`)."""
    cfg = cfg or DrillConfig()
    check_scenarios(scenarios)
    log = DrillLog(folder)
    system = start_system(folder, cfg)
    try:
        drill = Drill(system, log, cfg)
        shown, answer = drill.control("freeze")  # no release during the drill: every change is the drill's
        log.step(
            "setup",
            "system up",
            f"serving {system.serving_url}, control {system.control_url}, Prometheus "
            f"{system.prom.url}, Alertmanager {system.am.url}, pages {system.pages.path}; ran `{shown}`",
            answer=answer,
        )
        runs = {"replica": drill.kill_replica, "ingest": drill.stall_ingest, "garbage": drill.serve_garbage}
        return [runs[name]() for name in scenarios]
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m movielab.demo.drill [--out DIR] [--scenarios replica,ingest,garbage] [--users N] [--scale 60]`."""
    parser = argparse.ArgumentParser(prog="scripts/drill", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder of the drill log and the system's files (default: temp)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, in order, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--users", type=int, default=DrillConfig.users)
    parser.add_argument("--speed", type=float, default=DrillConfig.speed, help="simulated seconds per second")
    parser.add_argument("--scale", type=float, default=DrillConfig.scale, help="alert durations divided by this")
    args = parser.parse_args(argv)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    try:  # before anything starts: a bad argument is a usage error, not a traceback after minutes of set-up
        check_scenarios(scenarios)
    except ValueError as exc:
        parser.error(f"--{exc}")
    try:
        cfg = DrillConfig(users=args.users, speed=args.speed, scale=args.scale)
    except ValueError as exc:
        parser.error(f"--{exc}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    folder = args.out or Path(tempfile.mkdtemp(prefix="movielab-drill-"))
    results = run_drill(folder, cfg, scenarios)
    print((folder / "drill.md").read_text())
    print(f"drill log: {folder / 'drill.jsonl'}; {len(results)} scenario(s) detected, mitigated and resolved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
