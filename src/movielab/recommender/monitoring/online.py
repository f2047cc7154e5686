"""Online metrics per experiment arm, computed from the stream (the event store) only.

The stream does not say which model answered a request, so the arm of a request is the arm its user
is assigned to by the experiment's `salt` and `share` (`movielab.recommender.serving.traffic`, the same arithmetic
the serving replicas use). The share must be constant over the window: a canary step's window.

Per arm: users and requests, ok share (answered 200 with ids), errors by kind, latency p50/p99 of
`response_ms` over every request (failed ones included: that is what users waited), conversions,
completion of the converted watches, and the mean rating of the converted movies; plays (distinct user × movie
pairs watched) and their license cost (2026 edition: USD per play from the movie records), per play and per
1,000 requests.
A request converts when the user's next watch line of one of its recommended movies comes within
`conversion_window` (default 60 simulated minutes: the world picks right after a request, and an hour
leaves room for a user who browses before playing) and before the user's next request, which then
gets the credit instead (last touch). The conversion rate is over all requests, failed ones included,
so an unavailable challenger also shows as converting worse.

Users are the unit of randomization, so each arm also carries its per-user totals (`UserTotals`:
requests, conversions, errors, latency per user, and each user's requests and conversions in a
pre-period before the experiment, the CUPED covariate). The tests in `release.statistics` work on these:
requests of one user are correlated, and a test that treats them as independent is too confident.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from prometheus_client import CollectorRegistry, Gauge

from movielab.recommender.monitoring.conversions import arm_request_metrics
from movielab.recommender.serving.traffic import buckets, threshold

if TYPE_CHECKING:
    from movielab.recommender.store.events import EventStore

logger = logging.getLogger(__name__)

ARMS = ("champion", "challenger")
DEFAULT_CONVERSION_WINDOW = timedelta(minutes=60)
DEFAULT_PRE_PERIOD = timedelta(hours=24)  # the CUPED covariate: each user's conversion in the day before
GAUGES = (
    "users",
    "requests",
    "ok_share",
    "error_rate",
    "errors",
    "latency_p50_ms",
    "latency_p99_ms",
    "conversions",
    "conversion",
    "completion",
    "ratings",
    "rating_mean",
    "share",
    "plays",
    "cost_per_play",
    "cost_per_1000_requests",
)


_TOTALS = ("requests", "ok", "conversions", "latency_ms", "pre_requests", "pre_conversions")


@dataclass(frozen=True)
class UserTotals:
    """One arm's totals per user, aligned arrays of one entry per user with a request in the window.

    `user_id` int64; `requests`, `ok`, `conversions`, `pre_requests`, `pre_conversions` int64 counts;
    `latency_ms` float64, the sum of the user's response times in ms. `pre_*` count the user's requests
    and conversions in the pre-period before the experiment (0 for a user who had none).
    """

    user_id: np.ndarray
    requests: np.ndarray
    ok: np.ndarray
    conversions: np.ndarray
    latency_ms: np.ndarray
    pre_requests: np.ndarray
    pre_conversions: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.user_id)
        for name in _TOTALS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"user totals: {name} has {len(getattr(self, name))} entries for {n} users")
        if n and (
            (self.requests < 1).any()
            or (self.ok > self.requests).any()
            or (self.conversions > self.ok).any()
            or (self.pre_conversions > self.pre_requests).any()
        ):
            raise ValueError(
                "user totals are inconsistent: every user needs a request, and conversions ≤ ok ≤ "
                "requests (pre-period: conversions ≤ requests)"
            )

    @classmethod
    def empty(cls) -> UserTotals:
        """No users."""
        return cls(
            np.zeros(0, np.int64), *(np.zeros(0, np.float64 if n == "latency_ms" else np.int64) for n in _TOTALS)
        )

    @property
    def errors(self) -> np.ndarray:
        """Failed requests per user."""
        return self.requests - self.ok

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(frozen=True)
class ArmMetrics:
    """What one arm's users saw in [start, end) under (salt, share); the canary controller consumes this."""

    arm: str
    salt: int
    share: float
    start: datetime
    end: datetime
    users: int = 0
    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    conversions: int = 0
    completion_mean: float | None = None
    ratings: int = 0
    rating_mean: float | None = None
    plays: int = 0  # distinct (user, movie) pairs watched in the window by the arm's users
    costed_plays: int = 0  # plays of movies whose record gives a license cost
    license_cost: float = 0.0  # USD, sum over the costed plays
    per_user: UserTotals | None = field(default=None, repr=False, compare=False)  # None: totals only

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"arm {self.arm!r} is unknown: choose one of {', '.join(ARMS)}")
        u = self.per_user
        if u is not None and (len(u), int(u.requests.sum()), int(u.ok.sum()), int(u.conversions.sum())) != (
            self.users,
            self.requests,
            self.ok,
            self.conversions,
        ):
            raise ValueError(
                f"{self.arm} metrics: per-user totals ({len(u)} users, {int(u.requests.sum())} requests, "
                f"{int(u.ok.sum())} ok, {int(u.conversions.sum())} conversions) do not add up to the "
                f"arm's ({self.users}, {self.requests}, {self.ok}, {self.conversions})"
            )
        if self.requests - self.ok != sum(self.errors.values()):
            raise ValueError(
                f"{self.arm} metrics: {self.requests - self.ok} failed requests but errors by kind "
                f"add up to {sum(self.errors.values())} ({self.errors})"
            )
        if not 0 <= self.costed_plays <= self.plays or self.license_cost < 0:
            raise ValueError(
                f"{self.arm} metrics: {self.costed_plays} costed plays of {self.plays}, license cost "
                f"{self.license_cost}: expected 0 ≤ costed ≤ plays and a cost ≥ 0"
            )
        if not 0 <= self.conversions <= self.ok <= self.requests or self.users > self.requests:
            raise ValueError(
                f"{self.arm} metrics are inconsistent: users={self.users}, requests={self.requests}, "
                f"ok={self.ok}, conversions={self.conversions}"
            )

    @property
    def errors_total(self) -> int:
        """Failed requests (no answer, non-200 status or an invalid body)."""
        return self.requests - self.ok

    @property
    def ok_share(self) -> float:
        """Share of requests answered 200 with ids (NaN without requests)."""
        return self.ok / self.requests if self.requests else math.nan

    @property
    def error_rate(self) -> float:
        """Share of requests that failed (NaN without requests)."""
        return self.errors_total / self.requests if self.requests else math.nan

    @property
    def cost_per_play(self) -> float:
        """License cost in USD per play of a movie with a known cost (NaN without such plays)."""
        return self.license_cost / self.costed_plays if self.costed_plays else math.nan

    @property
    def cost_per_1000_requests(self) -> float:
        """License cost in USD of the arm's plays per 1,000 of its requests (NaN without requests or costs)."""
        return 1000.0 * self.license_cost / self.requests if self.requests and self.costed_plays else math.nan

    @property
    def conversion(self) -> float:
        """Conversions per request (NaN without requests)."""
        return self.conversions / self.requests if self.requests else math.nan

    def as_dict(self) -> dict:
        """Every field and rate as JSON-able values (times as ISO text, NaN as None)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_user"}
        d.update(
            start=self.start.isoformat(),
            end=self.end.isoformat(),
            errors=dict(self.errors),
            ok_share=self.ok_share,
            error_rate=self.error_rate,
            conversion=self.conversion,
            cost_per_play=self.cost_per_play,
            cost_per_1000_requests=self.cost_per_1000_requests,
        )
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()}

    def gauges(self) -> dict[str, float]:
        """The arm as a flat dict of numbers for Prometheus gauges (NaN where undefined)."""
        nan = math.nan
        return {
            "users": float(self.users),
            "requests": float(self.requests),
            "ok_share": self.ok_share,
            "error_rate": self.error_rate,
            "errors": float(self.errors_total),
            "latency_p50_ms": nan if self.latency_p50_ms is None else self.latency_p50_ms,
            "latency_p99_ms": nan if self.latency_p99_ms is None else self.latency_p99_ms,
            "conversions": float(self.conversions),
            "conversion": self.conversion,
            "completion": nan if self.completion_mean is None else self.completion_mean,
            "ratings": float(self.ratings),
            "rating_mean": nan if self.rating_mean is None else self.rating_mean,
            "share": self.share if self.arm == "challenger" else 1.0 - self.share,
            "plays": float(self.plays),
            "cost_per_play": self.cost_per_play,
            "cost_per_1000_requests": self.cost_per_1000_requests,
        }


def assign_arms(user_ids: np.ndarray, salt: int, share: float) -> np.ndarray:
    """The arm name of every user id: "challenger" where the split puts it there at `share`, else "champion"."""
    return np.where(buckets(user_ids, salt) < threshold(share), ARMS[1], ARMS[0])


def arm_metrics(
    store: EventStore,
    start: datetime,
    end: datetime,
    salt: int,
    share: float,
    conversion_window: timedelta = DEFAULT_CONVERSION_WINDOW,
    pre_period: timedelta = DEFAULT_PRE_PERIOD,
    pre_end: datetime | None = None,
) -> dict[str, ArmMetrics]:
    """Both arms' metrics for requests in [start, end) (stream time), users split by (salt, share).

    Each arm carries its per-user totals; the pre-period covariate is each user's requests and
    conversions in [pre_end − pre_period, pre_end). `pre_end` defaults to `start`; give the
    experiment's start for a later step, so that no pre-period request saw the challenger.
    A `pre_period` of 0 leaves the covariate at 0 (no CUPED).
    """
    if not end > start:
        raise ValueError(f"metrics window end {end.isoformat()} is not after its start {start.isoformat()}")
    if not conversion_window > timedelta(0):
        raise ValueError(f"conversion window {conversion_window} must be positive")
    if pre_period < timedelta(0):
        raise ValueError(f"pre-period {pre_period} must not be negative")
    pre_end = start if pre_end is None else pre_end
    if pre_end > start:
        raise ValueError(f"pre-period end {pre_end.isoformat()} is after the window start {start.isoformat()}")
    threshold(share)  # refuses a share outside 0..1 before any query
    max_seq = store.ingested_seq()  # one ingestion point for both queries: a user arriving between them is not lost
    users = store.request_users(start, end, max_seq)
    arms = pa.table({"user_id": pa.array(users, pa.int64()), "arm": pa.array(assign_arms(users, salt, share))})
    per_arm, per_user = arm_request_metrics(store, arms, start, end, conversion_window, max_seq)
    pre = None
    if pre_period > timedelta(0):
        pre = arm_request_metrics(store, arms, pre_end - pre_period, pre_end, conversion_window, max_seq)[1]
    rows = {r["arm"]: r for r in per_arm.to_pylist()}
    out = {}
    for arm in ARMS:
        r = rows.get(arm)
        if r is None:
            out[arm] = ArmMetrics(arm, salt, share, start, end, per_user=UserTotals.empty())
            continue
        out[arm] = ArmMetrics(
            arm,
            salt,
            share,
            start,
            end,
            users=r["users"],
            requests=r["requests"],
            ok=r["ok"],
            errors=dict(r["errors"] or {}),
            latency_p50_ms=r["latency_p50_ms"],
            latency_p99_ms=r["latency_p99_ms"],
            conversions=r["conversions"],
            completion_mean=r["completion_mean"],
            ratings=r["ratings"],
            rating_mean=r["rating_mean"],
            plays=r["plays"],
            costed_plays=r["costed_plays"],
            license_cost=r["license_cost"],
            per_user=_user_totals(per_user, pre, arm),
        )
    logger.debug("arm metrics [%s, %s) share %g: %s", start, end, share, {a: m.requests for a, m in out.items()})
    return out


def _user_totals(per_user: pa.Table, pre: pa.Table | None, arm: str) -> UserTotals:
    """One arm's rows of the per-user table, with the pre-period counts joined by user (0 where none)."""
    mask = np.asarray(per_user["arm"].to_numpy(zero_copy_only=False) == arm)
    ids = per_user["user_id"].to_numpy()[mask]
    cols = {n: per_user[n].to_numpy()[mask] for n in ("requests", "ok", "conversions", "latency_ms")}
    pre_requests, pre_conversions = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64)
    if pre is not None and pre.num_rows:
        pre_ids = pre["user_id"].to_numpy()
        order = np.argsort(pre_ids)
        pos = np.minimum(np.searchsorted(pre_ids[order], ids), len(order) - 1)
        found = pre_ids[order][pos] == ids
        pre_requests[found] = pre["requests"].to_numpy()[order][pos][found]
        pre_conversions[found] = pre["conversions"].to_numpy()[order][pos][found]
    return UserTotals(
        ids.astype(np.int64),
        cols["requests"].astype(np.int64),
        cols["ok"].astype(np.int64),
        cols["conversions"].astype(np.int64),
        cols["latency_ms"].astype(np.float64),
        pre_requests,
        pre_conversions,
    )


def by_arm(metrics: Mapping[str, ArmMetrics], name: str) -> dict[str, float]:
    """One gauge (`conversion`, `error_rate`, …) per arm, arms where it is undefined left out (no NaN).

    The shape `Monitor.set_conversion` takes: `monitor.set_conversion(by_arm(m, "conversion"), versions)`.
    """
    if name not in GAUGES:
        raise ValueError(f"gauge {name!r} is unknown: choose one of {', '.join(GAUGES)}")
    values = {arm: m.gauges()[name] for arm, m in metrics.items()}
    return {arm: v for arm, v in values.items() if math.isfinite(v)}


class ArmGauges:
    """Prometheus gauges `experiment_<name>{experiment, arm}` for a dashboard, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._gauges = {
            name: Gauge(
                f"experiment_{name}",
                f"Online {name} of an experiment arm (from the stream)",
                ["experiment", "arm"],
                registry=self.registry,
            )
            for name in GAUGES
        }

    def update(self, experiment: str, metrics: Mapping[str, ArmMetrics]) -> None:
        """Set every gauge of `experiment` from its arms' metrics."""
        for arm, m in metrics.items():
            for name, value in m.gauges().items():
                self._gauges[name].labels(experiment, arm).set(value)
