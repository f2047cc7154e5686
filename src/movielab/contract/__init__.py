"""The contract between the world and the recommender: event lines, movie ids, course editions.

Imports nothing else of movielab; both sides import it.
"""

from movielab.contract.editions import CURRENT, EDITIONS, Edition, UnknownEdition, edition
from movielab.contract.errors import ContractError, InvalidMovieId, MalformedEvent
from movielab.contract.events import AccountEvent, Event, RateEvent, RecommendationEvent, WatchEvent
from movielab.contract.lines import (
    MAX_RATING,
    MAX_RECOMMENDATIONS,
    TIME_PATTERN,
    account_line,
    format_event,
    format_time,
    format_time_us,
    parse_line,
    parse_time,
    rate_line,
    recommendation_line,
    watch_line,
)
from movielab.contract.slug import (
    MAX_MOVIE_ID_LENGTH,
    MOVIE_ID_PATTERN,
    check_movie_id,
    is_movie_id,
    movie_id_problem,
    slugify,
    split_title_year,
    tmdb_title,
    unique_slugs,
)

__all__ = [
    "CURRENT",
    "EDITIONS",
    "MAX_MOVIE_ID_LENGTH",
    "MAX_RATING",
    "MAX_RECOMMENDATIONS",
    "MOVIE_ID_PATTERN",
    "TIME_PATTERN",
    "AccountEvent",
    "ContractError",
    "Edition",
    "Event",
    "InvalidMovieId",
    "MalformedEvent",
    "RateEvent",
    "RecommendationEvent",
    "UnknownEdition",
    "WatchEvent",
    "account_line",
    "check_movie_id",
    "edition",
    "format_event",
    "format_time",
    "format_time_us",
    "is_movie_id",
    "movie_id_problem",
    "parse_line",
    "parse_time",
    "rate_line",
    "recommendation_line",
    "slugify",
    "split_title_year",
    "tmdb_title",
    "unique_slugs",
    "watch_line",
]
