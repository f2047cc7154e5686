"""A fleet of serving replicas behind nginx, and the operations on it: rollout, canary share, promote, rollback.

Each replica is a process (`python -m movielab.recommender.serving.fleet replica --port P --admin-port A --version
FOLDER --tokens FILE --root ARTIFACTS`) serving one precomputed champion table and, during a canary, a
challenger (see `serving/app.py` and `serving/state.py`): `/recommend` on its loopback port (nginx spreads clients over the replicas) and
the admin routes on a second loopback port that needs the fleet's token.

Serving outlives whoever started it: replicas and nginx run in sessions of their own and keep answering
with the last champion when the operator dies (even by SIGKILL). The fleet's state (`fleet.json`: pids and
ports) and nginx's pid file stay in the fleet's folder; a restarted operator's `Fleet.start()` adopts the
running replicas and nginx when they still answer (no gap), and otherwise stops what is left of them by pid
before starting anew, so a stale nginx never holds the port while the new one fails to bind. A rollout goes replica by replica: load the new version through the replica's admin
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
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from movielab.auth import Tokens, ensure_tokens, read_tokens
from movielab.recommender.errors import FleetError
from movielab.recommender.serving.nginx import (
    REPLICA_KEEPALIVE_S,
    Backend,
    Nginx,
    Timeouts,
    cmdline,
    pid_alive,
    stop_pid_group,
    stop_process_group,
)
from movielab.webserver import free_port

logger = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 600.0  # a load builds a whole answer table: seconds for 100,000s of users
REPLICA_HOST = "127.0.0.1"  # replicas (public and admin ports) listen on loopback only; nginx faces clients
STATE_FILE = "fleet.json"
COLDSTART_CHUNK = 500  # lists per admin request (`serving.admin.MAX_COLDSTART_LISTS`)
COLDSTART_KEPT = 200_000  # newest cold-start lists kept to give a replica started again


@dataclass
class Replica:
    """One replica process: its public (nginx-facing) and admin loopback ports; `proc` when this process
    started it, None when adopted from an earlier operator."""

    port: int
    admin_port: int
    pid: int
    log: Path
    proc: subprocess.Popen | None = None
    host: str = REPLICA_HOST

    @property
    def url(self) -> str:
        """Base URL of the replica's public app (what nginx proxies to)."""
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        """Base URL of the replica's admin app (token required)."""
        return f"http://{self.host}:{self.admin_port}"

    def exit_code(self) -> int | str | None:
        """None while it runs; its exit code (or "gone" for an adopted one) once it has stopped."""
        if self.proc is not None:
            return self.proc.poll()
        return None if pid_alive(self.pid) else "gone"

    def as_dict(self) -> dict:
        """What `fleet.json` keeps of it."""
        return {"pid": self.pid, "port": self.port, "admin_port": self.admin_port, "log": str(self.log)}


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
    """N replicas of one version behind nginx, all under `folder`; `stop()` (or the context) ends every process.

    `tokens` is the token file the replicas' admin ports accept (created with mode 0600 if missing; default
    `<folder>/access.tokens`); `root` the artifacts root that admin loads must stay inside (default: the
    version folder's grandparent, `<artifacts>/<model>/<version>`)."""

    def __init__(
        self,
        folder: Path,
        version: Path,
        replicas: int = 2,
        port: int | None = None,
        host: str = "127.0.0.1",
        segments: Path | None = None,
        timeouts: Timeouts | None = None,
        nginx_binary: str | None = None,
        tokens: Path | None = None,
        root: Path | list[Path] | None = None,
    ) -> None:
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
        self.tokens_path = Path(tokens) if tokens is not None else self.folder / "access.tokens"
        roots = [self.version.parent.parent] if root is None else [root] if isinstance(root, str | Path) else root
        self.roots = [Path(r).resolve() for r in roots]
        self.root = self.roots[0]
        self.tokens: Tokens | None = None
        self.replicas: list[Replica] = []
        self.nginx: Nginx | None = None
        self.adopted = False  # True when start() took over a running fleet instead of starting one
        self.champion = self.version  # folder of the version every replica serves as champion
        self.previous: Path | None = None  # the champion before the last rollout or promotion
        self.challenger: Path | None = None
        self._lock = threading.Lock()  # one operation at a time: rollouts and canary steps do not interleave
        self._back_at = 0.0  # monotonic time the last drained replica served again
        # New users' cold-start lists pushed so far (user id -> admin body entry), newest last, so a replica started
        # again gets them too; at most COLDSTART_KEPT (the oldest users' models know them by then).
        self._coldstart: dict[int, dict] = {}

    @property
    def url(self) -> str:
        """Base URL clients use (nginx)."""
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> Fleet:
        """Adopt the fleet an earlier process left running in `folder` when every replica and nginx still
        answer (then roll out this fleet's version if they serve another); else stop what is left of it and
        start the replicas, wait until each serves, start nginx and check it answers through it."""
        version_of(self.version)  # a clear error before any process starts
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tokens = ensure_tokens(self.tokens_path, "operator")
        atexit.register(self.stop)  # no orphans if the caller forgets (not after SIGKILL: then the next adopts)
        try:
            self.adopted = self._adopt()
            if not self.adopted:
                self._stop_stale()
                for _ in range(self.n):
                    self.replicas.append(self._spawn(self.version))
                deadline = time.monotonic() + timeout
                for r in self.replicas:
                    self._wait_serving(r, self.version, deadline)
                self.nginx = Nginx(
                    self.folder / "nginx",
                    self.port,
                    [Backend(r.host, r.port) for r in self.replicas],
                    self.host,
                    self.timeouts,
                    self.nginx_binary,
                ).start()
                self._check_through_nginx(deadline)
            self._save_state()
            if self.champion != self.version:
                self.rollout(self.version)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "fleet of %d replicas on %s serving %s%s",
            self.n,
            self.url,
            self.version,
            " (adopted)" if self.adopted else "",
        )
        return self

    def _spawn(self, version: Path, port: int | None = None, admin_port: int | None = None) -> Replica:
        port, admin_port = port or free_port(REPLICA_HOST), admin_port or free_port(REPLICA_HOST)
        log = self.folder / f"replica-{port}.log"
        cmd = [
            sys.executable,
            "-m",
            "movielab.recommender.serving.fleet",
            "replica",
            "--host",
            REPLICA_HOST,
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--version",
            str(version),
            "--tokens",
            str(self.tokens_path),
        ] + [a for r in self.roots for a in ("--root", str(r))]
        if self.segments is not None:
            cmd += ["--segments", str(self.segments)]
        with open(log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        logger.info("replica pid %d on port %d, admin %d (log %s)", proc.pid, port, admin_port, log)
        return Replica(port, admin_port, proc.pid, log, proc)

    def _read_state(self) -> dict | None:
        path = self.folder / STATE_FILE
        try:
            state = json.loads(path.read_text())
            state["replicas"] = [
                Replica(int(r["port"]), int(r["admin_port"]), int(r["pid"]), Path(r["log"])) for r in state["replicas"]
            ]
            return state
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("fleet state %s cannot be read (%r); starting a new fleet", path, exc)
            return None

    def _adopt(self) -> bool:
        """Take over the replicas and nginx of `fleet.json` if they run, answer and match this fleet."""
        state = self._read_state()
        if state is None:
            return False
        replicas: list[Replica] = state["replicas"]
        why = None
        if (state.get("host"), state.get("port"), len(replicas)) != (self.host, self.port, self.n):
            why = f"it served {state.get('host')}:{state.get('port')} with {len(replicas)} replicas"
        elif not all(_is_replica(r) for r in replicas):
            why = "a replica process is gone"
        if why is None:
            try:
                states = [self._call(r, "GET", "/admin/state", timeout=5) for r in replicas]
            except FleetError as exc:
                states, why = [], f"a replica does not answer: {exc}"
        if why is None:
            backends = [Backend(r.host, r.port) for r in replicas]
            nginx = Nginx.adopt(self.folder / "nginx", self.port, backends, self.host, self.timeouts, self.nginx_binary)
            if nginx is None:
                why = "its nginx is not running with this fleet's config"
        if why is not None:
            logger.warning("not adopting the fleet in %s: %s; stopping what is left of it", self.folder, why)
            return False
        self.replicas, self.nginx = replicas, nginx
        self.champion = Path(states[0]["champion"]["folder"])
        challenger = states[0].get("challenger")
        self.challenger = Path(challenger["folder"]) if challenger else None
        logger.info("adopted the running fleet: replicas %s, nginx pid %d", [r.pid for r in replicas], nginx.pid)
        return True

    def _stop_stale(self) -> None:
        """Stop replicas an earlier fleet in this folder left running (nginx's own pid file is handled by
        `Nginx.start`)."""
        state = self._read_state()
        for r in state["replicas"] if state else []:
            if _is_replica(r):
                logger.warning("stopping stale replica pid %d (port %d)", r.pid, r.port)
                stop_pid_group(r.pid, signal.SIGTERM, 10.0)
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def _check_through_nginx(self, deadline: float) -> None:
        """Readiness end to end: `/healthz` through nginx answers 200 (nginx bound the port, not a stale one)."""
        last: object = None
        end = min(deadline, time.monotonic() + 10)
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = resp.status
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.05)
        raise FleetError(f"nginx on {self.url} does not pass /healthz to the replicas: {last}")

    def _save_state(self) -> None:
        state = {
            "host": self.host,
            "port": self.port,
            "replicas": [r.as_dict() for r in self.replicas],
            "nginx_pid": self.nginx.pid if self.nginx else None,
            "champion": str(self.champion),
            "challenger": None if self.challenger is None else str(self.challenger),
        }
        tmp = self.folder / (STATE_FILE + ".new")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.folder / STATE_FILE)

    def stop(self) -> None:
        """Stop nginx, then every replica (SIGTERM to its process group, SIGKILL after 10 s); safe to call twice."""
        atexit.unregister(self.stop)
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        for r in self.replicas:
            if r.proc is not None:
                stop_process_group(r.proc, signal.SIGTERM, 10.0)
            else:
                stop_pid_group(r.pid, signal.SIGTERM, 10.0)
        if self.replicas:
            (self.folder / STATE_FILE).unlink(missing_ok=True)
        self.replicas = []

    def detach(self) -> None:
        """Leave the replicas and nginx running after this process ends (the next `start()` adopts them)."""
        atexit.unregister(self.stop)
        logger.info("leaving the fleet on %s running (state in %s)", self.url, self.folder / STATE_FILE)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- operations -----------------------------------------------------------------------------
    def rollout(
        self, version: Path, segments: Path | None = None, timeout: float = ADMIN_TIMEOUT_S, drain: bool = True
    ) -> RolloutReport:
        """Serve `version` as champion on every replica, one at a time: load (draining it unless `drain` is
        False or it is the only replica), check its state, let nginx take it back, next."""
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
            self._save_state()
            report = RolloutReport(f"{model}/{name}", version, per, time.perf_counter() - t0)
        logger.info("rolled out %s to %d replicas in %.2f s", report.version, len(per), report.seconds)
        return report

    def load_challenger(
        self,
        version: Path,
        share: float = 0.0,
        salt: int = 0,
        segments: Path | None = None,
        timeout: float = ADMIN_TIMEOUT_S,
    ) -> None:
        """Load `version` as challenger on every replica (drained one at a time) at share 0, then set `share`
        everywhere, so no user flips between arms while replicas disagree."""
        version = Path(version).resolve()
        version_of(version)
        with self._lock:
            for r in self._running():
                self._load(r, version, "challenger", segments, timeout, salt)
            self.challenger = version
            self._save_state()
        if share:
            self.set_share(share)

    def set_share(self, share: float, salt: int | None = None) -> list[dict]:
        """Route `share` (0..1) of the users to the challenger on every replica; their states."""
        body: dict[str, object] = {"share": share}
        if salt is not None:
            body["salt"] = salt
        with self._lock:
            return [self._call(r, "POST", "/admin/share", body) for r in self._running()]

    def promote(self) -> list[dict]:
        """Make the challenger the champion on every replica; their states."""
        with self._lock:
            states = [self._call(r, "POST", "/admin/promote", {}) for r in self._running()]
            if self.challenger is not None:
                self.previous, self.champion, self.challenger = self.champion, self.challenger, None
            self._save_state()
        return states

    def rollback(self) -> list[dict]:
        """Abort the canary: drop the challenger on every replica (all users back to the champion); their states.
        To go back to an older champion, `rollout(fleet.previous)`."""
        with self._lock:
            states = [self._call(r, "POST", "/admin/drop", {}) for r in self._running()]
            self.challenger = None
            self._save_state()
        return states

    def restart_exited(self, timeout: float = 120.0) -> list[int]:
        """Start again every replica whose process has exited, on its old ports (nginx's config names them, so it
        needs no change), serving the champion and, during a canary, the challenger at the share and salt the
        running replicas use; the public ports restarted (empty when every replica runs)."""
        with self._lock:
            if self.nginx is None:
                raise FleetError("the fleet is not started")
            dead = [i for i, r in enumerate(self.replicas) if r.exit_code() is not None]
            alive = [r for r in self.replicas if r.exit_code() is None]
            split = self._call(alive[0], "GET", "/admin/state") if dead and alive and self.challenger else None
            for i in dead:
                old = self.replicas[i]
                logger.warning("replica on port %d exited (%s); starting it again", old.port, old.exit_code())
                r = self.replicas[i] = self._spawn(self.champion, old.port, old.admin_port)
                self._wait_serving(r, self.champion, time.monotonic() + timeout)
                if split is not None and split.get("challenger"):
                    self._load(r, self.challenger, "challenger", None, timeout, int(split["salt"]), drain=False)
                    self._call(r, "POST", "/admin/share", {"share": split["share"], "salt": split["salt"]})
                self._send_coldstart(r, list(self._coldstart.values()))
            if dead:
                self._save_state()
            return [self.replicas[i].port for i in dead]

    def set_coldstart(self, lists: Iterable) -> int:
        """Serve new users' cold-start lists (`ingest.coldstart.ColdStartList`s: user_id, movies, matcher,
        fallback) on every replica through `POST /admin/coldstart`, in chunks; kept to give a restarted replica.
        Returns how many lists were pushed; FleetError names a replica that refused them."""
        entries = [
            {
                "user_id": int(c.user_id),
                "movies": list(c.movies),
                "matcher": str(c.matcher),
                "fallback": str(c.fallback),
            }
            for c in lists
        ]
        if not entries:
            return 0
        with self._lock:
            for e in entries:
                self._coldstart.pop(e["user_id"], None)
                self._coldstart[e["user_id"]] = e
            while len(self._coldstart) > COLDSTART_KEPT:
                del self._coldstart[next(iter(self._coldstart))]
            for r in self._running():
                self._send_coldstart(r, entries)
        return len(entries)

    def _send_coldstart(self, r: Replica, entries: list[dict]) -> None:
        for i in range(0, len(entries), COLDSTART_CHUNK):
            self._call(r, "POST", "/admin/coldstart", {"lists": entries[i : i + COLDSTART_CHUNK]})

    def state(self) -> list[dict]:
        """`/admin/state` of every replica."""
        return [self._call(r, "GET", "/admin/state") for r in self._running()]

    # --- steps ----------------------------------------------------------------------------------
    def _running(self) -> list[Replica]:
        if self.nginx is None:
            raise FleetError("the fleet is not started")
        dead = [f"{r.url} (exit {r.exit_code()}, log {r.log})" for r in self.replicas if r.exit_code() is not None]
        if dead:
            raise FleetError(f"replica(s) exited: {', '.join(dead)}")
        return self.replicas

    def _load(
        self,
        r: Replica,
        version: Path,
        arm: str,
        segments: Path | None,
        timeout: float,
        salt: int = 0,
        drain: bool = True,
    ) -> None:
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
            self._call(r, "POST", "/admin/load", body, timeout)
            self._wait_serving(r, version, time.monotonic() + 30, arm)
        finally:
            if drain:  # also after a failed load: the replica stopped draining when the load ended
                self._back_at = time.monotonic()

    def _wait_serving(self, r: Replica, version: Path, deadline: float, arm: str = "champion") -> None:
        """Wait until the replica's admin state names `version` in `arm` and it is not draining; FleetError if
        it exits or time runs out."""
        want = version_of(version)
        seen: object = "no answer"
        while time.monotonic() < deadline:
            if r.exit_code() is not None:
                raise FleetError(f"replica {r.url} exited with {r.exit_code()}: {_tail(r.log)}")
            try:
                state = self._call(r, "GET", "/admin/state", timeout=2)
                p = (state.get(arm) or {}).get("provenance")
                seen = p and (p["model_name"], p["model_version"])
                if seen == want and not state.get("draining"):
                    return
            except FleetError:
                pass
            time.sleep(0.05)
        raise FleetError(f"replica {r.url} does not serve {'/'.join(want)} as {arm} (last seen {seen}): {_tail(r.log)}")

    def _call(self, r: Replica, method: str, path: str, body: dict | None = None, timeout: float = 30.0) -> dict:
        """Call a replica's admin endpoint with the fleet's token; its JSON answer, or FleetError with the
        status and its reason."""
        if self.tokens is None:
            raise FleetError("the fleet is not started (no token yet)")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{r.admin_url}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json", **self.tokens.headers()},
        )
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


def _is_replica(r: Replica) -> bool:
    """Whether pid `r.pid` is still a replica process with this admin port (a reused pid is not)."""
    args = cmdline(r.pid)
    return args is not None and "movielab.recommender.serving.fleet" in args and str(r.admin_port) in args


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:]) or "nothing logged"


# --- the replica process -------------------------------------------------------------------------
def serve_replica(
    host: str, port: int, admin_port: int, version: Path, tokens: Path, root: list[Path], segments: Path | None = None
) -> None:
    """Load `version`, serve `/recommend` on host:port and the admin routes (token from `tokens`, loads inside
    the `root` folders) on host:admin_port until SIGTERM; blocking. It does not stop with its parent: serving outlives the
    operator, and the next operator adopts it."""
    from movielab.recommender.serving.admin import create_admin_app
    from movielab.recommender.serving.app import create_app
    from movielab.recommender.serving.versions import load_version
    from movielab.webserver import serve_listeners

    access = read_tokens(tokens)
    loaded = load_version(version, segments)
    app = create_app(loaded.table, folder=loaded.folder, manifest=loaded.manifest)
    admin = create_admin_app(app, access, root)
    print(
        f"replica serving {loaded.table.provenance.header('model')} for {len(loaded.table):,} users on "
        f"http://{host}:{port} (admin on port {admin_port})",
        flush=True,
    )
    # nginx closes its idle kept-alive connections to the replica first (see movielab.recommender.serving.nginx).
    serve_listeners(
        [(app, host, port), (admin, host, admin_port)],
        timeout_keep_alive=REPLICA_KEEPALIVE_S,
        timeout_graceful_shutdown=5,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m movielab.recommender.serving.fleet replica --port P --admin-port A --version FOLDER --tokens FILE
    --root DIR [--segments FILE]`."""
    parser = argparse.ArgumentParser(
        prog="python -m movielab.recommender.serving.fleet", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("replica", help="serve one version folder with admin endpoints (a fleet member)")
    p.add_argument("--host", default=REPLICA_HOST)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--admin-port", dest="admin_port", type=int, required=True)
    p.add_argument("--version", type=Path, required=True, help="version folder (manifest.json + arrays)")
    p.add_argument("--tokens", type=Path, required=True, help="token file the admin port accepts")
    p.add_argument(
        "--root",
        type=Path,
        action="append",
        required=True,
        help="artifacts root: admin loads stay inside it (repeat for several)",
    )
    p.add_argument("--segments", type=Path, help="user id -> segment file (.json or .arrow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_replica(args.host, args.port, args.admin_port, args.version, args.tokens, args.root, args.segments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
