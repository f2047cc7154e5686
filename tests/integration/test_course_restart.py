"""A course's world killed and restarted against a standalone broker: nothing lost, doubles only after a checkpoint.

The world runs as its own process (`tests/course_world.py`, a fixed answer for every request, so its lines
depend on the seed alone) against the broker running apart; the topics of an uninterrupted run of the same
course are the reference, line for line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from movielab.course.run import end_offsets
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.consumer import read_topic
from movielab.world import checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOURS = 4


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as b:
        yield b


def _course(tmp: Path, name: str, bootstrap: str, speed: float | None, every: int = 60) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    speed_line = f"speed = {speed}" if speed else ""
    path = tmp / "course.toml"
    path.write_text(f"""
name = "{name}"
[world]
users = 3000
seed = 5
days = {HOURS / 24}
arrivals_per_day = 0.05
{speed_line}
[kafka]
bootstrap = "{bootstrap}"
partitions = 2
[api]
port = 0
[instructor]
port = 0
[state]
dir = "state"
checkpoint_every_minutes = {every}
reload_seconds = 0.2
[[teams]]
name = "a"
url = "http://127.0.0.1:9"
topic = "{name}-a"
[[teams]]
name = "b"
url = "http://127.0.0.1:9"
topic = "{name}-b"
""")
    return path


def _start(course: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "course_world.py"), str(course)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> None:
    _out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def _lines(bootstrap: str, name: str) -> dict[str, Counter]:
    topics = [f"{name}-a", f"{name}-b"]
    ends = end_offsets(bootstrap, topics)
    out = {}
    for t in topics:
        n = sum(ends[t].values())
        records = read_topic(bootstrap, t, f"check-{t}", max_messages=n, timeout=60) if n else []
        assert len(records) == n
        out[t] = Counter(r[1].decode() for r in records)
    return out


@pytest.fixture(scope="module")
def reference(broker, tmp_path_factory):
    course = _course(tmp_path_factory.mktemp("ref"), "ref", broker.bootstrap, speed=None)
    _finish(_start(course))
    lines = _lines(broker.bootstrap, "ref")
    assert all(sum(c.values()) > 5000 for c in lines.values())
    return {t.replace("ref-", ""): c for t, c in lines.items()}


def _wait(predicate, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _checkpoints(state: Path) -> int:
    try:
        return json.loads((state / "status.json").read_text())["checkpoints_this_run"]
    except (OSError, ValueError, KeyError):
        return 0


def test_sigterm_then_restart_loses_and_doubles_nothing(broker, reference, tmp_path) -> None:
    course = _course(tmp_path, "term", broker.bootstrap, speed=1200)
    state = tmp_path / "state"
    proc = _start(course)
    _wait(lambda: _checkpoints(state) >= 3, what="two periodic checkpoints")
    time.sleep(0.7)  # between checkpoints
    proc.send_signal(signal.SIGTERM)
    _finish(proc)
    meta = checkpoint.read_meta(state / "checkpoint")
    stopped_at = meta["sim_time"]
    assert stopped_at % 3600 != 0  # the SIGTERM checkpoint, not a periodic one
    _finish(_start(course))
    lines = {t.replace("term-", ""): c for t, c in _lines(broker.bootstrap, "term").items()}
    assert lines == reference  # every line once: none lost, none doubled
    restored = [
        json.loads(x)
        for x in (state / "manifest.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "restored"
    ]
    assert len(restored) == 1 and set(restored[0]["re_emitted"].values()) == {0}


def test_sigkill_between_checkpoints_doubles_only_lines_after_the_last_checkpoint(broker, reference, tmp_path) -> None:
    course = _course(tmp_path, "kill", broker.bootstrap, speed=1200)
    state = tmp_path / "state"
    proc = _start(course)
    _wait(lambda: _checkpoints(state) >= 2, what="a periodic checkpoint")

    def past_checkpoint() -> bool:
        try:
            saved = checkpoint.read_meta(checkpoint.latest(state))["info"]["offsets"]
        except checkpoint.CheckpointError:  # renamed away by the next checkpoint just now
            return False
        now = end_offsets(broker.bootstrap, list(saved))
        return sum(sum(p.values()) for p in now.values()) > sum(sum(p.values()) for p in saved.values()) + 500

    def stopped_past_checkpoint() -> bool:
        # Frozen (SIGSTOP) while looking, so no newer checkpoint can complete between the look and the kill.
        proc.send_signal(signal.SIGSTOP)
        if past_checkpoint():
            return True
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
        return False

    _wait(stopped_past_checkpoint, what="lines after the checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    cp_time = checkpoint.read_meta(checkpoint.latest(state))["sim_time"]
    _finish(_start(course))
    lines = {t.replace("kill-", ""): c for t, c in _lines(broker.bootstrap, "kill").items()}
    restored = [
        json.loads(x)
        for x in (state / "manifest.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "restored"
    ]
    assert len(restored) == 1
    doubled_total = 0
    for team, ref in reference.items():
        assert ref - lines[team] == Counter()  # nothing lost
        doubled = lines[team] - ref
        assert sum(doubled.values()) == restored[0]["re_emitted"][f"kill-{team}"]
        doubled_total += sum(doubled.values())
        # Every doubled line is of the time after the last checkpoint written in full: within one interval (60
        # simulated minutes), or two when the kill came while the next one was being written in the background.
        stamps = sorted(checkpoint_stamp(line) for line in doubled)
        assert all(cp_time <= s < cp_time + 2 * 3600 for s in stamps), (stamps[:3], stamps[-3:], cp_time)
    # The process was killed frozen, 500+ lines past its newest complete checkpoint: those lines were produced again.
    assert doubled_total > 500


def checkpoint_stamp(line: str) -> float:
    """Unix seconds of a line's time stamp."""
    from movielab.world.clock import parse_start

    return parse_start(line.split(",", 1)[0].split(".")[0])
