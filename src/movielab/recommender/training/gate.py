"""What a retraining run must pass: its retrain policy, the data checks on a snapshot, the output check on a
fitted model, and the offline gate against the champion's recipe and popularity.

The gate's fixed protocol: the snapshot's time-aware split (`evaluate.time_split`); the candidate's model
class + parameters, the champion's (from its registry tags) and popularity are each fitted on the train part
and scored on the test part (NDCG@10, full ranking). The candidate is rejected when its output has NaNs or is
empty, when it ranks no held-out item, or when it is below popularity or the champion by more than `tolerance`
(a share of the champion's NDCG).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from movielab.recommender.config import RecommenderConfig
from movielab.recommender.errors import ModelFitError
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.snapshots import Snapshot
from movielab.recommender.training import evaluate
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import Model, create

logger = logging.getLogger(__name__)

CHECK_ROWS = 1000  # users whose scores and lists the output check reads
_CONFIG = RecommenderConfig.model_fields


@dataclass(frozen=True)
class RetrainPolicy:
    """What a retraining run trains, on which window, and what it must pass."""

    # The defaults are `RecommenderConfig`'s (written once, there).
    model: str = _CONFIG["model"].default
    params: dict[str, Any] = field(default_factory=dict)
    every_hours: float = _CONFIG["retrain_every_hours"].default  # of stream time between scheduled runs
    window_days: float = _CONFIG["retrain_window_days"].default  # the snapshot: the last N days up to stream time
    min_events: int = _CONFIG["retrain_min_events"].default
    min_users: int = _CONFIG["retrain_min_users"].default
    min_items: int = _CONFIG["retrain_min_items"].default
    tolerance: float = _CONFIG["gate_tolerance"].default  # a candidate may trail the champion's NDCG@10 by this share
    test_fraction: float = 0.2
    metric: str = "ndcg@10"
    gate_users: int = 20_000  # test users the gate scores (a fixed-seed sample when there are more)

    @classmethod
    def from_config(cls, config) -> RetrainPolicy:
        """The policy a `RecommenderConfig` describes."""
        return cls(
            model=config.model,
            params=dict(config.model_params),
            every_hours=config.retrain_every_hours,
            window_days=config.retrain_window_days,
            min_events=config.retrain_min_events,
            min_users=config.retrain_min_users,
            min_items=config.retrain_min_items,
            tolerance=config.gate_tolerance,
        )


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict, its reason and the metrics it measured (candidate, champion, popularity)."""

    accepted: bool
    reason: str
    metrics: dict[str, float]


def check_data(store: EventStore, snap: Snapshot, data: TrainingData, policy: RetrainPolicy) -> str | None:
    """The first reason the snapshot is unfit to train on, None when it passes."""
    if snap.rows < policy.min_events:
        return f"snapshot {snap.id} has {snap.rows} events, fewer than min_events={policy.min_events}"
    if len(data.users) < policy.min_users:
        return f"snapshot {snap.id} has {len(data.users)} users, fewer than min_users={policy.min_users}"
    if len(data.items) < policy.min_items:
        return f"snapshot {snap.id} has {len(data.items)} movies, fewer than min_items={policy.min_items}"
    for name in ("watched", "ratings", "times"):
        bad = int((~np.isfinite(getattr(data, name).data)).sum())
        if bad:
            return f"snapshot {snap.id}: {bad} NaN/inf values in {name}"
    if data.interactions.nnz == 0:
        return f"snapshot {snap.id} has no watch or rating interactions"
    if not store.verify_snapshot(snap):
        return f"snapshot {snap.id} does not verify: its events no longer hash to {snap.content_hash[:16]}…"
    return None


def check_output(model: Model, rows: int = CHECK_ROWS) -> str | None:
    """The first reason a fitted model's output is unsafe to ship (NaN/inf, empty lists), None when it is safe."""
    for name in model.arrays:
        arr = np.asarray(getattr(model, name))
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            return f"{model.name}: array {name!r} has {int((~np.isfinite(arr)).sum())} NaN/inf values"
    if model.n_users == 0 or model.n_items == 0:
        return f"{model.name}: fitted on {model.n_users} users × {model.n_items} movies"
    sample = np.unique(np.linspace(0, model.n_users - 1, min(rows, model.n_users)).astype(np.int64))
    scores = np.asarray(model.scores(sample))
    if not np.isfinite(scores).all():
        return f"{model.name}: {int((~np.isfinite(scores)).sum())} NaN/inf scores among {len(sample)} users"
    recs = model.recommend_rows(sample, n=1)
    has_unseen = (model.seen_indptr[sample + 1] - model.seen_indptr[sample]) < model.n_items
    empty = int((has_unseen & (recs[:, 0] < 0)).sum())
    if empty:
        return f"{model.name}: empty recommendation lists for {empty} of {len(sample)} users"
    if not model.fallback(-1):
        return f"{model.name}: the global fallback list is empty"
    return None


def gate(
    candidate: Model, data: TrainingData, champion: tuple[str, dict[str, Any]] | None, policy: RetrainPolicy
) -> GateResult:
    """Score the candidate's, the champion's and popularity's recipes on the snapshot's time split; decide.

    A candidate is rejected when it is worse than popularity or the champion by more than the tolerance,
    not merely when it fails to beat them: the stream's later part carries the feedback loop of what was
    served (a popularity champion's own picks credit popularity), so near-ties are for the canary to judge.
    """
    problem = check_output(candidate)
    if problem:
        return GateResult(False, f"candidate output: {problem}", {})
    try:
        train, test = evaluate.time_split(data, policy.test_fraction)
    except ValueError as exc:
        return GateResult(False, f"the snapshot's time split has no train or test part: {exc}", {})
    if test.getnnz() == 0:
        return GateResult(
            False,
            "the snapshot's later part has no interaction of a training user with a training "
            "movie: too little data to judge a model yet",
            {},
        )
    test = _sample_rows(test, policy.gate_users)
    key = policy.metric
    metrics: dict[str, float] = {}
    recipe = (candidate.name, candidate.params())
    try:
        scored = evaluate.evaluate_model(create(recipe[0], **recipe[1]).fit(train), train, test)
    except ModelFitError as exc:
        return GateResult(False, f"candidate refit on the train part failed: {exc}", {})
    metrics.update({k: v for k, v in scored.items() if k != "users"})
    metrics["test_users"] = scored["users"]
    metrics[f"popularity.{key}"] = evaluate.evaluate_model(create("popularity").fit(train), train, test)[key]
    if champion is not None and _same_recipe(champion, recipe):
        # Refitting the very same recipe on the same train part scores the same: do not pay for it twice.
        metrics[f"champion.{key}"] = metrics[key]
    elif champion is not None:
        name, params = champion
        try:
            metrics[f"champion.{key}"] = evaluate.evaluate_model(create(name, **params).fit(train), train, test)[key]
        except ModelFitError as exc:  # the champion's recipe does not fit this data: compare with popularity only
            logger.warning("gate: the champion's %s %s cannot be refitted on the train part: %s", name, params, exc)
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        return GateResult(False, f"non-finite offline metrics: {', '.join(bad)}", metrics)
    mine, pop = metrics[key], metrics[f"popularity.{key}"]
    if mine <= 0.0:
        return GateResult(False, f"{key} is 0: the candidate ranks no held-out interaction in its top lists", metrics)
    if mine < pop * (1.0 - policy.tolerance):
        return GateResult(
            False, f"{key} {mine:.4f} is below popularity's {pop:.4f} by more than {policy.tolerance:.0%}", metrics
        )
    champ = metrics.get(f"champion.{key}")
    if champ is not None and mine < champ * (1.0 - policy.tolerance):
        return GateResult(
            False, f"{key} {mine:.4f} is below the champion's {champ:.4f} by more than {policy.tolerance:.0%}", metrics
        )
    vs = f", champion {champ:.4f}" if champ is not None else ", no champion yet"
    return GateResult(True, f"{key} {mine:.4f} (popularity {pop:.4f}{vs})", metrics)


def _same_recipe(a: tuple[str, dict[str, Any]], b: tuple[str, dict[str, Any]]) -> bool:
    """Same model kind and the same parameters (compared as JSON, so 10 and 10.0 are one value)."""

    def numbers(params: dict[str, Any]) -> dict[str, Any]:
        return {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in params.items()}

    return a[0] == b[0] and numbers(a[1]) == numbers(b[1])


def _sample_rows(test: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """The test matrix with at most n users' rows kept (a fixed-seed sample, so the protocol is reproducible)."""
    rows = np.flatnonzero(np.diff(test.indptr) > 0)
    if len(rows) <= n:
        return test
    keep = np.zeros(test.shape[0], np.float32)
    keep[np.random.default_rng(0).choice(rows, n, replace=False)] = 1.0
    return sp.csr_matrix(sp.diags(keep) @ test)
