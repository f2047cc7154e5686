"""The hidden manifest: every scenario injection, when it actually took effect, as append-only JSONL.

Two records per injection (one line each, flushed and fsync'd when written):

    {"event": "start", "id": "3:shilling", "kind": "shilling", "start": "2026-03-20T02:00:00",
     "end": "2026-03-20T05:00:00", "teams": [1], "selector": {...} | "ids": [...], "params": {...}}
    {"event": "end", "id": "3:shilling", "kind": "shilling", "start": ..., "end": ..., "teams": [1],
     "touched": 412, "touched_by": {"team1": 412}}

`start`/`end` of a start record are the declared window (end null: until the run ends); those of an end
record are when it really started and stopped (the run's end for an open window). `touched` counts the
lines or requests it changed, added or held (what a detector could see). The manifest never goes to a
team's topic or to the public API: the instructor app (`movielab.world.instructor`) serves it behind a token.
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
