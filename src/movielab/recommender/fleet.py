"""A fleet of serving replicas behind nginx, and the operations on it: rollout, canary share, promote, rollback.

Each replica is a process (`python -m movielab.recommender.fleet replica --port P --version FOLDER`) serving
one precomputed champion table and, during a canary, a challenger (see `serve.py`). nginx spreads clients
over the replicas. A rollout goes replica by replica: load the new version through the replica's admin
endpoint with `drain` on (it answers `/recommend` with 503 while its table is built in a worker thread, and
nginx sends those requests to another replica and leaves this one out for `Timeouts.fail_s`), wait until
its `/healthz` shows the new version and no drain, wait until nginx takes it back (`fail_s` + 1.2 s), next.
nginx's config is never reloaded: a reload closes idle kept-alive client connections, losing requests in flight.

Why drain with 503 rather than load in place: while a replica builds a 100,000-user table, its event loop
shares the GIL and the CPU with the build, so its answers get slow; drained, it gets almost no requests.
Measured with `benchmarks/rollout.py` (2 replicas, wrk -t2 -c32 through nginx, 3 rollouts each, 2 cores):
no rollout p99 14.2 ms, p99.9 119 ms; drained rollouts 0 failed of 302,515, p99 21.1 ms, p99.9 146 ms;
in-place rollouts 0 failed of 251,532, p99 131 ms, p99.9 388 ms. The old drain by nginx reload lost 59 of
204,467 requests (read errors: kept-alive client connections closed by retiring nginx workers).

Canary operations (`load_challenger`, `set_share`, `promote`, `rollback`) are applied to every replica; the
split is a stable hash of the user id, so a user lands in the same arm whichever replica answers.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from movielab.nginx import REPLICA_KEEPALIVE_S, Backend, Nginx, Timeouts, stop_process_group
from movielab.webserver import free_port

logger = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 600.0  # a load builds a whole answer table: seconds for 100,000s of users


class FleetError(RuntimeError):
    """A replica did not start, refused an admin request (the message carries its answer), or a rollout step
    failed; names the replica."""


@dataclass
class Replica:
    """One replica process and the loopback port it serves on."""

    port: int
    proc: subprocess.Popen
    log: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Base URL of the replica itself (admin endpoints answer here, not through nginx)."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class RolloutReport:
    """What a rollout did: the version, seconds per replica (drain to back in nginx), seconds overall."""

    version: str
    folder: Path
    replica_seconds: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0


def version_of(folder: Path) -> tuple[str, str]:
    """(model, version) from a version folder's manifest; FleetError when it cannot be read."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        return manifest["model"], manifest["version"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FleetError(f"version folder {folder}: cannot read model and version from {path}: {exc!r}") from exc


class Fleet:
    """N replicas of one version behind nginx, all under `folder`; `stop()` (or the context) ends every process."""

    def __init__(self, folder: Path, version: Path, replicas: int = 2, port: int | None = None,
                 host: str = "127.0.0.1", segments: Path | None = None, timeouts: Timeouts | None = None,
                 nginx_binary: str | None = None) -> None:  # fmt: skip
        if replicas < 1:
            raise ValueError(f"a fleet needs at least one replica, got {replicas}")
        self.folder = Path(folder).resolve()
        self.version = Path(version).resolve()
        self.n = replicas
        self.host = host
        self.port = port or free_port(host)
        self.segments = segments
        self.timeouts = timeouts or Timeouts()
        self.nginx_binary = nginx_binary
        self.replicas: list[Replica] = []
        self.nginx: Nginx | None = None
        self.champion = self.version  # folder of the version every replica serves as champion
        self.previous: Path | None = None  # the champion before the last rollout or promotion
        self.challenger: Path | None = None
        self._lock = threading.Lock()  # one operation at a time: rollouts and canary steps do not interleave
        self._back_at = 0.0  # monotonic time the last drained replica served again

    @property
    def url(self) -> str:
        """Base URL clients use (nginx)."""
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> Fleet:
        """Start the replicas, wait until each answers /healthz, then start nginx in front of them."""
        version_of(self.version)  # a clear error before any process starts
        self.folder.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # no orphans even if the caller forgets; stop() unregisters
        try:
            for _ in range(self.n):
                self.replicas.append(self._spawn(self.version))
            deadline = time.monotonic() + timeout
            for r in self.replicas:
                self._wait_serving(r, self.version, deadline)
            self.nginx = Nginx(self.folder / "nginx", self.port, [Backend(r.host, r.port) for r in self.replicas],
                               self.host, self.timeouts, self.nginx_binary).start()  # fmt: skip
        except BaseException:
            self.stop()
            raise
        logger.info("fleet of %d replicas on %s serving %s", self.n, self.url, self.version)
        return self

    def _spawn(self, version: Path) -> Replica:
        port = free_port(self.host)
        log = self.folder / f"replica-{port}.log"
        cmd = [sys.executable, "-m", "movielab.recommender.fleet", "replica", "--host", self.host, "--port",
               str(port), "--version", str(version), "--parent-pid", str(os.getpid())]  # fmt: skip
        if self.segments is not None:
            cmd += ["--segments", str(self.segments)]
        with open(log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        logger.info("replica pid %d on port %d (log %s)", proc.pid, port, log)
        return Replica(port, proc, log, self.host)

    def stop(self) -> None:
        """Stop nginx, then every replica (SIGTERM to its process group, SIGKILL after 10 s); safe to call twice."""
        atexit.unregister(self.stop)
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        for r in self.replicas:
            stop_process_group(r.proc, signal.SIGTERM, 10.0)
        self.replicas = []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- operations -----------------------------------------------------------------------------
    def rollout(self, version: Path, segments: Path | None = None, timeout: float = ADMIN_TIMEOUT_S,
                drain: bool = True) -> RolloutReport:  # fmt: skip
        """Serve `version` as champion on every replica, one at a time: load (draining it unless `drain` is
        False or it is the only replica), check /healthz, let nginx take it back, next."""
        version = Path(version).resolve()
        model, name = version_of(version)
        with self._lock:
            t0 = time.perf_counter()
            per: dict[int, float] = {}
            for r in self._running():
                t = time.perf_counter()
                self._load(r, version, "champion", segments, timeout, drain=drain)
                per[r.port] = time.perf_counter() - t
            self.previous, self.champion = self.champion, version
            report = RolloutReport(f"{model}/{name}", version, per, time.perf_counter() - t0)
        logger.info("rolled out %s to %d replicas in %.2f s", report.version, len(per), report.seconds)
        return report

    def load_challenger(self, version: Path, share: float = 0.0, salt: int = 0, segments: Path | None = None,
                        timeout: float = ADMIN_TIMEOUT_S) -> None:  # fmt: skip
        """Load `version` as challenger on every replica (drained one at a time) at share 0, then set `share`
        everywhere, so no user flips between arms while replicas disagree."""
        version = Path(version).resolve()
        version_of(version)
        with self._lock:
            for r in self._running():
                self._load(r, version, "challenger", segments, timeout, salt)
            self.challenger = version
        if share:
            self.set_share(share)

    def set_share(self, share: float, salt: int | None = None) -> list[dict]:
        """Route `share` (0..1) of the users to the challenger on every replica; their states."""
        body: dict[str, object] = {"share": share}
        if salt is not None:
            body["salt"] = salt
        with self._lock:
            return [_admin(r, "POST", "/admin/share", body) for r in self._running()]

    def promote(self) -> list[dict]:
        """Make the challenger the champion on every replica; their states."""
        with self._lock:
            states = [_admin(r, "POST", "/admin/promote", {}) for r in self._running()]
            if self.challenger is not None:
                self.previous, self.champion, self.challenger = self.champion, self.challenger, None
        return states

    def rollback(self) -> list[dict]:
        """Abort the canary: drop the challenger on every replica (all users back to the champion); their states.
        To go back to an older champion, `rollout(fleet.previous)`."""
        with self._lock:
            states = [_admin(r, "POST", "/admin/drop", {}) for r in self._running()]
            self.challenger = None
        return states

    def state(self) -> list[dict]:
        """`/admin/state` of every replica."""
        return [_admin(r, "GET", "/admin/state") for r in self._running()]

    # --- steps ----------------------------------------------------------------------------------
    def _running(self) -> list[Replica]:
        if self.nginx is None:
            raise FleetError("the fleet is not started")
        dead = [f"{r.url} (exit {r.proc.returncode}, log {r.log})" for r in self.replicas if r.proc.poll() is not None]
        if dead:
            raise FleetError(f"replica(s) exited: {', '.join(dead)}")
        return self.replicas

    def _load(self, r: Replica, version: Path, arm: str, segments: Path | None, timeout: float,
              salt: int = 0, drain: bool = True) -> None:  # fmt: skip
        """Load `version` as `arm` on `r`, drained while it loads unless it is the only replica (nothing else
        could answer); return once it serves the version again."""
        body: dict[str, object] = {"folder": str(version), "arm": arm}
        if segments is not None:
            body["segments"] = str(segments)
        if arm == "challenger":
            body["share"], body["salt"] = 0.0, salt
        drain = drain and len(self.replicas) > 1
        if drain:
            body["drain"] = True
            # nginx leaves a replica that answered 503 out for fail_s, counted on its clock of whole seconds
            # (so up to fail_s + 1 s): draining the next one before the last is back leaves one fewer to answer.
            time.sleep(max(0.0, self._back_at + self.timeouts.fail_s + 1.2 - time.monotonic()))
        try:
            _admin(r, "POST", "/admin/load", body, timeout)
            self._wait_serving(r, version, time.monotonic() + 30, arm)
        finally:
            if drain:  # also after a failed load: the replica stopped draining when the load ended
                self._back_at = time.monotonic()

    def _wait_serving(self, r: Replica, version: Path, deadline: float, arm: str = "champion") -> None:
        """Wait until the replica's /healthz names `version` in `arm` and it is not draining; FleetError if it
        exits or time runs out."""
        want = version_of(version)
        seen: object = "no answer"
        while time.monotonic() < deadline:
            if r.proc.poll() is not None:
                raise FleetError(f"replica {r.url} exited with {r.proc.returncode}: {_tail(r.log)}")
            try:
                with urllib.request.urlopen(f"{r.url}/healthz", timeout=2) as resp:
                    health = json.loads(resp.read())
                p = health["provenance"] if arm == "champion" else (health.get("challenger") or {}).get("provenance")
                seen = p and (p["model_name"], p["model_version"])
                if seen == want and not health.get("draining"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise FleetError(f"replica {r.url} does not serve {'/'.join(want)} as {arm} (last seen {seen}): {_tail(r.log)}")


def _admin(r: Replica, method: str, path: str, body: dict | None = None,
           timeout: float = 30.0) -> dict:  # fmt: skip
    """Call a replica's admin endpoint; its JSON answer, or FleetError with the status and its reason."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{r.url}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            reason = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            reason = text[:200]
        raise FleetError(f"replica {r.url}: {method} {path} answered {exc.code}: {reason}") from None
    except OSError as exc:
        raise FleetError(f"replica {r.url}: {method} {path} failed: {exc}") from exc


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:]) or "nothing logged"


# --- the replica process -------------------------------------------------------------------------
def serve_replica(host: str, port: int, version: Path, segments: Path | None = None,
                  parent_pid: int | None = None) -> None:  # fmt: skip
    """Load `version`, serve it on host:port until SIGTERM (or until `parent_pid` is gone); blocking."""
    import uvicorn

    from movielab.recommender.serve import create_app, load_version

    loaded = load_version(version, segments)
    app = create_app(loaded.table, folder=loaded.folder, manifest=loaded.manifest)
    # nginx closes its idle kept-alive connections to the replica first (see movielab.nginx).
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           timeout_keep_alive=REPLICA_KEEPALIVE_S,
                                           timeout_graceful_shutdown=5))  # fmt: skip
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(server, parent_pid), daemon=True).start()
    print(f"replica serving {loaded.table.provenance.header('model')} for {len(loaded.table):,} users on "
          f"http://{host}:{port}", flush=True)  # fmt: skip
    server.run()


def _exit_with_parent(server, parent_pid: int) -> None:
    # A replica whose operator died (even by SIGKILL) stops by itself instead of lingering as an orphan.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    logger.warning("parent %d is gone; stopping", parent_pid)
    server.should_exit = True


def main(argv: list[str] | None = None) -> int:
    """`python -m movielab.recommender.fleet replica --port P --version FOLDER [--segments FILE]`."""
    parser = argparse.ArgumentParser(prog="python -m movielab.recommender.fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("replica", help="serve one version folder with admin endpoints (a fleet member)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--version", type=Path, required=True, help="version folder (manifest.json + arrays)")
    p.add_argument("--segments", type=Path, help="user id -> segment file (.json or .arrow)")
    p.add_argument("--parent-pid", type=int, help="stop when this process is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_replica(args.host, args.port, args.version, args.segments, args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
