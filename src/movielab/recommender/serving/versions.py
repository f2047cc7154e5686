"""Version folders on disk as served: a saved version's answer table (`load_version`) and the user → segment
files the replicas read next to it (`read_segments`, `write_segments`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from movielab.recommender.errors import BadSegments
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.store.records import N_SEGMENTS

logger = logging.getLogger(__name__)

SEGMENT_FILES = ("segments.json", "segments.arrow")  # looked for next to the artifact when none is named


@dataclass(frozen=True)
class LoadedVersion:
    """A version folder's answer table, with the folder and its manifest."""

    table: AnswerTable
    folder: Path
    manifest: dict


def load_version(folder: str | Path, segments: str | Path | None = None) -> LoadedVersion:
    """Load a saved version and precompute its answers; segments from `segments`, else from a segments file
    next to the artifact (`segments.json` / `segments.arrow`), else none (unknown users get the global list)."""
    from movielab.recommender.training.pipeline import load  # models and the store's modules load only when asked

    folder = Path(folder)
    trained = load(folder)
    if segments is None:
        segments = next((folder / n for n in SEGMENT_FILES if (folder / n).is_file()), None)
    user_segments = read_segments(segments) if segments is not None else {}
    table = AnswerTable.build(trained.model, trained.provenance, user_segments)
    logger.info(
        "loaded %s from %s (%d segment users from %s)",
        trained.provenance.header("model"),
        folder,
        len(user_segments),
        segments,
    )
    return LoadedVersion(table, folder, trained.manifest)


def read_segments(path: str | Path) -> dict[int, int]:
    """User id -> segment (-1..13) from a JSON object `{"<user id>": segment}` or an Arrow IPC file with int
    columns `user_id` and `segment`; BadSegments names the file and the reason."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise BadSegments(
                    f"segments file {path}: expected a JSON object of user id -> segment, got {type(raw).__name__}"
                )
            pairs = list(raw.items())
        elif path.suffix in (".arrow", ".feather"):
            from pyarrow import feather

            t = feather.read_table(path)
            missing = {"user_id", "segment"} - set(t.column_names)
            if missing:
                raise BadSegments(f"segments file {path}: missing column(s) {', '.join(sorted(missing))}")
            pairs = list(zip(t.column("user_id").to_pylist(), t.column("segment").to_pylist(), strict=True))
        else:
            raise BadSegments(f"segments file {path}: unknown format {path.suffix!r}, expected .json or .arrow")
    except (OSError, ValueError) as exc:
        if isinstance(exc, BadSegments):
            raise
        raise BadSegments(f"segments file {path} cannot be read: {exc}") from exc
    out: dict[int, int] = {}
    for user, seg in pairs:
        u = _int_or_none(user)
        if u is None or u < 1:
            raise BadSegments(f"segments file {path}: user id {user!r} is not a positive integer")
        if isinstance(seg, bool) or not isinstance(seg, int) or not -1 <= seg < N_SEGMENTS:
            raise BadSegments(
                f"segments file {path}: segment {seg!r} of user {u} is not an integer in -1..{N_SEGMENTS - 1}"
            )
        out[u] = seg
    return out


def write_segments(path: str | Path, segments: dict[int, int]) -> Path:
    """Write user id -> segment for the replicas, as JSON (`.json`) or an Arrow IPC file (`.arrow`)."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps({str(int(u)): int(s) for u, s in segments.items()}))
    elif path.suffix == ".arrow":
        import pyarrow as pa
        from pyarrow import feather

        table = pa.table(
            {
                "user_id": pa.array([int(u) for u in segments], pa.int64()),
                "segment": pa.array([int(s) for s in segments.values()], pa.int16()),
            }
        )
        feather.write_feather(table, path)
    else:
        raise ValueError(f"segments file {path}: unknown format {path.suffix!r}, expected .json or .arrow")
    return path


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
