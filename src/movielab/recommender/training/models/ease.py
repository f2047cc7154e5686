"""EASE: the closed-form linear item-item autoencoder of Steck (2019), "Embarrassingly Shallow Autoencoders"."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from movielab.recommender.errors import ModelFitError
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models.base import Model

SMALL_BATCH = 16  # up to this many users, scores sum rows of B instead of a sparse product


class EASE(Model):
    """Item-item weights B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, on the binary interactions X.

    Feedback: implicit; any watch or rating is a 1 (rating values are ignored). B is a dense
    n_items² float32 matrix (fitting needs about 3 × 8 × n_items² bytes), so catalogs above
    `max_items` are refused. The default λ is what benchmarks/offline.py tunes on ml-100k; it grows with
    the number of users.
    """

    name: ClassVar[str] = "ease"
    arrays: ClassVar[tuple[str, ...]] = ("weights",)

    def __init__(self, lam: float = 500.0, max_items: int = 30_000) -> None:
        super().__init__()
        self.lam, self.max_items = float(lam), int(max_items)
        self.weights = np.zeros((0, 0), np.float32)

    def params(self) -> dict[str, Any]:
        """λ (L2 weight) and the largest catalog accepted."""
        return {"lam": self.lam, "max_items": self.max_items}

    def _fit(self, data: TrainingData) -> None:
        n = self.n_items
        if n > self.max_items:
            raise ModelFitError(
                f"ease needs a dense {n}×{n} matrix (~{24 * n * n / 1e9:.1f} GB to fit) and "
                f"{n} items exceed max_items={self.max_items}; use itemknn or als"
            )
        gram = (self.seen.T @ self.seen).toarray().astype(np.float64)
        gram[np.diag_indices(n)] += self.lam
        p = scipy.linalg.inv(gram, overwrite_a=True)
        b = p / (-np.diag(p))  # column j divided by -P_jj
        b[np.diag_indices(n)] = 0.0
        self.weights = b.astype(np.float32)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """X[rows] · B."""
        x = self.seen[np.asarray(rows).reshape(-1)]
        if x.shape[0] > SMALL_BATCH:
            return np.asarray(x @ self.weights, dtype=np.float32)
        # scipy's sparse × dense costs milliseconds per call; summing B's rows is ~10× faster for one user
        out = np.empty((x.shape[0], self.n_items), np.float32)
        for i in range(x.shape[0]):
            out[i] = self.weights[x.indices[x.indptr[i] : x.indptr[i + 1]]].sum(axis=0)
        return out
