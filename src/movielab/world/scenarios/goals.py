"""Goals and ground-truth updates: the business goal scoring uses (top ratings, or profit: value of a play minus
its license cost), and the hidden movie biases re-fitted from recent watching."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import numpy as np

from movielab.world.scenarios.base import Effect
from movielab.world.scenarios.faults import _ISO


class GoalChange(Effect):
    """From start, scoring judges teams by `goal`; the manifest records it with the license-cost summary used."""

    all_teams_only = True

    def begin(self, world, t):
        cost = self.ctx.catalog.license_cost
        if self.spec.announced:
            self.ctx.announcements.append(
                {
                    "kind": "goal_change",
                    "goal": self.spec.goal,
                    "value_per_play": self.spec.value_per_play,
                    "from": datetime.fromtimestamp(t, UTC).strftime(_ISO),
                    "license_cost": "per play, field license_cost of GET /movie/<id>",
                }
            )
        return {
            "selector": {
                "license_cost_mean": round(float(cost.mean()), 4),
                "unprofitable_movies": int((cost > self.spec.value_per_play).sum()),
            }
        }


class TruthRefit(Effect):
    """The hidden item biases re-fitted at the window's end from the viewings started in it (see the schema)."""

    all_teams_only = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if not np.isfinite(self.end):
            raise self.refuse("end", "a truth re-fit needs an end or a duration (the recent window)")

    def begin(self, world, t):
        self.views_before = world.stats.viewings_per_movie.copy()
        return {}

    def resume(self, world):
        """The viewings counted at the start come back from `state`."""

    def state(self) -> dict[str, Any]:
        return {"views_before": self.views_before.tolist()} if hasattr(self, "views_before") else {}

    def restore(self, state: dict[str, Any]) -> None:
        if "views_before" in state:
            self.views_before = np.asarray(state["views_before"], np.int64)

    def finish(self, world):
        recent = np.log1p((world.stats.viewings_per_movie - self.views_before).astype(np.float64))
        sd = recent.std()
        if sd == 0:
            return
        delta = (self.spec.stars * (recent - recent.mean()) / sd).astype(np.float32)
        world.taste = dataclasses.replace(world.taste, item_bias=world.taste.item_bias + delta)
        self.touched["movies"] = int((delta != 0).sum())
        order = np.argsort(delta, kind="stable")
        slugs = self.ctx.catalog.slug
        self.refit = {
            "raised": [slugs[i] for i in order[::-1][:10].tolist()],
            "lowered": [slugs[i] for i in order[:10].tolist()],
            "mean_abs_change": round(float(np.abs(delta).mean()), 4),
        }

    def report(self) -> dict[str, Any]:
        return {"refit": getattr(self, "refit", {})}
