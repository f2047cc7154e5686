"""A/A false positives and power of the canary's tests, with users as the unit of randomization.

Each user has 1 + Poisson(8) requests in the experiment (the heavy-tailed setting: a log-normal
activity) and a conversion rate of its own from a Beta distribution; both arms serve the same model.
A test at alpha = 0.05 should call about 5% of these A/A experiments significant. Per setting, 1,000
seeded repetitions of 600 users per arm; the sequential tests look 10 times (after 60, 120, … 600 users
per arm) and count a false positive when any look crosses alpha. Printed next to the per-request tests
(requests treated as independent trials), measured in the same run on the same data: the baseline.

Rows (every test the canary uses, `movielab.recommender.release.canary`):
- conversion, fixed horizon: `delta_ztest` without and with CUPED; baseline `two_proportion_ztest`.
- conversion, mSPRT, 10 looks: `SequentialTest` on `delta_difference` without and with CUPED;
  baseline the per-request `mixture_likelihood_ratio`.
- error rate (each user's own rate from Beta(0.1, 10), mean 1%): the same, without CUPED.
- sample-ratio mismatch on users (1,200 users assigned at share 0.5): `srm_check`.
- the whole controller (`Experiment.evaluate`, default plan but steps 0.5 → 1.0, 10 looks): how often it
  rolls back an identical model.
Then the power to detect a 5-point drop in mean conversion (each treated user's rate × (1 − 0.05/mean))
at 600 users per arm, without and with CUPED (the covariate: each user's conversion in a pre-period of
1 + Poisson(8) requests; 20% of users are new and have none).
Each rate with its binomial 95% interval (Clopper-Pearson). Target: every per-user test ≤ 5%.

    .venv/bin/python benchmarks/aa_experiments.py [--reps 1000] [--users 600]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy.stats import binomtest

from movielab.recommender.monitoring.online import ArmMetrics, UserTotals
from movielab.recommender.release.canary import CanaryPlan, Experiment
from movielab.recommender.release.statistics import (
    SequentialTest,
    UserRatio,
    delta_difference,
    delta_ztest,
    mixture_likelihood_ratio,
    srm_check,
    two_proportion_ztest,
)

ALPHA, LOOKS, TAU, NEW_USERS = 0.05, 10, 0.02, 0.2
T0 = datetime(2026, 1, 1)


@dataclass(frozen=True)
class Setting:
    name: str
    beta: tuple[float, float]
    activity: str  # "poisson": 1 + Poisson(8); "lognormal": 1 + Poisson(8 · LogNormal(−σ²/2, σ=1))


SETTINGS = (
    Setting("Beta(2, 6), 1+Poisson(8) requests", (2.0, 6.0), "poisson"),
    Setting("Beta(0.5, 1.5), 1+Poisson(8) requests", (0.5, 1.5), "poisson"),
    Setting("Beta(2, 6), heavy-tailed activity", (2.0, 6.0), "lognormal"),
)


@dataclass
class Arm:
    """One arm's users: requests, conversions, errors, and the pre-period's requests and conversions."""

    req: np.ndarray
    conv: np.ndarray
    err: np.ndarray
    pre_req: np.ndarray
    pre_conv: np.ndarray

    def ratio(self, k: int, what: str = "conv", cuped: bool = True) -> UserRatio:
        """The first `k` users' per-user ratio (conversions or errors over requests)."""
        if what == "err":
            return UserRatio(self.err[:k], self.req[:k])
        pre = (self.pre_conv[:k], self.pre_req[:k]) if cuped else (None, None)
        return UserRatio(self.conv[:k], self.req[:k], *pre)

    def totals(self, k: int) -> UserTotals:
        ok = self.req[:k] - self.err[:k]
        return UserTotals(
            np.arange(k),
            self.req[:k],
            ok,
            np.minimum(self.conv[:k], ok),
            np.zeros(k),
            self.pre_req[:k],
            self.pre_conv[:k],
        )


def activity(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Each user's mean number of requests beyond the first, a trait kept before and during the experiment."""
    return np.full(n, 8.0) if kind == "poisson" else 8.0 * rng.lognormal(-0.5, 1.0, n)


def arm(rng: np.random.Generator, s: Setting, n: int, drop: float = 0.0) -> Arm:
    """`n` users of setting `s`; `drop` lowers the mean conversion by that much (each rate scaled)."""
    a, b = s.beta
    own = rng.beta(a, b, n)
    mean = activity(rng, n, s.activity)
    req, pre = 1 + rng.poisson(mean), 1 + rng.poisson(mean)
    pre[rng.random(n) < NEW_USERS] = 0  # new users: no pre-period
    own_err = rng.beta(0.1, 10.0, n)
    err = rng.binomial(req, own_err)
    # conversions only of answered requests, as in the stream
    conv = rng.binomial(req - err, own * (1 - drop / (a / (a + b))))
    return Arm(req, conv, err, pre, rng.binomial(pre, own))


def per_request_z(c: Arm, t: Arm, k: int, what: str) -> float:
    x = c.conv if what == "conv" else c.err
    y = t.conv if what == "conv" else t.err
    return two_proportion_ztest(int(x[:k].sum()), int(c.req[:k].sum()), int(y[:k].sum()), int(t.req[:k].sum())).p_value


def per_request_msprt(c: Arm, t: Arm, ks: list[int], what: str) -> float:
    x = c.conv if what == "conv" else c.err
    y = t.conv if what == "conv" else t.err
    p = 1.0
    for k in ks:
        p = min(
            p, 1.0 / float(mixture_likelihood_ratio(x[:k].sum(), c.req[:k].sum(), y[:k].sum(), t.req[:k].sum(), TAU))
        )
    return p


def msprt(c: Arm, t: Arm, ks: list[int], what: str, cuped: bool) -> float:
    test = SequentialTest(ALPHA, TAU, min_n=50)
    for k in ks:
        test.update(delta_difference(c.ratio(k, what, cuped), t.ratio(k, what, cuped), cuped))
    return test.p_value


def controller_rolls_back(c: Arm, t: Arm, ks: list[int]) -> bool:
    exp = Experiment.start("aa", "model/v1", "model/v1-again", CanaryPlan(steps=(0.5, 1.0)), T0)
    for i, k in enumerate(ks, 1):
        at = T0 + timedelta(minutes=10 * i)
        arms = [
            ArmMetrics(
                name,
                exp.salt,
                0.5,
                T0,
                at,
                users=k,
                requests=int(a.req[:k].sum()),
                ok=int((a.req[:k] - a.err[:k]).sum()),
                errors={"timeout": int(a.err[:k].sum())},
                conversions=int(np.minimum(a.conv[:k], a.req[:k] - a.err[:k]).sum()),
                per_user=a.totals(k),
            )
            for name, a in (("champion", c), ("challenger", t))
        ]
        if exp.evaluate(at, *arms).action != "wait":
            break
    return exp.status == "rolled_back"


def rate(hits: int, n: int) -> str:
    ci = binomtest(hits, n).proportion_ci(0.95)
    return f"{hits / n:6.1%}  [{ci.low:5.1%}, {ci.high:5.1%}]"


def run(s: Setting, reps: int, users: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    ks = [users * (i + 1) // LOOKS for i in range(LOOKS)]
    tests: dict[str, Callable[[Arm, Arm], bool]] = {
        "conversion  fixed   per request (baseline)": lambda c, t: per_request_z(c, t, users, "conv") < ALPHA,
        "conversion  fixed   per user, delta": lambda c, t: (
            delta_ztest(c.ratio(users, cuped=False), t.ratio(users, cuped=False)).p_value < ALPHA
        ),
        "conversion  fixed   per user, delta + CUPED": lambda c, t: (
            delta_ztest(c.ratio(users), t.ratio(users)).p_value < ALPHA
        ),
        "conversion  mSPRT   per request (baseline)": lambda c, t: per_request_msprt(c, t, ks, "conv") < ALPHA,
        "conversion  mSPRT   per user, delta": lambda c, t: msprt(c, t, ks, "conv", False) < ALPHA,
        "conversion  mSPRT   per user, delta + CUPED": lambda c, t: msprt(c, t, ks, "conv", True) < ALPHA,
        "errors      fixed   per request (baseline)": lambda c, t: per_request_z(c, t, users, "err") < ALPHA,
        "errors      fixed   per user, delta": lambda c, t: (
            delta_ztest(c.ratio(users, "err"), t.ratio(users, "err")).p_value < ALPHA
        ),
        "errors      mSPRT   per request (baseline)": lambda c, t: per_request_msprt(c, t, ks, "err") < ALPHA,
        "errors      mSPRT   per user, delta": lambda c, t: msprt(c, t, ks, "err", False) < ALPHA,
        "controller  rolls back an identical model": lambda c, t: controller_rolls_back(c, t, ks),
    }
    hits = dict.fromkeys(tests, 0)
    hits["srm         users at share 0.5 (p < 0.001)"] = 0
    for _ in range(reps):
        c, t = arm(rng, s, users), arm(rng, s, users)
        for name, test in tests.items():
            hits[name] += bool(test(c, t))
        n_chal = int(rng.binomial(2 * users, 0.5))
        hits["srm         users at share 0.5 (p < 0.001)"] += srm_check(2 * users - n_chal, n_chal, 0.5).mismatch
    return hits


def power(s: Setting, reps: int, users: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    ks = [users * (i + 1) // LOOKS for i in range(LOOKS)]
    hits = {"fixed, per user": 0, "fixed, per user + CUPED": 0, "mSPRT, per user": 0, "mSPRT, per user + CUPED": 0}
    reduction = []
    for _ in range(reps):
        c, t = arm(rng, s, users), arm(rng, s, users, drop=0.05)
        plain, adjusted = (
            delta_ztest(c.ratio(users, cuped=False), t.ratio(users, cuped=False)),
            delta_ztest(c.ratio(users), t.ratio(users)),
        )
        hits["fixed, per user"] += plain.p_value < ALPHA and plain.difference < 0
        hits["fixed, per user + CUPED"] += adjusted.p_value < ALPHA and adjusted.difference < 0
        hits["mSPRT, per user"] += msprt(c, t, ks, "conv", False) < ALPHA
        hits["mSPRT, per user + CUPED"] += msprt(c, t, ks, "conv", True) < ALPHA
        reduction.append(adjusted.variance_reduction or 0.0)
    hits["_reduction_pct"] = round(100 * float(np.mean(reduction)))
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--users", type=int, default=600, help="users per arm")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(
        f"A/A false-positive rate at alpha {ALPHA}, {args.reps} repetitions, {args.users} users per arm, "
        f"sequential tests with {LOOKS} looks (tau {TAU}); 95% Clopper-Pearson interval\n"
    )
    for i, s in enumerate(SETTINGS):
        hits = run(s, args.reps, args.users, seed=1000 + i)
        print(f"{s.name}")
        for name, n in hits.items():
            print(f"  {name:48s} {rate(n, args.reps)}")
        print()
    print(
        f"Power to detect a 5-point drop in mean conversion, {args.users} users per arm, {args.reps} repetitions "
        f"(mean CUPED variance reduction in brackets)\n"
    )
    for i, s in enumerate(SETTINGS):
        hits = power(s, args.reps, args.users, seed=2000 + i)
        reduction = hits.pop("_reduction_pct")
        print(f"{s.name} [CUPED variance reduction {reduction}%]")
        for name, n in hits.items():
            print(f"  {name:48s} {rate(n, args.reps)}")
        print()
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
