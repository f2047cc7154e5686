"""Training runs: snapshot → training data → fit → versioned artifact with provenance (`serving.answers`
turns a version into the answers it serves).

A version is a folder `<artifacts>/<model>/<version>/` holding the model's arrays + JSON and a
`manifest.json` (model, version, snapshot id and content hash, time window, code version,
parameters, training time). Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from movielab.recommender.errors import NoModel
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.snapshots import Snapshot
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import create
from movielab.recommender.training.models.base import Model
from movielab.recommender.training.provenance import Provenance, code_version

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"v(\d{4,})")


@dataclass(frozen=True)
class Trained:
    """A trained, saved model version and where it came from."""

    model: Model
    provenance: Provenance
    folder: Path
    manifest: dict


def _next_version(folder: Path) -> str:
    taken = [int(m.group(1)) for p in folder.glob("v*") if (m := _VERSION.fullmatch(p.name))]
    return f"v{max(taken, default=0) + 1:04d}"


def train(
    store: EventStore,
    model_name: str,
    artifacts: Path,
    snapshot: str | Snapshot | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    params: dict | None = None,
    data: TrainingData | None = None,
) -> Trained:
    """Fit `model_name` on a snapshot (a new one over [start, end) unless named) and save a new version.

    `data`: the named snapshot's training data when the caller has already built it (the costliest query of
    a run); it must be `TrainingData.from_snapshot(store, snapshot)`.
    """
    if snapshot is None:
        if data is not None:
            raise ValueError("train: `data` belongs to a named snapshot; name the snapshot it was built from")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        snapshot = store.create_snapshot(f"train-{model_name}-{stamp}", start, end)
    snap = store.snapshot(snapshot)
    if data is None:
        data = TrainingData.from_snapshot(store, snap)
    elif data.snapshot_id != snap.id:
        raise ValueError(f"train: the data given is of snapshot {data.snapshot_id}, not of {snap.id}")
    t = time.perf_counter()
    model = create(model_name, **(params or {})).fit(data)
    seconds = time.perf_counter() - t
    base = Path(artifacts) / model_name
    base.mkdir(parents=True, exist_ok=True)
    version = _next_version(base)
    folder = base / version
    model.save(folder)
    trained_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    manifest = {
        "model": model_name,
        "version": version,
        "params": model.params(),
        "snapshot_id": snap.id,
        "snapshot_name": snap.name,
        "snapshot_hash": snap.content_hash,
        "snapshot_rows": snap.rows,
        "window": [snap.start.isoformat() if snap.start else None, snap.end.isoformat() if snap.end else None],
        "code_version": code_version(),
        "train_seconds": round(seconds, 3),
        "trained_at": trained_at,
        "users": len(data.users),
        "items": len(data.items),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    logger.info("trained %s %s on snapshot %s (%d rows) in %.2f s", model_name, version, snap.id, snap.rows, seconds)
    return Trained(model, _provenance(manifest), folder, manifest)


def _provenance(manifest: dict) -> Provenance:
    return Provenance(
        manifest["model"],
        manifest["version"],
        manifest["snapshot_id"],
        manifest["code_version"],
        manifest["trained_at"],
    )


def load(folder: Path) -> Trained:
    """Load a saved version (model arrays and manifest)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise NoModel(f"no trained model in {folder}: manifest.json is missing")
    manifest = json.loads(manifest_path.read_text())
    return Trained(Model.load(folder), _provenance(manifest), folder, manifest)


def latest(artifacts: Path, model_name: str | None = None) -> Path:
    """Folder of the newest version (of one model, or of any model by training time)."""
    folders = [p.parent for p in Path(artifacts).glob(f"{model_name or '*'}/v*/manifest.json")]
    if not folders:
        raise NoModel(f"no trained {model_name or 'model'} under {artifacts}")
    return max(folders, key=lambda p: (json.loads((p / "manifest.json").read_text())["trained_at"], p.name))
