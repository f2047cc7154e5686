"""The root of movielab's own errors, so a caller (the CLI) can tell them from bugs without looking at modules.

Each package subclasses `MovielabError` once (`ContractError`, `WorldError`, `KafkaError` in `movielab.kafka`,
`AuthError`, `RecommenderError`, the demo's `PrometheusError`) and keeps its errors in one place; every error
also keeps the built-in base it always had (`ValueError`, `LookupError`, `RuntimeError`, …), so existing
`except` clauses still catch it.
"""

from __future__ import annotations


class MovielabError(Exception):
    """Base class of every error movielab raises on purpose; the message names the thing and the reason."""


class ModelFitError(MovielabError, RuntimeError):
    """A fitted model is not safe to use (non-finite or empty input or output). The world's hidden truth
    (`movielab.world.truth.ModelFitError`) and the recommender's models
    (`movielab.recommender.errors.ModelFitError`) each raise their own subclass."""
