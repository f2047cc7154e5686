"""The canary controller: a challenger's share stepped up by a `CanaryPlan`, each step judged from the stream.

`Experiment` follows its plan like Flagger or Argo Rollouts: per step it checks sample-ratio mismatch
(users), then guardrails (per-user tests: conversion significantly worse, error rate clearly higher, p99
latency), then non-inferiority, and answers wait / advance / promote / rollback, with the statistics of
`release.statistics` on the per-arm metrics of `monitoring.online`. Its whole state saves to JSON, so an
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

from movielab.recommender.errors import ExperimentError
from movielab.recommender.monitoring.online import ARMS, ArmMetrics, arm_metrics
from movielab.recommender.release.statistics import (
    SRM_ALPHA,
    SequentialTest,
    SRMResult,
    UserRatio,
    check_alpha,
    check_count,
    delta_difference,
    delta_ztest,
    json_dict,
    json_number,
    srm_check,
)

if TYPE_CHECKING:
    from movielab.recommender.store.events import EventStore

logger = logging.getLogger(__name__)

FORMAT = "movielab-experiment-v1"

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
        check_count("min_requests", self.min_requests)
        check_count("srm_min_users", self.srm_min_users)
        check_count("min_users", self.min_users)
        check_alpha(self.alpha)
        check_alpha(self.srm_alpha)
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
        d = json_dict(self)
        if self.unadjusted is not None:
            d["unadjusted"] = {k: json_number(v) if isinstance(v, float) else v for k, v in self.unadjusted.items()}
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
        srm = (
            srm_check(champion.users, challenger.users, self.share, plan.srm_alpha)
            if champion.users + challenger.users >= plan.srm_min_users
            else None
        )
        if srm is not None and srm.mismatch:
            why = (
                f"sample ratio mismatch: {champion.users} champion vs {challenger.users} challenger users at "
                f"share {self.share:g} (chi2={srm.chi2:.1f}, p={srm.p_value:.2g} < {plan.srm_alpha:g})"
            )
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
            verdict = (
                _Verdict("msprt", conv.p_value, conv.difference, conv.ci_low, conv.ci_high)
                if conv
                else _Verdict("msprt", None, None, None, None)
            )
            err_p, err_diff = (errs.p_value, errs.difference) if errs else (None, None)
            if conv and conv.variance_reduction is not None:
                unadjusted = {
                    "p_value": conv.unadjusted_p_value,
                    "effect": conv_est.unadjusted_difference,
                    "ci_low": conv.unadjusted_ci_low,
                    "ci_high": conv.unadjusted_ci_high,
                }
        else:
            # one-sided non-inferiority at alpha is the lower end of the two-sided 1 − 2·alpha interval
            z = delta_ztest(conv_c, conv_t, 2 * plan.alpha, plan.cuped) if enough else None
            verdict = (
                _Verdict("z", z.p_value, z.difference, z.ci_low, z.ci_high)
                if z
                else _Verdict("z", None, conv_est.difference if conv_est else None, None, None)
            )
            ze = delta_ztest(err_c, err_t, plan.alpha, False) if enough else None
            err_p, err_diff = (ze.p_value, ze.difference) if ze else (None, None)
            if z and z.variance_reduction is not None:
                unadjusted = {
                    "p_value": z.unadjusted_p_value,
                    "effect": z.unadjusted_difference,
                    "ci_low": z.unadjusted_ci_low,
                    "ci_high": z.unadjusted_ci_high,
                }
        control_rate, treatment_rate = conv_c.rate, conv_t.rate
        lift = (
            verdict.effect / control_rate
            if verdict.effect is not None and control_rate and math.isfinite(control_rate)
            else None
        )
        numbers = dict(
            test=verdict.test,
            p_value=verdict.p_value,
            effect=verdict.effect,
            relative_lift=lift,
            ci_low=verdict.ci_low,
            ci_high=verdict.ci_high,
            srm=srm,
            unadjusted=unadjusted,
            variance_reduction=conv_est.variance_reduction if conv_est else None,
            **counts,
        )
        if verdict.p_value is not None and verdict.p_value < plan.alpha and verdict.effect < 0:
            why = (
                f"challenger converts worse: {treatment_rate:.4f} vs {control_rate:.4f} per request, "
                f"{verdict.test} on {challenger.users} and {champion.users} users p={verdict.p_value:.2g} "
                f"< {plan.alpha:g}"
            )
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        if err_p is not None and err_p < plan.alpha and err_diff > plan.error_margin:
            why = (
                f"challenger error rate {err_t.rate:.4f} vs champion {err_c.rate:.4f}: "
                f"+{err_diff:.4f} > margin {plan.error_margin:g} ({verdict.test} p={err_p:.2g})"
            )
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        p99 = challenger.latency_p99_ms
        if enough and plan.max_latency_p99_ms is not None and p99 is not None and p99 > plan.max_latency_p99_ms:
            why = f"challenger p99 latency {p99:.0f} ms above the limit of {plan.max_latency_p99_ms:g} ms"
            return self._finish(Decision("rollback", t, self.step, 0.0, why, **numbers))
        if enough and verdict.ci_low is not None and verdict.ci_low > -plan.margin:
            why = (
                f"challenger not worse than the margin: lower bound {verdict.ci_low:+.4f} > -{plan.margin:g} "
                f"with {challenger.requests} challenger and {champion.requests} champion requests"
            )
            return self._advance(t, why, numbers)
        elapsed = (t - self.step_started_at).total_seconds()
        if elapsed >= plan.max_step_seconds:
            why = (
                f"step {self.step} (share {self.share:g}) reached its limit of {plan.max_step_seconds:g} s "
                f"without a verdict: " + self._waiting_for(champion, challenger, verdict)
            )
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
        return {
            "format": FORMAT,
            "name": self.name,
            "salt": self.salt,
            "share": self.share,
            "champion": self.champion,
            "challenger": self.challenger,
            "plan": self.plan.as_dict(),
            "status": self.status,
            "step": self.step,
            "started_at": self.started_at.isoformat(),
            "step_started_at": self.step_started_at.isoformat(),
            "last_time": self.last_time.isoformat(),
            "conversion_test": self.conversion_test.as_dict(),
            "error_test": self.error_test.as_dict(),
            "decisions": list(self.decisions),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Experiment:
        """Restore an experiment from `as_dict` output; a salt that does not match the name is an error."""
        if d.get("format") != FORMAT:
            raise ValueError(f"experiment state has format {d.get('format')!r}, expected {FORMAT!r}")
        exp = cls(
            d["name"],
            d["champion"],
            d["challenger"],
            CanaryPlan.from_dict(d["plan"]),
            datetime.fromisoformat(d["started_at"]),
            datetime.fromisoformat(d["step_started_at"]),
            datetime.fromisoformat(d["last_time"]),
            d["status"],
            int(d["step"]),
            SequentialTest.from_dict(d["conversion_test"]),
            SequentialTest.from_dict(d["error_test"]),
            list(d["decisions"]),
        )
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
            raise ValueError(
                f"experiment {self.name!r}: stream time {t.isoformat()} is before the last one seen, "
                f"{self.last_time.isoformat()}"
            )

    def _check_metrics(self, champion: ArmMetrics, challenger: ArmMetrics) -> None:
        for arm, m in zip(ARMS, (champion, challenger), strict=True):
            if m.arm != arm:
                raise ValueError(f"experiment {self.name!r}: metrics of arm {m.arm!r} given as the {arm}")
            if m.salt != self.salt or m.share != self.share:
                raise ValueError(
                    f"experiment {self.name!r}: {arm} metrics are for salt {m.salt}, share {m.share:g}; "
                    f"the experiment has salt {self.salt}, share {self.share:g}"
                )
            if m.start < self.step_started_at:
                raise ValueError(
                    f"experiment {self.name!r}: {arm} metrics start at {m.start.isoformat()}, before "
                    f"the step started at {self.step_started_at.isoformat()} (another share)"
                )
            if m.per_user is None:
                raise ValueError(
                    f"experiment {self.name!r}: {arm} metrics lack per-user totals; users are the unit "
                    "of randomization, so the tests need them"
                )


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
    return {
        "users": m.users,
        "requests": m.requests,
        "conversions": m.conversions,
        "errors": m.errors_total,
        "latency_p99_ms": json_number(m.latency_p99_ms),
    }


def tick(
    store: EventStore, experiment: Experiment, t: datetime, conversion_window: timedelta | None = None
) -> Decision:
    """One operator tick: read both arms' metrics for the current step up to `t` from the store, evaluate.

    The CUPED pre-period ends where the experiment started: later steps' users saw the challenger before.
    """
    window = {} if conversion_window is None else {"conversion_window": conversion_window}
    metrics = arm_metrics(
        store, experiment.step_started_at, t, experiment.salt, experiment.share, pre_end=experiment.started_at, **window
    )
    return experiment.evaluate(t, metrics["champion"], metrics["challenger"])
