"""The contract between the world and the recommender: event lines and their parser.

Imports nothing else of movielab; both sides import it.
"""

from movielab.contract.errors import ContractError, InvalidMovieId, MalformedEvent
from movielab.contract.events import AccountEvent, Event, RateEvent, RecommendationEvent, WatchEvent
from movielab.contract.lines import (
    MAX_RECOMMENDATIONS,
    account_line,
    format_event,
    format_time,
    format_time_us,
    parse_line,
    rate_line,
    recommendation_line,
    watch_line,
)
from movielab.contract.slug import check_slug, is_slug, slugify, split_title_year, unique_slugs

__all__ = [
    "MAX_RECOMMENDATIONS",
    "AccountEvent",
    "ContractError",
    "Event",
    "InvalidMovieId",
    "MalformedEvent",
    "RateEvent",
    "RecommendationEvent",
    "WatchEvent",
    "account_line",
    "check_slug",
    "format_event",
    "format_time",
    "format_time_us",
    "is_slug",
    "parse_line",
    "rate_line",
    "recommendation_line",
    "slugify",
    "split_title_year",
    "unique_slugs",
    "watch_line",
]
