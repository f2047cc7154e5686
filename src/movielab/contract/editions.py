"""Course editions: what one offering of the course's stream and API looks like.

A world runs one edition; a consumer that knows the edition knows the rating scale and which
API fields to expect. The parser itself accepts every edition's lines (ratings 1..10, time stamps
with minutes, seconds or 1–9 fractional digits); the edition decides what is valid.

Sources: the course paper (2019: 160,000 simulated users), the course's 2026 description (about
1 million users and 20,000 movies, 1–10 stars, users' free-text likes and dislikes, license cost
per play and IMDB/TMDB ids on movies), and real stream lines kept by student teams (recommendation
lines with 6 fractional digits until 2023 and 9 since 2024). Catalog sizes before 2026 are not
published; 27,000 is the size of the TMDB-matched MovieLens catalog the course started from.
"""

from __future__ import annotations

from dataclasses import dataclass

from movielab.contract.errors import ContractError


@dataclass(frozen=True, slots=True)
class Edition:
    """One course edition (a range of years with the same stream and API)."""

    name: str  # "2019-2023", "2024-2025", "2026"
    first_year: int
    last_year: int
    rating_max: int  # ratings are 1..rating_max stars
    rec_fraction_digits: int  # fractional-second digits of recommendation-line time stamps
    self_descriptions: bool  # user records carry free-text likes and dislikes
    license_cost: bool  # movie records carry the license cost per play
    users: int  # the course's population size
    movies: int  # the course's catalog size
    timeout_ms: int  # how long the world waits for a team's answer

    def check_rating(self, rating: int) -> str | None:
        """Why `rating` is not a rating of this edition, or None when it is one."""
        if 1 <= rating <= self.rating_max:
            return None
        return f"rating {rating} is outside 1..{self.rating_max} of the {self.name} edition"


EDITIONS: tuple[Edition, ...] = (
    Edition("2019-2023", 2019, 2023, 5, 6, False, False, 160_000, 27_000, 800),
    Edition("2024-2025", 2024, 2025, 5, 9, False, False, 1_000_000, 27_000, 600),
    Edition("2026", 2026, 2026, 10, 9, True, True, 1_000_000, 20_000, 600),
)
CURRENT = EDITIONS[-1]


class UnknownEdition(ContractError):
    """An edition name or year that no edition covers."""

    def __init__(self, name: object) -> None:
        self.name = name
        known = ", ".join(e.name for e in EDITIONS)
        super().__init__(f"unknown course edition {name!r}: expected a year 2019..2026, 'current', or one of {known}")


def edition(name: str | int | Edition) -> Edition:
    """The edition named `name` (`"2026"`, `"2019-2023"`, `"current"`) or covering the year `name` (2021).

    Raises `UnknownEdition` for anything else.
    """
    if isinstance(name, Edition):
        return name
    text = str(name).strip()
    if text == "current":
        return CURRENT
    for e in EDITIONS:
        if text == e.name:
            return e
    if text.isascii() and text.isdigit():
        year = int(text)
        for e in EDITIONS:
            if e.first_year <= year <= e.last_year:
                return e
    raise UnknownEdition(name)
