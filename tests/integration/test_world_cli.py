"""`movielab world run` as a process: SIGTERM stops it cleanly, the current tick flushed, nothing half-written."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from movielab.contract import parse_line
from movielab.webserver import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_world_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "events.log"
    cmd = [
        sys.executable,
        "-m",
        "movielab",
        "world",
        "run",
        "--users",
        "3000",
        "--forever",
        "--speed",
        "600",
        "--api-port",
        "0",
        "--teams",
        f"http://127.0.0.1:{free_port()}",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("world running"), ready + proc.stderr.read()
        deadline = time.monotonic() + 60
        while (not out.exists() or out.stat().st_size < 10_000) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    text = out.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) > 100
    for line in lines:
        parse_line(line)  # every line complete
    assert "simulated" in stdout and "events by kind" in stdout
