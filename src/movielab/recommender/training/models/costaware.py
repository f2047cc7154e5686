"""Cost-aware re-ranking: a base model's relevance traded against each movie's license cost per play.

score(u, i) = z_u(relevance(u, i)) − trade_off · z(cost(i)), where z_u standardizes the base model's scores
of user u over the catalog (mean 0, sd 1) and z standardizes the license costs (2026 edition, USD per
play, from the movie records as of the training snapshot) over the catalog; a movie without a known cost
gets the median cost. `trade_off` = 0 is the base model; larger values give up predicted relevance for
cheaper plays (benchmarks/cost_frontier.py measures the frontier online). Without any costs (editions
before 2026) it ranks exactly as its base model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from movielab.recommender.errors import ModelFitError
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models.base import COMMON_ARRAYS, Model

_PREFIX = "base__"


class CostAware(Model):
    """A base model (any registered name but this one) re-ranked by license cost; see the module docstring."""

    name: ClassVar[str] = "costaware"

    def __init__(self, base: str = "ease", trade_off: float = 0.5, base_params: dict[str, Any] | None = None) -> None:
        # The registry imports this module, so the registry is imported when a model is made.
        from movielab.recommender.training.models import create

        super().__init__()
        if base == self.name:
            raise ValueError("costaware cannot re-rank itself: choose another base model")
        if not (np.isfinite(trade_off) and trade_off >= 0):
            raise ValueError(f"costaware trade_off={trade_off!r} must be a finite number ≥ 0")
        self.base_name, self.trade_off, self.base_params = base, float(trade_off), dict(base_params or {})
        object.__setattr__(self, "_base", create(base, **self.base_params))
        self.arrays = (*(_PREFIX + a for a in self._base.arrays), "cost_z")  # saved with the base's own arrays
        self.cost_z = np.zeros(0, np.float32)

    def params(self) -> dict[str, Any]:
        """The base model's name and parameters, and the trade-off (≥ 0, in relevance sd per cost sd)."""
        return {"base": self.base_name, "trade_off": self.trade_off, "base_params": self._base.params()}

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith(_PREFIX):  # the base's fitted arrays, for save()
            return getattr(self.__dict__["_base"], attr[len(_PREFIX) :])
        raise AttributeError(attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr.startswith(_PREFIX):  # load() restores the base's arrays through here
            setattr(self._base, attr[len(_PREFIX) :], value)
        else:
            object.__setattr__(self, attr, value)

    def _fit(self, data: TrainingData) -> None:
        self._base.fit(data)
        cost = data.item_cost
        if cost is None or not np.isfinite(cost).any():
            self.cost_z = np.zeros(self.n_items, np.float32)  # no costs known: the base ranking
            return
        cost = np.where(np.isfinite(cost), cost, np.nanmedian(cost)).astype(np.float64)
        if (cost < 0).any():
            raise ModelFitError(
                f"costaware: {int((cost < 0).sum())} movies of {data.snapshot_id!r} have a negative license cost"
            )
        sd = cost.std()
        self.cost_z = ((cost - cost.mean()) / sd if sd > 0 else np.zeros_like(cost)).astype(np.float32)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Standardized base scores minus trade_off × standardized cost: float32 (len(rows), n_items)."""
        base = self._base
        if not base._fitted:  # after load(): the base shares this model's common arrays
            for a in COMMON_ARRAYS:
                setattr(base, a, getattr(self, a))
            base._fitted = True
        s = np.asarray(base.scores(rows), np.float64)
        s = s - s.mean(axis=1, keepdims=True)
        sd = s.std(axis=1, keepdims=True)
        s = np.divide(s, sd, out=np.zeros_like(s), where=sd > 0)
        return (s - self.trade_off * self.cost_z[None, :]).astype(np.float32)
