"""Goals: the business goal scoring uses (top ratings, or profit: value of a play minus its license cost)."""

from __future__ import annotations

from datetime import UTC, datetime

from movielab.world.scenarios.base import Effect
from movielab.world.scenarios.faults import _ISO


class GoalChange(Effect):
    """From start, scoring judges teams by `goal`; the manifest records it with the license-cost summary used."""

    all_teams_only = True

    def begin(self, world, t):
        cost = self.ctx.catalog.license_cost
        if self.spec.announced:
            self.ctx.announcements.append({"kind": "goal_change", "goal": self.spec.goal,
                                           "value_per_play": self.spec.value_per_play,
                                           "from": datetime.fromtimestamp(t, UTC).strftime(_ISO),
                                           "license_cost": "per play, field license_cost of GET /movie/<id>"})  # fmt: skip
        return {"selector": {"license_cost_mean": round(float(cost.mean()), 4),
                             "unprofitable_movies": int((cost > self.spec.value_per_play).sum())}}  # fmt: skip
