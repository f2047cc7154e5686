"""Serving outlives its operator (issue 10, part 2): a real `movielab recommender fleet` process (the smallest
real process that owns a Fleet) is killed with SIGKILL under load and restarted; its replicas and nginx keep
answering meanwhile and the restarted process adopts them. A stale nginx left in the fleet's folder is found by
its pid file and replaced, and readiness is not fooled by it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import pytest

from movielab.recommender.serving.fleet import STATE_FILE, Fleet
from movielab.recommender.serving.nginx import find_nginx, pid_alive
from movielab.webserver import free_port

sys.path.insert(0, str(Path(__file__).parent))
from test_fleet import N_USERS, save_version

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"),
]


class Load:
    """8 clients on kept-alive HTTP/1.1 connections through nginx, no retries; every request that is lost,
    not 200 or over 600 ms is a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.ok = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        reader = writer = None
        while not self.stop.is_set():
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(f"GET /recommend/{rng.randint(1, N_USERS)} HTTP/1.1\r\nHost: fleet\r\n\r\n".encode())
                async with asyncio.timeout(0.6):
                    line = await reader.readline()
                    if not line:
                        raise EOFError("connection closed with a request in flight")
                    status = int(line.split()[1])
                    length, close = 0, False
                    while (h := await reader.readline()) not in (b"\r\n", b""):
                        name, value = h.decode("latin-1").split(":", 1)
                        if name.strip().lower() == "content-length":
                            length = int(value)
                        close |= name.strip().lower() == "connection" and value.strip().lower() == "close"
                    await reader.readexactly(length)
            except (OSError, EOFError, TimeoutError, ValueError, IndexError) as exc:
                self.failures.append(f"{time.monotonic():.2f} lost: {type(exc).__name__}: {exc}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failures.append(f"{time.monotonic():.2f} status {status}")
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(k) for k in range(8)))

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def start_owner(tmp_path: Path, version: Path, port: int) -> subprocess.Popen:
    """`movielab recommender fleet` with two replicas on `port`; returns once it says it serves."""
    cmd = [
        sys.executable,
        "-m",
        "movielab",
        "recommender",
        "fleet",
        "--store",
        str(tmp_path / "state" / "store.duckdb"),
        "--artifacts",
        str(tmp_path / "models"),
        "--version",
        str(version),
        "--replicas",
        "2",
        "--port",
        str(port),
    ]
    with open(tmp_path / "owner.log", "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()  # blocks until it serves (or exits)
    proc.stdout.close()  # one line is all we read (later prints would get EPIPE: it prints nothing more)
    if not line.startswith("serving "):
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"the fleet owner did not start: {line!r} {(tmp_path / 'owner.log').read_text()[-2000:]}")
    proc.first_line = line  # type: ignore[attr-defined]
    return proc


def test_kill_9_of_the_owner_under_load_fails_no_request_and_the_restart_adopts_the_fleet(tmp_path) -> None:
    version = save_version(_mkdir(tmp_path / "models" / "popularity" / "v0001"), "v0001", seed=1)
    port = free_port()
    first = start_owner(tmp_path, version, port)
    state = json.loads((tmp_path / "state" / "fleet" / STATE_FILE).read_text())
    replica_pids = [r["pid"] for r in state["replicas"]]
    nginx_pid = int((tmp_path / "state" / "fleet" / "nginx" / "nginx.pid").read_text())
    second = None
    try:
        with Load("127.0.0.1", port) as load:
            time.sleep(1.5)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            down_at, ok_before = time.monotonic(), load.ok
            time.sleep(3.0)  # the owner is gone: replicas and nginx answer alone
            ok_while_down = load.ok - ok_before
            second = start_owner(tmp_path, version, port)
            back_after = time.monotonic() - down_at
            ok_back = load.ok
            time.sleep(2.0)
            ok_after = load.ok - ok_back
        assert "(adopted the running fleet)" in second.first_line  # type: ignore[attr-defined]
        state = json.loads((tmp_path / "state" / "fleet" / STATE_FILE).read_text())
        assert [r["pid"] for r in state["replicas"]] == replica_pids and all(map(pid_alive, replica_pids))
        assert int((tmp_path / "state" / "fleet" / "nginx" / "nginx.pid").read_text()) == nginx_pid
        print(
            f"\nkill -9 of the fleet owner: {len(load.failures)} failed of {load.ok + len(load.failures)} requests "
            f"({ok_while_down} answered in the 3 s it was down, {ok_after} in 2 s after the restart, which took "
            f"{back_after:.1f} s)"
        )
        assert load.failures == []
        assert ok_while_down > 50 and ok_after > 50
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        for pid in [*replica_pids, nginx_pid]:  # the second owner stopped them on SIGTERM
            _reap(pid)
    assert not any(pid_alive(p) for p in [*replica_pids, nginx_pid])


def test_a_stale_nginx_is_found_by_its_pid_file_and_replaced(tmp_path) -> None:
    version = save_version(_mkdir(tmp_path / "models" / "popularity" / "v0001"), "v0001", seed=1)
    port = free_port()
    old = Fleet(tmp_path / "fleet", version, replicas=1, port=port).start()
    stale_nginx = old.nginx.pid
    old.detach()
    for r in old.replicas:  # the replicas died; nginx still holds the port and answers 502
        os.killpg(r.pid, signal.SIGKILL)
        r.proc.wait(timeout=10)
    assert httpx.get(f"{old.url}/recommend/1").status_code == 502
    with Fleet(tmp_path / "fleet", version, replicas=1, port=port) as new:
        assert not new.adopted and new.nginx.pid != stale_nginx
        assert not pid_alive(stale_nginx)
        old.nginx.proc.wait(timeout=10)  # this test's child: reap it
        with httpx.Client(base_url=new.url) as http:
            assert {http.get(f"/recommend/{u}").status_code for u in range(1, 30)} == {200}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _reap(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
