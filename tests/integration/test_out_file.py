"""`movielab world run --out`: the file holds only lines Kafka confirmed, and ends on a newline, even after kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from movielab.contract import parse_line
from movielab.kafka import EmbeddedBroker, read_topic
from movielab.webserver import free_port

pytestmark = pytest.mark.integration


def _run_and_kill(bootstrap: str, out: Path, min_bytes: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "movielab",
        "world",
        "run",
        "--users",
        "3000",
        "--forever",
        "--kafka",
        bootstrap,
        "--api-port",
        "0",
        "--teams",
        f"http://127.0.0.1:{free_port()}",
        "--out",
        str(out),
    ]
    start = out.stat().st_size if out.exists() else 0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("world running"), ready + proc.stderr.read()
        deadline = time.monotonic() + 90
        while out.stat().st_size < start + min_bytes and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no flush, no close: whatever is queued is lost
        proc.wait(30)
    finally:
        proc.kill()
        proc.communicate()


def test_out_file_after_kill_9_holds_only_confirmed_lines(tmp_path: Path) -> None:
    out = tmp_path / "events.log"
    with EmbeddedBroker() as broker:
        _run_and_kill(broker.bootstrap, out, 300_000)
        _run_and_kill(broker.bootstrap, out, 100_000)  # appends to the file the first kill left
        records = read_topic(broker.bootstrap, "movielog1", group_id="out-file-check", idle_timeout=2.0)
    text = out.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) > 2000
    for line in lines:
        parse_line(line)  # every line whole: nothing glued, nothing torn
    in_topic = Counter(value.decode() for _, value, _, _ in records)
    missing = Counter(lines) - in_topic
    assert not missing, f"{sum(missing.values())} line(s) in the file never reached the topic: {list(missing)[:3]}"
