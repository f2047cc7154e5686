"""ALS: implicit-feedback matrix factorization (Hu, Koren & Volinsky 2008), fitted by the `implicit` package."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from movielab.recommender.errors import ModelFitError
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models.base import Model

VALUES = ("binary", "strength")


def confidence(data: TrainingData, alpha: float, value: str) -> sp.csr_matrix:
    """C = 1 + alpha·v on the interactions; v = 1 ("binary") or max(share watched, rating / stars) ("strength")."""
    if value not in VALUES:
        raise ValueError(f"value must be one of {VALUES}, got {value!r}")
    x = data.interactions
    stars = 10 if data.ratings.nnz and data.ratings.max() > 5 else 5  # the 2026 edition rates 1..10
    v = x if value == "binary" else sp.csr_matrix(data.watched.maximum(data.ratings * np.float32(1 / stars)))
    c = sp.csr_matrix(v, dtype=np.float32, copy=True)
    c.sort_indices()
    c.data = (1.0 + alpha * c.data).astype(np.float32)
    return c


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ALS(Model):
    """score(u, i) = user_factors[u] · item_factors[i], fitted by implicit's CPU conjugate-gradient ALS.

    Feedback: implicit; every watch or rating is a positive with confidence 1 + alpha·v, where v = 1
    (`value="binary"`) or the interaction's strength max(share watched, rating / stars), stars 5 or 10 (`value="strength"`);
    cells without an interaction are negatives with confidence 1. `num_threads=0` uses every core the
    process may run on; BLAS is held to one thread while fitting, as `implicit` recommends.
    """

    name: ClassVar[str] = "als"
    arrays: ClassVar[tuple[str, ...]] = ("user_factors", "item_factors", "item_popularity")

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 10.0,
        value: str = "binary",
        num_threads: int = 0,
        seed: int = 0,
        popularity_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if value not in VALUES:
            raise ValueError(f"value must be one of {VALUES}, got {value!r}")
        self.factors, self.regularization, self.iterations = int(factors), float(regularization), int(iterations)
        self.alpha, self.value, self.num_threads, self.seed = float(alpha), value, int(num_threads), int(seed)
        self.user_factors = np.zeros((0, self.factors), np.float32)
        self.item_factors = np.zeros((0, self.factors), np.float32)
        self.popularity_weight = float(popularity_weight)
        self.item_popularity = np.zeros(0, np.float32)

    def params(self) -> dict[str, Any]:
        """Factorization settings, feedback value and seed."""
        names = (
            "factors",
            "regularization",
            "iterations",
            "alpha",
            "value",
            "num_threads",
            "seed",
            "popularity_weight",
        )
        return {name: getattr(self, name) for name in names}

    def _fit(self, data: TrainingData) -> None:
        try:  # lazy: the package (and the other models) work without implicit installed
            from implicit.cpu.als import AlternatingLeastSquares
            from implicit.recommender_base import ModelFitError as ImplicitFitError
            from threadpoolctl import threadpool_limits
        except ImportError as err:
            raise ImportError("the als model needs the 'implicit' package: pip install 'implicit>=0.7,<0.8'") from err
        c = confidence(data, self.alpha, self.value)
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=1.0,
                iterations=self.iterations,
                num_threads=self.num_threads or _threads(),
                random_state=self.seed,
                dtype=np.float32,
            )
            try:
                als.fit(c, show_progress=False)
            except ImplicitFitError as err:
                raise ModelFitError(f"als: {err}") from err
        self.user_factors = np.ascontiguousarray(als.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(als.item_factors, dtype=np.float32)
        # Standardized log popularity: blended into scores when popularity_weight > 0 (few-interaction users).
        logpop = np.log1p(np.asarray(data.interactions.sum(axis=0)).ravel())
        self.item_popularity = ((logpop - logpop.mean()) / (logpop.std() or 1.0)).astype(np.float32)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """user_factors[rows] · item_factorsᵀ, standardized per user and blended with popularity by weight."""
        s = self.user_factors[np.asarray(rows).reshape(-1)] @ self.item_factors.T
        if self.popularity_weight == 0.0:
            return s
        s = (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-6)
        return s + np.float32(self.popularity_weight) * self.item_popularity[None, :]
