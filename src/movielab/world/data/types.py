"""Arrays that every MovieLens flavour is loaded into (struct of arrays, row = entity)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The MovieLens-100k/1M genre vocabulary; ml-latest's "Children" maps to "Children's",
# its "IMAX" and "(no genres listed)" map to no genre.
GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

GENDERS: tuple[str, ...] = ("F", "M")

# The MovieLens-1M occupation vocabulary, as the course's user API spells it (index = ML-1M code).
OCCUPATIONS: tuple[str, ...] = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)


@dataclass(frozen=True)
class Movies:
    """Movies of a MovieLens data set, one row each."""

    source_id: np.ndarray  # int64, the MovieLens movie id
    title: list[str]  # the MovieLens title without its year, e.g. "Usual Suspects, The"
    year: np.ndarray  # int16, 0 when unknown
    genres: np.ndarray  # bool, (n_movies, len(GENRES))

    def __len__(self) -> int:
        return len(self.source_id)


@dataclass(frozen=True)
class Users:
    """Users of a MovieLens data set that has demographics (ml-100k, ml-1m), one row each."""

    source_id: np.ndarray  # int64, the MovieLens user id
    age: np.ndarray  # int16 years (ml-1m: the lower bound of its age bucket)
    gender: np.ndarray  # uint8 index into GENDERS
    occupation: np.ndarray  # uint8 index into OCCUPATIONS
    zip_code: list[str]

    def __len__(self) -> int:
        return len(self.source_id)


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings, one row each; `user` and `movie` are row indices into Users/Movies."""

    user: np.ndarray  # int32
    movie: np.ndarray  # int32
    rating: np.ndarray  # float32 (half stars in ml-latest)
    timestamp: np.ndarray  # int64 unix seconds

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class MovieLensData:
    """One loaded MovieLens data set and where it came from."""

    name: str  # "ml-100k", "ml-1m", "ml-latest-small", "ml-25m"
    movies: Movies
    ratings: Ratings
    users: Users | None  # None for flavours without demographics
    n_users: int
    source: str  # human-readable origin, e.g. "recbole-1.2.1 wheel (cached)"
