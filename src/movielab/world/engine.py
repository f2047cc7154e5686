"""The simulation loop: ticks of one simulated minute, every user acting in a tick at once.

Per tick: new accounts arrive, due sessions ask for recommendations and pick (or leave),
every viewing in progress emits its next minute, ended viewings rate, pause, nudge taste
and maybe binge on. The tick's lines are sorted by time and handed to the sink; the only
per-event Python work is formatting a line.

Per-team pacing. A world of T teams can run in T *lanes* (`lanes=T`): lane i simulates the
users whose row is i modulo T (team i's users, see `client.team_of`) with its own clock,
random stream, session queue and viewings. New accounts are drawn by minute from a stream of
their own, whichever lane reaches the minute first, so their ids do not depend on the lanes'
progress. A lane's lines therefore depend only on the seed and on its own team's answers:
the run is reproducible team by team, and other teams (slow, hanging or fast) cannot change
them. Running as fast as possible, `run` lets every lane go at its own pace: a lane waits only
for its own team's answers, and `now` (what callbacks and `until` see) is the slowest lane's
time. Each lane's lines reach the sink in time order (one team's topic is in order); lines of
different lanes interleave (a shared extra sink, such as `--out`, is in order per team only).
Paced runs (real time or ×N) keep every lane on one clock. One lane is the classic world.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

import numpy as np

from movielab.contract import CURRENT, Edition, account_line, rate_line, recommendation_line
from movielab.world.behavior import (
    BehaviorParams,
    Discovery,
    choose,
    plan_stop,
    rate,
    rec_rank_bonus,
    seek,
    seen_bits,
)
from movielab.world.clock import SimClock, fraction_stamp, second_stamps
from movielab.world.population import ActivityModel, Demographics, Population, draw_population
from movielab.world.recs import RecAnswers, RecommendationService
from movielab.world.scenarios.runtime import ScenarioRuntime
from movielab.world.schedule import DAY, SessionQueue, plan_day
from movielab.world.sessionlog import SessionLog
from movielab.world.sinks import EventSink
from movielab.world.truth import TasteModel

logger = logging.getLogger(__name__)

TICK = 60  # seconds: one watch line per minute per viewing, so every viewing emits once a tick
MAX_RECS = 20


@dataclass
class Stats:
    """What happened in a run (for summaries and benchmarks)."""

    ticks: int = 0
    sessions: int = 0
    skipped_busy: int = 0
    left: int = 0
    viewings: int = 0
    resumed: int = 0
    picked_recommended: int = 0
    requests_ok: int = 0
    accounts: int = 0
    ratings: int = 0
    rating_hist: np.ndarray = field(default_factory=lambda: np.zeros(6, np.int64))
    lines: Counter = field(default_factory=Counter)
    viewings_per_movie: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    watch_lines_per_movie: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    true_score_of_recommended_picks: float = 0.0

    @property
    def mean_rating(self) -> float:
        """Mean of the ratings given (nan when none)."""
        n = self.rating_hist.sum()
        return float((self.rating_hist * np.arange(len(self.rating_hist))).sum() / n) if n else float("nan")


class _Viewings:
    """Viewings in progress as arrays (one row each)."""

    FIELDS = {
        "user": np.int32,
        "movie": np.int32,
        "minute": np.int32,
        "stop": np.int32,
        "runtime": np.int32,
        "next": np.float64,
        "watched": np.int32,
        "score": np.float32,
        "rec": np.bool_,
        "last": np.int32,
    }

    def __init__(self) -> None:
        for name, dt in self.FIELDS.items():
            setattr(self, name, np.empty(0, dt))

    def __len__(self) -> int:
        return len(self.user)

    def append(self, **cols: np.ndarray) -> None:
        for name, dt in self.FIELDS.items():
            setattr(self, name, np.concatenate([getattr(self, name), np.asarray(cols[name], dt)]))

    def keep(self, mask: np.ndarray) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name)[mask])


class _TickLines:
    """Lines produced in one tick, gathered in chunks and sorted by time at the end."""

    def __init__(self) -> None:
        self.times: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.lines: list[str] = []

    def add(self, times: np.ndarray, keys: np.ndarray, lines: list[str]) -> None:
        if lines:
            self.times.append(np.asarray(times, np.float64))
            self.keys.append(np.asarray(keys, np.int64))
            self.lines.extend(lines)

    def sorted(self) -> tuple[np.ndarray, list[int], list[str]]:
        if not self.lines:
            return np.empty(0), [], []
        t, k = np.concatenate(self.times), np.concatenate(self.keys)
        order = np.argsort(t, kind="stable")
        lines = self.lines
        return t[order], k[order].tolist(), [lines[i] for i in order.tolist()]


class _Lane:
    """One team's share of the world: its users (rows ≡ index mod lanes), clock, randomness, queue, viewings."""

    def __init__(self, index: int, rng: np.random.Generator, now: float) -> None:
        self.index = index
        self.rng = rng
        self.now = now
        self.queue = SessionQueue()
        self.viewings = _Viewings()
        self.pending_rates: list[tuple[float, int, int, int]] = []  # (time, row, movie, rating)
        self.planned_until = now


@dataclass
class _Asked:
    """A lane's tick waiting for its recommendation answers."""

    times: np.ndarray
    rows: np.ndarray
    answers: Future  # of RecAnswers


class World:
    """A running world: population, hidden taste, behaviour, a recommendation service and a sink.

    `lanes` > 1 splits the users into that many independently paced lanes (one per team; see the module).
    """

    def __init__(
        self,
        *,
        slugs: list[str],
        runtime: np.ndarray,
        browse_weights: np.ndarray,
        familiarity: np.ndarray,
        taste: TasteModel,
        population: Population,
        demographics: Demographics,
        activity: ActivityModel,
        service: RecommendationService,
        sink: EventSink,
        clock: SimClock,
        seed: int = 0,
        arrivals_per_day: float = 0.0,
        params: BehaviorParams | None = None,
        journal: list[tuple] | None = None,
        lanes: int = 1,
        edition: Edition = CURRENT,
        discovery: Discovery | None = None,
        sessionlog: SessionLog | None = None,
        scenario: ScenarioRuntime | None = None,
    ) -> None:
        if lanes < 1:
            raise ValueError(f"a world needs at least one lane, got {lanes}")
        self.slugs = slugs
        self.edition = edition  # fixes the rating scale and the precision of recommendation-line stamps
        self.runtime = np.asarray(runtime, np.int32)
        cdf = np.cumsum(np.asarray(browse_weights, np.float64))
        self.browse_cdf = cdf / cdf[-1]
        self.familiarity = np.asarray(familiarity, np.float32)
        self.discovery = discovery  # None: every browse candidate by popularity alone
        self.taste = taste
        self.pop = population
        self.demographics = demographics
        self.activity = activity
        self.service = service
        self.sink = sink
        self.clock = clock
        self.arrivals_per_day = arrivals_per_day
        self.params = params or BehaviorParams()
        self.journal = journal
        self.sessionlog = sessionlog  # hidden record of every session, for scoring teams (`world.scoring`)
        self.scenario = scenario  # injections of drift, faults, bias and attacks (world/scenarios)
        start = float(math.floor(clock.start / TICK) * TICK)
        if lanes == 1:  # the single-lane world draws everything, arrivals included, from one stream
            self.lanes = [_Lane(0, np.random.default_rng(seed), start)]
            self._arrivals_rng = None
        else:
            self.lanes = [_Lane(i, np.random.default_rng([seed, 7, i]), start) for i in range(lanes)]
            self._arrivals_rng = np.random.default_rng([seed, 8])
        self._arrived: dict[float, list] = {}  # minute → [lanes yet to take them, (times, ids) per lane]
        self._arrived_until = start
        self._size_before: dict[float, int] = {}  # minute → population size before its arrivals
        self._ticked_until = start
        self.stats = Stats(
            viewings_per_movie=np.zeros(len(slugs), np.int64),
            watch_lines_per_movie=np.zeros(len(slugs), np.int64),
            rating_hist=np.zeros(edition.rating_max + 1, np.int64),
        )
        # Movies each user has watched: a bitset per user over movie row % bits (`seen_movies`).
        self._seen_bits = seen_bits(len(slugs), self.params.seen_bits)
        # User rows whose per-user or population state changed since the last checkpoint (`dirty`, marked wherever
        # the world or a scenario writes one), and a count of the checkpoints that cleared it (`world.checkpoint`).
        self.dirty_epoch = 0
        self._grow_user_state()
        self.active = np.zeros(self.pop.capacity, np.bool_)
        self._rank_bonus = rec_rank_bonus(MAX_RECS, self.params.rec_bonus)
        self._examine = self.params.attention_decay ** np.arange(MAX_RECS)
        # Named components (e.g. a scenario runtime) whose `state()` -> dict / `restore(dict)` a checkpoint saves and
        # restores with the world (`world.checkpoint`); values may be JSON-able or numpy arrays.
        self.extra_state: dict[str, object] = {}
        if scenario is not None:
            self.extra_state["scenario"] = scenario
        if sessionlog is not None:
            self.extra_state["sessionlog"] = sessionlog

    @property
    def now(self) -> float:
        """The simulated time every lane has reached (the start of the slowest lane's next tick)."""
        return min(lane.now for lane in self.lanes)

    @property
    def rng(self) -> np.random.Generator:
        """Lane 0's random stream (the only one of a single-lane world)."""
        return self.lanes[0].rng

    @property
    def queue(self) -> SessionQueue:
        """Lane 0's session queue."""
        return self.lanes[0].queue

    @property
    def viewings(self) -> _Viewings:
        """Lane 0's viewings in progress."""
        return self.lanes[0].viewings

    # --- per-user dynamic state ---------------------------------------------------------
    def _grow_user_state(self) -> None:
        cap, old = self.pop.capacity, getattr(self, "busy_until", np.empty(0))
        if len(old) >= cap:
            return
        n = len(old)

        def grow(a: np.ndarray | None, fill: float, dt, shape=()) -> np.ndarray:
            out = np.full((cap, *shape), fill, dtype=dt)
            if a is not None and n:
                out[:n] = a[:n]
            return out

        self.busy_until = grow(getattr(self, "busy_until", None), -np.inf, np.float64)
        self.paused_movie = grow(getattr(self, "paused_movie", None), -1, np.int32)
        self.paused_minute = grow(getattr(self, "paused_minute", None), 0, np.int32)
        self.seen = grow(getattr(self, "seen", None), 0, np.uint64, (self._seen_bits // 64,))
        self.dirty = grow(getattr(self, "dirty", None), False, np.bool_)
        if hasattr(self, "active"):
            self.active = grow(self.active, False, np.bool_)

    def has_seen(self, rows: np.ndarray, movies: np.ndarray) -> np.ndarray:
        """Whether each user row has watched each movie row (bool, the broadcast shape of `rows` and `movies`).

        Exact while the catalog fits the memory (`BehaviorParams.seen_bits`); beyond it a movie shares its
        bit with the movies of the same row modulo the memory's size, so a watched movie always reads as
        seen and a few unwatched ones do too (never the reverse).
        """
        word, bit = self._seen_slot(movies)
        return ((self.seen[rows, word] >> bit) & np.uint64(1)).astype(np.bool_)

    def _mark_seen(self, rows: np.ndarray, movies: np.ndarray) -> None:
        word, bit = self._seen_slot(movies)
        np.bitwise_or.at(self.seen, (rows, word), np.left_shift(np.uint64(1), bit))

    def _seen_slot(self, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each movie row's place in a user's watched-movie memory: (word index, bit in the word as uint64)."""
        h = np.asarray(movies, np.int64) % self._seen_bits
        return h >> 6, (h & 63).astype(np.uint64)

    # --- the loop -------------------------------------------------------------------------
    def run(
        self,
        until: float | None = None,
        stop: threading.Event | None = None,
        on_tick: Callable[[World], None] | None = None,
        *,
        checkpoint_every: float | None = None,
        on_checkpoint: Callable[[World], None] | None = None,
        end_scenario: bool | None = True,
    ) -> Stats:
        """Simulate until the simulated time `until` (or forever) or until `stop` is set; flush the sink.

        `end_scenario`: the scenario's open injections end with this run (their manifest end records are written
        and held lines published); False when the run will be continued; None: only if the run reached `until`
        (a course stopped by a signal resumes its injections after the restart).

        `on_tick(world)` runs after every tick (the world waits for it: demos use it to pause and act);
        with several lanes running as fast as possible, after every tick of the slowest lane.
        `on_checkpoint(world)` runs whenever every lane has reached a multiple of `checkpoint_every` simulated
        seconds (a multiple of a minute) and no request is in flight: a consistent cut to save
        (`world.checkpoint.save`). Lanes ahead wait there for the slowest one.
        """
        if checkpoint_every is not None and (checkpoint_every <= 0 or checkpoint_every % TICK):
            raise ValueError(f"checkpoint_every must be a positive multiple of {TICK} s, got {checkpoint_every!r}")
        try:
            while True:
                end = until
                if checkpoint_every is not None:
                    due = (math.floor(self.now / checkpoint_every) + 1) * checkpoint_every
                    end = due if until is None else min(until, due)
                self._run_to(end, stop, on_tick)
                if (stop is not None and stop.is_set()) or (until is not None and self.now >= until):
                    break
                if checkpoint_every is None:
                    break
                if on_checkpoint is not None:
                    on_checkpoint(self)
        finally:
            reached = until is not None and self.now >= until
            if self.scenario is not None and (end_scenario or (end_scenario is None and reached)):
                keys, lines = self.scenario.close(self)
                if lines:
                    self.sink.write(keys, lines)
            self.sink.close()
        return self.stats

    def _run_to(
        self, until: float | None, stop: threading.Event | None, on_tick: Callable[[World], None] | None
    ) -> None:
        if len(self.lanes) > 1 and not self.clock.paced:
            self._run_lanes(until, stop, on_tick)
        else:
            while (until is None or self.now < until) and not (stop is not None and stop.is_set()):
                self.step()
                if on_tick is not None:
                    on_tick(self)

    def step(self) -> None:
        """Simulate one tick (one simulated minute) of every lane and emit its lines in time order.

        Every lane's requests are in flight at once; the tick ends when every team has answered.
        """
        t0 = self.now
        out = _TickLines()
        asked = [self._begin(lane, out) for lane in self.lanes]
        for lane, a in zip(self.lanes, asked, strict=True):
            self._finish(lane, a, out)
        times, keys, lines = out.sorted()
        if self.scenario is not None:
            times, keys, lines = self.scenario.filter_lines(-1, t0, times, keys, lines)
        self._emit(times, keys, lines, t0)
        self.stats.ticks += 1
        self._ticked_until = self.now

    def _run_lanes(
        self, until: float | None, stop: threading.Event | None, on_tick: Callable[[World], None] | None
    ) -> None:
        """Every lane at its own pace: a lane waiting for its team's answers holds back no other lane."""
        waiting: dict[Future, tuple[_Lane, _Asked, _TickLines]] = {}
        idle = list(self.lanes)
        while idle or waiting:
            stopping = stop is not None and stop.is_set()
            ready = []
            for lane in idle:  # one tick of every idle lane per round, so no lane starves another
                if stopping or (until is not None and lane.now >= until):
                    continue  # this lane is done
                out = _TickLines()
                asked = self._begin(lane, out)
                if asked is None or asked.answers.done():
                    self._complete(lane, asked, out)
                    ready.append(lane)
                else:
                    waiting[asked.answers] = (lane, asked, out)
            if waiting and not ready:
                wait(list(waiting), return_when=FIRST_COMPLETED)
            for future in [f for f in waiting if f.done()]:
                lane, asked, out = waiting.pop(future)
                self._complete(lane, asked, out)
                ready.append(lane)
            idle = ready
            self._count_ticks(on_tick)

    def _count_ticks(self, on_tick: Callable[[World], None] | None) -> None:
        now = self.now
        while self._ticked_until < now:
            self._ticked_until += TICK
            self.stats.ticks += 1
            if on_tick is not None:
                on_tick(self)

    def _begin(self, lane: _Lane, out: _TickLines) -> _Asked | None:
        """The first half of a lane's tick: plans, arrivals, due ratings; ask for its sessions' recommendations."""
        t0, t1 = lane.now, lane.now + TICK
        while lane.planned_until < t1:
            day = math.floor(lane.planned_until / DAY) * DAY
            rows = self._lane_rows(lane, self._size_at(lane.planned_until))
            times, sub = plan_day(
                day, self.pop.activity[rows], self.pop.utc_offset[rows], self.pop.created_at[rows], lane.rng
            )
            keep = times >= lane.planned_until
            lane.queue.add_plan(times[keep], rows[sub][keep])
            lane.planned_until = day + DAY
        self._arrivals(lane, t0, t1, out)
        if self.scenario is not None:
            injected = self.scenario.on_tick(self, lane.index, t0, t1)
            if injected:
                out.add(
                    np.array([x[0] for x in injected]), np.array([x[1] for x in injected]), [x[2] for x in injected]
                )
        self._due_ratings(lane, t1, out)
        return self._ask(lane, t1)

    def _finish(self, lane: _Lane, asked: _Asked | None, out: _TickLines) -> None:
        """The second half: the sessions choose (given the answers), viewings emit their minute."""
        t0 = lane.now
        if asked is not None:
            self._sessions(lane, asked, out)
        self._watch(lane, t0, t0 + TICK, out)
        lane.now = t0 + TICK

    def _complete(self, lane: _Lane, asked: _Asked | None, out: _TickLines) -> None:
        """Finish a lane's tick and hand its lines to the sink (unpaced)."""
        t0 = lane.now
        self._finish(lane, asked, out)
        times, keys, lines = out.sorted()
        if self.scenario is not None:
            _, keys, lines = self.scenario.filter_lines(lane.index, t0, times, keys, lines)
        if lines:
            self.sink.write(keys, lines)

    def _lane_rows(self, lane: _Lane, n: int) -> np.ndarray:
        if len(self.lanes) == 1:
            return np.arange(n, dtype=np.int32)
        return np.arange(lane.index, n, len(self.lanes), dtype=np.int32)

    def _size_at(self, t: float) -> int:
        """Population size before the arrivals of the minute starting at `t` (the same for every lane)."""
        if self._arrivals_rng is None or self.arrivals_per_day <= 0:
            return self.pop.size
        self._draw_arrivals_until(t + TICK)
        return self._size_before[t]

    def _emit(self, times: np.ndarray, keys: list[int], lines: list[str], t0: float) -> None:
        if not self.clock.paced:
            self.sink.write(keys, lines)
            return
        bounds = np.searchsorted(times, t0 + np.arange(1, TICK + 1), side="left")
        lo = 0
        for s, hi in enumerate(bounds.tolist()):
            if hi > lo:
                self.clock.wait_until(t0 + s)
                self.sink.write(keys[lo:hi], lines[lo:hi])
                lo = hi
        self.clock.wait_until(t0 + TICK)

    # --- new accounts ----------------------------------------------------------------------
    def _arrivals(self, lane: _Lane, t0: float, t1: float, out: _TickLines) -> None:
        if self.arrivals_per_day <= 0:
            return
        if self._arrivals_rng is None:
            n = int(lane.rng.poisson(self.arrivals_per_day * TICK / DAY))
            if n == 0:
                return
            times = np.sort(t0 + lane.rng.integers(0, TICK, n)).astype(np.float64)
            batch = draw_population(n, self.demographics, self.taste, self.activity, times, lane.rng)
            ids = self.pop.add(batch)
            self._grow_user_state()
        else:
            self._draw_arrivals_until(t1)
            entry = self._arrived[t0]
            times, ids = entry[1 + lane.index]
            entry[0] -= 1
            if entry[0] == 0:  # every lane has begun this minute, so every lane has planned past it
                del self._arrived[t0]
                self._size_before.pop(t0, None)
            n = len(ids)
            if n == 0:
                return
        stamps = second_stamps(int(t0), TICK)
        secs = (times - t0).astype(np.int64).tolist()
        out.add(times, ids, [account_line(stamps[s], u) for s, u in zip(secs, ids.tolist(), strict=True)])
        self.active[ids - 1] = True
        self.dirty[ids - 1] = True
        self.stats.accounts += n
        self.stats.lines["account"] += n
        # A new account starts watching within the next half hour.
        lane.queue.push(times + 60 + lane.rng.random(n) * 1800, (ids - 1).astype(np.int32))

    def _draw_arrivals_until(self, t_end: float) -> None:
        """Draw new accounts minute by minute up to `t_end` from their own stream; keep each lane's share."""
        rng, k = self._arrivals_rng, len(self.lanes)
        while self._arrived_until < t_end:
            t0 = self._arrived_until
            self._size_before[t0] = self.pop.size
            n = int(rng.poisson(self.arrivals_per_day * TICK / DAY))
            parts = [(np.empty(0), np.empty(0, np.int64))] * k
            if n:
                times = np.sort(t0 + rng.integers(0, TICK, n)).astype(np.float64)
                ids = self.pop.add(draw_population(n, self.demographics, self.taste, self.activity, times, rng))
                self._grow_user_state()
                lane_of = (ids - 1) % k
                parts = [(times[lane_of == i], ids[lane_of == i]) for i in range(k)]
            self._arrived[t0] = [k, *parts]
            self._arrived_until = t0 + TICK

    # --- ratings (always after the viewing's last minute, so usually in a later tick) ------------
    def _due_ratings(self, lane: _Lane, t1: float, out: _TickLines) -> None:
        if not lane.pending_rates:
            return
        due = [r for r in lane.pending_rates if r[0] < t1]
        if not due:
            return
        lane.pending_rates = [r for r in lane.pending_rates if r[0] >= t1]
        t0 = t1 - TICK
        stamps = second_stamps(int(t0), TICK)
        lines = [rate_line(stamps[int(t - t0)], row + 1, self.slugs[m], v) for t, row, m, v in due]
        out.add(np.array([d[0] for d in due]), np.array([d[1] + 1 for d in due]), lines)
        self.stats.lines["rate"] += len(lines)

    # --- sessions: ask, choose, start watching --------------------------------------------------
    def _ask(self, lane: _Lane, t1: float) -> _Asked | None:
        """Pop the lane's due sessions (one per free user) and ask for their recommendations."""
        times, rows = lane.queue.pop_until(t1)
        if len(rows) == 0:
            return None
        free = self.busy_until[rows] <= times
        self.stats.skipped_busy += int((~free).sum())
        times, rows = times[free], rows[free]
        _, first = np.unique(rows, return_index=True)  # one session per user per tick
        if len(first) < len(rows):
            first = np.sort(first)
            self.stats.skipped_busy += len(rows) - len(first)
            times, rows = times[first], rows[first]
        if len(rows) == 0:
            return None
        ids = rows.astype(np.int64) + 1
        submit = getattr(self.service, "submit", None)
        if submit is not None:
            return _Asked(times, rows, submit(ids, times))
        answered: Future = Future()
        answered.set_result(self.service.recommend(ids, times))
        return _Asked(times, rows, answered)

    def _sessions(self, lane: _Lane, asked: _Asked, out: _TickLines) -> None:
        times, rows = asked.times, asked.rows
        answers: RecAnswers = asked.answers.result()
        n = len(rows)
        p = self.params
        rng = lane.rng
        ids = rows.astype(np.int64) + 1
        digits = self.edition.rec_fraction_digits
        out.add(
            times,
            ids,
            [
                recommendation_line(fraction_stamp(t, digits), u, srv, s, r, ms)
                for t, u, srv, s, r, ms in zip(
                    times.tolist(),
                    ids.tolist(),
                    answers.servers,
                    answers.status.tolist(),
                    answers.result,
                    answers.ms.tolist(),
                    strict=False,
                )
            ],
        )
        self.stats.sessions += n
        self.stats.lines["recommendation"] += n
        self.stats.requests_ok += int((answers.status == 200).sum())
        self.active[rows] = True
        self.dirty[rows] = True  # active, paused, busy, seen: every write of this session is to these rows
        if self.journal is not None:
            self.journal.extend(
                ("session", t, u, None, None) for t, u in zip(times.tolist(), ids.tolist(), strict=False)
            )
        # Candidates: recommended rows (padded with -1) then a popularity-weighted browse sample.
        recs = np.full((n, MAX_RECS), -1, np.int32)
        for i, m in enumerate(answers.movies):
            if len(m):
                recs[i, : min(len(m), MAX_RECS)] = m[:MAX_RECS]
        if self.sessionlog is not None:
            self.sessionlog.requests(times, rows, answers.status, answers.ms, recs)
        if self.discovery is not None:
            browse = self.discovery.sample(self.pop.taste[rows], p.browse_sample, rng)
        else:
            browse = np.searchsorted(self.browse_cdf, rng.random((n, p.browse_sample))).astype(np.int32)
        cand = np.hstack([recs, browse])
        valid = cand >= 0
        # Attention falls with rank: a user looks at the k-th recommendation with probability decay**k.
        valid[:, :MAX_RECS] &= rng.random((n, MAX_RECS)) < self._examine[None, :]
        safe = np.where(valid, cand, 0)
        valid &= ~self.has_seen(rows[:, None], safe)  # users rarely watch a movie again: never, here
        vec = self.pop.taste[rows]
        score = (
            self.taste.mu
            + self.pop.bias[rows][:, None]
            + self.taste.item_bias[safe]
            + p.taste_weight * np.einsum("sk,sck->sc", vec, self.taste.item_factors[safe])
        )
        bonus = self.familiarity[safe]  # a title one has heard of appeals more than an unknown one
        bonus[:, :MAX_RECS] += np.where(recs >= 0, self._rank_bonus[None, :], 0)
        pick = choose(score, bonus, valid, p, rng)
        # Users with a paused movie may resume it instead.
        resume = (self.paused_movie[rows] >= 0) & (rng.random(n) < p.resume_p)
        go = (pick >= 0) | resume
        self.stats.left += int((~go).sum())
        movie = np.where(resume, self.paused_movie[rows], safe[np.arange(n), np.maximum(pick, 0)])
        # A resumed movie restarts where it stopped or a minute or two before.
        start_minute = np.where(resume, np.maximum(1, self.paused_minute[rows] - rng.integers(0, 3, n)), 1)
        self.paused_movie[rows] = -1
        rows_go, movie, start_minute = rows[go], movie[go], start_minute[go]
        resume = resume[go]
        if len(rows_go) == 0:
            return
        is_rec = (recs[go] == movie[:, None]).any(axis=1)
        true = (
            self.taste.mu
            + self.pop.bias[rows_go]
            + self.taste.item_bias[movie]
            + np.einsum("sk,sk->s", self.pop.taste[rows_go], self.taste.item_factors[movie])
        )
        if self.sessionlog is not None:
            self.sessionlog.picks(go, movie, resume, true)
        start_minute = np.minimum(start_minute, self.runtime[movie])
        stop = plan_stop(true, start_minute, self.runtime[movie], p, rng)
        delay = answers.ms[go] / 1000.0 + 2.0 + rng.exponential(p.browse_seconds, len(rows_go))
        start = np.ceil(times[go] + delay)
        self.busy_until[rows_go] = np.inf
        lane.viewings.append(
            user=rows_go,
            movie=movie,
            minute=start_minute,
            stop=stop,
            runtime=self.runtime[movie],
            next=start,
            watched=np.zeros(len(rows_go)),
            score=true,
            rec=is_rec,
            last=np.zeros(len(rows_go)),
        )
        self._mark_seen(rows_go, movie)
        self.stats.viewings += len(rows_go)
        self.stats.resumed += int(resume.sum())
        self.stats.picked_recommended += int(is_rec.sum())
        self.stats.true_score_of_recommended_picks += float(true[is_rec].sum())
        np.add.at(self.stats.viewings_per_movie, movie, 1)
        if self.journal is not None:
            kinds = np.where(resume, "resume", "start").tolist()
            self.journal.extend(
                (kind, t, int(r) + 1, self.slugs[m], int(mn))
                for kind, t, r, m, mn in zip(
                    kinds, start.tolist(), rows_go.tolist(), movie.tolist(), start_minute.tolist(), strict=False
                )
            )

    # --- watching -------------------------------------------------------------------------------
    def _watch(self, lane: _Lane, t0: float, t1: float, out: _TickLines) -> None:
        v = lane.viewings
        if len(v) == 0:
            return
        due = v.next < t1
        idx = np.flatnonzero(due)
        if len(idx) == 0:
            return
        user, movie, minute, when = v.user[idx], v.movie[idx], v.minute[idx], v.next[idx]
        stamps = second_stamps(int(t0), TICK)
        slugs = self.slugs
        lines = [
            f"{stamps[s]},{u},GET /data/m/{slugs[m]}/{mn}.mpg"
            for s, u, m, mn in zip(
                (when - t0).astype(np.int64).tolist(),
                (user + 1).tolist(),
                movie.tolist(),
                minute.tolist(),
                strict=False,
            )
        ]
        out.add(when, user.astype(np.int64) + 1, lines)
        self.stats.lines["watch"] += len(lines)
        np.add.at(self.stats.watch_lines_per_movie, movie, 1)
        nxt, sought = seek(minute, self.params, lane.rng)
        ended = (nxt > v.stop[idx]) | (nxt > v.runtime[idx])
        if self.journal is not None and (sought & ~ended).any():
            for j in np.flatnonzero(sought & ~ended).tolist():
                self.journal.append(("seek", float(when[j]) + TICK, int(user[j]) + 1, slugs[movie[j]], int(nxt[j])))
        v.last[idx] = minute
        v.minute[idx] = nxt
        v.next[idx] = when + TICK
        v.watched[idx] += 1
        ended_idx = idx[ended]
        if len(ended_idx):
            self._end(lane, ended_idx)
            keep = np.ones(len(v), np.bool_)
            keep[ended_idx] = False
            v.keep(keep)

    def _end(self, lane: _Lane, idx: np.ndarray) -> None:
        v, p, rng = lane.viewings, self.params, lane.rng
        rows, movie = v.user[idx], v.movie[idx]
        end_t = v.next[idx]  # the end of the last minute watched
        completed = v.last[idx] >= v.runtime[idx]
        watched = v.watched[idx]
        if self.sessionlog is not None:
            self.sessionlog.ended(rows, watched, completed, end_t)
        user_mean = self.taste.mu + self.pop.bias[rows]
        rating = rate(
            v.score[idx],
            user_mean,
            watched,
            completed,
            v.rec[idx],
            self.taste.noise_std,
            p,
            rng,
            scale=self.edition.rating_max,
        )
        rate_t = end_t + rng.integers(3, 45, len(idx))
        # Early stops may be paused, to resume at the next session. A paused viewing is not rated: a user
        # rates a movie once, when done with it (the end that is not a pause), so at most once per
        # (user, movie) pair: a movie watched is never picked again (`has_seen`), only resumed while paused.
        pause = ~completed & (rng.random(len(idx)) < p.pause_p)
        rating[pause] = 0
        rated = rating > 0
        for t, r, m, val in zip(
            rate_t[rated].tolist(), rows[rated].tolist(), movie[rated].tolist(), rating[rated].tolist(), strict=False
        ):
            lane.pending_rates.append((t, r, m, val))
        np.add.at(self.stats.rating_hist, rating[rated], 1)
        self.stats.ratings += int(rated.sum())
        done_t = np.where(rated, rate_t, end_t)
        self.dirty[rows] = True  # paused, taste, busy
        self.paused_movie[rows[pause]] = movie[pause]
        self.paused_minute[rows[pause]] = v.last[idx][pause] + 1
        # The feedback loop: taste moves towards what was watched, in proportion to how much.
        frac = np.minimum(watched / np.maximum(v.runtime[idx], 1), 1.0).astype(np.float32)
        q = self.taste.item_factors[movie]
        self.pop.taste[rows] += (p.taste_step * frac)[:, None] * (q - self.pop.taste[rows])
        # Binge: pick another movie right away (a new session, so a new recommendation request).
        binge = (completed | (watched >= 30)) & (rng.random(len(idx)) < self.pop.binge[rows])
        lane.queue.push(done_t[binge] + 30 + rng.exponential(120, int(binge.sum())), rows[binge])
        self.busy_until[rows] = done_t + 1
