"""Where a course stands, from its state folder: clock, last checkpoint and its age, teams, lines per topic."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from movielab.course.config import CourseConfig
from movielab.course.run import STATUS, end_offsets
from movielab.world import checkpoint


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def course_status(config: CourseConfig, live: bool = True, now: float | None = None) -> dict[str, Any]:
    """The course's state as a dict (see `format_status`); `live` also reads the topics' end offsets from Kafka."""
    now = time.time() if now is None else now
    state_dir = config.state_dir
    out: dict[str, Any] = {"course": config.name, "state_dir": str(state_dir), "checkpoint": None, "process": None}
    folder = checkpoint.latest(state_dir) if state_dir.is_dir() else None
    if folder is not None:
        meta = checkpoint.read_meta(folder)
        info = meta.get("info", {})
        out["checkpoint"] = {
            "folder": str(folder),
            "sim_time": _iso(meta["sim_time"]),
            "written_at": _iso(meta["written_at"]),
            "age_seconds": now - meta["written_at"],
            "bytes": meta.get("arrays_bytes"),
            "write_seconds": meta.get("write_seconds"),
            "users": meta["population_size"],
            "lines": info.get("lines", {}),
            "teams": info.get("teams", []),
        }
    status_file = state_dir / STATUS
    if status_file.is_file():
        st = json.loads(status_file.read_text())
        st["alive"] = st["state"] == "running" and _alive(int(st["pid"]))
        st["sim_time"] = _iso(st["sim_time"])
        out["process"] = st
    if live and config.kafka.bootstrap is not None:
        try:
            offsets = end_offsets(config.kafka.bootstrap, config.topics(), timeout=3.0)
            out["topics_now"] = {t: sum(p.values()) for t, p in offsets.items()}
        except RuntimeError as exc:
            out["topics_now"] = f"unavailable: {exc}"
    return out


def format_status(s: dict[str, Any]) -> str:
    """A few human-readable lines of `course_status`."""
    lines = [f"course {s['course']} (state in {s['state_dir']})"]
    cp = s["checkpoint"]
    if cp is None:
        lines.append("no checkpoint yet: the course has not run")
    else:
        lines.append(
            f"last checkpoint: simulated {cp['sim_time']}, written {cp['written_at']} UTC "
            f"({cp['age_seconds']:.0f} s ago, {cp['bytes'] or 0:,} bytes in {cp['write_seconds'] or 0:.2f} s), "
            f"{cp['users']:,} users"
        )
        for t in cp["teams"]:
            lines.append(
                f"  team {t['number']} {t['name']}: {t['url']} -> {t['topic']}, "
                f"{cp['lines'].get(t['topic'], 0):,} lines at the checkpoint"
            )
    p = s["process"]
    if p is not None:
        state = "running" if p["alive"] else ("stopped" if p["state"] == "stopped" else "not running (killed?)")
        lines.append(
            f"world process {p['pid']}: {state}; simulated {p['sim_time']}; API {p['api']}; Kafka {p['bootstrap']}"
        )
        if p.get("restored_from") is not None:
            lines.append(
                f"  resumed from {_iso(p['restored_from'])}; lines the topics had after that checkpoint "
                f"(produced again): {p['re_emitted']}"
            )
    if "topics_now" in s:
        lines.append(f"topics now: {s['topics_now']}")
    return "\n".join(lines)
