"""Shared fixtures: the real ml-100k (cached by the README's commands) and a small built universe."""

from __future__ import annotations

import pytest

from movielab.world.bootstrap import Universe, build_universe
from movielab.world.config import WorldConfig
from movielab.world.data.sources import fetch_ml100k
from movielab.world.data.types import MovieLensData


@pytest.fixture(scope="session")
def ml100k() -> MovieLensData:
    """The real ml-100k through the source chain (cache, else the recbole wheel; no GroupLens)."""
    return fetch_ml100k(allow_download=False)


@pytest.fixture(scope="session")
def universe(ml100k: MovieLensData) -> Universe:
    """Taste model and a 3,000-movie catalog built from ml-100k."""
    return build_universe(WorldConfig(movies=3000, allow_download=False), data=ml100k)
