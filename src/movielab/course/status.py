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


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_status(s: dict[str, Any]) -> str:
    """`course_status` as text: the process, the last checkpoint, and a table of the teams and their lines."""
    lines = [f"course {s['course']} (state in {s['state_dir']})"]
    p = s["process"]
    if p is not None:
        state = (
            "running"
            if p["alive"]
            else p["state"]
            if p["state"] in ("stopped", "finished")
            else "not running (killed?)"
        )
        lines.append(f"world process {p['pid']}: {state}; simulated time {p['sim_time']}")
        lines.append(f"  API {p['api'] or '-'}; Kafka {p['bootstrap']}; instructor {p.get('instructor') or '-'}")
        if p.get("restored_from") is not None:
            re_emitted = sum(p["re_emitted"].values()) if isinstance(p["re_emitted"], dict) else p["re_emitted"]
            lines.append(
                f"  resumed from the checkpoint of {_iso(p['restored_from'])}; {re_emitted:,} line(s) the topics had "
                "after it were produced again"
            )
    cp = s["checkpoint"]
    if cp is None:
        lines.append("no checkpoint yet: the course has not run")
        return "\n".join(lines)
    lines.append(
        f"last checkpoint: simulated {cp['sim_time']}, written {cp['written_at']} UTC ({cp['age_seconds']:.0f} s ago), "
        f"{cp['bytes'] or 0:,} bytes in {cp['write_seconds'] or 0:.2f} s, {cp['users']:,} users"
    )
    now = s.get("topics_now")
    header = ["team", "name", "url", "topic", "lines at checkpoint"] + (["lines now"] if isinstance(now, dict) else [])
    rows = []
    for t in cp["teams"]:
        row = [str(t["number"]), t["name"], t["url"], t["topic"], f"{cp['lines'].get(t['topic'], 0):,}"]
        if isinstance(now, dict):
            row.append(f"{now.get(t['topic'], 0):,}")
        rows.append(row)
    lines += ["", *_table(header, rows, right={0, 4, 5})]
    if isinstance(now, str):
        lines.append(f"lines now: {now}")
    return "\n".join(lines)
