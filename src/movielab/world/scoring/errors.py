"""Errors of the scoring package, in one place."""

from __future__ import annotations

from movielab.world.errors import WorldError


class ScoringError(WorldError, ValueError):
    """Scoring input that cannot be scored (shapes that do not match, a bad manifest or team); names it."""
