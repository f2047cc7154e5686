"""nginx in front of the serving replicas: a generated config, nginx as a foreground child, checked reloads.

Clients reach `/recommend/<user>` and `/healthz` through nginx; everything else answers 404, and `/admin`
403: admin endpoints are reached on each replica's own loopback port only. nginx retries a request on the
next replica on a connection error, a time-out, 502 or 503, with a short connect time-out and a read time-out
well below the world's 600 ms, so one slow or dead replica costs a client at most one retry; a replica that
failed a try (or answered 503) gets no requests for `Timeouts.fail_s`. That is how a replica drains during
a rollout: it answers 503 while it loads (see `serving/admin.py`, `drain` in `serving/state.py`), and nginx's config never changes. Each replica
is listed a second time as a backup, so a moment where every replica is marked failed (one drained, another
missed a try) still finds a replica instead of answering 502 "no live upstreams".

Why no reload during a rollout: a reload makes the old workers close their idle kept-alive client
connections, and a request a client has just sent on one is lost (measured: 59 of 204,467 wrk requests
during 3 reload-drained rollouts failed with read errors). `reload` is kept for changing the set of
replicas; `Backend.down` takes one out for good.

Keep-alive on both sides is set so that nginx is never the one that closes a client connection with a
request in flight, and never reuses an upstream connection the replica is closing: clients may keep a
connection for `CLIENT_KEEPALIVE_S` and send any number of requests on it; nginx drops its idle upstream
connections after `UPSTREAM_KEEPALIVE_S`, before the replica's own idle time-out (`REPLICA_KEEPALIVE_S`,
uvicorn's default of 5 s would close first and race nginx's next request, which then counts as a failed try).

Everything nginx writes (pid, error log, temp files) lives in the folder given; nothing touches /etc or /var.
nginx runs in a session of its own, so it outlives a process that dies by SIGKILL; its pid file is how the
next start finds it: `Nginx.adopt` takes over one that runs this exact config, and `Nginx.start` stops one
that does not before starting, then counts nginx as started only once its own pid is in the pid file (nginx
writes it after binding the port), so a stale nginx answering on the port is never mistaken for the new one.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from movielab.recommender.errors import NginxError

logger = logging.getLogger(__name__)

PROXY_HEADER = "X-Movielab-Proxy"  # the replicas refuse admin requests that carry it (see serving/admin.py)
WORLD_TIMEOUT_MS = 600
CLIENT_KEEPALIVE_S = 75  # the world's aiohttp client closes its idle connections after 15 s, before nginx does
UPSTREAM_KEEPALIVE_S = 30  # nginx closes idle connections to replicas first ...
REPLICA_KEEPALIVE_S = 60  # ... the replicas (uvicorn's timeout_keep_alive) later


@dataclass(frozen=True)
class Backend:
    """One replica behind nginx; `down` takes it out (no new requests after the next reload)."""

    host: str
    port: int
    down: bool = False

    @property
    def address(self) -> str:
        """host:port as nginx writes it."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    """Proxy time-outs in ms: connect, read (and send) per try, the whole request across retries, and how
    long a replica that failed a try (or answered 503) gets no requests (whole seconds)."""

    connect_ms: int = 50
    read_ms: int = 250
    total_ms: int = 550
    fail_s: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.connect_ms <= self.read_ms < self.total_ms < WORLD_TIMEOUT_MS:
            raise ValueError(
                f"time-outs {self}: need 0 < connect <= read < total < {WORLD_TIMEOUT_MS} ms "
                "(the world gives up after 600 ms)"
            )
        if isinstance(self.fail_s, bool) or not isinstance(self.fail_s, int) or self.fail_s < 1:
            raise ValueError(
                f"time-outs {self}: fail_s must be a whole number of seconds, at least 1 "
                "(nginx's fail_timeout takes no ms)"
            )


def find_nginx() -> str | None:
    """Path of the nginx binary (PATH, else /usr/sbin/nginx), or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def render_config(
    folder: Path,
    port: int,
    backends: Sequence[Backend],
    host: str = "127.0.0.1",
    timeouts: Timeouts = Timeouts(),
    workers: int = 1,
    keepalive: int = 64,
) -> str:
    """The nginx config: listen on host:port, proxy /recommend/ and /healthz to the backends, refuse the rest."""
    if not backends:
        raise ValueError("nginx config: no replicas to proxy to")
    if len({b.address for b in backends}) != len(backends):
        raise ValueError(f"nginx config: replicas repeat: {[b.address for b in backends]}")
    for b in (*backends, Backend(host, port)):
        if not isinstance(b.port, int) or not 0 < b.port < 65536:
            raise ValueError(f"nginx config: port {b.port!r} of {b.host} is not in 1..65535")
    if all(b.down for b in backends):
        raise ValueError("nginx config: every replica is drained; nginx would answer 502 to every request")
    if workers < 1 or keepalive < 1:
        raise ValueError(f"nginx config: workers={workers} and keepalive={keepalive} must be at least 1")
    folder = Path(folder).resolve()
    temp = folder / "temp"
    fails = f"max_fails=1 fail_timeout={timeouts.fail_s}s"
    servers = "\n".join(f"        server {b.address} {fails}{' down' if b.down else ''};" for b in backends)
    # The same replicas again as backups: if every primary entry is marked failed at once (a replica
    # drained by a 503 while another missed one try), nginx tries these instead of answering 502.
    servers += "".join(f"\n        server {b.address} backup {fails};" for b in backends if not b.down)
    tries = len(backends) + 1  # a draining replica's 503 on its primary and its backup entry, then another one
    proxy = f"""            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header {PROXY_HEADER} 1;
            proxy_connect_timeout {timeouts.connect_ms}ms;
            proxy_send_timeout {timeouts.read_ms}ms;
            proxy_read_timeout {timeouts.read_ms}ms;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries {tries};
            proxy_next_upstream_timeout {timeouts.total_ms}ms;"""
    return f"""# Generated by movielab.recommender.serving.nginx; rewritten on every change.
daemon off;
master_process on;
worker_processes {workers};
{_user_line()}pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;

events {{
    worker_connections 4096;
}}

http {{
    # Only answers a client sees as failed are logged (one line per request would cost throughput).
    map $status $movielab_failed {{
        ~^[23] 0;
        default 1;
    }}
    log_format movielab '$time_iso8601 $status "$request" upstream=$upstream_addr '
                        'upstream_status=$upstream_status $request_time s';
    access_log {folder / "failed.log"} movielab if=$movielab_failed;
    default_type text/plain;
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    keepalive_timeout {CLIENT_KEEPALIVE_S}s;
    keepalive_requests 1000000;

    upstream replicas {{
{servers}
        keepalive {keepalive};
        keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;
        keepalive_requests 1000000;
    }}

    server {{
        listen {host}:{port} backlog=4096;
        location /recommend/ {{
{proxy}
        }}
        location = /healthz {{
{proxy}
        }}
        location /admin {{
            return 403 "admin endpoints are on the replicas' own ports only\\n";
        }}
        location / {{
            return 404 "not found: this service answers /recommend/<user id> and /healthz\\n";
        }}
    }}
}}
"""


def _user_line() -> str:
    # As root, nginx would run its workers as `nobody`, who cannot enter a private temp folder.
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"


class Nginx:
    """nginx serving `port` in front of `backends`, run as a foreground child with everything in `folder`."""

    def __init__(
        self,
        folder: Path,
        port: int,
        backends: Sequence[Backend],
        host: str = "127.0.0.1",
        timeouts: Timeouts = Timeouts(),
        binary: str | None = None,
        workers: int = 1,
    ) -> None:
        found = binary or find_nginx()
        if found is None:
            raise NginxError("nginx is not installed (Debian: apt-get install nginx-light)")
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):
            raise NginxError(f"nginx binary {found} is not an executable file")
        self.binary = found
        self.folder = Path(folder).resolve()
        self.host, self.port = host, port
        self.timeouts, self.workers = timeouts, workers
        self.backends = list(backends)
        self.config_path = self.folder / "nginx.conf"
        self.pid_path = self.folder / "nginx.pid"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the master's pid: our child's, or an adopted one's

    @classmethod
    def adopt(
        cls,
        folder: Path,
        port: int,
        backends: Sequence[Backend],
        host: str = "127.0.0.1",
        timeouts: Timeouts = Timeouts(),
        binary: str | None = None,
        workers: int = 1,
    ) -> Nginx | None:
        """The nginx an earlier process started in `folder`, if its master (by the pid file) still runs there
        with exactly the config these arguments give and accepts connections on host:port; else None."""
        n = cls(folder, port, backends, host, timeouts, binary, workers)
        pid = n._running_pid()
        if pid is None:
            return None
        try:
            same = n.config_path.read_text() == render_config(n.folder, port, n.backends, host, timeouts, workers)
        except (OSError, ValueError):
            same = False
        if not same or not _accepts(host, port):
            return None
        n.pid = pid
        logger.info("adopted nginx (pid %d) on %s", pid, n.url)
        return n

    def _running_pid(self) -> int | None:
        """The pid in the pid file if that process is an nginx master with this folder as its prefix."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        args = cmdline(pid)
        if args is None or "nginx" not in args or str(self.folder) not in args:
            return None
        return pid

    @property
    def url(self) -> str:
        """Base URL clients use, e.g. http://127.0.0.1:8082."""
        return f"http://{self.host}:{self.port}"

    def _args(self) -> list[str]:
        return [self.binary, "-p", str(self.folder), "-c", str(self.config_path), "-e", str(self.folder / "error.log")]

    def write_config(self, backends: Sequence[Backend] | None = None) -> None:
        """Render the config for `backends` (default: the current ones), check it with `nginx -t`, then install
        it atomically; a config nginx refuses raises NginxError with nginx's reason, the old one stays."""
        backends = list(self.backends if backends is None else backends)
        text = render_config(self.folder, self.port, backends, self.host, self.timeouts, self.workers)
        (self.folder / "temp").mkdir(parents=True, exist_ok=True)
        candidate = self.folder / "nginx.conf.new"
        candidate.write_text(text)
        self.check(candidate)
        candidate.replace(self.config_path)  # atomic: a reload reads the old or the new file, never half
        self.backends = backends

    def check(self, path: Path | None = None) -> None:
        """`nginx -t` on the config file; NginxError quoting nginx's reason if it is refused."""
        path = path or self.config_path
        args = [self.binary, "-t", "-q", "-p", str(self.folder), "-c", str(path), "-e", str(self.folder / "error.log")]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            reason = " ".join(line for line in done.stderr.splitlines() if "[emerg]" in line or "[alert]" in line)
            raise NginxError(f"nginx refused the config {path}: {reason or done.stderr.strip()}")

    def start(self, timeout: float = 10.0) -> Nginx:
        """Write and check the config, start nginx (own process group), return once it accepts connections."""
        if self.pid is not None:
            raise NginxError(f"nginx on port {self.port} is already started")
        self.folder.mkdir(parents=True, exist_ok=True)
        stale = self._running_pid()
        if stale is not None:  # left by a process that died without stopping it: it may hold our port
            logger.warning("stopping stale nginx pid %d found by its pid file %s", stale, self.pid_path)
            stop_pid_group(stale, signal.SIGTERM, timeout)
        self.pid_path.unlink(missing_ok=True)
        self.write_config()
        with open(self.folder / "stderr.log", "ab") as err:  # nginx keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        # Ready when our master wrote its pid (it does so after binding) and the port accepts connections;
        # the port alone could be answered by another process while ours fails to bind.
        while not (self._pid_file_is_ours() and self.proc.poll() is None and _accepts(self.host, self.port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self._error_tail()
                self.stop()
                raise NginxError(f"nginx on {self.host}:{self.port} did not start within {timeout} s: {err}")
            time.sleep(0.02)
        logger.info(
            "nginx (pid %d) on %s in front of %s", self.proc.pid, self.url, ", ".join(b.address for b in self.backends)
        )
        return self

    def reload(self, backends: Sequence[Backend] | None = None, timeout: float = 10.0) -> None:
        """Install a checked config for `backends` and reload: new workers take it, old ones finish their
        requests (and close idle client connections); return once a new worker runs."""
        if self.pid is None or not pid_alive(self.pid):
            raise NginxError(f"nginx on port {self.port} is not running")
        self.write_config(backends)
        before = _children(self.pid)
        done = subprocess.run([*self._args(), "-s", "reload"], capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise NginxError(f"nginx reload failed: {done.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while before is not None and not (_children(self.pid) or set()) - before:
            if not pid_alive(self.pid) or time.monotonic() > deadline:
                raise NginxError(f"nginx did not start new workers within {timeout} s: {self._error_tail()}")
            time.sleep(0.005)
        logger.info("nginx reloaded: %s", ", ".join(f"{b.address}{' (down)' if b.down else ''}" for b in self.backends))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx and its workers (the whole process group); safe to call twice."""
        proc, pid, self.proc, self.pid = self.proc, self.pid, None, None
        if proc is not None:
            stop_process_group(proc, signal.SIGTERM, timeout)
        elif pid is not None:  # adopted: not our child, so watch the pid instead of waiting for it
            stop_pid_group(pid, signal.SIGTERM, timeout)

    def _pid_file_is_ours(self) -> bool:
        try:
            return int(self.pid_path.read_text().strip()) == self.pid
        except (OSError, ValueError):
            return False

    def _error_tail(self, lines: int = 5) -> str:
        text = "".join(
            (self.folder / n).read_text(errors="replace")
            for n in ("error.log", "stderr.log")
            if (self.folder / n).exists()
        )
        return " | ".join(text.strip().splitlines()[-lines:]) or "no error logged"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _children(pid: int) -> set[int] | None:
    """Child pids of `pid` (Linux /proc), None where the kernel does not list them."""
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return None


def stop_process_group(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Signal a child's process group, wait, and kill the group if it is still there after `timeout`."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        logger.warning("process group %d did not stop within %.0f s; killing it", proc.pid, timeout)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    try:  # workers left behind by a master that died first
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cmdline(pid: int) -> str | None:
    """The command line of process `pid` (arguments joined by spaces; nginx rewrites its own), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() if raw else None


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, PermissionError, OSError, IndexError):
        return False
    return state not in ("Z", "X")


def stop_pid_group(pid: int, sig: int, timeout: float) -> None:
    """Signal the process group led by `pid` (a process we did not start, or no longer have a handle on),
    poll until `pid` is gone, SIGKILL the group after `timeout`."""
    for s, wait in ((sig, timeout), (signal.SIGKILL, timeout)):
        try:
            os.killpg(pid, s)
        except ProcessLookupError:
            return
        except PermissionError:
            logger.warning("not allowed to signal process group %d", pid)
            return
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not pid_alive(pid):
            try:  # workers left behind by a master that died first
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        logger.warning("process group %d did not stop within %.0f s; killing it", pid, wait)
