"""The statistics of canary and A/B releases, per user (the unit of randomization).

Users are the unit of randomization (the split hashes the user id), so every per-request metric
(conversion, errors) is analysed per user: a ratio of per-user sums whose variance comes from the
delta method (Deng, Lu & Litz, "Trustworthy analysis of online A/B tests", WSDM 2017). Requests of one
user are correlated; a test that treats them as independent underestimates the variance and rolls back
identical models (A/A false positives of 18-35% instead of 5%, see `benchmarks/aa_experiments.py`).

Each result is a frozen dataclass with `as_dict()`:
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
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SRM_ALPHA = 0.001  # common practice: an SRM alarm at p < 0.001 keeps false alarms rare under frequent checks


def json_number(x: float | None) -> float | None:
    """A JSON-able number: NaN and infinities become None."""
    return None if x is None or not math.isfinite(x) else float(x)


def json_dict(obj: object) -> dict:
    """A dataclass's fields as a dict, floats through `json_number`."""
    return {f.name: (json_number(v) if isinstance(v := getattr(obj, f.name), float) else v) for f in fields(obj)}


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
        return {**json_dict(self), "mismatch": self.mismatch}


def srm_check(champion: int, challenger: int, share: float, alpha: float = SRM_ALPHA) -> SRMResult:
    """Chi-square goodness of fit of (champion, challenger) counts against the challenger `share`."""
    check_count("champion count", champion)
    check_count("challenger count", challenger)
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
        return json_dict(self)


def two_proportion_ztest(
    control_successes: int, control_n: int, treatment_successes: int, treatment_n: int, alpha: float = 0.05
) -> ZTestResult:
    """Two-sided z-test of p_treatment = p_control (pooled SE) with a Wald CI (unpooled SE) at 1 − alpha.

    Valid only when every trial is independent (one per user); for requests use `delta_ztest`.
    """
    check_proportion("control", control_successes, control_n)
    check_proportion("treatment", treatment_successes, treatment_n)
    check_alpha(alpha)
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
        return json_dict(self)


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
        raise ValueError(
            f"the delta method needs 2 users per arm, got {control.users} control and {treatment.users} treatment users"
        )
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
    return DeltaEstimate(
        rc, rt, adj_diff, adj_var, diff, var, theta, reduction, kc, kt, int(control.den.sum()), int(treatment.den.sum())
    )


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
        return json_dict(self)


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
    check_alpha(alpha)
    est = delta_difference(control, treatment, cuped)
    z, p, low, high = _z(est.difference, est.variance, alpha)
    _, p0, low0, high0 = _z(est.unadjusted_difference, est.unadjusted_variance, alpha)
    lift = est.difference / est.control_rate if est.control_rate > 0 else math.nan
    return RatioTestResult(
        est.control_rate,
        est.treatment_rate,
        est.difference,
        lift,
        z,
        p,
        low,
        high,
        alpha,
        est.control_users,
        est.treatment_users,
        est.control_n,
        est.treatment_n,
        est.variance_reduction,
        est.unadjusted_difference,
        p0,
        low0,
        high0,
    )


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


def mixture_likelihood_ratio(
    control_successes, control_n, treatment_successes, treatment_n, tau: float, theta0: float = 0.0
):
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
        return json_dict(self)


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
        check_alpha(self.alpha)
        if not self.tau > 0 or not math.isfinite(self.tau):
            raise ValueError(f"mixing standard deviation tau={self.tau!r} must be a positive number")
        check_count("min_n", self.min_n)

    def update(self, estimate: DeltaEstimate) -> SequentialResult:
        """Take one look at the cumulative estimate; return the always-valid p-value and CI so far."""
        e = estimate
        lr = 1.0
        if min(e.control_users, e.treatment_users) >= max(self.min_n, 2):
            self.looks += 1
            lr = float(msprt_likelihood_ratio(e.difference, e.variance, self.tau))
            self.p_value = min(self.p_value, 1.0 / lr)
            self.unadjusted_p_value = min(
                self.unadjusted_p_value,
                1.0 / float(msprt_likelihood_ratio(e.unadjusted_difference, e.unadjusted_variance, self.tau)),
            )
            if e.variance > 0:
                half = msprt_half_width(e.variance, self.tau, self.alpha)
                self.ci_low, self.ci_high = (
                    max(self.ci_low, e.difference - half),
                    min(self.ci_high, e.difference + half),
                )
            if e.unadjusted_variance > 0:
                half = msprt_half_width(e.unadjusted_variance, self.tau, self.alpha)
                self.unadjusted_ci_low = max(self.unadjusted_ci_low, e.unadjusted_difference - half)
                self.unadjusted_ci_high = min(self.unadjusted_ci_high, e.unadjusted_difference + half)
        return SequentialResult(
            e.control_rate,
            e.treatment_rate,
            e.difference,
            lr,
            self.p_value,
            self.ci_low,
            self.ci_high,
            self.looks,
            self.alpha,
            self.tau,
            e.control_users,
            e.treatment_users,
            e.variance_reduction,
            self.unadjusted_p_value,
            self.unadjusted_ci_low,
            self.unadjusted_ci_high,
        )

    def as_dict(self) -> dict:
        """The test's running state (to save and restore with `SequentialTest.from_dict`)."""
        return json_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SequentialTest:
        """Restore a test saved with `as_dict` (an unbounded CI side is saved as None)."""
        d = dict(d)
        for side, inf in (
            ("ci_low", -math.inf),
            ("ci_high", math.inf),
            ("unadjusted_ci_low", -math.inf),
            ("unadjusted_ci_high", math.inf),
        ):
            d[side] = inf if d.get(side) is None else d[side]
        return cls(**d)


def check_count(name: str, n: object) -> None:
    """Raise ValueError naming `name` unless `n` is a non-negative integer."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{name} {n!r} must be a non-negative integer")


def check_proportion(arm: str, successes: int, n: int) -> None:
    """Raise ValueError naming `arm` unless 0 <= successes <= n are integers."""
    check_count(f"{arm} successes", successes)
    check_count(f"{arm} trials", n)
    if successes > n:
        raise ValueError(f"{arm} has {successes} successes in only {n} trials")


def check_alpha(alpha: float) -> None:
    """Raise ValueError unless 0 < alpha < 1."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"significance level alpha={alpha!r} must be between 0 and 1 (exclusive)")
