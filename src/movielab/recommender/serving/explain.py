"""Why a user gets their recommendations: the list and its source, the version and its lineage, the user's data.

`explain` answers from what a serving process already has (the answer table and the version folder):
the list and its source (`AnswerTable.lookup`: model row / segment fallback / global fallback), the
model name, version and parameters, the MLflow registered version and run id (`registration.json`,
written by the registry beside a version), the code version that trained it, the training snapshot
(id, hash, window, rows), and the user's interactions the model saw (read memory-mapped from the
version's arrays). Given the event store, it adds the user's events in that snapshot (watch minutes,
ratings, the last few movies with times). The result is a JSON-ready dict for the CLI and HTTP.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from movielab.recommender.errors import BadVersionFolder, UnknownSnapshot
from movielab.recommender.serving import traffic
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.registry import read_registration

if TYPE_CHECKING:
    from movielab.recommender.serving.state import Serving

logger = logging.getLogger(__name__)

RECENT = 5  # movies listed in the user's history, latest first


def explain(
    user_id: int, table: AnswerTable, folder: Path | str, store: EventStore | None = None, recent: int = RECENT
) -> dict[str, Any]:
    """What produced `user_id`'s answer from `table`, trained as the version in `folder` (JSON-ready)."""
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise TypeError(f"user id {user_id!r} must be an integer")
    folder = Path(folder)
    manifest = _manifest(folder)
    served = (table.provenance.model_name, table.provenance.model_version)
    if served != (manifest["model"], manifest["version"]):
        raise BadVersionFolder(
            f"{folder} holds {manifest['model']} {manifest['version']}, but the answer table "
            f"comes from {served[0]} {served[1]}"
        )
    body, source = table.lookup(user_id)
    seen = _seen_by_model(folder, user_id)
    out: dict[str, Any] = {
        "user": user_id,
        "recommendations": body.decode("ascii").split(","),
        "source": source,
        "reason": _reason(source, user_id in table.empty_rows),
        "model": {
            "name": manifest["model"],
            "version": manifest["version"],
            "params": manifest["params"],
            "trained_at": manifest["trained_at"],
            "train_seconds": manifest.get("train_seconds"),
            "folder": str(folder),
        },
        "registry": read_registration(folder),
        "code_version": manifest["code_version"],
        "training_data": {
            "snapshot_id": manifest["snapshot_id"],
            "snapshot_name": manifest.get("snapshot_name"),
            "snapshot_hash": manifest["snapshot_hash"],
            "window": manifest["window"],
            "rows": manifest["snapshot_rows"],
            "users": manifest.get("users"),
            "items": manifest.get("items"),
        },
        "seen_by_model": seen,
        "events_in_snapshot": None if store is None else _events(store, manifest["snapshot_id"], user_id, recent),
    }
    if out["registry"] is None:
        out["registry_note"] = "this version folder was not registered (no registration.json beside it)"
    return out


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadVersionFolder(f"{folder / 'manifest.json'} cannot be read: {exc}") from None


def _reason(source: str, empty: bool) -> str:
    if source == "model":
        return "the model's own list for this user"
    why = "the model has no movie left for this user" if empty else "the user is not in the model's training data"
    what = (
        "the popularity list of the user's demographic segment"
        if source == "segment"
        else "the overall popularity list"
    )
    return f"{why}: {what}"


def _seen_by_model(folder: Path, user_id: int) -> dict[str, Any] | None:
    """The user's training interactions as the model keeps them (None when the model does not know the user)."""
    try:
        users = np.load(folder / "users.npy", mmap_mode="r", allow_pickle=False)
        indptr = np.load(folder / "seen_indptr.npy", mmap_mode="r", allow_pickle=False)
        indices = np.load(folder / "seen_indices.npy", mmap_mode="r", allow_pickle=False)
        items = np.load(folder / "items.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BadVersionFolder(f"{folder}: the model's arrays cannot be read: {exc}") from None
    row = int(np.searchsorted(users, user_id))
    if row >= len(users) or int(users[row]) != user_id:
        return None
    cols = np.asarray(indices[int(indptr[row]) : int(indptr[row + 1])])
    return {"movies": len(cols), "movie_ids": sorted(str(items[c]) for c in cols)}


_USER_EVENTS = """SELECT movie_id, count(DISTINCT minute) FILTER (WHERE kind = 'watch') AS minutes,
        arg_max(rating, [epoch_us(time), seq]) FILTER (WHERE kind = 'rate') AS rating, max(time) AS last_time
    FROM events WHERE user_id = $user AND kind IN ('watch', 'rate') AND seq <= $max_seq AND time >= $start
        AND time < $end
    GROUP BY movie_id ORDER BY last_time DESC, movie_id DESC"""  # the latest rating wins, as in store.ratings


def _events(store: EventStore, snapshot_id: str, user_id: int, recent: int) -> dict[str, Any]:
    """The user's watches and ratings in the training snapshot, with the latest few movies."""
    try:
        snap = store.snapshot(snapshot_id)
    except UnknownSnapshot:
        return {"error": f"snapshot {snapshot_id} is not in this event store"}
    window = {
        "user": user_id,
        "max_seq": snap.max_seq,
        "start": snap.start or datetime.min,
        "end": snap.end or datetime.max,
    }
    rows = store.read(_USER_EVENTS, window)
    return {
        "snapshot_id": snap.id,
        "movies_watched": sum(1 for _, minutes, _, _ in rows if minutes),
        "minutes_watched": sum(minutes for _, minutes, _, _ in rows),
        "ratings": sum(1 for _, _, rating, _ in rows if rating is not None),
        "movies": len(rows),
        "latest": [
            {"movie_id": m, "time": t.isoformat(), "minutes_watched": minutes, "rating": rating}
            for m, minutes, rating, t in rows[:recent]
        ],
    }


def explain_from_registry(
    config, user_id: int, alias: str = "champion", version: str | None = None, recent: int = RECENT
) -> dict[str, Any]:
    """`explain` for the registry's champion (or challenger, or a version number), with the store if it opens."""
    from movielab.recommender.errors import RegistryError, StoreError
    from movielab.recommender.serving.answers import answer_table
    from movielab.recommender.training.pipeline import load
    from movielab.recommender.training.registry import Registry

    registry = Registry.from_config(config, existing=True)
    if version is not None:
        mv = registry.get(version)
    else:
        mv = registry.champion_version() if alias == "champion" else registry.challenger_version()
        if mv is None:
            raise RegistryError(f"{registry.name} has no {alias} yet: run `movielab recommender retrain` first")
    folder = registry.folder(mv)
    trained = load(folder)
    store_note = None
    try:
        store = EventStore(config.store) if Path(config.store).exists() else None
    except StoreError as exc:  # the operator holds the store (DuckDB allows one process)
        store, store_note = None, f"event store unavailable: {exc}"
    if store is None:
        store_note = store_note or f"no event store at {config.store}"
        out = explain(user_id, answer_table(trained), folder, None, recent)
    else:
        with store:
            out = explain(user_id, answer_table(trained, store), folder, store, recent)
    out["aliases"] = list(mv.aliases)
    if store_note:
        out["store_note"] = store_note + "; segment fallbacks and the user's events are not shown"
    return out


def explain_user(s: Serving, user_id: int) -> dict[str, object]:
    """What the table and the manifest know about the answer `s` gives `user_id`, JSON-ready."""
    arm = s.route(user_id)
    body, source = arm.table.lookup(user_id)
    if source == "model":
        reason = "the model's own list for this user"
    else:
        why = (
            "the model has no movie left for this user"
            if user_id in arm.table.empty_rows
            else "the model does not know this user"
        )
        reason = f"{why}: the {'segment' if source == 'segment' else 'overall'} popularity list"
    bucket = traffic.bucket(user_id, s.salt)
    lineage: dict[str, object] = {}
    if arm.folder is not None:  # the version's lineage and the user's training data
        try:
            lineage["explain"] = explain(user_id, arm.table, arm.folder)
        except (KeyError, OSError, ValueError) as exc:  # a manifest from before lineage fields: say what is missing
            lineage["explain_error"] = f"{type(exc).__name__}: {exc}"
    return {
        **lineage,
        "user": user_id,
        "answer": body.decode("ascii").split(","),
        "source": source,
        "reason": reason,
        "arm": arm.name,
        "bucket": bucket,
        "threshold": s.threshold,
        "share": s.share,
        "salt": s.salt,
        "header": arm.headers[source].decode("ascii"),
        "provenance": arm.table.provenance.as_dict(),
        "folder": arm.folder,
        "manifest": arm.manifest,
    }
