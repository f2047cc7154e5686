"""Drift in the hidden state: taste shifts, popularity shocks, catalog changes (movies removed, added, renamed), activity
changes, new-user waves."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import numpy as np

from movielab.contract import account_line
from movielab.world.clock import second_stamps
from movielab.world.data.types import GENDERS, GENRES, OCCUPATIONS
from movielab.world.population import Demographics, draw_population
from movielab.world.scenarios.base import TICK, Effect, Lines, lines_containing
from movielab.world.scenarios.faults import ApiEffect
from movielab.world.schedule import DAY


def group_selector(group) -> dict[str, Any]:
    """The manifest's rule for a demographic group."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.model_dump().items() if v is not None}


def create_accounts(
    world, n: int, times: np.ndarray, rng: np.random.Generator, group=None, dormant: bool = False
) -> np.ndarray:
    """Add n users (of `group`'s demographics when given; `dormant`: they never act on their own); their ids."""
    demo = world.demographics
    if group is not None:
        mask = np.ones(len(demo.age), np.bool_)
        if group.age is not None:
            mask &= (demo.age >= group.age[0]) & (demo.age <= group.age[1])
        if group.gender is not None:
            mask &= demo.gender == GENDERS.index(group.gender)
        if group.occupation is not None:
            mask &= demo.occupation == OCCUPATIONS.index(group.occupation)
        if not mask.any():
            raise ValueError(f"no real user matches the group {group_selector(group)} to draw new users from")
        demo = Demographics(
            demo.age[mask],
            demo.gender[mask],
            demo.occupation[mask],
            demo.utc_offset[mask],
            demo.zip_prefix[mask],
            other_occupation_share=0.0,
        )
    batch = draw_population(n, demo, world.taste, world.activity, times, rng)
    if dormant:
        batch.activity[:] = 0.0
        batch.binge[:] = 0.0
    ids = world.pop.add(batch)
    world._grow_user_state()  # the engine's per-user arrays follow the population
    world.dirty[ids - 1] = True
    return ids


class TasteShift(Effect):
    """A group's taste moves toward (or away from) genres: `stars` more for the genres' movies at the end.

    The shift is applied every STEP simulated minutes (a linear drift in small steps), and in full by the end.
    """

    STEP = 15

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if not np.isfinite(self.end):
            raise self.refuse("end", "a taste shift needs an end or a duration (its pace)")
        self.lane_users: dict[int, int] = {}  # lane -> users shifted in its latest minute
        self.members: dict[int, tuple[np.ndarray, int]] = {}  # lane -> (group rows, population size seen)
        self.applied: dict[int, int] = {}  # lane -> minutes of the shift applied so far

    def begin(self, world, t):
        g = self.ctx.catalog.genres[:, [GENRES.index(x) for x in self.spec.genres]].any(axis=1)
        q = world.taste.item_factors
        d = (q[g].mean(0) - q.mean(0)).astype(np.float64)
        # A step along d/|d|^2 raises p·d by one: the genres' movies gain that many stars over the average movie.
        self.direction = (d / max(float(d @ d), 1e-9)).astype(np.float32)
        self.ticks = max(1, int(np.ceil(self.end / TICK) - np.floor(self.start / TICK)))
        self.rate = (
            self.spec.stars / self.ticks
        )  # stars per simulated minute: the whole shift over the window's minutes
        return {"selector": {**group_selector(self.spec.group), "genres": self.spec.genres}}

    def tick(self, world, lane_index, t0, t1):
        # The group's rows of this lane, extended as users arrive (a user's demographics never change).
        rows, seen = self.members.get(lane_index, (np.empty(0, np.int64), 0))
        n = world.pop.size
        if n > seen:
            new = self.lane_rows(world, lane_index, n, lo=seen)
            rows = np.concatenate([rows, new[self.ctx.in_group(world, self.spec.group, new)]])
            self.members[lane_index] = (rows, n)
        # Applied in steps of STEP minutes (and at the window's end): the same total, a fraction of the cost.
        first = np.floor(self.start / TICK) * TICK
        due = min(self.ticks, int((t1 - first) // TICK))
        done = self.applied.get(lane_index, 0)
        if due - done >= self.STEP or (due == self.ticks and due > done):
            world.pop.taste[rows] += (due - done) * self.rate * self.direction[None, :]
            world.dirty[rows] = True
            self.applied[lane_index] = due
        self.lane_users[lane_index] = len(rows)
        self.touched["users"] = sum(self.lane_users.values())
        return []

    def state(self) -> dict[str, Any]:
        return {"applied": {str(k): v for k, v in self.applied.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.applied = {int(k): int(v) for k, v in state.get("applied", {}).items()}


def _count_movie_lines(effect: Effect, keys, lines, needle: str, kinds: tuple[str, ...]) -> None:
    from movielab.world.sinks import kind_of

    hits = lines_containing(lines, needle)
    hits = [i for i in hits if kind_of(lines[i]) in kinds]
    mine = effect.key_in_teams([keys[i] for i in hits]).tolist()
    effect.count([keys[i] for i, m in zip(hits, mine, strict=True) if m])


def _set_item_bias(world, movie: int, value: float) -> None:
    """Change one movie's hidden bias in this world only (the taste model may be shared with other worlds)."""
    bias = world.taste.item_bias.copy()
    bias[movie] = value
    world.taste = dataclasses.replace(world.taste, item_bias=bias)


class PopularityShock(Effect):
    """A new release many users want: browse share and score boost during the window; watch lines counted."""

    all_teams_only = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.movie = self.ctx.movie(self.spec.movie, self.rng(0), f"{self.where}.movie", liked=True)
        self.slug = self.ctx.catalog.slug[self.movie]

    def params(self):
        return {**super().params(), "movie": self.slug}

    def begin(self, world, t):
        self.ctx.set_browse(world, self.index, (self.movie, self.spec.share))
        _set_item_bias(world, self.movie, float(world.taste.item_bias[self.movie]) + self.spec.boost)
        return {"ids": [self.slug]}

    def filter(self, lane, t0, active, times, keys, lines):
        if active:
            _count_movie_lines(self, keys, lines, f"/m/{self.slug}/", ("watch",))
        return times, keys, lines

    def resume(self, world):
        # The boosted bias is in the checkpoint (the hidden taste); the browse CDFs are rebuilt with the world.
        self.ctx.set_browse(world, self.index, (self.movie, self.spec.share))

    def finish(self, world):
        self.ctx.set_browse(world, self.index, None)
        _set_item_bias(world, self.movie, float(world.taste.item_bias[self.movie]) - self.spec.boost)


class MovieRemoved(Effect):
    """A movie leaves the catalog: no one finds or starts it (the API still answers for it: history stays)."""

    all_teams_only = True
    GONE = -1000.0  # stars: never chosen over leaving

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.movie = self.ctx.movie(self.spec.movie, self.rng(0), f"{self.where}.movie")
        self.slug = self.ctx.catalog.slug[self.movie]

    def params(self):
        return {**super().params(), "movie": self.slug}

    def begin(self, world, t):
        self.ctx.set_browse(world, self.index, (self.movie, 0.0))
        self.saved_bias = float(world.taste.item_bias[self.movie])
        _set_item_bias(world, self.movie, self.GONE)
        return {"ids": [self.slug]}

    def filter(self, lane, t0, active, times, keys, lines):
        if active:  # recommendations still listing a removed movie
            _count_movie_lines(self, keys, lines, self.slug, ("recommendation",))
        return times, keys, lines

    def resume(self, world):
        # The hidden bias (GONE) is in the checkpoint; the bias before it comes from `state`; the CDF is rebuilt.
        self.ctx.set_browse(world, self.index, (self.movie, 0.0))

    def state(self) -> dict[str, Any]:
        return {"saved_bias": self.saved_bias} if hasattr(self, "saved_bias") else {}

    def restore(self, state: dict[str, Any]) -> None:
        if "saved_bias" in state:
            self.saved_bias = float(state["saved_bias"])

    def finish(self, world):
        if np.isfinite(self.end):
            self.ctx.set_browse(world, self.index, None)
            _set_item_bias(world, self.movie, self.saved_bias)


def _announce(effect: Effect, t: float, **what: Any) -> None:
    effect.ctx.announcements.append(
        {"kind": effect.spec.kind, **what, "from": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    )


class MovieAdded(Effect):
    """A movie joins the catalog at start: held back before (never a browse candidate, never chosen, 404 on the API),
    found and picked by its hidden truth after; its watch and rate lines in the window are counted.

    The catalog (and the API's record and hidden truth row) is the one the world was built with: an added movie is a
    catalog row held back until its start. Held back means: its browse weight is zero and its hidden bias so low that
    no user chooses it (taste-drawn candidates may still list it, never to be chosen); the world API's scenario layer
    (`apilayer.ScenarioApi`) answers 404 for it, the same answer as for an id the catalog lacks.
    """

    all_teams_only = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        row = self.ctx.movie(self.spec.movie, self.rng(0), f"{self.where}.movie", liked=True, fresh=True, real=True)
        if row in self.ctx.unreleased:
            raise self.refuse("movie", f"movie {self.ctx.catalog.slug[row]!r} is added by another entry too")
        self.ctx.unreleased.add(row)
        self.movie = row
        self.slug = self.ctx.catalog.slug[row]
        self.saved_bias: float | None = None  # its hidden bias while held back (the world's holds MovieRemoved.GONE)

    def params(self):
        return {**super().params(), "movie": self.slug}

    def prepare(self, world):
        if self.saved_bias is None:
            self.saved_bias = float(world.taste.item_bias[self.movie])
        self.ctx.set_browse(world, self.index, (self.movie, 0.0))
        _set_item_bias(world, self.movie, MovieRemoved.GONE)

    def begin(self, world, t):
        _set_item_bias(world, self.movie, self.saved_bias)  # held back by `prepare` until now
        self._campaign(world)
        if self.spec.announced:
            _announce(self, t, movie=self.slug)
        return {"ids": [self.slug], "title": self.ctx.catalog.title[self.movie]}

    def _campaign(self, world) -> None:
        """Its normal browse weight, plus the campaign's share while the window lasts."""
        share = self.spec.share
        self.ctx.set_browse(world, self.index, (self.movie, share) if share > 0 else None)

    def resume(self, world):
        # Its real hidden bias is in the checkpoint, its browse weight comes with the rebuilt world: redo the campaign.
        self._campaign(world)

    def filter(self, lane, t0, active, times, keys, lines):
        if active:  # the new id in the stream: watch and rate lines
            _count_movie_lines(self, keys, lines, f"/m/{self.slug}/", ("watch",))
            _count_movie_lines(self, keys, lines, f"/rate/{self.slug}=", ("rate",))
        return times, keys, lines

    def finish(self, world):
        self.ctx.set_browse(world, self.index, None)  # the campaign ends; the movie stays

    def state(self) -> dict[str, Any]:
        return {} if self.saved_bias is None else {"saved_bias": self.saved_bias}

    def restore(self, state: dict[str, Any]) -> None:
        if "saved_bias" in state:
            self.saved_bias = float(state["saved_bias"])


class MovieRenamed(ApiEffect):
    """A movie's title changes on the world API from start (back at end if given); its id stays (see the schema).

    Every answer of the API that carries the movie's record (alone or in a bulk answer) is counted.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.movie = self.ctx.movie(self.spec.movie, self.rng(0), f"{self.where}.movie")
        self.slug = self.ctx.catalog.slug[self.movie]
        self.old_title = self.ctx.catalog.title[self.movie]
        self.title = self.spec.title or f"{self.old_title} (Remastered)"

    def params(self):
        return {**super().params(), "movie": self.slug, "title": self.title, "old_title": self.old_title}

    def begin(self, world, t):
        self.ctx.api_effects.append(self)
        if self.spec.announced:
            _announce(self, t, movie=self.slug, title=self.title)
        return {"ids": [self.slug]}

    def applies(self, record: str) -> bool:
        return record == "movie"

    def change(self, record, rng):
        if record.get("id") != self.slug:
            return False
        record["title"] = self.title
        return True


class ActivityChange(Effect):
    """factor > 1: extra sessions (surge, 10x load); factor < 1: a share 1 - factor of users stays away."""

    def tick(self, world, lane_index, t0, t1):
        n = world.pop.size
        rows = self.lane_rows(world, lane_index, n)
        rng = self.rng(lane_index, int(t0) // 60)
        lane = world.lanes[lane_index]
        if self.spec.factor > 1:
            rate = float(world.pop.activity[rows].sum()) / DAY * TICK * (self.spec.factor - 1)
            k = int(rng.poisson(rate))
            free = rows[world.busy_until[rows] <= t0]  # a session of a user already watching would be skipped
            if k and len(free):
                who = free[rng.integers(0, len(free), k)].astype(np.int32)
                lane.queue.push(t0 + rng.integers(0, TICK, k).astype(np.float64), who)
                self.count(who.astype(np.int64) + 1)
        else:
            away_share = 1 - self.spec.factor
            # The same users stay away for the whole window: drawn from a stream keyed by row, not by minute.
            away = rows[np.random.default_rng([self.ctx.seed, 13, self.index, 99]).random(n)[rows] < away_share]
            free = world.busy_until[away] <= t1
            world.busy_until[away[free]] = np.maximum(world.busy_until[away[free]], min(self.end, t0 + DAY))
            world.dirty[away[free]] = True
            self.touched["users_away"] = max(self.touched["users_away"], len(away))
        return []


class UserWave(Effect):
    """New accounts of a group at `per_hour` (a flash crowd at high rates); each starts watching soon after."""

    all_teams_only = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.created_until = self.start
        self.parts: dict[float, list] = {}  # minute -> [lanes yet to take it, (times, ids) per lane]

    def begin(self, world, t):
        self.created_until = float(np.floor(t / TICK) * TICK)  # minutes as the lanes tick them
        return {"selector": group_selector(self.spec.group)}

    def resume(self, world):
        """The accounts made so far are in the population; `created_until` comes back from `state`."""

    def state(self) -> dict[str, Any]:
        return {"created_until": self.created_until}

    def restore(self, state: dict[str, Any]) -> None:
        self.created_until = float(state.get("created_until", self.start))

    def tick(self, world, lane_index, t0, t1):
        lanes = len(world.lanes)
        while self.created_until < t1 and self.created_until < self.end:  # the first lane here creates for all
            m = self.created_until
            rng = self.rng(int(m) // 60)
            k = int(rng.poisson(self.spec.per_hour * TICK / 3600))
            parts = [(np.empty(0), np.empty(0, np.int64))] * lanes
            if k:
                times = np.sort(m + rng.integers(0, TICK, k)).astype(np.float64)
                ids = create_accounts(world, k, times, rng, self.spec.group)
                lane_of = (ids - 1) % lanes
                parts = [(times[lane_of == i], ids[lane_of == i]) for i in range(lanes)]
            self.parts[m] = [lanes, *parts]
            self.created_until = m + TICK
        entry = self.parts.get(t0)
        if entry is None:
            return []
        times, ids = entry[1 + lane_index]
        entry[0] -= 1
        if entry[0] == 0:
            del self.parts[t0]
        if not len(ids):
            return []
        stamps = second_stamps(int(t0), TICK)
        out: Lines = [
            (float(t), int(u), account_line(stamps[int(t - t0)], int(u)))
            for t, u in zip(times.tolist(), ids.tolist(), strict=True)
        ]
        world.active[ids - 1] = True
        world.dirty[ids - 1] = True
        world.lanes[lane_index].queue.push(
            times + 60 + self.rng(int(t0) // 60, 1).random(len(ids)) * 1800, (ids - 1).astype(np.int32)
        )
        self.count(ids)
        return out
