"""Most popular: one ranking for everyone, by how many users interacted with each movie."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models.base import Model


class Popularity(Model):
    """Ranks movies by the number of users who interacted with them (watched any part or rated, any rating).

    Known users get the global ranking minus what they have seen; the per-segment rankings
    (age bucket × gender) are the cold-start lists every model shares: see `Model.fallback`.
    """

    name: ClassVar[str] = "popularity"
    arrays: ClassVar[tuple[str, ...]] = ("counts",)

    def __init__(self) -> None:
        super().__init__()
        self.counts = np.zeros(0, np.float32)

    def params(self) -> dict[str, Any]:
        """No parameters."""
        return {}

    def _fit(self, data: TrainingData) -> None:
        self.counts = np.bincount(self.seen_indices, minlength=self.n_items).astype(np.float32)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """The global user counts, one copy per row."""
        return np.repeat(self.counts[None, :], len(np.asarray(rows).reshape(-1)), axis=0)
