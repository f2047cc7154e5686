"""The course's two experiments (issue 16): served by arm, analysed from the stream, written up as a report.

- Experiment A, `coldstart`: new users (accounts created during the experiment) get, by arm, their cold-start
  list from the self-description (lexical matcher blended with the segment's popularity: `coldstart.py`) or the
  demographic fallback alone (the segment's popularity list). Old users are served identically in both arms.
  Outcome: each new user's conversion over their first `first_sessions` sessions (requests).
- Experiment B, `costaware`: users the models know get the cost-aware re-ranker (`models/costaware.py`, one
  trade-off) or the plain base model. Outcomes: license cost per play (primary, lower is better), conversion
  and mean rating given (guards). New users are left out of B: neither arm's model knows them, they get
  cold-start lists (A's), so B's treatment never reaches them.

Arms are the sticky split of `serving/traffic.py` (a stable hash of the user id salted by the experiment's name, the
arithmetic the serving replicas use): B is the serving app's challenger at share 0.5 with B's salt; A decides
which list a new user's overlay holds with A's salt. The salts differ, so the two experiments run at once in
one population without confounding each other (overlapping experiments, Tang et al., KDD 2010).

The analysis reads only the recommender's store: recommendation lines (which list, in which arm by the hash),
watch lines (what was played), rate lines (ratings) and the movie records as stored (license cost per play).
Users are the unit of randomization; every metric is a per-user ratio (`experiments.UserRatio`) tested with
the delta method (`experiments.delta_ztest`), CUPED where the design has a pre-period (B: the day before the
start, when everyone got the base model), after a sample-ratio-mismatch check of the arm sizes (`srm_check`).
The decision rule is part of the design, fixed before the data (`StudyDesign.rule`), and stated in the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from starlette.applications import Starlette

from movielab.recommender.errors import StudyError
from movielab.recommender.monitoring.online import arm_metrics
from movielab.recommender.release.canary import salt_of
from movielab.recommender.release.statistics import RatioTestResult, SRMResult, UserRatio, delta_ztest, srm_check
from movielab.recommender.serving import app as serve_app
from movielab.recommender.serving import state as serve_state
from movielab.recommender.serving import traffic as split
from movielab.recommender.serving.answers import AnswerTable

if TYPE_CHECKING:
    from movielab.recommender.ingest.coldstart import ColdStart, ColdStartList
    from movielab.recommender.store.events import EventStore

KINDS = ("coldstart", "costaware")
ARM_NAMES = {"coldstart": ("demographic", "selfdesc"), "costaware": ("plain", "costaware")}  # (control, treatment)


@dataclass(frozen=True)
class Guard:
    """A guard metric: it must not fall by more than `max_drop` (absolute, the metric's units), i.e. the lower
    end of the 95% interval of treatment − control must lie above −max_drop."""

    metric: str
    max_drop: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise StudyError(f"guard on {self.metric!r}: max_drop {self.max_drop!r} must be a finite number ≥ 0")


@dataclass(frozen=True)
class StudyDesign:
    """One experiment: kind, name (its salt), window [start, end) in stream time, share, and its decision rule.

    - `primary`: the metric that decides, with the good direction (`lower_is_better`): ship when its
      (1 − alpha) interval excludes 0 on the good side and every guard holds, with no sample-ratio mismatch.
    - `pre_period`: length of the CUPED pre-period before `start` (timedelta(0): none).
    - `first_sessions` (A): sessions per new user that count; `conversion_window`: a session converts when
      the user's next watch line, within this time and before their next request, is of a recommended movie.
    - `trade_off`, `base` (B): what the treatment serves (documentation of the design; the analysis does not
      need them).
    Raises StudyError on an unknown kind, an empty window or a share outside (0, 1).
    """

    kind: str
    name: str
    start: datetime
    end: datetime
    share: float = 0.5
    alpha: float = 0.05
    primary: str = "conversion"
    lower_is_better: bool = False
    guards: tuple[Guard, ...] = ()
    pre_period: timedelta = timedelta(0)
    first_sessions: int = 3
    conversion_window: timedelta = timedelta(minutes=60)
    base: str = "ease"
    trade_off: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StudyError(f"experiment kind {self.kind!r} is unknown: choose one of {', '.join(KINDS)}")
        if not self.end > self.start:
            raise StudyError(
                f"experiment {self.name!r}: end {self.end.isoformat()} is not after its start {self.start.isoformat()}"
            )
        if not 0.0 < self.share < 1.0:
            raise StudyError(f"experiment {self.name!r}: share {self.share!r} must be strictly between 0 and 1")
        if not 0.0 < self.alpha < 1.0:
            raise StudyError(f"experiment {self.name!r}: alpha {self.alpha!r} must be strictly between 0 and 1")
        if self.first_sessions < 1 or self.conversion_window <= timedelta(0) or self.pre_period < timedelta(0):
            raise StudyError(
                f"experiment {self.name!r}: first_sessions ≥ 1, a positive conversion window and a "
                "pre-period ≥ 0 are needed"
            )
        known = METRICS[self.kind]
        for metric in (self.primary, *(g.metric for g in self.guards)):
            if metric not in known:
                raise StudyError(
                    f"experiment {self.name!r} ({self.kind}): metric {metric!r} is unknown: choose "
                    f"one of {', '.join(known)}"
                )
        object.__setattr__(self, "guards", tuple(self.guards))

    @property
    def salt(self) -> int:
        """The split's salt: `experiments.salt_of(name)`."""
        return salt_of(self.name)

    @property
    def arms(self) -> tuple[str, str]:
        """(control, treatment) arm names."""
        return ARM_NAMES[self.kind]

    def treated(self, user_ids: np.ndarray) -> np.ndarray:
        """Whether each user is in the treatment arm (bool array): bucket < threshold(share), as serving does."""
        return split.buckets(np.asarray(user_ids, np.int64), self.salt) < split.threshold(self.share)

    def rule(self) -> str:
        """The decision rule in words, as fixed before the data."""
        good = "below" if self.lower_is_better else "above"
        text = (
            f"ship {self.arms[1]} if the {1 - self.alpha:.0%} interval of {self.arms[1]} − {self.arms[0]} "
            f"in {LABELS[self.primary]} lies entirely {good} 0"
        )
        for g in self.guards:
            text += f", and {LABELS[g.metric]} does not fall by more than {g.max_drop:g} (interval's lower end above "
            text += f"−{g.max_drop:g})"
        return text + f"; no decision when the arm sizes show a sample-ratio mismatch (p < {SRM_ALPHA:g})."

    def as_dict(self) -> dict:
        """JSON-able design (times ISO, durations in seconds)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(
            start=self.start.isoformat(),
            end=self.end.isoformat(),
            guards=[asdict(g) for g in self.guards],
            pre_period=self.pre_period.total_seconds(),
            conversion_window=self.conversion_window.total_seconds(),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudyDesign:
        """A design from `as_dict` output; unknown keys raise StudyError."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise StudyError(f"study design has unknown keys: {', '.join(sorted(unknown))}")
        try:
            return cls(
                **{
                    **d,
                    "start": datetime.fromisoformat(d["start"]),
                    "end": datetime.fromisoformat(d["end"]),
                    "guards": tuple(Guard(**g) for g in d.get("guards", ())),
                    "pre_period": timedelta(seconds=float(d.get("pre_period", 0))),
                    "conversion_window": timedelta(seconds=float(d.get("conversion_window", 3600))),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, StudyError):
                raise
            raise StudyError(f"study design cannot be read: {exc}") from exc


SRM_ALPHA = 0.001
METRICS = {"coldstart": ("conversion", "rating"), "costaware": ("cost_per_play", "conversion", "rating")}
LABELS = {
    "conversion": "conversion (sessions whose pick was recommended, per session)",
    "cost_per_play": "license cost per play (USD)",
    "rating": "mean rating given (1–10)",
}
UNITS = {"conversion": "points", "cost_per_play": "USD", "rating": "stars"}


def coldstart_design(name: str, start: datetime, end: datetime, **kw) -> StudyDesign:
    """Experiment A as the report runs it: conversion over the first 3 sessions decides; no guard (old users
    are served identically, and a new user's only other outcome, ratings, is reported)."""
    return StudyDesign("coldstart", name, start, end, primary="conversion", **kw)


def costaware_design(
    name: str,
    start: datetime,
    end: datetime,
    trade_off: float,
    base: str = "ease",
    max_conversion_drop: float = 0.02,
    max_rating_drop: float = 0.2,
    **kw,
) -> StudyDesign:
    """Experiment B: cost per play must fall; conversion may not fall by more than 2 points, ratings by more
    than 0.2 stars (defaults); CUPED pre-period of a day unless `pre_period` is given."""
    kw.setdefault("pre_period", timedelta(hours=24))
    return StudyDesign(
        "costaware",
        name,
        start,
        end,
        primary="cost_per_play",
        lower_is_better=True,
        guards=(Guard("conversion", max_conversion_drop), Guard("rating", max_rating_drop)),
        base=base,
        trade_off=trade_off,
        **kw,
    )


# --- serving both experiments ------------------------------------------------------------------------
class StudyService:
    """Serving for the two experiments on one public app (`serve_app.create_app`, the service the world calls).

    B: `control` (plain base model) is the champion, `treatment` (cost-aware) the challenger at B's share and
    salt. Without B, pass the same table twice: every user the model knows gets the same answer in both arms.
    A: `push_coldstart` takes the cold-start worker's new lists and serves, per new user, the list of their
    A-arm: the self-description list (treatment) or the demographic fallback alone (control), both built by
    the worker's `ColdStart` model from the user's stored record.
    """

    def __init__(
        self,
        control: AnswerTable,
        treatment: AnswerTable,
        costaware: StudyDesign | None = None,
        coldstart: StudyDesign | None = None,
    ) -> None:
        if (
            costaware is not None
            and costaware.kind != "costaware"
            or coldstart is not None
            and coldstart.kind != "coldstart"
        ):
            raise StudyError("StudyService: give a costaware design as `costaware` and a coldstart one as `coldstart`")
        self.app: Starlette = serve_app.create_app(control)
        share = costaware.share if costaware is not None else 0.5
        serve_state.set_challenger(self.app, treatment, share, costaware.salt if costaware is not None else 0)
        self.coldstart = coldstart
        self.served = {"selfdesc": 0, "demographic": 0}

    def push_coldstart(self, lists: Iterable[ColdStartList], model: ColdStart, store: EventStore) -> int:
        """Serve each new user the list of their A-arm; returns how many were set. The store's `coldstart_lists`
        keep the worker's self-description list of every new user; what each was served is on the stream."""
        lists = list(lists)
        if not lists:
            return 0
        if self.coldstart is None:
            return serve_state.set_coldstart(self.app, lists)
        treated = self.coldstart.treated(np.array([c.user_id for c in lists], np.int64))
        out = []
        for c, t in zip(lists, treated.tolist(), strict=True):
            if t:
                out.append(c)
                self.served["selfdesc"] += 1
                continue
            record = store.user_record(c.user_id)
            if record is None:  # the worker stored it before building the list; a store without it is broken
                raise StudyError(f"experiment {self.coldstart.name!r}: no stored record of new user {c.user_id}")
            out.append(model.build(replace(record, likes=None, dislikes=None)))
            self.served["demographic"] += 1
        return serve_state.set_coldstart(self.app, out)


# --- analysis from the store ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmCounts:
    """What the store holds of one arm: users, their sessions/requests, plays, costed plays, ratings."""

    users: int
    requests: int
    conversions: int
    plays: int = 0
    costed_plays: int = 0
    license_cost: float = 0.0
    ratings: int = 0
    accounts: int = 0  # A: new accounts in the arm (with or without a session)


@dataclass(frozen=True)
class MetricResult:
    """One metric: per-arm means with 95% intervals, the delta-method test, and whether a guard holds."""

    metric: str
    control: float
    treatment: float
    control_ci: tuple[float, float]
    treatment_ci: tuple[float, float]
    test: RatioTestResult | None  # None: fewer than 2 users with this metric in an arm
    role: str  # primary | guard | reported
    max_drop: float | None = None

    @property
    def holds(self) -> bool | None:
        """For a guard: the interval's lower end is above −max_drop (None when not a guard or untested)."""
        if self.role != "guard" or self.test is None:
            return None
        return self.test.ci_low > -self.max_drop

    def as_dict(self) -> dict:
        """JSON-able numbers."""
        return {
            "metric": self.metric,
            "control": _num(self.control),
            "treatment": _num(self.treatment),
            "control_ci": [_num(x) for x in self.control_ci],
            "treatment_ci": [_num(x) for x in self.treatment_ci],
            "test": None if self.test is None else self.test.as_dict(),
            "role": self.role,
            "max_drop": self.max_drop,
            "holds": self.holds,
        }


@dataclass(frozen=True)
class StudyResult:
    """An experiment's analysis: design, per-arm counts, SRM check, metrics, decision and why."""

    design: StudyDesign
    counts: dict[str, ArmCounts]
    srm: SRMResult
    metrics: dict[str, MetricResult]
    decision: str  # ship | no ship | invalid
    reason: str
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-able result."""
        return {
            "design": self.design.as_dict(),
            "counts": {a: asdict(c) for a, c in self.counts.items()},
            "srm": self.srm.as_dict(),
            "metrics": {k: m.as_dict() for k, m in self.metrics.items()},
            "decision": self.decision,
            "reason": self.reason,
            "extra": self.extra,
        }


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _arm_ci(x: UserRatio, z: float = 1.959963984540054) -> tuple[float, float, float]:
    """(rate, low, high) of one arm's ratio metric, delta-method standard error; NaN without 2 users."""
    if x.users < 2:
        return x.rate, math.nan, math.nan
    r = float(x.num.sum() / x.den.sum())
    se = float(np.std((x.num - r * x.den) / x.den.mean(), ddof=1) / math.sqrt(x.users))
    return r, r - z * se, r + z * se


def _metric(
    name: str, c: UserRatio, t: UserRatio, design: StudyDesign, role: str, max_drop: float | None = None
) -> MetricResult:
    rc, *cci = _arm_ci(c)
    rt, *tci = _arm_ci(t)
    test = delta_ztest(c, t, design.alpha, cuped=True) if min(c.users, t.users) >= 2 else None
    return MetricResult(name, rc, rt, tuple(cci), tuple(tci), test, role, max_drop)


def _decide(design: StudyDesign, srm: SRMResult, metrics: dict[str, MetricResult]) -> tuple[str, str]:
    if srm.mismatch:
        return "invalid", (
            f"sample-ratio mismatch: {srm.champion} {design.arms[0]} vs {srm.challenger} "
            f"{design.arms[1]} users at share {design.share:g} (p={srm.p_value:.2g} < {srm.alpha:g}); "
            "the split or the data path is broken, no effect is read"
        )
    p = metrics[design.primary]
    if p.test is None:
        return "no ship", f"{design.primary}: fewer than 2 users with data in an arm"
    lo, hi = p.test.ci_low, p.test.ci_high
    good = hi < 0 if design.lower_is_better else lo > 0
    why = [f"{design.primary} {p.test.difference:+.4g} (95% CI {lo:+.4g} .. {hi:+.4g}, p={p.test.p_value:.2g})"]
    failed = []
    for g in design.guards:
        m = metrics[g.metric]
        if not m.holds:
            low = "untested" if m.test is None else f"{m.test.ci_low:+.4g}"
            failed.append(f"guard {g.metric}: lower end {low} not above −{g.max_drop:g}")
    if good and not failed:
        return "ship", "; ".join(why + ["every guard holds"] * bool(design.guards))
    if not good:
        why.append("the interval does not exclude 0 in the good direction")
    return "no ship", "; ".join(why + failed)


def analyze_coldstart(store: EventStore, design: StudyDesign) -> StudyResult:
    """Experiment A from the store: new accounts in [start, end), each one's first sessions (see the module)."""
    if design.kind != "coldstart":
        raise StudyError(f"experiment {design.name!r} is {design.kind}, not coldstart")
    rows = store.read(
        _COLDSTART_SQL,
        {"start": design.start, "end": design.end, "k": design.first_sessions, "window": design.conversion_window},
    )
    users = np.array([r[0] for r in rows], np.int64)
    sessions = np.array([r[1] for r in rows], np.float64)
    conv = np.array([r[2] for r in rows], np.float64)
    rsum = np.array([r[3] for r in rows], np.float64)
    rn = np.array([r[4] for r in rows], np.float64)
    treated = design.treated(users)
    counts, ratios = {}, {}
    for arm, mask in zip(design.arms, (~treated, treated), strict=True):
        s = mask & (sessions > 0)
        counts[arm] = ArmCounts(
            int(s.sum()),
            int(sessions[mask].sum()),
            int(conv[mask].sum()),
            ratings=int(rn[mask].sum()),
            accounts=int(mask.sum()),
        )
        r = mask & (rn > 0)
        ratios[arm] = (UserRatio(conv[s], sessions[s]), UserRatio(rsum[r], rn[r]))
    # The arm sizes are the new accounts (randomized at creation), not the ones that came back for a session.
    srm = srm_check(counts[design.arms[0]].accounts, counts[design.arms[1]].accounts, design.share, SRM_ALPHA)
    (cc, cr), (tc, tr) = ratios[design.arms[0]], ratios[design.arms[1]]
    metrics = {
        "conversion": _metric("conversion", cc, tc, design, "primary"),
        "rating": _metric("rating", cr, tr, design, "reported"),
    }
    for g in design.guards:
        m = metrics[g.metric]
        metrics[g.metric] = replace(m, role="guard", max_drop=g.max_drop)
    decision, reason = _decide(design, srm, metrics)
    return StudyResult(design, counts, srm, metrics, decision, reason, {"new_accounts": len(users)})


def analyze_costaware(store: EventStore, design: StudyDesign) -> StudyResult:
    """Experiment B from the store: users with a request in [start, end) who are not new accounts of the window."""
    if design.kind != "costaware":
        raise StudyError(f"experiment {design.name!r} is {design.kind}, not costaware")
    new = {
        int(u)
        for (u,) in store.read(
            "SELECT DISTINCT user_id FROM events WHERE kind = 'account' AND time >= $start AND time < $end",
            {"start": design.start, "end": design.end},
        )
    }
    pre = design.pre_period
    m = arm_metrics(
        store, design.start, design.end, design.salt, design.share, design.conversion_window, pre, pre_end=design.start
    )
    params = {"start": design.start, "end": design.end, "pre_start": design.start - pre}
    plays = {int(u): r for u, *r in store.read(_PLAYS_RATINGS_SQL, params)}
    counts, ratios = {}, {}
    for arm, online_arm in zip(design.arms, ("champion", "challenger"), strict=True):
        u = m[online_arm].per_user
        keep = np.array([int(x) not in new for x in u.user_id.tolist()], bool)
        ids = u.user_id[keep]
        conv = UserRatio(u.conversions[keep], u.requests[keep], u.pre_conversions[keep], u.pre_requests[keep])
        per = np.array(
            [plays.get(int(x), (0, 0, 0.0, 0, 0.0, 0, 0.0, 0.0, 0)) for x in ids.tolist()], np.float64
        ).reshape(-1, 9)
        n_plays, costed, cost, n_rat, rat_sum, pre_costed, pre_cost, pre_rat_sum, pre_rat = per.T
        c_mask, r_mask = costed > 0, n_rat > 0
        cost_ratio = UserRatio(cost[c_mask], costed[c_mask], pre_cost[c_mask], pre_costed[c_mask])
        rating_ratio = UserRatio(rat_sum[r_mask], n_rat[r_mask], pre_rat_sum[r_mask], pre_rat[r_mask])
        counts[arm] = ArmCounts(
            len(ids),
            int(u.requests[keep].sum()),
            int(u.conversions[keep].sum()),
            int(n_plays.sum()),
            int(costed.sum()),
            float(cost.sum()),
            int(n_rat.sum()),
        )
        ratios[arm] = {"conversion": conv, "cost_per_play": cost_ratio, "rating": rating_ratio}
    srm = srm_check(counts[design.arms[0]].users, counts[design.arms[1]].users, design.share, SRM_ALPHA)
    guards = {g.metric: g.max_drop for g in design.guards}
    metrics = {}
    for name in METRICS["costaware"]:
        role = "primary" if name == design.primary else "guard" if name in guards else "reported"
        metrics[name] = _metric(
            name, ratios[design.arms[0]][name], ratios[design.arms[1]][name], design, role, guards.get(name)
        )
    decision, reason = _decide(design, srm, metrics)
    return StudyResult(design, counts, srm, metrics, decision, reason, {"new_users_left_out": len(new)})


def analyze(store: EventStore, design: StudyDesign) -> StudyResult:
    """The analysis of either kind."""
    return (analyze_coldstart if design.kind == "coldstart" else analyze_costaware)(store, design)


# A new account's first k sessions: its requests at or after its `create_account` line, before `end`. A session
# converts when the user's first watch line after the request comes before the next request, within the window,
# and is of one of the recommended movies (a failed request has none: it cannot convert). Ratings: the user's
# rate lines in [created, end), the latest per movie.
_COLDSTART_SQL = """
WITH acc AS (SELECT user_id, min(time) AS created FROM events WHERE kind = 'account' AND time >= $start
             AND time < $end GROUP BY user_id),
r AS (SELECT e.user_id, e.time, e.seq, e.recommendations,
             lead(e.time) OVER (PARTITION BY e.user_id ORDER BY e.time, e.seq) AS next_time,
             row_number() OVER (PARTITION BY e.user_id ORDER BY e.time, e.seq) AS n
      FROM events e JOIN acc USING (user_id) WHERE e.kind = 'recommendation' AND e.time >= acc.created
      AND e.time < $end),
w AS (SELECT user_id, time AS wtime, movie_id FROM events WHERE kind = 'watch' AND time >= $start AND time < $end
      AND user_id IN (SELECT user_id FROM acc)),
first_k AS (SELECT * FROM r WHERE n <= $k),
picked AS (SELECT f.user_id, f.seq,
                  coalesce(w.wtime < coalesce(f.next_time, $end) AND w.wtime < f.time + $window
                           AND list_contains(f.recommendations, w.movie_id), false) AS converted
           FROM first_k f ASOF LEFT JOIN w ON f.user_id = w.user_id AND w.wtime >= f.time),
rated AS (SELECT user_id, movie_id, arg_max(rating, seq) AS rating FROM events e JOIN acc USING (user_id)
          WHERE e.kind = 'rate' AND e.time >= acc.created AND e.time < $end GROUP BY user_id, movie_id)
SELECT acc.user_id, coalesce(p.sessions, 0), coalesce(p.conversions, 0), coalesce(q.rsum, 0), coalesce(q.rn, 0)
FROM acc LEFT JOIN (SELECT user_id, count(*) AS sessions, count(*) FILTER (WHERE converted) AS conversions
                    FROM picked GROUP BY user_id) p USING (user_id)
         LEFT JOIN (SELECT user_id, sum(rating)::DOUBLE AS rsum, count(*) AS rn FROM rated GROUP BY user_id) q
         USING (user_id)
ORDER BY acc.user_id"""

# Per user, in [start, end) and in the pre-period [pre_start, start): plays (distinct movies watched), those with
# a stored license cost and their cost (USD, the movie's record as stored), and ratings (latest per movie).
_PLAYS_RATINGS_SQL = """
WITH p AS (SELECT DISTINCT user_id, movie_id, time >= $start AS cur FROM events WHERE kind = 'watch'
           AND time >= $pre_start AND time < $end),
pc AS (SELECT p.user_id, count(*) FILTER (WHERE cur) AS plays,
              count(m.license_cost) FILTER (WHERE cur) AS costed,
              coalesce(sum(m.license_cost) FILTER (WHERE cur), 0)::DOUBLE AS cost,
              count(m.license_cost) FILTER (WHERE NOT cur) AS pre_costed,
              coalesce(sum(m.license_cost) FILTER (WHERE NOT cur), 0)::DOUBLE AS pre_cost
       FROM p LEFT JOIN movies m USING (movie_id) GROUP BY p.user_id),
rt AS (SELECT user_id, movie_id, time >= $start AS cur, arg_max(rating, seq) AS rating FROM events
       WHERE kind = 'rate' AND time >= $pre_start AND time < $end GROUP BY user_id, movie_id, cur),
rc AS (SELECT user_id, count(*) FILTER (WHERE cur) AS n, coalesce(sum(rating) FILTER (WHERE cur), 0)::DOUBLE AS s,
              coalesce(sum(rating) FILTER (WHERE NOT cur), 0)::DOUBLE AS pre_s,
              count(*) FILTER (WHERE NOT cur) AS pre_n FROM rt GROUP BY user_id)
SELECT user_id, coalesce(pc.plays, 0), coalesce(pc.costed, 0), coalesce(pc.cost, 0.0), coalesce(rc.n, 0),
       coalesce(rc.s, 0.0), coalesce(pc.pre_costed, 0), coalesce(pc.pre_cost, 0.0), coalesce(rc.pre_s, 0.0),
       coalesce(rc.pre_n, 0)
FROM pc FULL JOIN rc USING (user_id)"""


# --- the report ----------------------------------------------------------------------------------------
def write_report(
    results: list[StudyResult],
    out: Path | str,
    title: str = "The course's two experiments",
    notes: list[str] | None = None,
) -> Path:
    """Write `report.md`, one SVG per experiment and `results.json` into `out`; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""] + [f"- {n}" for n in notes or []] + [""] * bool(notes)
    for res in results:
        d = res.design
        svg = out / f"{d.kind}.svg"
        svg.write_text(_plot(res), encoding="utf-8")
        c, t = d.arms
        lines += [
            f"## {d.name}: {t} vs {c} ({d.kind})",
            "",
            f"Window {d.start.isoformat()} .. {d.end.isoformat()} (stream time), share {d.share:g} to {t}, "
            f"salt {d.salt}." + (f" CUPED pre-period: {d.pre_period}." if d.pre_period else " No pre-period."),
            "",
            f"**Decision rule (fixed before the data):** {d.rule()}",
            "",
            "| arm | users | "
            + (
                "accounts | sessions"
                if d.kind == "coldstart"
                else "requests | plays | costed plays | license cost (USD)"
            )
            + " | conversions | ratings |",
            "|---|---|" + ("---|---|" if d.kind == "coldstart" else "---|---|---|---|") + "---|---|",
        ]
        for arm in d.arms:
            k = res.counts[arm]
            mid = (
                f"{k.accounts:,} | {k.requests:,}"
                if d.kind == "coldstart"
                else f"{k.requests:,} | {k.plays:,} | {k.costed_plays:,} | {k.license_cost:,.2f}"
            )
            lines.append(f"| {arm} | {k.users:,} | {mid} | {k.conversions:,} | {k.ratings:,} |")
        s = res.srm
        lines += [
            "",
            (
                f"Sample ratio: {s.champion:,} vs {s.challenger:,} (expected {s.expected_champion:,.0f} vs "
                f"{s.expected_challenger:,.0f}), chi² {s.chi2:.2f}, p = {s.p_value:.3g}: "
                f"{'MISMATCH' if s.mismatch else 'no mismatch'}."
            ),
            "",
            f"| metric | role | {c} | {t} | difference | {1 - d.alpha:.0%} CI | p | CUPED variance reduction |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in res.metrics.values():
            x = m.test
            role = m.role + (
                f" (max drop {m.max_drop:g}: {'holds' if m.holds else 'fails'})" if m.role == "guard" else ""
            )
            if x is None:
                lines.append(f"| {LABELS[m.metric]} | {role} | {_f(m.control)} | {_f(m.treatment)} | – | – | – | – |")
                continue
            vr = "–" if x.variance_reduction is None else f"{x.variance_reduction:.0%}"
            lines.append(
                f"| {LABELS[m.metric]} | {role} | {_f(m.control)} | {_f(m.treatment)} | {x.difference:+.4g} "
                f"| {x.ci_low:+.4g} .. {x.ci_high:+.4g} | {x.p_value:.3g} | {vr} |"
            )
        lines += ["", f"**Decision: {res.decision}.** {res.reason}.", "", f"![{d.kind}]({svg.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    (out / "results.json").write_text(json.dumps([r.as_dict() for r in results], indent=1, default=str))
    return path


def _f(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:.4g}"


# A small SVG writer (no plotting library): per-arm means with 95% interval bars, and a cost-vs-rating panel.
_W, _H, _PAD = 360, 300, 56
_COLORS = ("#1f77b4", "#d62728")


def _panel(x0: float, title: str, ylabel: str, bars: list[tuple[str, float, float, float]]) -> list[str]:
    vals = [v for _, m, lo, hi in bars for v in (m, lo, hi) if math.isfinite(v)] or [0.0, 1.0]
    lo_v, hi_v = min(vals), max(vals)
    span = (hi_v - lo_v) or abs(hi_v) or 1.0
    lo_v, hi_v = lo_v - 0.15 * span, hi_v + 0.15 * span

    def y(v: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * (v - lo_v) / (hi_v - lo_v)

    out = [
        f'<text x="{x0 + _W / 2}" y="22" text-anchor="middle" font-size="13">{_esc(title)}</text>',
        (
            f'<text x="{x0 + 14}" y="{_H / 2}" transform="rotate(-90 {x0 + 14} {_H / 2})" '
            f'text-anchor="middle">{_esc(ylabel)}</text>'
        ),
        (
            f'<rect x="{x0 + _PAD}" y="{_PAD}" width="{_W - 2 * _PAD}" height="{_H - 2 * _PAD}" fill="none" '
            'stroke="#888"/>'
        ),
        f'<text x="{x0 + _PAD - 4}" y="{_PAD + 4}" text-anchor="end">{hi_v:.3g}</text>',
        f'<text x="{x0 + _PAD - 4}" y="{_H - _PAD}" text-anchor="end">{lo_v:.3g}</text>',
    ]
    step = (_W - 2 * _PAD) / (len(bars) + 1)
    for i, (label, m, lo, hi) in enumerate(bars):
        cx, col = x0 + _PAD + step * (i + 1), _COLORS[i % 2]
        if math.isfinite(lo) and math.isfinite(hi):
            out.append(
                f'<line x1="{cx:.1f}" y1="{y(lo):.1f}" x2="{cx:.1f}" y2="{y(hi):.1f}" stroke="{col}" stroke-width="2"/>'
            )
            for v in (lo, hi):
                out.append(
                    f'<line x1="{cx - 8:.1f}" y1="{y(v):.1f}" x2="{cx + 8:.1f}" y2="{y(v):.1f}" stroke="{col}" '
                    'stroke-width="2"/>'
                )
        if math.isfinite(m):
            out.append(f'<circle cx="{cx:.1f}" cy="{y(m):.1f}" r="5" fill="{col}"/>')
            out.append(f'<text x="{cx + 12:.1f}" y="{y(m) + 4:.1f}">{m:.4g}</text>')
        out.append(f'<text x="{cx:.1f}" y="{_H - _PAD + 18}" text-anchor="middle">{_esc(label)}</text>')
    return out


def _plot(res: StudyResult) -> str:
    """The experiment's figure: one panel per metric with a test (per-arm mean and 95% interval)."""
    d = res.design
    panels = [m for m in res.metrics.values() if m.role != "reported" or d.kind == "coldstart"]
    parts = []
    for i, m in enumerate(panels):
        bars = [(d.arms[0], m.control, *m.control_ci), (d.arms[1], m.treatment, *m.treatment_ci)]
        title = m.metric.replace("_", " ") + ("" if m.test is None else f" (p={m.test.p_value:.2g})")
        parts += _panel(i * _W, title, UNITS[m.metric] if m.metric != "conversion" else "per session", bars)
    n = len(panels)
    if d.kind == "costaware":  # cost vs rating: one point per arm, its two 95% intervals as a cross
        parts += _scatter(n * _W, res.metrics["cost_per_play"], res.metrics["rating"], d.arms)
        n += 1
    w = _W * max(n, 1)
    return "\n".join(
        [
            (
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{_H}" font-family="sans-serif" '
                'font-size="12">'
            ),
            f'<rect width="{w}" height="{_H}" fill="white"/>',
            *parts,
            "</svg>",
            "",
        ]
    )


def _scatter(x0: float, xm: MetricResult, ym: MetricResult, arms: tuple[str, str]) -> list[str]:
    pts = [
        (xm.control, *xm.control_ci, ym.control, *ym.control_ci),
        (xm.treatment, *xm.treatment_ci, ym.treatment, *ym.treatment_ci),
    ]
    xs = [v for p in pts for v in p[:3] if math.isfinite(v)] or [0.0, 1.0]
    ys = [v for p in pts for v in p[3:] if math.isfinite(v)] or [0.0, 1.0]

    def scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
        span = (hi - lo) or 1.0
        lo, hi = lo - 0.15 * span, hi + 0.15 * span
        return a + (b - a) * (v - lo) / (hi - lo)

    def sx(v: float) -> float:
        return scale(v, min(xs), max(xs), x0 + _PAD, x0 + _W - _PAD)

    def sy(v: float) -> float:
        return scale(v, min(ys), max(ys), _H - _PAD, _PAD)

    out = [
        f'<text x="{x0 + _W / 2}" y="22" text-anchor="middle" font-size="13">cost vs rating per arm</text>',
        (
            f'<rect x="{x0 + _PAD}" y="{_PAD}" width="{_W - 2 * _PAD}" height="{_H - 2 * _PAD}" fill="none" '
            'stroke="#888"/>'
        ),
        f'<text x="{x0 + _W / 2}" y="{_H - 16}" text-anchor="middle">USD per play</text>',
        (
            f'<text x="{x0 + 14}" y="{_H / 2}" transform="rotate(-90 {x0 + 14} {_H / 2})" '
            'text-anchor="middle">mean rating</text>'
        ),
    ]
    for i, (x, xlo, xhi, y, ylo, yhi) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        col = _COLORS[i]
        if math.isfinite(xlo) and math.isfinite(xhi):
            out.append(
                f'<line x1="{sx(xlo):.1f}" y1="{sy(y):.1f}" x2="{sx(xhi):.1f}" y2="{sy(y):.1f}" '
                f'stroke="{col}" stroke-width="2"/>'
            )
        if math.isfinite(ylo) and math.isfinite(yhi):
            out.append(
                f'<line x1="{sx(x):.1f}" y1="{sy(ylo):.1f}" x2="{sx(x):.1f}" y2="{sy(yhi):.1f}" '
                f'stroke="{col}" stroke-width="2"/>'
            )
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{col}"/>')
        out.append(f'<text x="{sx(x) + 8:.1f}" y="{sy(y) - 8:.1f}" fill="{col}">{_esc(arms[i])}</text>')
    return out


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
