"""What every injection's effect shares: its window, its teams, its counts, and the world it acts on.

An `Effect` is the running form of one declared injection. The runtime (`runtime.ScenarioRuntime`) calls
`begin` once, when the first lane reaches the start (hidden-state changes that hold for everyone, and what
the manifest records about whom it selects); `tick` per lane and simulated minute while active (hidden-state
changes of that lane's users, and lines it adds); `filter` on each batch of lines while active or holding
lines (the line layer); `finish` once every lane has passed the end (reverting what it reverts).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from movielab.world.data.catalog import Catalog
from movielab.world.data.types import GENDERS, OCCUPATIONS
from movielab.world.scenarios.schema import ScenarioError, entry_label

if TYPE_CHECKING:
    from movielab.world.engine import World
    from movielab.world.scenarios.schema import Group

TICK = 60
Lines = list[tuple[float, int, str]]  # (time, user id key, line)


def lines_containing(lines: list[str], needle: str) -> list[int]:
    """Indices of the lines that contain `needle`, found in one joined string (C speed, not a Python test a line)."""
    text = "\n".join(lines)
    if needle not in text:
        return []
    ends = np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)) + 1)
    hits, at = [], text.find(needle)
    while at >= 0:
        hits.append(at)
        at = text.find(needle, at + 1)
    return np.unique(np.searchsorted(ends, np.asarray(hits), side="right")).tolist()


@dataclass
class Context:
    """What effects act on: the world, its catalog, teams, the seed, and what is shared between effects."""

    catalog: Catalog
    n_teams: int
    seed: int
    run_start: float
    source: str = "scenario"  # what error messages name: the file or preset the scenario came from
    team_urls: list[str] = field(default_factory=list)
    time_scale: float = 1.0  # > 1 compresses the timeline (offsets and durations divided by it)
    announcements: list[dict[str, Any]] = field(default_factory=list)
    api_effects: list[Any] = field(default_factory=list)  # active API-layer effects (apilayer.py reads them)
    true_age_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # users whose age is misreported
    true_age: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    unreleased: set[int] = field(default_factory=set)  # movie rows added later (`movie_added`): no auto pick of them
    picked: set[int] = field(default_factory=set)  # movie rows injections picked or named so far
    # Browse-candidate changes by injection index: (movie row, share) — share 0 hides the movie, > 0 gives it that
    # share of the candidates. The CDFs are rebuilt from the world's own (`base_*`) in index order at each change,
    # so overlapping injections compose and end in any order, and a restored world rebuilds the same CDFs.
    browse_rules: dict[int, tuple[int, float]] = field(default_factory=dict)
    base_browse: np.ndarray | None = None
    base_discovery: Any = None

    def teams_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Team numbers (1..T) of user rows."""
        return (np.asarray(rows, np.int64) % self.n_teams) + 1

    def ages(self, world: World, n: int) -> np.ndarray:
        """True ages of rows 0..n-1 (the API shows the reported ones; misreported users keep theirs here)."""
        age = world.pop.age[:n].copy()
        keep = self.true_age_rows < n
        age[self.true_age_rows[keep]] = self.true_age[keep]
        return age

    def group_mask(self, world: World, group: Group, n: int) -> np.ndarray:
        """Mask of rows 0..n-1 in a demographic group (by true age)."""
        return self.in_group(world, group, np.arange(n, dtype=np.int64))

    def in_group(self, world: World, group: Group, rows: np.ndarray) -> np.ndarray:
        """Mask of the given rows in a demographic group (by true age)."""
        mask = np.ones(len(rows), np.bool_)
        if group.age is not None:
            age = world.pop.age[rows].copy()
            fixed = np.isin(rows, self.true_age_rows) if len(self.true_age_rows) else np.zeros(len(rows), np.bool_)
            if fixed.any():
                true = dict(zip(self.true_age_rows.tolist(), self.true_age.tolist(), strict=True))
                age[fixed] = [true[r] for r in rows[fixed].tolist()]
            mask &= (age >= group.age[0]) & (age <= group.age[1])
        if group.gender is not None:
            mask &= world.pop.gender[rows] == GENDERS.index(group.gender)
        if group.occupation is not None:
            mask &= world.pop.occupation[rows] == OCCUPATIONS.index(group.occupation)
        return mask

    def set_browse(self, world: World, index: int, rule: tuple[int, float] | None) -> None:
        """Set (or with None drop) injection `index`'s browse rule and rebuild the world's browse CDFs."""
        if self.base_browse is None:
            self.base_browse, self.base_discovery = world.browse_cdf, world.discovery
        if rule is None:
            self.browse_rules.pop(index, None)
        else:
            self.browse_rules[index] = rule
        w = np.diff(np.concatenate([[0.0], self.base_browse]))
        g = None if self.base_discovery is None else np.diff(np.concatenate([[0.0], self.base_discovery.global_cdf]))
        rules = [self.browse_rules[i] for i in sorted(self.browse_rules)]
        for movie, share in rules:
            if share == 0:
                w[movie] = 0.0
        for movie, share in rules:
            if share > 0:
                w[movie] += share / (1 - share) * w.sum()
                if g is not None:  # only the popularity-drawn part of the candidates can be boosted: scale it up
                    s = min(0.9, share / max(1.0 - self.base_discovery.taste_share, 1e-6))
                    g[movie] += s / (1 - s) * g.sum()
        c = np.cumsum(w)
        world.browse_cdf = c / c[-1]
        if g is not None:
            c = np.cumsum(g)
            world.discovery = dataclasses.replace(self.base_discovery, global_cdf=c / c[-1])

    def movie(
        self,
        slug: str,
        rng: np.random.Generator,
        what: str,
        liked: bool = False,
        fresh: bool = False,
        real: bool = False,
    ) -> int:
        """Row of `slug`, or for 'auto' a seeded pick among mid-popular movies (40th-70th percentile of votes) other
        than movies not yet added; `liked`: among those, one rated in the top quarter (a release many users want);
        `fresh`: none another injection picked; `real`: a MovieLens movie (its rating average, hence `liked`, is
        real, not simulated). ScenarioError prefixed with `what` (the entry and field) for a slug
        the catalog lacks."""
        if slug != "auto":
            from movielab.world.data.catalog import UnknownMovie

            try:
                row = self.catalog.index_of(slug)
            except UnknownMovie:
                raise ScenarioError(f"{what}: movie {slug!r} is not in the catalog") from None
            self.picked.add(row)
            return row
        votes = self.catalog.vote_count
        lo, hi = np.percentile(votes, [40, 70])
        ok = (votes >= lo) & (votes <= hi)
        if real and (ok & ~self.catalog.synthetic).any():
            ok &= ~self.catalog.synthetic
        if liked and ok.any():
            ok &= self.catalog.vote_average >= np.percentile(self.catalog.vote_average[ok], 75)
        taken = self.unreleased | (self.picked if fresh else set())
        pool = np.flatnonzero(ok)
        if taken:
            pool = pool[~np.isin(pool, list(taken))]
        if not len(pool):
            pool = np.setdiff1d(np.arange(len(votes)), list(taken))
        row = int(rng.choice(pool))
        self.picked.add(row)
        return row


class Effect:
    """Base of every running injection: see the module. Subclasses override what they do."""

    all_teams_only = False  # catalog- or API-wide kinds cannot be limited to some teams

    def __init__(self, index: int, spec: Any, ctx: Context) -> None:
        self.index = index
        self.spec = spec
        self.ctx = ctx
        self.id = f"{index}:{spec.name or spec.kind}"
        self.where = f"scenario {ctx.source}: {entry_label(index, spec.kind, spec.name)}"
        try:
            s, e = spec.window(ctx.run_start)
        except ValueError as exc:  # an ISO end before an offset start: known only with the run's start
            raise self.refuse("end", str(exc)) from None
        self.start = ctx.run_start + (s - ctx.run_start) / ctx.time_scale
        self.end = ctx.run_start + (e - ctx.run_start) / ctx.time_scale
        self.teams = list(range(1, ctx.n_teams + 1)) if spec.teams is None else list(spec.teams)
        bad = [t for t in self.teams if t > ctx.n_teams]
        if bad:
            raise self.refuse("teams", f"teams {bad} do not exist (the world has {ctx.n_teams})")
        if self.all_teams_only and spec.teams is not None:
            raise self.refuse("teams", f"{spec.kind} acts on what every team shares; omit 'teams'")
        self.touched: Counter = Counter()  # team number (or "api") -> lines/requests touched
        self.begun_at: float | None = None
        self.finished = False
        self.skipped = False  # its window ended before the run reached it (recorded in the manifest, never begun)

    def refuse(self, field_name: str, reason: str) -> ScenarioError:
        """The error for a field of this injection that cannot apply: names the scenario, the entry and the field."""
        return ScenarioError(f"{self.where}.{field_name}: {reason}")

    def rng(self, *key: int) -> np.random.Generator:
        """A random stream of this effect for a key (e.g. lane, minute): the same whatever ran before."""
        return np.random.default_rng([self.ctx.seed, 13, self.index, *[int(k) for k in key]])

    def lane_rows(self, world: World, lane_index: int, n: int, lo: int = 0) -> np.ndarray:
        """Rows in [lo, n) of this lane whose team the injection applies to."""
        lanes = len(world.lanes)
        first = lo + (lane_index - lo) % lanes
        rows = np.arange(first, n, lanes, dtype=np.int64)
        if len(self.teams) == self.ctx.n_teams:
            return rows
        return rows[np.isin(self.ctx.teams_of_rows(rows), self.teams)]

    def key_in_teams(self, keys: list[int]) -> np.ndarray:
        """Mask of line keys (user ids) of users of this injection's teams."""
        k = np.asarray(keys, np.int64)
        if len(self.teams) == self.ctx.n_teams:
            return np.ones(len(k), np.bool_)
        return np.isin((k - 1) % self.ctx.n_teams + 1, self.teams)

    def count(self, keys: list[int] | np.ndarray) -> None:
        """Add touched lines, per team of their keys."""
        if len(keys):
            teams = (np.asarray(keys, np.int64) - 1) % self.ctx.n_teams + 1
            for t, c in zip(*np.unique(teams, return_counts=True), strict=True):
                self.touched[f"team{int(t)}"] += int(c)

    # --- what subclasses override ----------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The declared parameters (for the manifest)."""
        return self.spec.model_dump(exclude={"kind", "name", "start", "end", "duration", "teams"}, mode="json")

    def prepare(self, world: World) -> None:
        """Before the run's first minute (again after a restore) while not begun: hold back what must not exist yet
        (a movie added later)."""

    def begin(self, world: World, t: float) -> dict[str, Any]:
        """Take effect at simulated time t; return what the manifest's start record says it selected."""
        return {}

    def tick(self, world: World, lane_index: int, t0: float, t1: float) -> Lines:
        """Act on one lane's minute [t0, t1) while active; return lines to add."""
        return []

    def filter(
        self, lane: int, t0: float, active: bool, times: list[float], keys: list[int], lines: list[str]
    ) -> tuple[list[float], list[int], list[str]]:
        """Change a batch of lines (one lane's, or every lane's when `lane` is -1) of the minute starting t0."""
        return times, keys, lines

    def pending(self) -> bool:
        """Lines held back and not yet released (the effect cannot finish before they are)."""
        return False

    def finish(self, world: World) -> None:
        """Stop; revert what should be reverted."""

    def state(self) -> dict[str, Any]:
        """Small JSON-able progress beyond the counts (held lines, created ids)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back `state()`."""

    def resume(self, world: World) -> None:
        """After a checkpoint restore of a begun, unfinished injection: redo what `begin` set outside the checkpoint.

        The default re-runs `begin` at `begun_at` (right for kinds whose `begin` only computes, announces or
        registers). Kinds whose `begin` changed checkpointed state (the population, the hidden taste) override it.
        """
        self.begin(world, self.begun_at)

    def report(self) -> dict[str, Any]:
        """Extra figures for the manifest's end record (e.g. answers to requests sent)."""
        return {}

    def drain(self) -> tuple[list[int], list[str]]:
        """Every line still held back (the run is ending): keys and lines, to publish now."""
        return [], []
