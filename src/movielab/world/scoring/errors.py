"""Errors of the scoring package, in one place."""

from __future__ import annotations


class ScoringError(ValueError):
    """Scoring input that cannot be scored (shapes that do not match, a bad manifest or team); names it."""
