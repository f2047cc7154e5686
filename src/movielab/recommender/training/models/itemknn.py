"""Item-kNN: item-item cosine similarity on the binary interactions, top-k neighbours per item."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models.base import Model

BLOCK_CELLS = 1 << 24  # item rows × items of the similarity computed at once


class ItemKNN(Model):
    """Score of item j for user u = Σ over items i that u interacted with of sim(i, j), j among i's top k.

    Feedback: implicit; any watch or rating is a 1 (rating values and watch shares are ignored).
    sim = cosine of the items' user columns; an item is not its own neighbour.
    """

    name: ClassVar[str] = "itemknn"
    arrays: ClassVar[tuple[str, ...]] = ("sim_indptr", "sim_indices", "sim_data")

    def __init__(self, k: int = 100) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"itemknn needs k ≥ 1, got {k}")
        self.k = int(k)
        self.sim_indptr = np.zeros(1, np.int64)
        self.sim_indices = np.zeros(0, np.int32)
        self.sim_data = np.zeros(0, np.float32)

    def params(self) -> dict[str, Any]:
        """Neighbours kept per item."""
        return {"k": self.k}

    def _fit(self, data: TrainingData) -> None:
        x, n = self.seen, self.n_items
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
        k = min(self.k, n - 1)
        counts, indices, values = [np.zeros(1, np.int64)], [], []
        step = max(1, BLOCK_CELLS // n)
        for start in range(0, n, step):
            stop = min(n, start + step)
            sim = (xt[start:stop] @ x).toarray() * inv[start:stop, None] * inv[None, :]
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            if k <= 0:
                sim[:] = 0.0
                top = np.zeros((stop - start, 0), np.int64)
            else:
                top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            val = np.take_along_axis(sim, top, axis=1)
            keep = val > 0
            counts.append(keep.sum(axis=1))
            indices.append(top[keep])
            values.append(val[keep])
        self.sim_indptr = np.cumsum(np.concatenate(counts)).astype(np.int64)
        self.sim_indices = np.concatenate(indices).astype(np.int32)
        self.sim_data = np.concatenate(values).astype(np.float32)

    @property
    def similarity(self) -> sp.csr_matrix:
        """Item × item CSR: row i holds i's top-k neighbours."""
        if "sim" not in self._cache:
            n = self.n_items
            self._cache["sim"] = sp.csr_matrix((self.sim_data, self.sim_indices, self.sim_indptr), shape=(n, n))
        return self._cache["sim"]

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """X[rows] · S."""
        return (self.seen[np.asarray(rows).reshape(-1)] @ self.similarity).toarray().astype(np.float32)
