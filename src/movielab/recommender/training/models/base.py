"""The model interface: fit, score, recommend, save and load, plus cold start by segment popularity.

A subclass implements `_fit` (set its arrays), `scores` and `params`, and names its fitted arrays in
`arrays`; the base keeps what every model needs: the user ids, the item ids, the seen-items CSR for
`exclude_seen`, and the cold-start lists. Artifacts are one `.npy` per array (saved and loaded with
`allow_pickle=False`) plus `model.json`; no pickles.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from movielab.recommender.errors import ModelFitError, ModelLoadError
from movielab.recommender.store.records import N_SEGMENTS
from movielab.recommender.training.data import TrainingData

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FALLBACK_N = 100  # length of each cold-start list
MIN_SEGMENT_USERS = 20  # a segment with fewer users gets the global list
CHECK_ROWS = 256  # users sampled after fit to check scores and recommendations
BATCH_CELLS = 1 << 24  # users × items scored at once by recommend_rows
COMMON_ARRAYS = ("users", "items", "seen_indptr", "seen_indices", "fallback_items")


class Model(ABC):
    """A recommender fitted on `TrainingData`; rows and item indices refer to that data's matrices."""

    name: ClassVar[str]
    arrays: ClassVar[tuple[str, ...]] = ()  # the subclass's fitted arrays, saved as <name>.npy

    def __init__(self) -> None:
        self.users = np.zeros(0, np.int64)
        self.items = np.zeros(0, "<U1")
        self.seen_indptr = np.zeros(1, np.int64)
        self.seen_indices = np.zeros(0, np.int32)
        self.fallback_items = np.full((N_SEGMENTS + 1, 0), -1, np.int32)
        self.snapshot_id = "unnamed"
        self._fitted = False
        self._cache: dict[str, Any] = {}

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model (JSON-serializable)."""

    @abstractmethod
    def _fit(self, data: TrainingData) -> None:
        """Set the subclass's arrays from data (the base has already set users, items and seen)."""

    @abstractmethod
    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Dense float32 scores (len(rows), n_items) for known user rows; higher is better."""

    @property
    def n_users(self) -> int:
        """Number of users the model was fitted on."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of items in the fitted catalog."""
        return len(self.items)

    @property
    def seen(self) -> sp.csr_matrix:
        """Binary float32 CSR (n_users, n_items) of the training interactions."""
        if "seen" not in self._cache:
            data = np.ones(len(self.seen_indices), np.float32)
            self._cache["seen"] = sp.csr_matrix(
                (data, self.seen_indices, self.seen_indptr), shape=(self.n_users, self.n_items)
            )
        return self._cache["seen"]

    @property
    def nbytes(self) -> int:
        """Memory held by the model's arrays, in bytes."""
        return sum(int(getattr(self, a).nbytes) for a in COMMON_ARRAYS + self.arrays)

    def fit(self, data: TrainingData) -> Model:
        """Fit on data and return self; raises ModelFitError when the result is not safe to ship."""
        _validate(data)
        x = data.interactions
        x.sort_indices()
        self.users = np.asarray(data.users, np.int64).copy()
        self.items = np.asarray(list(data.items), dtype=str)
        self.seen_indptr = x.indptr.astype(np.int64)
        self.seen_indices = x.indices.astype(np.int32)
        self.fallback_items = popular_lists(x, np.asarray(data.segment))
        self.snapshot_id = data.snapshot_id
        self._cache = {}
        self._fit(data)
        self._fitted = True
        self._check()
        logger.info("fitted %s on %d users × %d items (%s)", self.name, self.n_users, self.n_items, self.snapshot_id)
        return self

    def _check(self) -> None:
        for a in self.arrays:
            arr = getattr(self, a)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ModelFitError(f"{self.name}: fitted array {a!r} has {int((~np.isfinite(arr)).sum())} NaN/inf")
        rows = np.unique(np.linspace(0, self.n_users - 1, min(CHECK_ROWS, self.n_users)).astype(np.int64))
        if not np.isfinite(self.scores(rows)).all():
            raise ModelFitError(f"{self.name}: scores contain NaN/inf")
        has_unseen = (self.seen_indptr[rows + 1] - self.seen_indptr[rows]) < self.n_items
        recs = self.recommend_rows(rows, n=1)
        if (has_unseen & (recs[:, 0] < 0)).any():
            raise ModelFitError(f"{self.name}: no recommendations for users that have unseen items")

    def recommend_rows(self, rows: np.ndarray, n: int = 20, exclude_seen: bool = True) -> np.ndarray:
        """Top-n item indices (len(rows), n) int32 per user row, best first, padded with -1."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.full((len(rows), n), -1, np.int32)
        k = min(n, self.n_items)
        if k == 0:
            return out
        step = max(1, BATCH_CELLS // self.n_items)
        for start in range(0, len(rows), step):
            batch = rows[start : start + step]
            s = np.array(self.scores(batch), dtype=np.float32)
            if exclude_seen:
                sub = self.seen[batch]
                s[np.repeat(np.arange(len(batch)), np.diff(sub.indptr)), sub.indices] = -np.inf
            top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < self.n_items else np.argsort(-s, axis=1)
            vals = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            top, vals = np.take_along_axis(top, order, axis=1), np.take_along_axis(vals, order, axis=1)
            out[start : start + len(batch), :k] = np.where(vals == -np.inf, -1, top)
        return out

    def row_of(self, user_id: int) -> int | None:
        """Matrix row of a user id, None for users the model was not fitted on."""
        i = int(np.searchsorted(self.users, user_id))
        return i if i < self.n_users and self.users[i] == user_id else None

    def recommend(self, user_id: int, n: int = 20, exclude_seen: bool = True, segment: int = -1) -> list[str]:
        """Up to n distinct movie ids for a user, best first; unknown users get fallback(segment)."""
        self._require_fitted()
        row = self.row_of(user_id)
        if row is None:
            return self.fallback(segment)[:n]
        top = self.recommend_rows(np.array([row]), n, exclude_seen)[0]
        return self.items[top[top >= 0]].tolist()

    def fallback(self, segment: int = -1) -> list[str]:
        """Cold-start list: the segment's most popular movie ids, the global ones for -1 or a small segment."""
        self._require_fitted()
        idx = segment if 0 <= segment < N_SEGMENTS else N_SEGMENTS
        top = self.fallback_items[idx]
        return self.items[top[top >= 0]].tolist()

    def save(self, folder: Path) -> None:
        """Write the arrays (.npy, no pickle) and model.json (written last, so its presence means complete)."""
        self._require_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = COMMON_ARRAYS + self.arrays
        for a in names:
            np.save(folder / f"{a}.npy", np.ascontiguousarray(getattr(self, a)), allow_pickle=False)
        meta = {
            "name": self.name,
            "format_version": FORMAT_VERSION,
            "params": self.params(),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "snapshot_id": self.snapshot_id,
            "arrays": list(names),
        }
        (folder / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path, mmap: bool = False) -> Model:
        """Restore a saved model of any registered kind (memory-mapped arrays if mmap)."""
        from movielab.recommender.training.models import create  # the registry imports this module

        folder = Path(folder)
        try:
            meta = json.loads((folder / "model.json").read_text())
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{folder / 'model.json'} cannot be read: {err}") from err
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(
                f"{folder} has format version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
            )
        try:
            model = create(meta["name"], **meta["params"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelLoadError(f"{folder / 'model.json'} names no model this code can build: {err}") from err
        if not isinstance(model, cls):
            raise ModelLoadError(f"{folder} holds a {meta['name']!r} model, not a {cls.__name__}")
        for a in COMMON_ARRAYS + model.arrays:
            try:
                setattr(model, a, np.load(folder / f"{a}.npy", allow_pickle=False, mmap_mode="r" if mmap else None))
            except (OSError, ValueError) as err:
                raise ModelLoadError(f"{folder / (a + '.npy')} cannot be loaded: {err}") from err
        if (model.n_users, model.n_items) != (meta["n_users"], meta["n_items"]):
            raise ModelLoadError(
                f"{folder}: arrays are {model.n_users} users × {model.n_items} items, "
                f"model.json says {meta['n_users']} × {meta['n_items']}"
            )
        model.snapshot_id = meta.get("snapshot_id", "unnamed")
        model._fitted = True
        return model

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"the {self.name} model is not fitted; call fit() or Model.load() first")


def _validate(data: TrainingData) -> None:
    if len(data.users) == 0 or len(data.items) == 0:
        raise ModelFitError(f"training data is empty: {len(data.users)} users × {len(data.items)} items")
    for name in ("watched", "ratings", "times"):
        values = getattr(data, name).data
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise ModelFitError(f"TrainingData.{name} of snapshot {data.snapshot_id!r} has {bad} NaN/inf values")
    if data.interactions.nnz == 0:
        raise ModelFitError(f"training data {data.snapshot_id!r} has no interactions")


def top_indices(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m largest values, largest first, ties by lower index."""
    m = min(m, len(values))
    idx = np.argpartition(-values, m - 1)[:m] if 0 < m < len(values) else np.arange(len(values))
    return idx[np.lexsort((idx, -values[idx]))][:m]


def popular_lists(x: sp.csr_matrix, segment: np.ndarray) -> np.ndarray:
    """(N_SEGMENTS + 1, ≤FALLBACK_N) int32 item indices by number of users, per segment then global (last row)."""
    n_items = x.shape[1]
    total = np.bincount(x.indices, minlength=n_items).astype(np.float64)
    m = min(FALLBACK_N, n_items)
    out = np.full((N_SEGMENTS + 1, m), -1, np.int32)
    out[N_SEGMENTS] = top_indices(total, m)
    tie_break = total / (total.max() + 1.0)  # < 1, so it only orders items a segment counts equally
    for s in range(N_SEGMENTS):
        members = np.flatnonzero(segment == s)
        if len(members) < MIN_SEGMENT_USERS:
            out[s] = out[N_SEGMENTS]
        else:
            out[s] = top_indices(np.bincount(x[members].indices, minlength=n_items) + tie_break, m)
    return out
