"""Experiment statistics against hand calculations, A/A simulations, and the canary controller's verdicts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
import pytest

from movielab.recommender.errors import ExperimentError
from movielab.recommender.monitoring.online import ArmMetrics, UserTotals
from movielab.recommender.release.canary import CanaryPlan, Experiment, salt_of
from movielab.recommender.release.statistics import (
    SequentialTest,
    UserRatio,
    delta_difference,
    delta_ztest,
    mixture_likelihood_ratio,
    msprt_likelihood_ratio,
    srm_check,
    two_proportion_ztest,
)

T0 = datetime(2026, 3, 20, 8, 0, 0)


def chi2_1df_sf(x: float) -> float:
    """P(chi-square with 1 df > x) = P(|Z| > sqrt(x)), by hand."""
    return math.erfc(math.sqrt(x / 2))


# --- sample-ratio mismatch -------------------------------------------------------------------------
def test_srm_fires_on_45_55_with_large_n() -> None:
    r = srm_check(45_000, 55_000, 0.5)
    assert r.chi2 == pytest.approx(2 * 5000**2 / 50_000)  # (45000 − 50000)²/50000 twice
    assert r.p_value == pytest.approx(chi2_1df_sf(1000), rel=1e-9) and r.mismatch
    assert r.as_dict()["mismatch"] is True and json.dumps(r.as_dict())


@pytest.mark.parametrize(
    ("champion", "challenger", "share"),
    [(5_000, 5_000, 0.5), (5_050, 4_950, 0.5), (9_000, 1_000, 0.1), (89_800, 10_200, 0.1)],
)
def test_srm_is_quiet_on_a_fair_split(champion: int, challenger: int, share: float) -> None:
    r = srm_check(champion, challenger, share)
    n = champion + challenger
    chi2 = (champion - n * (1 - share)) ** 2 / (n * (1 - share)) + (challenger - n * share) ** 2 / (n * share)
    assert r.chi2 == pytest.approx(chi2) and r.p_value == pytest.approx(chi2_1df_sf(chi2))
    assert not r.mismatch


def test_srm_at_a_share_of_zero_or_one() -> None:
    assert srm_check(100, 0, 0.0).p_value == 1.0 and srm_check(100, 1, 0.0).mismatch
    assert srm_check(0, 0, 0.3).p_value == 1.0


def test_srm_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="challenger count -1"):
        srm_check(10, -1, 0.5)
    with pytest.raises(ValueError, match="challenger share 1.5"):
        srm_check(10, 10, 1.5)


# --- two-proportion z-test -------------------------------------------------------------------------
def test_ztest_by_hand() -> None:
    r = two_proportion_ztest(200, 1000, 240, 1000)
    pooled_se = math.sqrt(0.22 * 0.78 * (2 / 1000))
    se = math.sqrt(0.2 * 0.8 / 1000 + 0.24 * 0.76 / 1000)
    assert (r.control_rate, r.treatment_rate) == (0.2, 0.24)
    assert r.difference == pytest.approx(0.04) and r.relative_lift == pytest.approx(0.2)
    assert r.z == pytest.approx(0.04 / pooled_se) and r.z == pytest.approx(2.15917, abs=1e-5)
    assert r.p_value == pytest.approx(math.erfc(r.z / math.sqrt(2)))
    assert (r.ci_low, r.ci_high) == pytest.approx((0.04 - 1.959964 * se, 0.04 + 1.959964 * se), abs=1e-6)
    assert r.p_value < 0.05 and r.ci_low > 0  # the test and the interval agree here


def test_ztest_edge_cases_and_errors() -> None:
    same = two_proportion_ztest(0, 50, 0, 80)
    assert same.p_value == 1.0 and math.isnan(same.z) and same.as_dict()["z"] is None
    assert same.as_dict()["relative_lift"] is None
    with pytest.raises(ValueError, match="treatment has 11 successes in only 10 trials"):
        two_proportion_ztest(1, 10, 11, 10)
    with pytest.raises(ValueError, match="needs trials in both arms"):
        two_proportion_ztest(0, 0, 1, 10)
    with pytest.raises(ValueError, match="alpha=1.0"):
        two_proportion_ztest(1, 10, 1, 10, alpha=1.0)


# --- mSPRT -----------------------------------------------------------------------------------------
def test_msprt_equals_the_papers_form_for_equal_arms() -> None:
    # Johari et al. for n pairs with variance sigma² per observation:
    # Λ = sqrt(2σ² / (2σ² + nτ²)) · exp(n²τ²Δ² / (4σ²(2σ² + nτ²)))
    n, a, b, tau = 1000, 200, 300, 0.02
    s2 = 0.25 * 0.75  # pooled rate 0.25
    delta = 0.1
    want = math.sqrt(2 * s2 / (2 * s2 + n * tau**2)) * math.exp(
        n**2 * tau**2 * delta**2 / (4 * s2 * (2 * s2 + n * tau**2))
    )
    assert float(mixture_likelihood_ratio(a, n, b, n, tau)) == pytest.approx(want, rel=1e-9)
    assert float(mixture_likelihood_ratio(0, n, 0, n, tau)) == 1.0  # no variation: no evidence
    assert float(msprt_likelihood_ratio(delta, 2 * s2 / n, tau)) == pytest.approx(want, rel=1e-9)
    assert float(msprt_likelihood_ratio(0.1, 0.0, tau)) == 1.0


def users(rng: np.random.Generator, n: int, rate: float, per_user: int = 3) -> UserRatio:
    """`n` users with 1 + Poisson(per_user − 1) requests, each converting at its own Beta rate of mean `rate`."""
    req = 1 + rng.poisson(per_user - 1, n)
    own = rng.beta(2 * rate / (1 - rate), 2, n)  # Beta(a, 2) with mean `rate`
    return UserRatio(rng.binomial(req, own), req)


def test_sequential_p_value_never_rises_and_cis_nest() -> None:
    rng = np.random.default_rng(3)
    test = SequentialTest(alpha=0.05, tau=0.02)
    a, b = users(rng, 0, 0.30), users(rng, 0, 0.27)
    results = []
    for _ in range(40):
        more_a, more_b = users(rng, 150, 0.30), users(rng, 150, 0.27)
        a = UserRatio(np.r_[a.num, more_a.num], np.r_[a.den, more_a.den])
        b = UserRatio(np.r_[b.num, more_b.num], np.r_[b.den, more_b.den])
        results.append(test.update(delta_difference(a, b)))
    ps = [r.p_value for r in results]
    assert all(q <= p for p, q in pairwise(ps))
    assert all(
        r.p_value == pytest.approx(min(1.0, min(1 / s.likelihood_ratio for s in results[: i + 1])))
        for i, r in enumerate(results)
    )
    lows, highs = [r.ci_low for r in results], [r.ci_high for r in results]
    assert all(q >= p for p, q in pairwise(lows))
    assert all(q <= p for p, q in pairwise(highs))
    assert ps[-1] < 0.05 and highs[-1] < 0  # a 3-point drop over 6000 users a side is found
    assert results[-1].variance_reduction is None and results[-1].unadjusted_p_value == results[-1].p_value


def test_sequential_test_waits_for_min_users_and_restores() -> None:
    rng = np.random.default_rng(1)
    test = SequentialTest(min_n=100)
    r = test.update(delta_difference(users(rng, 50, 0.2), users(rng, 50, 0.8)))
    assert (r.looks, r.p_value, r.likelihood_ratio) == (0, 1.0, 1.0)
    test.update(delta_difference(users(rng, 200, 0.15), users(rng, 200, 0.45)))
    again = SequentialTest.from_dict(json.loads(json.dumps(test.as_dict())))
    assert again == test and again.p_value < 0.05


def test_delta_method_by_hand() -> None:
    # control: users (1/2, 0/1, 3/3), R = 4/6; treatment: (2/2, 1/4), R = 3/6
    c, t = UserRatio([1, 0, 3], [2, 1, 3]), UserRatio([2, 1], [2, 4])

    def var(x, r):  # Var(R) ≈ Var(num − R·den) / (users · mean(den)²)
        d = np.asarray(x.num) - r * np.asarray(x.den)
        return d.var(ddof=1) / (len(d) * np.mean(x.den) ** 2)

    e = delta_difference(c, t)
    assert (e.control_rate, e.treatment_rate) == (pytest.approx(4 / 6), pytest.approx(3 / 6))
    assert e.difference == pytest.approx(-1 / 6) and e.theta is None and e.variance_reduction is None
    assert e.variance == pytest.approx(var(c, 4 / 6) + var(t, 3 / 6))
    z = delta_ztest(c, t)
    assert z.p_value == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(z.z) / math.sqrt(2)))))
    assert z.z == pytest.approx(-1 / 6 / math.sqrt(e.variance)) and z.ci_low < -1 / 6 < z.ci_high
    # one request per user: the delta method is the unpooled two-proportion variance (n/(n−1) apart)
    rng = np.random.default_rng(0)
    a, b = rng.binomial(1, 0.3, 400), rng.binomial(1, 0.35, 500)
    e = delta_difference(UserRatio(a, np.ones(400)), UserRatio(b, np.ones(500)))
    pa, pb = a.mean(), b.mean()
    assert e.variance == pytest.approx(pa * (1 - pa) / 399 + pb * (1 - pb) / 499)
    with pytest.raises(ValueError, match="needs 2 users per arm"):
        delta_difference(UserRatio([1], [1]), t)
    with pytest.raises(ValueError, match="denominator ≥ 1"):
        UserRatio([1, 0], [1, 0])
    with pytest.raises(ValueError, match="both pre-period arrays"):
        UserRatio([1], [1], pre_num=[0])


def test_cuped_removes_the_variance_a_pre_period_explains() -> None:
    rng = np.random.default_rng(5)

    def arm(n: int, drop: float) -> UserRatio:
        own = rng.beta(2, 6, n)  # each user's conversion, the same before and during the experiment
        req, pre = 1 + rng.poisson(8, n), 1 + rng.poisson(8, n)
        return UserRatio(rng.binomial(req, own * (1 - drop)), req, rng.binomial(pre, own), pre)

    c, t = arm(3000, 0.0), arm(3000, 0.2)
    e = delta_difference(c, t)
    plain = delta_difference(c, t, cuped=False)
    assert plain.theta is None and plain.variance == e.unadjusted_variance
    # per user, binomial noise and taste each make about half of the variance; the pre-period's own noise
    # leaves a squared correlation of about 1/4 with the experiment's metric
    assert 0.15 < e.variance_reduction < 0.35 and e.variance == pytest.approx(
        (1 - e.variance_reduction) * e.unadjusted_variance
    )
    assert e.difference == pytest.approx(-0.2 * 0.25, abs=3 * math.sqrt(e.variance))
    z = delta_ztest(c, t)
    assert z.p_value < z.unadjusted_p_value and z.ci_high - z.ci_low < z.unadjusted_ci_high - z.unadjusted_ci_low
    no_pre = UserRatio(c.num, c.den, np.zeros(3000), np.zeros(3000))  # nobody seen before: nothing to adjust
    assert delta_difference(no_pre, UserRatio(t.num, t.den, np.zeros(3000), np.zeros(3000))).theta is None


def test_per_user_tests_keep_their_level_where_per_request_tests_do_not() -> None:
    # The A/A case: 600 users per arm, 1 + Poisson(8) requests, own conversion from Beta(0.5, 1.5)
    rng = np.random.default_rng(11)
    runs, k = 400, 600
    req = 1 + rng.poisson(8, (runs, 2, k))
    conv = rng.binomial(req, rng.beta(0.5, 1.5, (runs, 2, k)))
    per_request = per_user = 0
    for i in range(runs):
        c, t = UserRatio(conv[i, 0], req[i, 0]), UserRatio(conv[i, 1], req[i, 1])
        per_user += delta_ztest(c, t).p_value < 0.05
        n = req[i].sum(axis=1)
        per_request += (
            two_proportion_ztest(int(conv[i, 0].sum()), int(n[0]), int(conv[i, 1].sum()), int(n[1])).p_value < 0.05
        )
    assert per_request / runs > 0.2  # requests as if independent: about a third of identical models "differ"
    assert per_user / runs < 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)


def test_sequential_false_alarms_on_aa_stay_below_alpha() -> None:
    # 400 seeded A/A runs, each checked after every one of 50 batches: an always-valid p-value keeps
    # the chance of ever crossing alpha at most alpha (the fixed-horizon z-test checked like this does not)
    rng = np.random.default_rng(2026)
    runs, looks, batch, alpha = 400, 50, 100, 0.05
    n = np.arange(1, looks + 1) * batch
    alarms = {}
    for rate in (0.05, 0.3):
        a = rng.binomial(batch, rate, (runs, looks)).cumsum(axis=1)
        b = rng.binomial(batch, rate, (runs, looks)).cumsum(axis=1)
        p_seq = np.minimum.accumulate(1 / mixture_likelihood_ratio(a, n, b, n, 0.02), axis=1)[:, -1]
        alarms[rate] = float(np.mean(p_seq < alpha))
        pooled = (a + b) / (2 * n)
        z = (b - a) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
        alarms[f"z{rate}"] = float(np.mean((np.abs(z) > 1.959964).any(axis=1)))
    assert alarms[0.05] < alpha + 0.02 and alarms[0.3] < alpha + 0.02, alarms
    assert alarms["z0.3"] > alpha + 0.05, alarms  # peeking at the z-test is what the mSPRT avoids


def test_sequential_test_has_power() -> None:
    rng = np.random.default_rng(7)
    runs, looks, batch = 200, 40, 200
    n = np.arange(1, looks + 1) * batch
    a = rng.binomial(batch, 0.30, (runs, looks)).cumsum(axis=1)
    b = rng.binomial(batch, 0.25, (runs, looks)).cumsum(axis=1)
    p = np.minimum.accumulate(1 / mixture_likelihood_ratio(a, n, b, n, 0.02), axis=1)[:, -1]
    assert np.mean(p < 0.05) > 0.9


# --- the canary controller -------------------------------------------------------------------------
@dataclass
class Arm:
    """Cumulative per-user totals of one arm since its step started."""

    requests: list = field(default_factory=list)
    ok: list = field(default_factory=list)
    conversions: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)

    def totals(self) -> UserTotals:
        n = len(self.requests)
        return UserTotals(
            np.arange(n, dtype=np.int64),
            np.array(self.requests, np.int64),
            np.array(self.ok, np.int64),
            np.array(self.conversions, np.int64),
            np.zeros(n),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
        )


@dataclass
class Traffic:
    """Seeded traffic: each tick `users` new users make `per_user` requests; users split by the current share."""

    conversion: tuple[float, float]  # champion, challenger
    error: tuple[float, float] = (0.0, 0.0)
    users: int = 1000
    per_user: int = 2
    srm_bias: float = 0.0  # extra share of users that shows up in the challenger arm
    p99: tuple[float, float] = (40.0, 40.0)
    seed: int = 0
    arms: dict = field(default_factory=lambda: {"champion": Arm(), "challenger": Arm()})

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def metrics(self, exp: Experiment, start: datetime, t: datetime) -> tuple[ArmMetrics, ArmMetrics]:
        n_chal = int(self.rng.binomial(self.users, min(1.0, exp.share + self.srm_bias)))
        for i, (name, users) in enumerate((("champion", self.users - n_chal), ("challenger", n_chal))):
            arm = self.arms[name]
            err = self.rng.binomial(self.per_user, self.error[i], users)
            ok = self.per_user - err
            arm.requests += [self.per_user] * users
            arm.ok += ok.tolist()
            arm.conversions += self.rng.binomial(ok, self.conversion[i]).tolist()
            if err.sum():
                arm.errors["timeout"] = arm.errors.get("timeout", 0) + int(err.sum())
        return tuple(
            ArmMetrics(
                name,
                exp.salt,
                exp.share,
                start,
                t,
                users=len(a.requests),
                requests=sum(a.requests),
                ok=sum(a.ok),
                errors=dict(a.errors),
                latency_p50_ms=10.0,
                latency_p99_ms=self.p99[i],
                conversions=sum(a.conversions),
                per_user=a.totals(),
            )
            for i, (name, a) in enumerate(self.arms.items())
        )

    def run(self, exp: Experiment, ticks: int = 200, every: timedelta = timedelta(minutes=5)) -> list[str]:
        """Evaluate once per tick until the experiment finishes; the actions taken."""
        t = exp.last_time
        for _ in range(ticks):
            if exp.finished:
                break
            t += every
            champion, challenger = self.metrics(exp, exp.step_started_at, t)
            d = exp.evaluate(t, champion, challenger)
            if d.action == "advance":
                self.arms = {"champion": Arm(), "challenger": Arm()}  # a new step counts from zero
        return [d["action"] for d in exp.decisions]


PLAN = CanaryPlan(
    steps=(0.1, 0.5, 1.0), min_requests=2000, alpha=0.05, margin=0.03, error_margin=0.01, max_step_seconds=24 * 3600
)


def new(plan: CanaryPlan = PLAN, name: str = "ease-v2-vs-als-v1") -> Experiment:
    return Experiment.start(name, "als/v0001", "ease/v0002", plan, T0)


def compact(actions: list[str]) -> list[str]:
    return [a for i, a in enumerate(actions) if i == 0 or a != actions[i - 1]]


@pytest.mark.parametrize(("challenger", "seed"), [(0.30, 1), (0.30, 2), (0.33, 3)])
def test_an_equal_or_better_challenger_is_promoted_through_every_step(challenger: float, seed: int) -> None:
    exp = new()
    actions = Traffic((0.30, challenger), seed=seed).run(exp)
    assert compact(actions) == ["wait", "advance", "wait", "promote"]
    assert exp.status == "promoted" and exp.share == 1.0
    shares = [d["share"] for d in exp.decisions]
    assert sorted(set(shares)) == [0.1, 0.5, 1.0] and shares == sorted(shares)
    last = exp.decisions[-1]
    assert last["test"] == "msprt" and last["ci_low"] > -PLAN.margin and last["srm"]["mismatch"] is False
    assert json.dumps(exp.as_dict(), allow_nan=False)


def test_a_clearly_worse_challenger_is_rolled_back() -> None:
    exp = new()
    actions = Traffic((0.30, 0.20), seed=4).run(exp)
    assert actions[-1] == "rollback" and "advance" not in actions
    last = exp.decisions[-1]
    assert "converts worse" in last["reason"] and last["test"] == "msprt"
    assert last["p_value"] < PLAN.alpha and last["effect"] < 0 and last["relative_lift"] < 0
    assert exp.status == "rolled_back" and exp.share == 0.0
    with pytest.raises(ExperimentError, match="cannot evaluate: it is rolled_back already"):
        exp.evaluate(T0 + timedelta(days=9), *Traffic((0.3, 0.3)).metrics(exp, exp.step_started_at, T0))


def test_the_z_test_plan_rolls_back_a_worse_challenger_once_the_sample_is_reached() -> None:
    exp = new(CanaryPlan(steps=(0.5,), min_requests=3000, test="z"))
    actions = Traffic((0.30, 0.24), seed=5).run(exp)
    last = exp.decisions[-1]
    assert actions[-1] == "rollback" and last["test"] == "z" and last["challenger"]["requests"] >= 3000
    assert all(d["p_value"] is None for d in exp.decisions if d["challenger"]["requests"] < 3000)


def test_sample_ratio_mismatch_stops_the_experiment_first() -> None:
    exp = new(CanaryPlan(steps=(0.5, 1.0), min_requests=2000))
    actions = Traffic((0.30, 0.40), srm_bias=0.05, users=5000, seed=6).run(exp)
    last = exp.decisions[-1]
    assert actions[-1] == "rollback" and "sample ratio mismatch" in last["reason"]
    assert last["srm"]["mismatch"] and last["srm"]["p_value"] < 0.001 and last["test"] is None


def one_request_each(n: int, converted: int) -> UserTotals:
    """`n` users with one answered request each, the first `converted` of them converted."""
    one, zero = np.ones(n, np.int64), np.zeros(n, np.int64)
    return UserTotals(np.arange(n), one, one, (np.arange(n) < converted).astype(np.int64), np.zeros(n), zero, zero)


def test_the_mismatch_check_counts_users_not_requests() -> None:
    # 300 vs 300 users at a 50% share, but the challenger's users make 5 requests each: no mismatch
    exp = new(CanaryPlan(steps=(0.5, 1.0), min_requests=10**6))
    t = exp.last_time + timedelta(minutes=9)
    heavy = one_request_each(300, 100)
    heavy = UserTotals(
        heavy.user_id,
        heavy.requests * 5,
        heavy.ok * 5,
        heavy.conversions * 5,
        heavy.latency_ms,
        heavy.pre_requests,
        heavy.pre_conversions,
    )
    arms = [
        ArmMetrics(
            "champion",
            exp.salt,
            0.5,
            exp.step_started_at,
            t,
            users=300,
            requests=300,
            ok=300,
            conversions=100,
            per_user=one_request_each(300, 100),
        ),
        ArmMetrics(
            "challenger",
            exp.salt,
            0.5,
            exp.step_started_at,
            t,
            users=300,
            requests=1500,
            ok=1500,
            conversions=500,
            per_user=heavy,
        ),
    ]
    d = exp.evaluate(t, *arms)
    assert d.srm is not None and not d.srm.mismatch and d.srm.p_value == 1.0 and d.action == "wait"


def test_metrics_without_per_user_totals_are_refused() -> None:
    exp = new()
    t = exp.last_time + timedelta(minutes=9)
    bare = [
        ArmMetrics(a, exp.salt, exp.share, exp.step_started_at, t, users=5, requests=9, ok=9, conversions=2)
        for a in ("champion", "challenger")
    ]
    with pytest.raises(ValueError, match="lack per-user totals"):
        exp.evaluate(t, *bare)
    with pytest.raises(ValueError, match="do not add up"):
        ArmMetrics(
            "champion", 1, 0.5, T0, t, users=12, requests=12, ok=12, conversions=7, per_user=one_request_each(12, 6)
        )


def test_the_mismatch_check_waits_for_enough_users() -> None:
    # 12 vs 18 users at a 25% share would be p < 0.001, but a few dozen users say little (an early burst)
    exp = new(CanaryPlan(steps=(0.25, 1.0), min_requests=2000, srm_min_users=200))
    t = exp.last_time + timedelta(minutes=9)
    arms = [
        ArmMetrics(
            a,
            exp.salt,
            exp.share,
            exp.step_started_at,
            t,
            users=n,
            requests=n,
            ok=n,
            conversions=n // 2,
            per_user=one_request_each(n, n // 2),
        )
        for a, n in (("champion", 12), ("challenger", 18))
    ]
    d = exp.evaluate(t, *arms)
    assert d.action == "wait" and d.srm is None
    with pytest.raises(ValueError, match="srm_min_users"):
        CanaryPlan(srm_min_users=-1)


def test_a_challenger_with_more_errors_is_rolled_back() -> None:
    exp = new()
    Traffic((0.30, 0.30), error=(0.01, 0.08), seed=8).run(exp)
    last = exp.decisions[-1]
    assert last["action"] == "rollback" and "error rate" in last["reason"]


def test_a_slow_challenger_is_rolled_back_on_latency() -> None:
    exp = new(CanaryPlan(steps=(0.5, 1.0), min_requests=1000, max_latency_p99_ms=300))
    Traffic((0.30, 0.30), p99=(40.0, 450.0), seed=9).run(exp)
    assert "p99 latency 450 ms" in exp.decisions[-1]["reason"] and exp.status == "rolled_back"


def test_a_step_without_a_verdict_times_out() -> None:
    plan = CanaryPlan(steps=(0.1, 1.0), min_requests=10**6, max_step_seconds=3600)
    exp = new(plan)
    actions = Traffic((0.3, 0.3), seed=10).run(exp, every=timedelta(minutes=10))
    assert actions == ["wait"] * 5 + ["rollback"]
    assert "limit of 3600 s" in exp.decisions[-1]["reason"]


def test_a_last_step_below_one_promotes_once_passed() -> None:
    exp = new(CanaryPlan(steps=(0.2, 0.5), min_requests=2000, margin=0.03))
    assert compact(Traffic((0.3, 0.3), seed=11).run(exp)) == ["wait", "advance", "wait", "promote"]


def test_a_saved_experiment_continues_where_it_stopped(tmp_path) -> None:
    straight, restarted = new(), new()
    traffic_a, traffic_b = Traffic((0.3, 0.31), seed=12), Traffic((0.3, 0.31), seed=12)
    traffic_a.run(straight)
    path = tmp_path / "exp" / "state.json"
    traffic_b.run(restarted, ticks=15)
    restarted.save(path)
    loaded = Experiment.load(path)
    assert loaded.as_dict() == restarted.as_dict()
    traffic_b.run(loaded)
    assert loaded.decisions == straight.decisions and loaded.status == straight.status == "promoted"


def test_a_corrupt_state_file_is_refused(tmp_path) -> None:
    exp = new()
    d = exp.as_dict()
    d["salt"] += 1
    (tmp_path / "s.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="not the salt of its name"):
        Experiment.load(tmp_path / "s.json")
    (tmp_path / "t.json").write_text("{")
    with pytest.raises(ValueError, match="cannot be read"):
        Experiment.load(tmp_path / "t.json")


def test_manual_pause_resume_and_promote_record_who_and_why() -> None:
    exp = new()
    traffic = Traffic((0.3, 0.3), seed=13)
    traffic.run(exp, ticks=2)
    t = exp.last_time + timedelta(minutes=1)
    exp.pause(t, "alice", "holiday traffic")
    waiting = exp.evaluate(t + timedelta(hours=30), *traffic.metrics(exp, exp.step_started_at, t))
    assert waiting.action == "wait" and waiting.reason == "paused" and exp.status == "paused"
    exp.resume(t + timedelta(hours=31), "alice", "traffic normal again")
    assert exp.step_started_at == t + timedelta(hours=31) and exp.conversion_test.looks == 0
    exp.promote(t + timedelta(hours=32), "bob", "approved by the product owner")
    assert [(d["action"], d["by"]) for d in exp.decisions[-4:]] == [
        ("pause", "alice"),
        ("wait", None),
        ("resume", "alice"),
        ("promote", "bob"),
    ]
    assert exp.decisions[-1]["reason"] == "approved by the product owner" and exp.share == 1.0
    with pytest.raises(ExperimentError, match="cannot roll back: it is promoted already"):
        exp.rollback(t + timedelta(hours=33), "carol", "too late")


def test_manual_actions_need_who_and_why_and_time_moves_forward() -> None:
    exp = new()
    with pytest.raises(ValueError, match="needs who"):
        exp.rollback(T0, "", "because")
    with pytest.raises(ValueError, match="before the last one seen"):
        exp.pause(T0 - timedelta(seconds=1), "alice", "x")


def test_metrics_for_another_assignment_are_refused() -> None:
    exp = new()
    good = Traffic((0.3, 0.3)).metrics(exp, T0, T0 + timedelta(minutes=5))
    other = ArmMetrics("challenger", exp.salt, 0.5, T0, T0 + timedelta(minutes=5))
    with pytest.raises(ValueError, match="share 0.5; the experiment has salt"):
        exp.evaluate(T0 + timedelta(minutes=5), good[0], other)
    with pytest.raises(ValueError, match="metrics of arm 'challenger' given as the champion"):
        exp.evaluate(T0 + timedelta(minutes=5), good[1], good[0])
    early = ArmMetrics("champion", exp.salt, 0.1, T0 - timedelta(hours=1), T0 + timedelta(minutes=5))
    with pytest.raises(ValueError, match="before the step started"):
        exp.evaluate(T0 + timedelta(minutes=5), early, good[1])


def test_salts_come_from_names() -> None:
    assert salt_of("a") == salt_of("a") != salt_of("b")
    salts = [salt_of(f"experiment-{i}") for i in range(200)]
    assert all(0 <= s < 2**63 for s in salts) and max(salts) > 2**62  # what serving accepts, all of it used
    assert new().salt == salt_of("ease-v2-vs-als-v1")
    with pytest.raises(ValueError, match="experiment name ''"):
        salt_of("")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": (0.5, 0.1)}, "strictly increasing"),
        ({"steps": (1.0,)}, "first share below 1"),
        ({"steps": ()}, "strictly increasing"),
        ({"test": "t"}, "test 't' is unknown"),
        ({"margin": -0.1}, "margin -0.1"),
        ({"alpha": 0}, "alpha=0"),
        ({"min_requests": -1}, "min_requests -1"),
    ],
)
def test_bad_plans_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CanaryPlan(**kwargs)


def test_plan_round_trips_and_refuses_unknown_keys() -> None:
    assert CanaryPlan.from_dict(json.loads(json.dumps(PLAN.as_dict()))) == PLAN
    with pytest.raises(ValueError, match="unknown keys: steps_"):
        CanaryPlan.from_dict({"steps_": [0.1]})
