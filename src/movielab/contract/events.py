"""Typed events: what one line of the stream says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A user requested one minute of a movie: `<time>,<user>,GET /data/m/<movie>/<minute>.mpg`."""

    time: datetime
    user_id: int
    movie_id: str
    minute: int
    nanosecond: int = 0  # sub-microsecond part of the time stamp (0..999), from 7–9 fractional digits


@dataclass(frozen=True, slots=True)
class RateEvent:
    """A user rated a movie 1..10 (the edition fixes the scale): `<time>,<user>,GET /rate/<movie>=<rating>`."""

    time: datetime
    user_id: int
    movie_id: str
    rating: int
    nanosecond: int = 0  # sub-microsecond part of the time stamp (0..999), from 7–9 fractional digits


@dataclass(frozen=True, slots=True)
class RecommendationEvent:
    """The world asked a team's service for recommendations and logged the outcome.

    `ok` is true when the service answered 200 with a list of movie ids; otherwise
    `error` holds the error text and `recommendations` is empty.
    """

    time: datetime
    user_id: int
    server: str
    status: int
    recommendations: tuple[str, ...]
    error: str | None
    response_ms: int
    nanosecond: int = 0  # sub-microsecond part of the time stamp (0..999), from 7–9 fractional digits

    @property
    def ok(self) -> bool:
        """True when the request succeeded (status 200 and a list of ids)."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """A new account was created: `<time>,<user>,GET /create_account`."""

    time: datetime
    user_id: int
    nanosecond: int = 0  # sub-microsecond part of the time stamp (0..999), from 7–9 fractional digits


Event = WatchEvent | RateEvent | RecommendationEvent | AccountEvent
