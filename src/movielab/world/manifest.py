"""The hidden manifest: every scenario injection, when it actually took effect, as append-only JSONL.

A run of a scenario first writes its run record; then two records per injection (one line each, flushed and
fsync'd when written), each with the number of the run that wrote it:

    {"event": "run", "run": 2, "scenario": "semester", "source": "preset semester", "seed": 0, "teams": 2,
     "start": "2026-03-27T00:00:00", "run_start": "2026-03-20T00:00:00", "time_scale": 1.0, "resumed_from": 1}
    {"event": "start", "run": 2, "id": "3:shilling", "kind": "shilling", "start": "2026-03-20T02:00:00",
     "end": "2026-03-20T05:00:00", "teams": [1], "selector": {...} | "ids": [...], "params": {...}}
    {"event": "end", "run": 2, "id": "3:shilling", "kind": "shilling", "start": ..., "end": ..., "teams": [1],
     "touched": 412, "touched_by": {"team1": 412}}

Runs are numbered 1, 2, … in the file (a file that many `world run`s append to holds them all); `resumed_from`
names the run whose checkpoint this run continues (null for a fresh run), and `start` is the simulated time the
run began. Injection ids (`<index>:<name or kind>`) repeat across runs of the same scenario: an injection is
the pair (chain, id), where a chain is a fresh run and the runs resumed from it (`injections` pairs them so).
An injection whose window ended before the run reached it gets one `{"event": "skipped", ..., "reason"}` record.

`start`/`end` of a start record are when it took effect and its declared end (null: until the run ends;
`declared_start` when it was declared before the run began); those of an end record are when it really
started and stopped (the run's end for an open window). `touched` counts the lines or requests it changed,
added or held (what a detector could see). The manifest never goes to a team's topic or to the public API:
the instructor app (`movielab.world.instructor`) serves it behind a token.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Manifest:
    """Append-only JSONL writer (file optional: records are also kept in memory for the instructor app).

    Opening an existing file continues it (its records are read back first): every writer of a course (the
    scenario's injections, the course's team changes and restores) shares one `Manifest`.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():  # a resumed course appends: what is on file stays served
                self.records = read_manifest(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # instructor-only data
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        else:
            self._file = None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a JSON line, flushed and fsync'd."""
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        with self._lock:
            if self.path is not None and self._file is None:
                raise RuntimeError(f"manifest {self.path} is closed: the scenario ended")
            self.records.append(record)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
                os.fsync(self._file.fileno())

    def next_run(self) -> int:
        """The number the next run record takes: one more than the highest so far (1 in a new manifest)."""
        with self._lock:
            return 1 + max((int(r["run"]) for r in self.records if r.get("event") == "run"), default=0)

    def lines(self) -> list[str]:
        """Every record so far as a JSON line (the instructor app's `GET /manifest`)."""
        with self._lock:
            return [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in self.records]

    def close(self) -> None:
        """Close the file (records stay readable in memory)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def manifest_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of every non-blank line of a manifest file; ValueError naming the file and the
    line that is not JSON, OSError when the file cannot be read."""
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"manifest {path} line {n}: not JSON: {exc.msg}") from None


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The records of a manifest file; ValueError naming the file and line of a record that is not JSON."""
    return [record for _, record in manifest_lines(path)]


def run_chains(records: list[dict[str, Any]]) -> dict[int, int]:
    """Run number -> the fresh run its chain began with (a run resumed from a checkpoint continues that run's chain)."""
    chains: dict[int, int] = {}
    for r in records:
        if isinstance(r, dict) and r.get("event") == "run":
            prev = r.get("resumed_from")
            chains[int(r["run"])] = int(r["run"]) if prev is None else chains.get(int(prev), int(prev))
    return chains


def injection_key(record: dict[str, Any], chains: dict[int, int]) -> str:
    """What identifies an injection across runs: `<chain>/<id>` (just `<id>` for records of a manifest without runs)."""
    run = record.get("run")
    if run is None:
        return str(record["id"])
    return f"{chains.get(int(run), int(run))}/{record['id']}"


def injections(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The injections of a manifest, start and end records paired per run chain (`injection_key`), in order of
    first start: each `{"key", "id", "kind", "start": record, "end": record | None, "skipped": record | None}`.

    A start written again in the same chain (a run resumed from a checkpoint taken before the first start was
    written re-simulates it) replaces the earlier one. Records of other events (runs, course records) are not
    injections. ValueError naming the record for a start, end or skipped record without an id.
    """
    chains = run_chains(records)
    out: dict[str, dict[str, Any]] = {}
    for n, r in enumerate(records):
        event = r.get("event") if isinstance(r, dict) else None
        if event not in ("start", "end", "skipped"):
            continue
        if "id" not in r:
            raise ValueError(f"manifest record {n + 1} ({event}) has no 'id'")
        key = injection_key(r, chains)
        if event == "start":
            out.pop(key, None)
        entry = out.setdefault(
            key, {"key": key, "id": r["id"], "kind": r.get("kind"), "start": None, "end": None, "skipped": None}
        )
        entry[event] = r
    return list(out.values())
