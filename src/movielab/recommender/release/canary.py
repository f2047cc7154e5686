"""Canary and A/B releases: the statistics, and a canary controller that steps a challenger's share up.

Users are the unit of randomization (the split hashes the user id), so every per-request metric
(conversion, errors) is analysed per user: a ratio of per-user sums whose variance comes from the
delta method (Deng, Lu & Litz, "Trustworthy analysis of online A/B tests", WSDM 2017). Requests of one
user are correlated; a test that treats them as independent underestimates the variance and rolls back
identical models (A/A false positives of 18-35% instead of 5%, see `benchmarks/aa_experiments.py`).

Statistics (each result a frozen dataclass with `as_dict()`):
- `srm_check`: sample-ratio mismatch, chi-square goodness of fit of the arm sizes (users) against the
  share (Fabijan et al., "Diagnosing sample ratio mismatch in online controlled experiments", KDD 2019).
- `UserRatio` + `delta_difference`: the difference of two ratio metrics with its delta-method variance,
  and with CUPED (Deng, Xu, Kohavi & Walker, "Improving the sensitivity of online controlled
  experiments by utilizing pre-experiment data", WSDM 2013): each user's same metric in a pre-period
  is the covariate; the estimate is reported with and without the adjustment.
- `delta_ztest`: the fixed-horizon z-test on that estimate, with difference, lift and a CI.
- `SequentialTest`: mSPRT with a normal mixture on the same estimate (Johari, Koomen, Pekelis & Walsh,
  "Peeking at A/B tests", KDD 2017; Johari, Pekelis, Walsh, "Always valid inference", Operations
  Research 2022): an always-valid p-value that may be checked after every batch.
- `two_proportion_ztest`, `mixture_likelihood_ratio`: the per-request versions, valid only where each
  trial is independent (one per user); kept as the baseline the benchmark measures against.

The controller (`Experiment`) follows a `CanaryPlan` like Flagger or Argo Rollouts: per step it checks
SRM (users), then guardrails (per-user tests) (conversion significantly worse, error rate clearly higher, p99 latency), then
non-inferiority, and answers wait / advance / promote / rollback. Its whole state saves to JSON, so an
operator that restarts continues the experiment.

Driving it (a long-running operator): `Experiment.start(...)` once (or `Experiment.load(path)` after a
restart); then every tick, with `t` the stream time the store has reached, `d = tick(store, exp, t)`,
`exp.save(path)`, and make serving follow `exp.share` / `exp.salt` when `d.action` is advance, promote or
rollback. Stop ticking once `exp.finished`. People use `pause` / `resume` / `promote` / `rollback`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from movielab.recommender.errors import ExperimentError
from movielab.recommender.monitoring.online import ARMS, ArmMetrics, arm_metrics

if TYPE_CHECKING:
    from movielab.recommender.store.events import EventStore

logger = logging.getLogger(__name__)

SRM_ALPHA = 0.001  # common practice: an SRM alarm at p < 0.001 keeps false alarms rare under frequent checks
FORMAT = "movielab-experiment-v1"


def _num(x: float | None) -> float | None:
    """A JSON-able number: NaN and infinities become None."""
    return None if x is None or not math.isfinite(x) else float(x)


def _dict(obj: object) -> dict:
    return {f.name: (_num(v) if isinstance(v := getattr(obj, f.name), float) else v) for f in fields(obj)}


# --- statistics --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio mismatch check: observed and expected arm sizes, chi-square statistic, p-value, alarm."""

    champion: int
    challenger: int
    expected_champion: float
    expected_challenger: float
    chi2: float
    p_value: float
    alpha: float

    @property
    def mismatch(self) -> bool:
        """True when the split differs from the expected share beyond chance (p < alpha)."""
        return self.p_value < self.alpha

    def as_dict(self) -> dict:
        """The result as JSON-able numbers."""
        return {**_dict(self), "mismatch": self.mismatch}


def srm_check(champion: int, challenger: int, share: float, alpha: float = SRM_ALPHA) -> SRMResult:
    """Chi-square goodness of fit of (champion, challenger) counts against the challenger `share`."""
    _check_count("champion count", champion)
    _check_count("challenger count", challenger)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"challenger share {share!r} must be between 0 and 1")
    n = champion + challenger
    expected = (n * (1.0 - share), n * share)
    if n == 0:
        return SRMResult(champion, challenger, *expected, 0.0, 1.0, alpha)
    if share in (0.0, 1.0):  # one arm must be empty: any count in it is a certain mismatch
        empty = challenger if share == 0.0 else champion
        return SRMResult(champion, challenger, *expected, math.inf if empty else 0.0, 0.0 if empty else 1.0, alpha)
    chi2 = (champion - expected[0]) ** 2 / expected[0] + (challenger - expected[1]) ** 2 / expected[1]
    return SRMResult(champion, challenger, *expected, float(chi2), float(stats.chi2.sf(chi2, 1)), alpha)


@dataclass(frozen=True)
class ZTestResult:
    """Two-proportion z-test: rates, difference (treatment − control), relative lift, z, two-sided p, CI."""

    control_rate: float
    treatment_rate: float
    difference: float
    relative_lift: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    control_n: int
    treatment_n: int

    def as_dict(self) -> dict:
        """The result as JSON-able numbers (an undefined lift or z is None)."""
        return _dict(self)


def two_proportion_ztest(control_successes: int, control_n: int, treatment_successes: int, treatment_n: int,
                         alpha: float = 0.05) -> ZTestResult:  # fmt: skip
    """Two-sided z-test of p_treatment = p_control (pooled SE) with a Wald CI (unpooled SE) at 1 − alpha.

    Valid only when every trial is independent (one per user); for requests use `delta_ztest`.
    """
    _check_proportion("control", control_successes, control_n)
    _check_proportion("treatment", treatment_successes, treatment_n)
    _check_alpha(alpha)
    if control_n == 0 or treatment_n == 0:
        raise ValueError(f"z-test needs trials in both arms, got control n={control_n}, treatment n={treatment_n}")
    pa, pb = control_successes / control_n, treatment_successes / treatment_n
    diff = pb - pa
    pooled = (control_successes + treatment_successes) / (control_n + treatment_n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / treatment_n))
    if se0 > 0:
        z = diff / se0
        p = float(2 * stats.norm.sf(abs(z)))
    else:  # both arms all-success or all-failure: the data cannot show a difference
        z, p = math.nan, 1.0
    se = math.sqrt(pa * (1 - pa) / control_n + pb * (1 - pb) / treatment_n)
    half = float(stats.norm.isf(alpha / 2)) * se
    lift = diff / pa if pa > 0 else math.nan
    return ZTestResult(pa, pb, diff, lift, z, p, diff - half, diff + half, alpha, control_n, treatment_n)


@dataclass(frozen=True)
class UserRatio:
    """One arm's ratio metric per user: `num[i] / den[i]` summed over users (e.g. conversions / requests).

    Aligned 1-d arrays, one entry per user: `num` ≥ 0, `den` ≥ 1 (a user is in an arm by a request).
    `pre_num` / `pre_den`: the same metric of the same users in a pre-period (0 / 0 for a user without
    one), the CUPED covariate; None when there is none. Raises ValueError on inconsistent input.
    """

    num: np.ndarray
    den: np.ndarray
    pre_num: np.ndarray | None = None
    pre_den: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("num", "den", "pre_num", "pre_den"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, np.asarray(v, np.float64))
        if (self.pre_num is None) != (self.pre_den is None):
            raise ValueError("per-user ratio: give both pre-period arrays (pre_num, pre_den) or neither")
        n = len(self.num)
        arrays = [self.num, self.den] + ([self.pre_num, self.pre_den] if self.pre_num is not None else [])
        if any(a.ndim != 1 or len(a) != n for a in arrays):
            raise ValueError(f"per-user ratio: arrays must be 1-d of one length, got {[a.shape for a in arrays]}")
        if n and ((self.den < 1).any() or (self.num < 0).any() or not np.isfinite(self.num).all()):
            raise ValueError("per-user ratio: every user needs a denominator ≥ 1 and a finite numerator ≥ 0")
        if self.pre_num is not None and n and ((self.pre_den < 0).any() or (self.pre_num < 0).any()):
            raise ValueError("per-user ratio: pre-period counts must not be negative")

    @property
    def users(self) -> int:
        """Number of users."""
        return len(self.num)

    @property
    def rate(self) -> float:
        """Σ num / Σ den (NaN without users)."""
        den = float(self.den.sum())
        return float(self.num.sum()) / den if den else math.nan


@dataclass(frozen=True)
class DeltaEstimate:
    """Treatment − control difference of a ratio metric, its variance (delta method), with and without CUPED.

    `difference` / `variance` are the CUPED-adjusted ones when a covariate was used (`theta` not None),
    else equal to `unadjusted_difference` / `unadjusted_variance`. `variance_reduction` = 1 − adjusted /
    unadjusted variance (None without CUPED). Users and denominators (e.g. requests) per arm.
    """

    control_rate: float
    treatment_rate: float
    difference: float
    variance: float
    unadjusted_difference: float
    unadjusted_variance: float
    theta: float | None
    variance_reduction: float | None
    control_users: int
    treatment_users: int
    control_n: int
    treatment_n: int

    def as_dict(self) -> dict:
        """The estimate as JSON-able numbers."""
        return _dict(self)


def _linearized(x: UserRatio) -> tuple[float, np.ndarray]:
    """The ratio R = Σnum/Σden and each user's influence (num − R·den)/mean(den): Var(R) ≈ Var(infl)/users."""
    r = float(x.num.sum() / x.den.sum())
    return r, (x.num - r * x.den) / float(x.den.mean())


def delta_difference(control: UserRatio, treatment: UserRatio, cuped: bool = True) -> DeltaEstimate:
    """Difference of two per-user ratio metrics with its delta-method variance (Deng, Lu & Litz 2017).

    With `cuped` and pre-period arrays in both arms, the estimate is adjusted by the covariate
    M = pre_num − R_pre · pre_den (the pre-period metric linearized like the metric itself, R_pre pooled
    over both arms), θ = pooled within-arm Cov(influence, M) / Var(M) (Deng et al. 2013): the adjusted
    difference is Δ − θ(M̄_t − M̄_c), its variance Σ_arms Var(influence − θM)/users. Raises ValueError
    when an arm has fewer than 2 users (no variance can be estimated).
    """
    if control.users < 2 or treatment.users < 2:
        raise ValueError(f"the delta method needs 2 users per arm, got {control.users} control and "
                         f"{treatment.users} treatment users")  # fmt: skip
    rc, lc = _linearized(control)
    rt, lt = _linearized(treatment)
    kc, kt = control.users, treatment.users
    diff = rt - rc
    var = float(lc.var(ddof=1) / kc + lt.var(ddof=1) / kt)
    adj_diff, adj_var, theta, reduction = diff, var, None, None
    if cuped and control.pre_num is not None and treatment.pre_num is not None:
        pre_den = float(control.pre_den.sum() + treatment.pre_den.sum())
        if pre_den > 0:
            r_pre = float(control.pre_num.sum() + treatment.pre_num.sum()) / pre_den
            mc, mt = control.pre_num - r_pre * control.pre_den, treatment.pre_num - r_pre * treatment.pre_den
            cov = float(((lc - lc.mean()) * (mc - mc.mean())).sum() + ((lt - lt.mean()) * (mt - mt.mean())).sum())
            vm = float(((mc - mc.mean()) ** 2).sum() + ((mt - mt.mean()) ** 2).sum())
            if vm > 0:
                theta = cov / vm
                adj_diff = diff - theta * float(mt.mean() - mc.mean())
                adj_var = float((lc - theta * mc).var(ddof=1) / kc + (lt - theta * mt).var(ddof=1) / kt)
                reduction = 1.0 - adj_var / var if var > 0 else 0.0
    return DeltaEstimate(rc, rt, adj_diff, adj_var, diff, var, theta, reduction, kc, kt, int(control.den.sum()),
                         int(treatment.den.sum()))  # fmt: skip


@dataclass(frozen=True)
class RatioTestResult:
    """Fixed-horizon z-test of a per-user ratio metric: rates, difference, lift, z, two-sided p, CI at 1 − alpha.

    The `unadjusted_*` numbers are the same test without CUPED (equal when no covariate was used).
    """

    control_rate: float
    treatment_rate: float
    difference: float
    relative_lift: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    control_users: int
    treatment_users: int
    control_n: int
    treatment_n: int
    variance_reduction: float | None
    unadjusted_difference: float
    unadjusted_p_value: float
    unadjusted_ci_low: float
    unadjusted_ci_high: float

    def as_dict(self) -> dict:
        """The result as JSON-able numbers (an undefined lift or z is None)."""
        return _dict(self)


def _z(diff: float, var: float, alpha: float) -> tuple[float, float, float, float]:
    """z, two-sided p, CI low, CI high of a normal estimate; no variance → (NaN, 1, diff, diff)."""
    se = math.sqrt(var) if var > 0 else 0.0
    if se == 0:  # every user alike in both arms: the data cannot show a difference
        return math.nan, 1.0, diff, diff
    z = diff / se
    half = float(stats.norm.isf(alpha / 2)) * se
    return z, float(2 * stats.norm.sf(abs(z))), diff - half, diff + half


def delta_ztest(control: UserRatio, treatment: UserRatio, alpha: float = 0.05, cuped: bool = True) -> RatioTestResult:
    """Two-sided z-test of equal ratio metrics at the user level (delta method, optionally CUPED), CI at 1 − alpha."""
    _check_alpha(alpha)
    est = delta_difference(control, treatment, cuped)
    z, p, low, high = _z(est.difference, est.variance, alpha)
    _, p0, low0, high0 = _z(est.unadjusted_difference, est.unadjusted_variance, alpha)
    lift = est.difference / est.control_rate if est.control_rate > 0 else math.nan
    return RatioTestResult(est.control_rate, est.treatment_rate, est.difference, lift, z, p, low, high, alpha,
                           est.control_users, est.treatment_users, est.control_n, est.treatment_n,
                           est.variance_reduction, est.unadjusted_difference, p0, low0, high0)  # fmt: skip


def msprt_likelihood_ratio(difference, variance, tau: float, theta0: float = 0.0):
    """mSPRT statistic Λ of an estimate `difference` with `variance` V, mixture N(theta0, tau²); numpy arrays work.

    Λ = sqrt(V / (V + τ²)) · exp(τ² (Δ − θ0)² / (2 V (V + τ²))) (Johari et al. 2017); 1 where V is 0.
    """
    diff, v = np.asarray(difference, float), np.asarray(variance, float)
    t2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lr = 0.5 * np.log(v / (v + t2)) + t2 * (diff - theta0) ** 2 / (2 * v * (v + t2))
        lr = np.exp(np.minimum(log_lr, 700.0))  # exp(700) is near float max: p-values that small are all 0
    return np.where(np.isfinite(log_lr) & (v > 0), lr, 1.0)


def msprt_half_width(variance: float, tau: float, alpha: float) -> float:
    """Half width of the mSPRT's always-valid (1 − alpha) interval at one look, for an estimate of `variance`."""
    t2 = tau * tau
    return math.sqrt(variance * (variance + t2) / t2 * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance)))


def mixture_likelihood_ratio(control_successes, control_n, treatment_successes, treatment_n, tau: float,
                             theta0: float = 0.0):  # fmt: skip
    """Per-request mSPRT statistic Λ for H0: p_t − p_c = theta0, mixture N(theta0, tau²); works on numpy arrays.

    Valid only when every trial is independent: for requests of users use `msprt_likelihood_ratio` on a
    `delta_difference`. With V the variance of the observed difference Δ (pooled rate under H0),
    Λ = sqrt(V / (V + τ²)) · exp(τ² (Δ − θ0)² / (2 V (V + τ²))). Where V is 0 (no variation yet) Λ is 1.
    """
    ca, na = np.asarray(control_successes, float), np.asarray(control_n, float)
    cb, nb = np.asarray(treatment_successes, float), np.asarray(treatment_n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = cb / nb - ca / na
        pooled = (ca + cb) / (na + nb)
        v = pooled * (1 - pooled) * (1 / na + 1 / nb)
        t2 = tau * tau
        log_lr = 0.5 * np.log(v / (v + t2)) + t2 * (diff - theta0) ** 2 / (2 * v * (v + t2))
        lr = np.exp(np.minimum(log_lr, 700.0))  # exp(700) is near float max: p-values that small are all 0
    return np.where(np.isfinite(log_lr) & (v > 0), lr, 1.0)


@dataclass(frozen=True)
class SequentialResult:
    """One look of the mSPRT: likelihood ratio, always-valid p-value and CI of the difference, with and without CUPED."""

    control_rate: float
    treatment_rate: float
    difference: float
    likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float
    looks: int
    alpha: float
    tau: float
    control_users: int
    treatment_users: int
    variance_reduction: float | None = None
    unadjusted_p_value: float = 1.0
    unadjusted_ci_low: float = -math.inf
    unadjusted_ci_high: float = math.inf

    def as_dict(self) -> dict:
        """The result as JSON-able numbers (an unbounded CI side is None)."""
        return _dict(self)


@dataclass
class SequentialTest:
    """Always-valid test of a per-user ratio metric; feed the cumulative `DeltaEstimate` after every batch.

    The p-value is the running minimum of 1/Λ, so it never rises and may be acted on at any look; the
    CI is the running intersection of {θ : Λ(θ) < 1/alpha}. `tau` is the mixing standard deviation of
    the effect (in rate units): the test is most sensitive to effects of about that size. Looks with
    fewer than `min_n` users in an arm are not taken, because the plug-in variance is unreliable there.
    The same is tracked for the estimate without CUPED (`unadjusted_*`), to report both.
    """

    alpha: float = 0.05
    tau: float = 0.02
    min_n: int = 50
    p_value: float = 1.0
    ci_low: float = -math.inf
    ci_high: float = math.inf
    looks: int = 0
    unadjusted_p_value: float = 1.0
    unadjusted_ci_low: float = -math.inf
    unadjusted_ci_high: float = math.inf

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        if not self.tau > 0 or not math.isfinite(self.tau):
            raise ValueError(f"mixing standard deviation tau={self.tau!r} must be a positive number")
        _check_count("min_n", self.min_n)

    def update(self, estimate: DeltaEstimate) -> SequentialResult:
        """Take one look at the cumulative estimate; return the always-valid p-value and CI so far."""
        e = estimate
        lr = 1.0
        if min(e.control_users, e.treatment_users) >= max(self.min_n, 2):
            self.looks += 1
            lr = float(msprt_likelihood_ratio(e.difference, e.variance, self.tau))
            self.p_value = min(self.p_value, 1.0 / lr)
            self.unadjusted_p_value = min(self.unadjusted_p_value, 1.0 / float(
                msprt_likelihood_ratio(e.unadjusted_difference, e.unadjusted_variance, self.tau)))  # fmt: skip
            if e.variance > 0:
                half = msprt_half_width(e.variance, self.tau, self.alpha)
                self.ci_low, self.ci_high = max(self.ci_low, e.difference - half), min(self.ci_high, e.difference + half)
            if e.unadjusted_variance > 0:
                half = msprt_half_width(e.unadjusted_variance, self.tau, self.alpha)
                self.unadjusted_ci_low = max(self.unadjusted_ci_low, e.unadjusted_difference - half)
                self.unadjusted_ci_high = min(self.unadjusted_ci_high, e.unadjusted_difference + half)
        return SequentialResult(e.control_rate, e.treatment_rate, e.difference, lr, self.p_value, self.ci_low,
                                self.ci_high, self.looks, self.alpha, self.tau, e.control_users, e.treatment_users,
                                e.variance_reduction, self.unadjusted_p_value, self.unadjusted_ci_low,
                                self.unadjusted_ci_high)  # fmt: skip

    def as_dict(self) -> dict:
        """The test's running state (to save and restore with `SequentialTest.from_dict`)."""
        return _dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SequentialTest:
        """Restore a test saved with `as_dict` (an unbounded CI side is saved as None)."""
        d = dict(d)
        for side, inf in (("ci_low", -math.inf), ("ci_high", math.inf), ("unadjusted_ci_low", -math.inf),
                          ("unadjusted_ci_high", math.inf)):  # fmt: skip
            d[side] = inf if d.get(side) is None else d[side]
        return cls(**d)


def _check_count(name: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{name} {n!r} must be a non-negative integer")


def _check_proportion(arm: str, successes: int, n: int) -> None:
    _check_count(f"{arm} successes", successes)
    _check_count(f"{arm} trials", n)
    if successes > n:
        raise ValueError(f"{arm} has {successes} successes in only {n} trials")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"significance level alpha={alpha!r} must be between 0 and 1 (exclusive)")


# --- the canary controller ---------------------------------------------------------------------------
RUNNING, PAUSED, PROMOTED, ROLLED_BACK = "running", "paused", "promoted", "rolled_back"
TESTS = ("msprt", "z")


@dataclass(frozen=True)
class CanaryPlan:
    """How a challenger is rolled out: shares per step and the rules that judge a step.

    - `steps`: increasing challenger shares in (0, 1]; passing the last step promotes (a last step of 1.0
      is the promotion itself, since with no champion traffic left there is nothing to compare).
    - `min_requests`: requests each arm needs in a step before non-inferiority may be judged.
    - `min_users`: users each arm needs before a test looks (the per-user variance needs a sample).
    - `alpha`: significance level of the guardrail and non-inferiority tests.
    - `margin`: non-inferiority margin on the conversion rate, absolute (0.02 = 2 percentage points).
    - `error_margin`: an error-rate increase above this (absolute) and significant rolls back.
    - `max_step_seconds`: stream time a step may take without a verdict before it rolls back.
    - `test`: "msprt" (always valid, safe to check every tick) or "z" (fixed-horizon z-test once the
      minimum sample is reached; checked every tick it raises false alarms above alpha).
    - `tau`: mixing standard deviation of the mSPRT, about the effect size that matters.
    - `max_latency_p99_ms`: optional ceiling on the challenger's p99 response time (None: not checked).
    - `srm_alpha`: sample-ratio mismatch alarm level.
    - `srm_min_users`: users (both arms) a step needs before the mismatch check runs.
    - `cuped`: adjust conversion by each user's pre-period conversion (CUPED); decisions report both.
    """

    steps: tuple[float, ...] = (0.1, 0.5, 1.0)
    min_requests: int = 1000
    alpha: float = 0.05
    margin: float = 0.02
    error_margin: float = 0.01
    max_step_seconds: float = 6 * 3600.0
    test: str = "msprt"
    tau: float = 0.02
    max_latency_p99_ms: float | None = None
    srm_alpha: float = SRM_ALPHA
    srm_min_users: int = 200
    min_users: int = 50
    cuped: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
        s = self.steps
        if not s or not all(0.0 < x <= 1.0 for x in s) or any(b <= a for a, b in pairwise(s)):
            raise ValueError(f"canary steps {s!r} must be strictly increasing shares in (0, 1]")
        if s[0] >= 1.0:
            raise ValueError(f"canary steps {s!r} need a first share below 1 to compare the arms")
        _check_count("min_requests", self.min_requests)
        _check_count("srm_min_users", self.srm_min_users)
        _check_count("min_users", self.min_users)
        _check_alpha(self.alpha)
        _check_alpha(self.srm_alpha)
        for name in ("margin", "error_margin"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} {getattr(self, name)!r} must be in [0, 1) (an absolute rate difference)")
        if not self.max_step_seconds > 0:
            raise ValueError(f"max_step_seconds {self.max_step_seconds!r} must be positive")
        if self.test not in TESTS:
            raise ValueError(f"test {self.test!r} is unknown: choose one of {', '.join(TESTS)}")
        if not self.tau > 0:
            raise ValueError(f"tau {self.tau!r} must be positive")
        if self.max_latency_p99_ms is not None and not self.max_latency_p99_ms > 0:
            raise ValueError(f"max_latency_p99_ms {self.max_latency_p99_ms!r} must be positive or None")

    def as_dict(self) -> dict:
        """The plan as JSON."""
        return {**asdict(self), "steps": list(self.steps)}

    @classmethod
    def from_dict(cls, d: dict) -> CanaryPlan:
        """A plan from `as_dict` output; unknown keys are an error."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"canary plan has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass(frozen=True)
class Decision:
    """One verdict of the controller: action, the share after it, why, and the numbers behind it."""

    action: str  # wait | advance | promote | rollback | pause | resume
    time: datetime
    step: int
    share: float
    reason: str
    test: str | None = None
    p_value: float | None = None
    effect: float | None = None  # challenger − champion conversion rate
    relative_lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    srm: SRMResult | None = None
    champion: dict | None = None
    challenger: dict | None = None
    by: str | None = None
    variance_reduction: float | None = None  # CUPED: 1 − adjusted / unadjusted variance of the effect
    unadjusted: dict | None = None  # p_value, effect, ci_low, ci_high of the same test without CUPED

    def as_dict(self) -> dict:
        """The decision as JSON-able values (time as ISO text)."""
        d = _dict(self)
        if self.unadjusted is not None:
            d["unadjusted"] = {k: _num(v) if isinstance(v, float) else v for k, v in self.unadjusted.items()}
        d["time"] = self.time.isoformat()
        d["srm"] = None if self.srm is None else self.srm.as_dict()
        return d


def salt_of(name: str) -> int:
    """The experiment's salt: the first 63 bits of SHA-256 of its name, so a new name reshuffles users."""
    if not name or not isinstance(name, str):
        raise ValueError(f"experiment name {name!r} is invalid: give a non-empty string")
    # 63 bits: the serving replicas accept salts in 0..2**63 − 1 (a signed 64-bit integer in JSON and SQL)
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") >> 1


@dataclass
class Experiment:
    """A canary release in progress: state machine over the plan's steps, fed with per-arm metrics."""

    name: str
    champion: str
    challenger: str
    plan: CanaryPlan
    started_at: datetime
    step_started_at: datetime
    last_time: datetime
    status: str = RUNNING
    step: int = 0
    conversion_test: SequentialTest = field(default_factory=SequentialTest)
    error_test: SequentialTest = field(default_factory=SequentialTest)
    decisions: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, champion: str, challenger: str, plan: CanaryPlan, t: datetime) -> Experiment:
        """A new experiment at stream time `t`, at the plan's first share."""
        salt_of(name)
        exp = cls(name, champion, challenger, plan, t, t, t)
        exp._reset_tests()
        logger.info("experiment %s: %s vs %s, steps %s, salt %d", name, champion, challenger, plan.steps, exp.salt)
        return exp

    @property
    def salt(self) -> int:
        """The salt that assigns users to arms (from the name)."""
        return salt_of(self.name)

    @property
    def share(self) -> float:
        """The challenger's share of users now: the step's share, 1 once promoted, 0 once rolled back."""
        if self.status == PROMOTED:
            return 1.0
        if self.status == ROLLED_BACK:
            return 0.0
        return self.plan.steps[self.step]

    @property
    def finished(self) -> bool:
        """True once promoted or rolled back."""
        return self.status in (PROMOTED, ROLLED_BACK)

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self, t: datetime, champion: ArmMetrics, challenger: ArmMetrics) -> Decision:
        """Judge the current step at stream time `t` from each arm's metrics since the step started."""
        self._check_open("cannot evaluate")
        self._check_time(t)
        self._check_metrics(champion, challenger)
        self.last_time = t
        counts = {"champion": _counts(champion), "challenger": _counts(challenger)}
        if self.status == PAUSED:
            return self._record(Decision("wait", t, self.step, self.share, "paused", **counts))
        plan = self.plan
        # The chi-square needs a sample: with a few dozen users one early burst looks like a mismatch.
        srm = (srm_check(champion.users, challenger.users, self.share, plan.srm_alpha)
               if champion.users + challenger.users >= plan.srm_min_users else None)  # fmt: skip
        if srm is not None and srm.mismatch:
            why = (f"sample ratio mismatch: {champion.users} champion vs {challenger.users} challenger users at "
                   f"share {self.share:g} (chi2={srm.chi2:.1f}, p={srm.p_value:.2g} < {plan.srm_alpha:g})")
            return self._finish(Decision("rollback", t, self.step, 0.0, why, srm=srm, **counts))
        conv_c, conv_t = _ratio(champion, "conversions"), _ratio(challenger, "conversions")
        err_c, err_t = _ratio(champion, "errors"), _ratio(challenger, "errors")
        looks = min(champion.users, challenger.users) >= max(plan.min_users, 2)
        conv_est = delta_difference(conv_c, conv_t, plan.cuped) if looks else None
        err_est = delta_difference(err_c, err_t, False) if looks else None
        conv = self.conversion_test.update(conv_est) if conv_est else None
        errs = self.error_test.update(err_est) if err_est else None
        enough = looks and min(champion.requests, challenger.requests) >= plan.min_requests
        unadjusted = None
        if plan.test == "msprt":
            verdict = (_Verdict("msprt", conv.p_value, conv.difference, conv.ci_low, conv.ci_high) if conv
                       else _Verdict("msprt", None, None, None, None))  # fmt: skip
            err_p, err_diff = (errs.p_value, errs.difference) if errs else (None, None)
            if conv and conv.variance_reduction is not None:
                unadjusted = {"p_value": conv.unadjusted_p_value, "effect": conv_est.unadjusted_difference,
                              "ci_low": conv.unadjusted_ci_low, "ci_high": conv.unadjusted_ci_high}  # fmt: skip
        else:
            # one-sided non-inferiority at alpha is the lower end of the two-sided 1 − 2·alpha interval
            z = delta_ztest(conv_c, conv_t, 2 * plan.alpha, plan.cuped) if enough else None
            verdict = (_Verdict("z", z.p_value, z.difference, z.ci_low, z.ci_high) if z
                       else _Verdict("z", None, conv_est.difference if conv_est else None, None, None))  # fmt: skip
            ze = delta_ztest(err_c, err_t, plan.alpha, False) if enough else None
            err_p, err_diff = (ze.p_value, ze.difference) if ze else (None, None)
            if z and z.variance_reduction is not None:
                unadjusted = {"p_value": z.unadjusted_p_value, "effect": z.unadjusted_difference,
                              "ci_low": z.unadjusted_ci_low, "ci_high": z.unadjusted_ci_high}  # fmt: skip
        control_rate, treatment_rate = conv_c.rate, conv_t.rate
        lift = (verdict.effect / control_rate if verdict.effect is not None and control_rate
                and math.isfinite(control_rate) else None)  # fmt: skip
        numbers = dict(test=verdict.test, p_value=verdict.p_value, effect=verdict.effect, relative_lift=lift,
                       ci_low=verdict.ci_low, ci_high=verdict.ci_high, srm=srm, unadjusted=unadjusted,
                       variance_reduction=conv_est.variance_reduction if conv_est else None, **counts)  # fmt: skip
        if verdict.p_value is not None and verdict.p_value < plan.alpha and verdict.effect < 0:
            why = (f"challenger converts worse: {treatment_rate:.4f} vs {control_rate:.4f} per request, "
                   f"{verdict.test} on {challenger.users} and {champion.users} users p={verdict.p_value:.2g} "
                   f"< {plan.alpha:g}")  # fmt: skip
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        if err_p is not None and err_p < plan.alpha and err_diff > plan.error_margin:
            why = (f"challenger error rate {err_t.rate:.4f} vs champion {err_c.rate:.4f}: "
                   f"+{err_diff:.4f} > margin {plan.error_margin:g} ({verdict.test} p={err_p:.2g})")
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        p99 = challenger.latency_p99_ms
        if enough and plan.max_latency_p99_ms is not None and p99 is not None and p99 > plan.max_latency_p99_ms:
            why = f"challenger p99 latency {p99:.0f} ms above the limit of {plan.max_latency_p99_ms:g} ms"
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        if enough and verdict.ci_low is not None and verdict.ci_low > -plan.margin:
            why = (f"challenger not worse than the margin: lower bound {verdict.ci_low:+.4f} > -{plan.margin:g} "
                   f"with {challenger.requests} challenger and {champion.requests} champion requests")
            return self._advance(t, why, numbers)
        elapsed = (t - self.step_started_at).total_seconds()
        if elapsed >= plan.max_step_seconds:
            why = (f"step {self.step} (share {self.share:g}) reached its limit of {plan.max_step_seconds:g} s "
                   f"without a verdict: " + self._waiting_for(champion, challenger, verdict))
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        why = self._waiting_for(champion, challenger, verdict)
        return self._record(Decision("wait", t, self.step, self.share, why, **numbers))

    def _waiting_for(self, champion: ArmMetrics, challenger: ArmMetrics, verdict: _Verdict) -> str:
        users = min(champion.users, challenger.users)
        if users < max(self.plan.min_users, 2):
            return f"{users} of {self.plan.min_users} users in the smaller arm"
        n = min(champion.requests, challenger.requests)
        if n < self.plan.min_requests:
            return f"{n} of {self.plan.min_requests} requests in the smaller arm"
        low = "unknown" if verdict.ci_low is None or not math.isfinite(verdict.ci_low) else f"{verdict.ci_low:+.4f}"
        return f"non-inferiority not shown yet: lower bound {low} vs -{self.plan.margin:g}"

    def _advance(self, t: datetime, why: str, numbers: dict) -> Decision:
        nxt = self.step + 1
        if nxt >= len(self.plan.steps) or self.plan.steps[nxt] >= 1.0:
            return self._finish(Decision("promote", t, self.step, 1.0, why, **numbers), PROMOTED)
        self.step = nxt
        self.step_started_at = t
        self._reset_tests()
        logger.info("experiment %s: step %d, challenger share %g", self.name, nxt, self.share)
        return self._record(Decision("advance", t, nxt, self.share, why, **numbers))

    # --- manual overrides ------------------------------------------------------------------------
    def promote(self, t: datetime, by: str, reason: str) -> Decision:
        """Promote the challenger now (a person decided); records who and why."""
        self._manual(t, by, reason, "promote")
        return self._finish(Decision("promote", t, self.step, 1.0, reason, by=by), PROMOTED)

    def rollback(self, t: datetime, by: str, reason: str) -> Decision:
        """Roll back to the champion now (a person decided); records who and why."""
        self._manual(t, by, reason, "roll back")
        return self._finish(Decision("rollback", t, self.step, 0.0, reason, by=by))

    def pause(self, t: datetime, by: str, reason: str) -> Decision:
        """Hold the current share: evaluations answer wait until `resume`; records who and why."""
        self._manual(t, by, reason, "pause")
        if self.status == PAUSED:
            raise ExperimentError(self.name, "cannot pause: it is paused already")
        self.status = PAUSED
        return self._record(Decision("pause", t, self.step, self.share, reason, by=by))

    def resume(self, t: datetime, by: str, reason: str) -> Decision:
        """Continue a paused experiment; the step starts over at `t` (its clock and its tests)."""
        self._manual(t, by, reason, "resume")
        if self.status != PAUSED:
            raise ExperimentError(self.name, f"cannot resume: it is {self.status}, not paused")
        self.status = RUNNING
        self.step_started_at = t
        self._reset_tests()
        return self._record(Decision("resume", t, self.step, self.share, reason, by=by))

    def _manual(self, t: datetime, by: str, reason: str, what: str) -> None:
        self._check_open(f"cannot {what}")
        if not by or not reason:
            raise ValueError(f"experiment {self.name!r}: a manual {what} needs who (by) and why (reason)")
        self._check_time(t)
        self.last_time = t

    # --- persistence -----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """The whole state as JSON-able values (what `save` writes)."""
        return {"format": FORMAT, "name": self.name, "salt": self.salt, "share": self.share,
                "champion": self.champion, "challenger": self.challenger, "plan": self.plan.as_dict(),
                "status": self.status, "step": self.step, "started_at": self.started_at.isoformat(),
                "step_started_at": self.step_started_at.isoformat(), "last_time": self.last_time.isoformat(),
                "conversion_test": self.conversion_test.as_dict(), "error_test": self.error_test.as_dict(),
                "decisions": list(self.decisions)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Experiment:
        """Restore an experiment from `as_dict` output; a salt that does not match the name is an error."""
        if d.get("format") != FORMAT:
            raise ValueError(f"experiment state has format {d.get('format')!r}, expected {FORMAT!r}")
        exp = cls(d["name"], d["champion"], d["challenger"], CanaryPlan.from_dict(d["plan"]),
                  datetime.fromisoformat(d["started_at"]), datetime.fromisoformat(d["step_started_at"]),
                  datetime.fromisoformat(d["last_time"]), d["status"], int(d["step"]),
                  SequentialTest.from_dict(d["conversion_test"]), SequentialTest.from_dict(d["error_test"]),
                  list(d["decisions"]))  # fmt: skip
        if d["salt"] != exp.salt:
            raise ValueError(f"experiment {exp.name!r}: saved salt {d['salt']} is not the salt of its name")
        if exp.status not in (RUNNING, PAUSED, PROMOTED, ROLLED_BACK) or not 0 <= exp.step < len(exp.plan.steps):
            raise ValueError(f"experiment {exp.name!r}: status {exp.status!r} / step {exp.step} is not valid")
        return exp

    def save(self, path: Path | str) -> None:
        """Write the state as JSON, atomically (a crash leaves the old file or the new one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1, allow_nan=False))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path | str) -> Experiment:
        """Read a state written by `save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"experiment state {path} cannot be read: {exc!r}") from exc

    # --- helpers ---------------------------------------------------------------------------------
    def _reset_tests(self) -> None:
        self.conversion_test = SequentialTest(self.plan.alpha, self.plan.tau, self.plan.min_users)
        self.error_test = SequentialTest(self.plan.alpha, self.plan.tau, self.plan.min_users)

    def _record(self, decision: Decision) -> Decision:
        self.decisions.append(decision.as_dict())
        return decision

    def _finish(self, decision: Decision, status: str = ROLLED_BACK) -> Decision:
        self.status = status
        logger.info("experiment %s: %s at %s: %s", self.name, decision.action, decision.time, decision.reason)
        return self._record(decision)

    def _check_open(self, what: str) -> None:
        if self.finished:
            raise ExperimentError(self.name, f"{what}: it is {self.status} already")

    def _check_time(self, t: datetime) -> None:
        if t < self.last_time:
            raise ValueError(f"experiment {self.name!r}: stream time {t.isoformat()} is before the last one seen, "
                             f"{self.last_time.isoformat()}")  # fmt: skip

    def _check_metrics(self, champion: ArmMetrics, challenger: ArmMetrics) -> None:
        for arm, m in zip(ARMS, (champion, challenger), strict=True):
            if m.arm != arm:
                raise ValueError(f"experiment {self.name!r}: metrics of arm {m.arm!r} given as the {arm}")
            if m.salt != self.salt or m.share != self.share:
                raise ValueError(f"experiment {self.name!r}: {arm} metrics are for salt {m.salt}, share {m.share:g}; "
                                 f"the experiment has salt {self.salt}, share {self.share:g}")  # fmt: skip
            if m.start < self.step_started_at:
                raise ValueError(f"experiment {self.name!r}: {arm} metrics start at {m.start.isoformat()}, before "
                                 f"the step started at {self.step_started_at.isoformat()} (another share)")  # fmt: skip
            if m.per_user is None:
                raise ValueError(f"experiment {self.name!r}: {arm} metrics lack per-user totals; users are the unit "
                                 "of randomization, so the tests need them")  # fmt: skip


@dataclass(frozen=True)
class _Verdict:
    test: str
    p_value: float | None
    effect: float | None
    ci_low: float | None
    ci_high: float | None


def _ratio(m: ArmMetrics, what: str) -> UserRatio:
    """An arm's per-user ratio: conversions or errors over requests, conversions with the pre-period covariate."""
    u = m.per_user
    if what == "conversions":
        return UserRatio(u.conversions, u.requests, u.pre_conversions, u.pre_requests)
    return UserRatio(u.errors, u.requests)


def _counts(m: ArmMetrics) -> dict:
    return {"users": m.users, "requests": m.requests, "conversions": m.conversions, "errors": m.errors_total,
            "latency_p99_ms": _num(m.latency_p99_ms)}  # fmt: skip


def tick(store: EventStore, experiment: Experiment, t: datetime,
         conversion_window: timedelta | None = None) -> Decision:  # fmt: skip
    """One operator tick: read both arms' metrics for the current step up to `t` from the store, evaluate.

    The CUPED pre-period ends where the experiment started: later steps' users saw the challenger before.
    """
    window = {} if conversion_window is None else {"conversion_window": conversion_window}
    metrics = arm_metrics(store, experiment.step_started_at, t, experiment.salt, experiment.share,
                          pre_end=experiment.started_at, **window)  # fmt: skip
    return experiment.evaluate(t, metrics["champion"], metrics["challenger"])
