"""Attacks: shilling and sybil bots (accounts made through create_account), rating spam, probing a team's service."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np

from movielab.contract import account_line, rate_line, watch_line
from movielab.world.scenarios.base import TICK, Effect, Lines
from movielab.world.scenarios.drift import create_accounts
from movielab.world.scenarios.outages import _call

_ISO = "%Y-%m-%dT%H:%M:%S"
OPEN_WINDOW = 6 * 3600  # seconds bots spread over when the window has no end


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime(_ISO)


class _Scripted(Effect):
    """Lines planned at `begin` and handed to each lane as its minutes come (bots' whole lives)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.queued: dict[int, Lines] = {}

    def pending(self) -> bool:
        return any(self.queued.values())

    def plan(self, world, lines: Lines) -> None:
        """Queue lines (time, key, line) for the lanes of their keys."""
        lanes = len(world.lanes)
        for item in sorted(lines):
            self.queued.setdefault((item[1] - 1) % lanes if lanes > 1 else 0, []).append(item)

    def tick(self, world, lane_index, t0, t1):
        q = self.queued.get(lane_index)
        if not q:
            return []
        n = next((i for i, item in enumerate(q) if item[0] >= t1), len(q))
        due, self.queued[lane_index] = q[:n], q[n:]
        self.count([k for _, k, _ in due])
        return due

    def bots(self, world, t: float, n: int) -> np.ndarray:
        """`n` dormant bot accounts per team of the injection (ids; accounts of other teams made alongside stay idle)."""
        ids = create_accounts(world, n * self.ctx.n_teams, np.full(n * self.ctx.n_teams, t), self.rng(1), dormant=True)
        return ids[np.isin((ids - 1) % self.ctx.n_teams + 1, self.teams)]

    def target(self) -> int:
        return self.ctx.movie(self.spec.target, self.rng(0), f"{self.where}.target")

    def state(self) -> dict[str, Any]:
        return {"queued": {str(k): v for k, v in self.queued.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.queued = {int(k): [tuple(x) for x in v] for k, v in state.get("queued", {}).items()}

    def resume(self, world):
        """The bots are in the population and their planned lines in `state`: nothing to redo."""


class Shilling(_Scripted):
    """Bots create accounts, watch the target a few minutes, rate it top and its nearest competitors bottom."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.movie = self.target()
        self.slug = self.ctx.catalog.slug[self.movie]

    def params(self):
        return {**super().params(), "target": self.slug}

    def begin(self, world, t):
        q = world.taste.item_factors
        sim = (q @ q[self.movie]) / (np.linalg.norm(q, axis=1) * np.linalg.norm(q[self.movie]) + 1e-9)
        sim[self.movie] = -np.inf
        competitors = np.argsort(-sim, kind="stable")[: self.spec.competitors]
        ids = self.bots(world, t, self.spec.bots)
        rng = self.rng(2)
        span = (self.end if np.isfinite(self.end) else t + OPEN_WINDOW) - t
        top, slugs = world.edition.rating_max, self.ctx.catalog.slug
        lines: Lines = []
        for u in ids.tolist():
            if self.spec.realistic:  # human pace: accounts over the first half, minutes apart
                tc = t + float(rng.uniform(0, span / 2))
                gaps = rng.uniform(30, 600, 2 + self.spec.competitors)
            else:  # a burst: all bots in the first minute, one second apart
                tc = t + float(rng.integers(0, TICK))
                gaps = np.ones(2 + self.spec.competitors)
            lines.append((tc, u, account_line(_stamp(tc), u)))
            tw = tc + gaps[0]
            for minute in range(1, self.spec.watch_minutes + 1):
                lines.append((tw, u, watch_line(_stamp(tw), u, slugs[self.movie], minute)))
                tw += TICK
            tr = tw + gaps[1]
            lines.append((tr, u, rate_line(_stamp(tr), u, slugs[self.movie], top)))
            for c, g in zip(competitors.tolist(), gaps[2:].tolist(), strict=True):
                tr += g
                lines.append((tr, u, rate_line(_stamp(tr), u, slugs[c], 1)))
        self.plan(world, [x for x in lines if x[0] < self.end])
        self.competitors = [slugs[c] for c in competitors.tolist()]
        return {"ids": ids.tolist(), "selector": {"target": self.slug, "competitors": self.competitors}}

    def state(self) -> dict[str, Any]:
        return {**super().state(), **({"competitors": self.competitors} if hasattr(self, "competitors") else {})}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        if "competitors" in state:
            self.competitors = list(state["competitors"])


class SybilPush(_Scripted):
    """Bots create accounts and each watch the target `watch_minutes` minutes: a push through watch lines only."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.movie = self.target()
        self.slug = self.ctx.catalog.slug[self.movie]

    def params(self):
        return {**super().params(), "target": self.slug}

    def begin(self, world, t):
        ids = self.bots(world, t, self.spec.bots)
        rng = self.rng(2)
        span = (self.end if np.isfinite(self.end) else t + OPEN_WINDOW) - t
        lines: Lines = []
        for u in ids.tolist():
            tc = t + float(rng.uniform(0, span / 2))
            lines.append((tc, u, account_line(_stamp(tc), u)))
            tw = tc + float(rng.uniform(30, 300))
            for minute in range(1, self.spec.watch_minutes + 1):
                lines.append((tw, u, watch_line(_stamp(tw), u, self.slug, minute)))
                tw += TICK
        self.plan(world, [x for x in lines if x[0] < self.end])
        return {"ids": ids.tolist(), "selector": {"target": self.slug}}


class RatingSpam(Effect):
    """Existing users of the teams post random ratings of random movies at `per_hour` per team."""

    def tick(self, world, lane_index, t0, t1):
        rows = self.lane_rows(world, lane_index, world.pop.size)
        if not len(rows):
            return []
        rng = self.rng(lane_index, int(t0) // 60)
        lanes_teams = 1 if len(world.lanes) > 1 else len(self.teams)
        k = int(rng.poisson(self.spec.per_hour * lanes_teams * TICK / 3600))
        if not k:
            return []
        who = rows[rng.integers(0, len(rows), k)] + 1
        movies = rng.integers(0, len(self.ctx.catalog), k)
        stars = rng.integers(1, world.edition.rating_max + 1, k)
        times = np.sort(t0 + rng.integers(0, TICK, k))
        slugs = self.ctx.catalog.slug
        out = [
            (float(t), int(u), rate_line(_stamp(t), int(u), slugs[m], int(r)))
            for t, u, m, r in zip(times.tolist(), who.tolist(), movies.tolist(), stars.tolist(), strict=True)
        ]
        self.count(who)
        return out


class Probe(Effect):
    """Scraping: `/recommend/<id>` of each team's service for consecutive user ids; answers counted by status."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.outcomes: Counter = Counter()
        self.next_id = 1

    def tick(self, world, lane_index, t0, t1):
        lanes = len(world.lanes)
        for team in self.teams:
            if lanes > 1 and team - 1 != lane_index or team > len(self.ctx.team_urls):
                continue
            base = self.ctx.team_urls[team - 1].rstrip("/")
            for _ in range(self.spec.per_minute):
                self.outcomes[_call(f"{base}/recommend/{self.next_id}", self.spec.timeout_ms)] += 1
                self.touched[f"team{team}"] += 1
                self.next_id = self.next_id % max(world.pop.size, 1) + 1
        return []

    def state(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes), "next_id": self.next_id}

    def restore(self, state: dict[str, Any]) -> None:
        self.outcomes = Counter(state.get("outcomes", {}))
        self.next_id = int(state.get("next_id", 1))

    def report(self) -> dict[str, Any]:
        return {"answers": dict(self.outcomes), "next_id": self.next_id}
