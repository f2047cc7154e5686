"""Biased data: users who report a wrong age (the true one stays hidden), ratings biased by group."""

from __future__ import annotations

from typing import Any

import numpy as np

from movielab.world.scenarios.base import Effect
from movielab.world.scenarios.drift import group_selector

MAX_IDS = 10_000  # a manifest record lists at most this many ids; beyond, the rule and the count


class MisreportedAge(Effect):
    """A share of a group (by true age) reports an age from `reported`: the API shows it, the truth keeps its own.

    Pair it with a `taste_shift` of the same group (selected by true age) for a hidden preference the
    reported demographics hide, e.g. adolescents strongly preferring R-rated-like genres.
    """

    def begin(self, world, t):
        n = world.pop.size
        rows = np.arange(n, dtype=np.int64)
        rows = rows[self.ctx.group_mask(world, self.spec.group, n) & np.isin(self.ctx.teams_of_rows(rows), self.teams)]
        rng = self.rng(0)
        rows = rows[rng.random(len(rows)) < self.spec.share]
        self.rows = rows
        self.true = self.ctx.ages(world, n)[rows].astype(np.int16)
        lo, hi = self.spec.reported
        world.pop.age[rows] = rng.integers(lo, hi + 1, len(rows)).astype(np.int16)
        world.dirty[rows] = True
        self.ctx.true_age_rows = np.concatenate([self.ctx.true_age_rows, rows])
        self.ctx.true_age = np.concatenate([self.ctx.true_age, self.true])
        self.count(rows + 1)
        ids = (rows + 1).tolist()
        out: dict[str, Any] = {"selector": group_selector(self.spec.group)}
        if len(ids) <= MAX_IDS:
            out["ids"] = ids
        return out

    def resume(self, world):
        # The reported ages are in the checkpoint's population; the true ones come back from `state`.
        self.ctx.true_age_rows = np.concatenate([self.ctx.true_age_rows, self.rows])
        self.ctx.true_age = np.concatenate([self.ctx.true_age, self.true])

    def state(self) -> dict[str, Any]:
        if not hasattr(self, "rows"):
            return {}
        return {"rows": self.rows.tolist(), "true": self.true.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        if "rows" in state:
            self.rows = np.asarray(state["rows"], np.int64)
            self.true = np.asarray(state["true"], np.int16)

    def finish(self, world):
        if np.isfinite(self.end):  # a bounded window: the users tell the truth again
            world.pop.age[self.rows] = self.true
            world.dirty[self.rows] = True
            keep = ~np.isin(self.ctx.true_age_rows, self.rows)
            self.ctx.true_age_rows, self.ctx.true_age = self.ctx.true_age_rows[keep], self.ctx.true_age[keep]


class RatingBias(Effect):
    """A group's ratings shifted by `stars` in the rate lines (clipped to the edition's scale)."""

    def begin(self, world, t):
        self.max = world.edition.rating_max
        self.world = world
        return {"selector": group_selector(self.spec.group)}

    def filter(self, lane, t0, active, times, keys, lines):
        if not active or not lines:
            return times, keys, lines
        idx = [i for i, x in enumerate(lines) if "/rate/" in x]
        if not idx:
            return times, keys, lines
        k = np.asarray([keys[i] for i in idx], np.int64)
        ok = self.key_in_teams(k.tolist()) & (k <= self.world.pop.size)
        mask = self.ctx.group_mask(self.world, self.spec.group, self.world.pop.size)
        ok[ok] &= mask[k[ok] - 1]
        out, touched = list(lines), []
        for i, good in zip(idx, ok.tolist(), strict=True):
            if good:
                head, r = lines[i].rsplit("=", 1)
                new = min(max(int(r) + self.spec.stars, 1), self.max)
                if new != int(r):
                    out[i] = f"{head}={new}"
                    touched.append(keys[i])
        self.count(touched)
        return times, keys, out
