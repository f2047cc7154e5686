"""The root of the world's errors (`movielab.errors.MovielabError` per package); each module keeps its own."""

from __future__ import annotations

from movielab.errors import MovielabError


class WorldError(MovielabError):
    """Base class of the errors `movielab.world` raises on purpose."""
