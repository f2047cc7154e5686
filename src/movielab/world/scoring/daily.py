"""One day's scores of every team, from the hidden session log and the hidden truth.

Inputs: a day's `DayLog` (`world.sessionlog`), the users' pick history before the day (`History`),
and `Truth`: the item factors and biases, the users' taste vectors at the day's start and end, their
biases and demographics, the catalog's license costs and popularity. Every figure is computed for all
teams at once with array operations (bincount over team × item keys); only the oracle regret and the
feedback loop work on a seeded sample of sessions/users per team (`sample`, default 2,000 each), since
they need a user × catalog score matrix. The figures (per team, `TeamDay`):

- requests, availability: share of requests answered 200 with a valid list within the time-out;
  latency_p50/p95/p99: response time (ms) of every request, failed ones included (a time-out counts 600+).
- conversion: share of requests whose session picked a movie from the served list (a resumed movie does not count).
- completion, watch_minutes: of recommended picks whose viewing ended by scoring time, the share watched to
  the last minute and the mean minutes watched; true_rating: mean true score (stars, μ + b_u + b_i + p·q at
  the pick) of recommended picks.
- regret: oracle regret@20 (`metrics.list_regret`) of answered sessions, in stars: the mean true score of the
  user's true top-20 among movies not yet started (taste at the day's start; seen = picks before the
  session) minus that of the served list. Failed requests count in availability, not here.
- coverage: share of the catalog served at least once that day; popularity_bias: mean popularity percentile
  (by the catalog's rating count, 1 = most popular) of served movies; exposure_gini: Gini of how often each
  catalog movie was served (zeros included).
- homogenization: mean Jaccard similarity of the consumption sets (every movie started, all days so far)
  of random pairs of the team's users who started at least one, the "interaction similarity" of T-RECS
  (Lucherini, Sun, Winecoff, Narayanan 2021, "T-RECS: A Simulation Tool to Study the Societal Impact of
  Recommender Systems", arXiv:2107.08959) after Chaney, Stewart, Engelhardt 2018. Its change over days is the
  homogenization trend (the scoreboard keeps each day's value).
- answered, personalized_share, takedown_violations: the course's checks from the hidden log (the same from
  the stream: `coursechecks`): OK answers that day; the share of them whose list (ids in order) no other user
  of the team got that day; OK answers listing a taken-down movie at or after its takedown.
- fairness: conversion and regret per age bucket (ML-1M buckets), gender and occupation; the gap is the largest
  minus the smallest group value over groups with at least `min_group` requests (regret: samples).
- profit (USD): Σ over recommended picks of revenue_per_minute × minutes watched (ended viewings) − the
  movie's license cost per play; profit_per_1k: per 1,000 requests.
- feedback_pull: how far the team's served lists pulled its users' hidden taste during the day. For a sample of
  users with answered requests, c_u = the mean item factor vector of everything served to u that day; shift_u =
  cos(p_u,end, c_u) − cos(p_u,start, c_u). The no-rec baseline is the same shift toward the centroid of 20 movies
  drawn uniformly from the catalog per user (generic drift: taste also moves toward whatever users find alone).
  feedback_pull = mean shift − mean baseline shift (> 0: users moved toward what the team served);
  taste_drift = mean ‖p_end − p_start‖.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movielab.world.data.types import GENDERS, OCCUPATIONS
from movielab.world.scoring.errors import ScoringError
from movielab.world.scoring.metrics import (
    cosine,
    csr_sets,
    gini,
    group_gap,
    jaccard_pairs,
    list_regret,
    sorted_unique,
)
from movielab.world.sessionlog import MAX_RECS, DayLog
from movielab.world.truth import AGE_BUCKETS, age_bucket

AGE_GROUPS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
assert len(AGE_GROUPS) == len(AGE_BUCKETS) + 1


@dataclass(frozen=True)
class Truth:
    """The hidden state scoring reads: item side (m movies) and user side (n user rows)."""

    mu: float
    item_factors: np.ndarray  # float32 (m, k)
    item_bias: np.ndarray  # float32 (m,)
    license_cost: np.ndarray  # float32 (m,) USD per play
    popularity: np.ndarray  # (m,) the catalog's rating count (public prior popularity)
    taste_start: np.ndarray  # float32 (n, k) users' taste vectors at the day's start
    taste_end: np.ndarray  # float32 (n, k) ... at scoring time (the day's end)
    user_bias: np.ndarray  # float32 (n,)
    age: np.ndarray  # (n,) years
    gender: np.ndarray  # (n,) index into GENDERS
    occupation: np.ndarray  # (n,) index into OCCUPATIONS

    @classmethod
    def from_world(cls, world, catalog, taste_start: np.ndarray | None = None) -> Truth:
        """Copies of a running world's hidden state (`taste_start` defaults to the current taste)."""
        pop, n = world.pop, world.pop.size
        end = pop.taste[:n].copy()
        start = end if taste_start is None else taste_start
        if len(start) < n:  # users who arrived during the day start from their drawn taste
            start = np.vstack([start, end[len(start) :]])
        return cls(
            world.taste.mu,
            world.taste.item_factors,
            world.taste.item_bias,
            catalog.license_cost,
            catalog.vote_count,
            start[:n],
            end,
            pop.bias[:n].copy(),
            pop.age[:n].copy(),
            pop.gender[:n].copy(),
            pop.occupation[:n].copy(),
        )


@dataclass
class History:
    """Every movie each user started before the day being scored: parallel arrays (row, movie, time)."""

    row: np.ndarray
    movie: np.ndarray
    time: np.ndarray

    @classmethod
    def empty(cls) -> History:
        """No picks yet."""
        return cls(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float64))

    def extended(self, day: DayLog) -> History:
        """This history plus the day's picks."""
        s = day.sessions
        p = s["picked"]
        return History(
            np.concatenate([self.row, s["row"][p]]),
            np.concatenate([self.movie, s["movie"][p]]),
            np.concatenate([self.time, s["time"][p]]),
        )


@dataclass(frozen=True)
class ScoreParams:
    """Knobs of the scoring; defaults are what the scoreboard uses."""

    sample: int = 2000  # sessions per team for regret, users per team for the feedback loop
    pairs: int = 5000  # user pairs per team for homogenization
    min_group: int = 30  # requests (regret: sampled sessions: a third of it) for a group to enter a fairness gap
    revenue_per_minute: float = 0.005  # USD per minute watched of a recommended pick ($0.30 an hour)
    seed: int = 0


def score_day(
    day: DayLog,
    truth: Truth,
    history: History,
    n_teams: int,
    params: ScoreParams | None = None,
    later_ends: DayLog | None = None,
    takedowns: list[tuple[int, float]] = (),
) -> list[dict]:
    """Every team's figures for one day (one dict per team, team numbers 1..n_teams; see the module).

    `later_ends` (the next day's log) supplies viewings that ended after midnight; `takedowns` lists
    (movie row, unix time of its takedown). ScoringError if the log names rows or movies the truth does not have.
    """
    p = params or ScoreParams()
    s = day.sessions
    m = len(truth.item_bias)
    n_users = len(truth.taste_end)
    if len(s["row"]) and (s["row"].max() >= n_users or s["served"].max() >= m or s["movie"].max() >= m):
        raise ScoringError(
            f"session log of {day.day} names user rows or movies beyond the truth ({n_users} users, {m} movies)"
        )
    team = s["team"].astype(np.int64)
    if len(team) and team.max() >= n_teams:
        raise ScoringError(f"session log of {day.day} has team index {int(team.max())} for {n_teams} teams")
    T = n_teams
    req = np.bincount(team, minlength=T).astype(np.float64)
    ok = s["ok"]
    conv = s["from_list"]

    def per_team(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        sel = np.ones(len(team), np.bool_) if mask is None else mask
        num = np.bincount(team[sel], weights=np.asarray(values, np.float64)[sel], minlength=T)
        den = np.bincount(team[sel], minlength=T)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    out = [{"team": t + 1, "day": day.day, "requests": int(req[t])} for t in range(T)]
    avail, conversion = per_team(ok), per_team(conv)
    true_rating = per_team(s["true_score"], conv)
    # Latency percentiles per team (sorted once by team then ms).
    order = np.lexsort((s["ms"], team))
    ms_sorted, bounds = s["ms"][order], np.searchsorted(team[order], np.arange(T + 1))
    # Viewing outcomes of recommended picks.
    ends = [day.ends] + ([later_ends.ends] if later_ends is not None else [])
    end_sid = np.concatenate([e["end_sid"] for e in ends])
    minutes = np.concatenate([e["minutes"] for e in ends])
    completed = np.concatenate([e["completed"] for e in ends])
    by_sid = np.argsort(s["sid"], kind="stable")
    sids = s["sid"][by_sid]
    at = np.minimum(np.searchsorted(sids, end_sid), max(len(sids) - 1, 0))
    found = (sids[at] == end_sid) if len(sids) else np.zeros(len(end_sid), np.bool_)
    pos = by_sid[at] if len(sids) else at
    view_min = np.full(len(team), -1, np.int64)
    view_done = np.zeros(len(team), np.bool_)
    view_min[pos[found]] = minutes[found]
    view_done[pos[found]] = completed[found]
    ended = conv & (view_min >= 0)
    completion, watch = per_team(view_done, ended), per_team(view_min, ended)
    revenue = np.bincount(team[ended], weights=p.revenue_per_minute * view_min[ended], minlength=T)
    cost = np.bincount(team[conv], weights=truth.license_cost[s["movie"][conv]].astype(np.float64), minlength=T)
    # Exposure: how often each movie was served, per team.
    served = s["served"]
    valid = served >= 0
    key = np.repeat(team, MAX_RECS).reshape(-1, MAX_RECS)[valid] * m + served[valid]
    exposure = np.bincount(key, minlength=T * m).reshape(T, m)
    pct = np.empty(m)
    pct[np.argsort(truth.popularity, kind="stable")] = (np.arange(m) + 1) / m
    pop_bias = np.where(exposure.sum(1) > 0, (exposure * pct[None, :]).sum(1) / np.maximum(exposure.sum(1), 1), np.nan)
    rng = np.random.default_rng([p.seed, int(day.day.replace("-", ""))])
    picks = history.extended(day)
    order = np.argsort(picks.row, kind="stable")
    picks = History(picks.row[order], picks.movie[order], picks.time[order])
    regret, regret_rows = _regret(day, truth, picks, T, p, rng)
    pull, drift = _feedback(day, truth, T, p, rng)
    personal = _personalized(s, T)
    down = np.zeros(T, np.int64)
    for movie, since in takedowns:
        hit = ok & (s["time"] >= since) & (served == movie).any(axis=1)
        down += np.bincount(team[hit], minlength=T)
    homog = _homogenization(picks, n_users, T, p, rng)
    groups = {
        "age": age_bucket(truth.age),
        "gender": np.asarray(truth.gender, np.int64),
        "occupation": np.asarray(truth.occupation, np.int64),
    }
    names = {"age": AGE_GROUPS, "gender": GENDERS, "occupation": OCCUPATIONS}
    for t in range(T):
        o = out[t]
        lat = ms_sorted[bounds[t] : bounds[t + 1]]
        q = np.percentile(lat, [50, 95, 99]) if len(lat) else [np.nan] * 3
        o.update(
            answered=int(np.count_nonzero(ok & (team == t))),
            personalized_share=personal[t],
            takedown_violations=int(down[t]),
            availability=avail[t],
            latency_p50=q[0],
            latency_p95=q[1],
            latency_p99=q[2],
            conversion=conversion[t],
            completion=completion[t],
            watch_minutes=watch[t],
            true_rating=true_rating[t],
            regret=regret[t],
            coverage=float((exposure[t] > 0).mean()),
            popularity_bias=pop_bias[t],
            exposure_gini=gini(exposure[t]),
            homogenization=homog[t],
            profit=float(revenue[t] - cost[t]),
            profit_per_1k=float((revenue[t] - cost[t]) / req[t] * 1000) if req[t] else float("nan"),
            feedback_pull=pull[t],
            taste_drift=drift[t],
        )
        fair = {}
        mine = team == t
        for attr, g in groups.items():
            ug = g[s["row"][mine]]
            k = len(names[attr])
            n_req = np.bincount(ug, minlength=k)
            conv_g = np.bincount(ug, weights=conv[mine], minlength=k) / np.maximum(n_req, 1)
            gap, by = group_gap(conv_g, n_req, p.min_group)
            o[f"conversion_gap_{attr}"] = gap
            fair[f"conversion_{attr}"] = {names[attr][i]: v for i, v in by.items()}
            rr, rg = regret_rows[t]
            gg = g[rg]
            n_s = np.bincount(gg, minlength=k)
            reg_g = np.bincount(gg, weights=rr, minlength=k) / np.maximum(n_s, 1)
            gap, by = group_gap(reg_g, n_s, max(1, p.min_group // 3))
            o[f"regret_gap_{attr}"] = gap
            fair[f"regret_{attr}"] = {names[attr][i]: v for i, v in by.items()}
        o["fairness"] = fair
        for k_, v in list(o.items()):
            if isinstance(v, np.floating | np.integer):
                o[k_] = v.item()
    return out


def _personalized(s: dict[str, np.ndarray], T: int) -> np.ndarray:
    """Per team, the share of OK answers whose list (ids in order) no other user got that day (the course check)."""
    out = np.full(T, np.nan)
    ok = np.flatnonzero(s["ok"])
    if len(ok) == 0:
        return out
    weights = np.random.default_rng(12345).integers(1, 2**62, 20, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):  # a 64-bit hash of each list: wrapping multiply-add
        key = (s["served"][ok].astype(np.int64).astype(np.uint64) + np.uint64(1)) @ weights
    team = s["team"][ok].astype(np.int64)
    with np.errstate(over="ignore"):
        key = key * np.uint64(1_000_003) + team.astype(np.uint64)  # lists of different teams differ
    order = np.argsort(key, kind="stable")
    ks = key[order]
    which = np.empty(len(key), np.int64)
    which[order] = np.cumsum(np.concatenate([[True], ks[1:] != ks[:-1]])) - 1  # list index of each answer
    width = int(s["row"].max()) + 1
    users = sorted_unique(which * width + s["row"][ok])  # distinct (list, user) pairs
    n_users = np.bincount(users // width, minlength=int(which.max()) + 1)
    personal = n_users[which] == 1
    num = np.bincount(team, weights=personal, minlength=T)
    den = np.bincount(team, minlength=T)
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _regret(day: DayLog, truth: Truth, picks: History, T: int, p: ScoreParams, rng: np.random.Generator):
    """Mean oracle regret per team over a sample of answered sessions, and (regrets, user rows) per team.

    `picks` (the history and the day's picks) is sorted by user row.
    """
    s = day.sessions
    team = s["team"].astype(np.int64)
    h_row, h_movie, h_time = picks.row, picks.movie, picks.time
    means, by_team = np.full(T, np.nan), []
    q, b = np.asarray(truth.item_factors, np.float32), np.asarray(truth.item_bias, np.float32)
    for t in range(T):
        cand = np.flatnonzero((team == t) & s["ok"])
        if len(cand) > p.sample:
            cand = np.sort(rng.choice(cand, p.sample, replace=False))
        regrets = np.empty(len(cand))
        for lo in range(0, len(cand), 1024):
            idx = cand[lo : lo + 1024]
            rows = s["row"][idx]
            scores = np.asarray(truth.taste_start[rows], np.float32) @ q.T  # μ + b_u cancel in a regret
            scores += b[None, :]
            start, stop = np.searchsorted(h_row, rows, "left"), np.searchsorted(h_row, rows, "right")
            lens = stop - start
            which = np.repeat(np.arange(len(idx)), lens)
            at = np.repeat(start, lens) + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
            before = h_time[at] < s["time"][idx][which]
            seen = (which[before], h_movie[at][before])
            regrets[lo : lo + len(idx)] = list_regret(scores, seen, s["served"][idx])
        if len(cand):
            means[t] = regrets.mean()
        by_team.append((regrets, s["row"][cand]))
    return means, by_team


def _feedback(day: DayLog, truth: Truth, T: int, p: ScoreParams, rng: np.random.Generator):
    """(feedback_pull, taste_drift) per team from a sample of users with answered requests (see the module)."""
    s = day.sessions
    q = truth.item_factors.astype(np.float64)
    pull, drift = np.full(T, np.nan), np.full(T, np.nan)
    ok = s["ok"]
    for t in range(T):
        sel = np.flatnonzero((s["team"] == t) & ok)
        users = np.unique(s["row"][sel])
        if len(users) == 0:
            continue
        if len(users) > p.sample:
            users = np.sort(rng.choice(users, p.sample, replace=False))
        sel = sel[np.isin(s["row"][sel], users)]
        served = s["served"][sel]
        valid = served >= 0
        u_idx = np.searchsorted(users, s["row"][sel])
        sums = np.zeros((len(users), q.shape[1]))
        np.add.at(sums, np.repeat(u_idx, MAX_RECS).reshape(-1, MAX_RECS)[valid], q[served[valid]])
        counts = np.bincount(np.repeat(u_idx, MAX_RECS).reshape(-1, MAX_RECS)[valid], minlength=len(users))
        centroid = sums / np.maximum(counts, 1)[:, None]
        placebo = q[rng.integers(0, len(q), (len(users), MAX_RECS))].mean(axis=1)
        p0, p1 = truth.taste_start[users].astype(np.float64), truth.taste_end[users].astype(np.float64)
        shift = cosine(p1, centroid) - cosine(p0, centroid)
        base = cosine(p1, placebo) - cosine(p0, placebo)
        pull[t] = float(shift.mean() - base.mean())
        drift[t] = float(np.linalg.norm(p1 - p0, axis=1).mean())
    return pull, drift


def _homogenization(picks: History, n_users: int, T: int, p: ScoreParams, rng: np.random.Generator) -> np.ndarray:
    """Mean Jaccard similarity of consumption sets over random pairs of each team's users with a pick.

    `picks` is sorted by user row. Only the sampled users' sets are built.
    """
    out = np.full(T, np.nan)
    if len(picks.row) == 0:
        return out
    counts = np.bincount(picks.row, minlength=n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    has = np.flatnonzero(counts)
    pairs = []
    for t in range(T):
        users = has[has % T == t]
        if len(users) >= 2:
            a, b = rng.choice(users, p.pairs), rng.choice(users, p.pairs)
            pairs.append((t, a[a != b], b[a != b]))
    if not pairs:
        return out
    sampled = sorted_unique(np.concatenate([np.concatenate([a, b]) for _, a, b in pairs]))
    lens = counts[sampled]
    local = np.repeat(np.arange(len(sampled)), lens)
    at = np.repeat(indptr[sampled], lens) + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    s_indptr, s_items = csr_sets(local, picks.movie[at], len(sampled))
    for t, a, b in pairs:
        if len(a):
            sim = jaccard_pairs(s_indptr, s_items, np.searchsorted(sampled, a), np.searchsorted(sampled, b))
            out[t] = float(np.nanmean(sim))
    return out
