"""The running scenario: begins, ticks, filters and finishes each injection, and writes the hidden manifest.

The engine makes three calls (see `World`): `on_tick(world, lane, t0, t1)` at the start of each lane's
simulated minute (hidden-state changes; returns lines to add), `filter_lines(world, lane, t0, …)` on each
batch of lines before the sink (the line layer), and `close(world)` when the run ends (held lines to
publish; open injections end). API-layer effects are read by `apilayer.ScenarioApi`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from movielab.world.data.catalog import Catalog
from movielab.world.manifest import Manifest
from movielab.world.scenarios import attacks, bias, drift, faults, goals, outages
from movielab.world.scenarios.base import TICK, Context, Effect
from movielab.world.scenarios.schema import Scenario
from movielab.world.scenarios.timeline import due_to_begin, due_to_finish, is_active

if TYPE_CHECKING:
    from movielab.world.engine import World

logger = logging.getLogger(__name__)

KINDS: dict[str, type[Effect]] = {
    "taste_shift": drift.TasteShift,
    "popularity_shock": drift.PopularityShock,
    "movie_removed": drift.MovieRemoved,
    "movie_added": drift.MovieAdded,
    "movie_renamed": drift.MovieRenamed,
    "activity_change": drift.ActivityChange,
    "user_wave": drift.UserWave,
    "corrupt_lines": faults.CorruptLines,
    "format_change": faults.FormatChange,
    "api_field_change": faults.ApiFieldChange,
    "wrong_api_values": faults.WrongApiValues,
    "api_outage": outages.ApiOutage,
    "stream_pause": outages.StreamPause,
    "takedown": outages.Takedown,
    "invalid_requests": outages.InvalidRequests,
    "misreported_age": bias.MisreportedAge,
    "rating_bias": bias.RatingBias,
    "shilling": attacks.Shilling,
    "sybil_push": attacks.SybilPush,
    "rating_spam": attacks.RatingSpam,
    "probe": attacks.Probe,
    "goal_change": goals.GoalChange,
    "truth_refit": goals.TruthRefit,
}


def _iso(t: float) -> str | None:
    return None if not np.isfinite(t) else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _check_catalog_order(effects: list[Effect]) -> None:
    """Refuse an entry that acts on a movie before a `movie_added` entry adds it (they contradict each other)."""
    added = {e.movie: e for e in effects if e.spec.kind == "movie_added"}
    for e in effects:
        a = added.get(getattr(e, "movie", None))
        if a is not None and a is not e and e.start < a.start:
            raise e.refuse(
                "target" if hasattr(e.spec, "target") else "movie",
                f"{a.slug!r} is added by {a.where.split(': ', 1)[1]} only from {_iso(a.start)}, after this starts "
                f"({_iso(e.start)})",
            )


class ScenarioRuntime:
    """A scenario bound to a world's catalog, teams and seed; writes `manifest` as injections take effect.

    `time_scale` > 1 compresses the timeline (168: a week an hour, for tests and benchmarks).
    `team_urls` are the teams' service URLs (for `invalid_requests` and `probe`; without them those send nothing).
    Raises ValueError naming the injection when it cannot apply (unknown movie, team that does not exist).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        catalog: Catalog,
        n_teams: int,
        seed: int,
        run_start: float,
        manifest: Manifest | None = None,
        team_urls: list[str] | None = None,
        time_scale: float = 1.0,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.scenario = scenario
        self.ctx = Context(
            catalog, n_teams, seed, run_start, scenario.source, list(team_urls or []), time_scale=time_scale
        )
        self.effects = [KINDS[spec.kind](i, spec, self.ctx) for i, spec in enumerate(scenario.injections)]
        _check_catalog_order(self.effects)
        self.manifest = manifest if manifest is not None else Manifest()
        self._to_resume: list[Effect] = []  # begun before a checkpoint restore, not finished: `resume` redoes begin
        self._prepared = False  # the first minute of this run has not been reached yet
        self.run: int | None = None  # this run's number in the manifest (its run record is written at the first minute)
        self.resumed_from: int | None = None  # the run a restored checkpoint was taken in

    @property
    def announcements(self) -> list[dict[str, Any]]:
        """What teams are told (takedowns, announced changes): served on the world API's `/announcements`."""
        return self.ctx.announcements

    @property
    def api_effects(self) -> list[Any]:
        """The API-layer effects acting now."""
        return self.ctx.api_effects

    def takedowns(self) -> list[tuple[int, float]]:
        """(movie row, unix time it was taken down) of every takedown that has begun: for the scoring."""
        return [
            (e.movie, float(e.begun_at)) for e in self.effects if e.spec.kind == "takedown" and e.begun_at is not None
        ]

    def unreleased(self) -> set[str]:
        """Ids of movies a `movie_added` injection has not added yet: the world API answers 404 for them."""
        return {e.slug for e in self.effects if e.spec.kind == "movie_added" and e.begun_at is None and not e.finished}

    def _live(self) -> list[Effect]:
        return [e for e in self.effects if e.begun_at is not None and not e.finished]

    def on_tick(self, world: World, lane: int, t0: float, t1: float) -> list[tuple[float, int, str]]:
        """Begin what is due, act on lane `lane`'s minute [t0, t1), finish what every lane has passed."""
        if not self._prepared:
            self._first_minute(world, t0)
        if self._to_resume:
            self.resume(world)
        self._finish_due(world)
        for e in due_to_begin(self.effects, t0, t1):
            self._begin(world, e, max(t0, e.start))
        out: list[tuple[float, int, str]] = []
        for e in self._live():
            if is_active(e, t0, t1) or e.pending():
                out.extend(e.tick(world, lane, t0, t1))
        return out

    def filter_lines(
        self, lane: int, t0: float, times: np.ndarray, keys: list[int], lines: list[str]
    ) -> tuple[np.ndarray, list[int], list[str]]:
        """The line layer on one batch (lane -1: every lane's lines of a tick together); times stay sorted."""
        live = self._live()
        if not live:
            return times, keys, lines
        t = times.tolist()
        for e in live:
            t, keys, lines = e.filter(lane, t0, is_active(e, t0, t0 + TICK), t, keys, lines)
        return np.asarray(t, np.float64), list(keys), list(lines)

    def close(self, world: World) -> tuple[list[int], list[str]]:
        """End every injection that began (at the run's end if still open), close the manifest file; return held
        lines to publish."""
        keys: list[int] = []
        lines: list[str] = []
        if self._live():
            self._open_run(world.now)  # a restored run closed before its first minute still says which run it is
        for e in self._live():
            k, x = e.drain()
            keys += k
            lines += x
            self._finish(world, e, min(world.now, e.end))
        self.manifest.close()  # records stay readable in memory (the instructor app serves them)
        return keys, lines

    def _first_minute(self, world: World, t0: float) -> None:
        """The run's record; injections whose window ended before the run are skipped (recorded, logged); held-back
        state (movies added later) is set up."""
        self._prepared = True
        self._open_run(t0)
        for e in self.effects:
            if e.begun_at is not None or e.finished:
                continue
            if e.end <= t0:
                self._skip(e, t0)
            else:
                e.prepare(world)

    def _open_run(self, t: float) -> None:
        if self.run is not None:
            return
        self.run = self.manifest.next_run()
        self.manifest.append(
            {
                "event": "run",
                "run": self.run,
                "scenario": self.scenario.name,
                "source": self.scenario.source,
                "seed": self.ctx.seed,
                "teams": self.ctx.n_teams,
                "start": _iso(t),
                "run_start": _iso(self.ctx.run_start),
                "time_scale": self.ctx.time_scale,
                "resumed_from": self.resumed_from,
            }
        )

    def _skip(self, e: Effect, t0: float) -> None:
        e.finished = e.skipped = True
        reason = f"its window ended before the run reached it (the run is at {_iso(t0)})"
        logger.warning("scenario %s: %s skipped: %s", self.scenario.name, e.id, reason)
        self.manifest.append(
            {
                "event": "skipped",
                "run": self.run,
                "id": e.id,
                "kind": e.spec.kind,
                "start": _iso(e.start),
                "end": _iso(e.end),
                "teams": e.teams,
                "params": e.params(),
                "reason": reason,
            }
        )

    def _begin(self, world: World, e: Effect, t: float) -> None:
        selected = e.begin(world, t)
        e.begun_at = t
        logger.info("scenario %s: %s takes effect at %s", self.scenario.name, e.id, _iso(t))
        if t >= e.start + TICK:  # declared to start before the run did: it starts with the run
            selected = {**selected, "declared_start": _iso(e.start)}
            logger.warning(
                "scenario %s: %s declared from %s starts with the run", self.scenario.name, e.id, _iso(e.start)
            )
        self.manifest.append(
            {
                "event": "start",
                "run": self.run,
                "id": e.id,
                "kind": e.spec.kind,
                "start": _iso(t),
                "end": _iso(e.end),
                "teams": e.teams,
                "params": e.params(),
                **selected,
            }
        )

    def _finish_due(self, world: World) -> None:
        for e in due_to_finish(self.effects, world.now):
            self._finish(world, e, e.end)

    def _finish(self, world: World, e: Effect, t: float) -> None:
        e.finish(world)
        e.finished = True
        self.manifest.append(
            {
                "event": "end",
                "run": self.run,
                "id": e.id,
                "kind": e.spec.kind,
                "start": _iso(e.begun_at),
                "end": _iso(t),
                "teams": e.teams,
                "touched": int(sum(e.touched.values())),
                "touched_by": dict(sorted(e.touched.items())),
                **e.report(),
            }
        )

    def state(self) -> dict[str, Any]:
        """Progress as a plain JSON-able dict (hidden arrays are the world checkpoint's; this is the rest)."""
        return {
            "run": self.run if self.run is not None else self.resumed_from,  # the run this progress was made in
            "effects": {
                e.id: {
                    "begun_at": e.begun_at,
                    "finished": e.finished,
                    "skipped": e.skipped,
                    "touched": dict(e.touched),
                    **e.state(),
                }
                for e in self.effects
            },
            "announcements": list(self.ctx.announcements),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back `state()` of a runtime built from the same scenario."""
        by_id = state.get("effects", {})
        for e in self.effects:
            s = by_id.get(e.id)
            if s is None:
                raise ValueError(f"scenario state has no injection {e.id}: not the same scenario")
            e.begun_at, e.finished, e.skipped = s["begun_at"], s["finished"], bool(s.get("skipped", False))
            e.touched.clear()
            e.touched.update(s["touched"])
            e.restore(s)
        self.ctx.announcements[:] = list(state.get("announcements", []))
        self.resumed_from = state.get("run")  # this run's record names the run it continues
        self._to_resume = [e for e in self.effects if e.begun_at is not None and not e.finished]

    def resume(self, world: World) -> None:
        """After `restore`: redo what the injections in progress computed or set when they began and a checkpoint
        does not hold (a taste-shift direction, boosted browse CDFs, API effects), without a new manifest record.

        Deterministic (each kind's `resume`): a restored world continues as an uninterrupted one. Runs at the first
        tick after a restore (or when called); announcements come back from the state, not from here.
        """
        todo, self._to_resume = self._to_resume, []
        for e in todo:
            told = len(self.ctx.announcements)
            e.resume(world)
            del self.ctx.announcements[told:]
            logger.info("scenario %s: %s resumed after a restore", self.scenario.name, e.id)

    def add_team(self, url: str) -> int:
        """A team joined the running world (the course adds one): injections for all teams include it from now on.

        Users are split by id modulo the new count (as the world's lanes are); injections that name their teams keep
        them; what an injection already in progress selected when it began stays as it was. Returns the team count.
        """
        self.ctx.n_teams += 1
        self.ctx.team_urls.append(url)
        for e in self.effects:
            if e.spec.teams is None:
                e.teams = list(range(1, self.ctx.n_teams + 1))
        return self.ctx.n_teams

    def set_team_url(self, team: int, url: str) -> None:
        """Team `team` (1-based) moved its service: injections that call teams (`invalid_requests`, `probe`) follow."""
        if 1 <= team <= len(self.ctx.team_urls):
            self.ctx.team_urls[team - 1] = url
