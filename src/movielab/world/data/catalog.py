"""The world's catalog: MovieLens movies with slugs and simulated TMDB fields, and its synthetic scale-up.

Real from MovieLens: title, year, genres, and (derived from the ratings) popularity = percent of
users who rated the movie, vote_average = mean rating x 2, vote_count = number of ratings.
Simulated, deterministically from a seed: runtime, license cost, TMDB/IMDb ids and every other TMDB
field of `Catalog.tmdb_record`, which lists them under "simulated". Synthetic rows (from
`scale_catalog`) are simulated in full, from distributions fitted to the real rows.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from movielab.contract.slug import unique_slugs
from movielab.world.data.errors import UnknownMovie
from movielab.world.data.types import GENRES, MovieLensData

# TMDB's movie genre ids and names. TMDB has no Film-Noir genre: 10001 is movielab's own id for it,
# chosen outside TMDB's id range so it never collides with a real TMDB genre.
TMDB_GENRES: dict[str, tuple[int, str]] = {
    "Action": (28, "Action"),
    "Adventure": (12, "Adventure"),
    "Animation": (16, "Animation"),
    "Children's": (10751, "Family"),
    "Comedy": (35, "Comedy"),
    "Crime": (80, "Crime"),
    "Documentary": (99, "Documentary"),
    "Drama": (18, "Drama"),
    "Fantasy": (14, "Fantasy"),
    "Film-Noir": (10001, "Film-Noir"),
    "Horror": (27, "Horror"),
    "Musical": (10402, "Music"),
    "Mystery": (9648, "Mystery"),
    "Romance": (10749, "Romance"),
    "Sci-Fi": (878, "Science Fiction"),
    "Thriller": (53, "Thriller"),
    "War": (10752, "War"),
    "Western": (37, "Western"),
}
# Median runtime (minutes) by genre; a movie's median is the mean over its genres.
RUNTIME_BY_GENRE: dict[str, int] = {
    "Action": 110,
    "Adventure": 112,
    "Animation": 85,
    "Children's": 88,
    "Comedy": 100,
    "Crime": 110,
    "Documentary": 95,
    "Drama": 118,
    "Fantasy": 105,
    "Film-Noir": 100,
    "Horror": 95,
    "Musical": 112,
    "Mystery": 105,
    "Romance": 108,
    "Sci-Fi": 110,
    "Thriller": 108,
    "War": 125,
    "Western": 110,
}
RUNTIME_MEDIAN = np.array([RUNTIME_BY_GENRE[g] for g in GENRES], dtype=np.float64)
DEFAULT_RUNTIME, RUNTIME_SPREAD, RUNTIME_RANGE = 105.0, 0.15, (60, 240)
LATEST_YEAR = 2026
SIMULATED_ALWAYS = (
    "tmdb_id",
    "imdb_id",
    "adult",
    "belongs_to_collection",
    "budget",
    "homepage",
    "original_language",
    "overview",
    "poster_path",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
)
SIMULATED_IF_SYNTHETIC = ("title", "original_title", "genres", "popularity", "vote_average", "vote_count")

_ARTICLE = re.compile(
    r"^(?P<body>.*?),\s*(?P<article>the|a|an|les|la|le|l'|il|el|das|der|die|den|det|lo|los|las"
    r"|i|gli|un|une)(?P<rest>\s*\(.*\))?\s*$",
    re.IGNORECASE,
)
_TITLE_WORD = re.compile(r"[A-Za-z]{3,}")
_STOP_WORDS = frozenset("the and for with from les des der die das von del les une dans".split())
_KIND = (
    "action film",
    "adventure",
    "animated film",
    "family film",
    "comedy",
    "crime story",
    "documentary",
    "drama",
    "fantasy",
    "film noir",
    "horror film",
    "musical",
    "mystery",
    "romance",
    "science-fiction film",
    "thriller",
    "war film",
    "western",
)
_WHO = (
    "a retired detective",
    "an estranged sister",
    "a small-town teacher",
    "an ambitious young lawyer",
    "a family of musicians",
    "a stranded pilot",
    "a reluctant hero",
    "an aging boxer",
    "a curious child",
)
_WHAT = (
    "must face the past",
    "finds an unlikely friend",
    "is drawn into a dangerous plan",
    "tries to save the family business",
    "chases a long-lost dream",
    "uncovers a secret",
)
_WHERE = ("in a restless city", "on the open road", "in a quiet coastal town", "far from home", "over one summer")
_TAGLINES = (
    "Some secrets never stay buried.",
    "Every journey starts with one step.",
    "Nothing is what it seems.",
    "The past is never far behind.",
    "One night can change everything.",
    "Hold on tight.",
)
_COMPANIES = (
    "Northlight Pictures",
    "Blue Harbor Films",
    "Redwood Studios",
    "Meridian Entertainment",
    "Silver Lantern Productions",
    "Crosswind Media",
    "Granite Peak Films",
    "Lumen & Lark",
)
_COUNTRIES = (
    ("US", "United States of America"),
    ("GB", "United Kingdom"),
    ("FR", "France"),
    ("DE", "Germany"),
    ("CA", "Canada"),
    ("IT", "Italy"),
    ("JP", "Japan"),
)
_POSTER_CHARS = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


@dataclass(eq=False)
class Catalog:
    """Every movie of the world, one row each (struct of arrays); row order is stable."""

    slug: list[str]
    title: list[str]
    year: np.ndarray  # int16, 0 when unknown
    genres: np.ndarray  # bool (n, len(GENRES))
    runtime: np.ndarray  # int16 minutes, simulated
    license_cost: np.ndarray  # float32 dollars per stream, simulated
    tmdb_id: np.ndarray  # int32, simulated
    imdb_id: list[str]  # "tt0114814"-shaped, simulated
    popularity: np.ndarray  # float32
    vote_average: np.ndarray  # float32, 0..10
    vote_count: np.ndarray  # int32
    synthetic: np.ndarray  # bool
    source_id: np.ndarray  # int64 MovieLens id, -1 for synthetic rows
    seed: int = 0  # seeds the per-movie simulated fields of tmdb_record
    _index: dict[str, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.slug)
        for name in (
            "title",
            "year",
            "genres",
            "runtime",
            "license_cost",
            "tmdb_id",
            "imdb_id",
            "popularity",
            "vote_average",
            "vote_count",
            "synthetic",
            "source_id",
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(f"catalog column {name} has {len(getattr(self, name))} rows, slug has {n}")

    def __len__(self) -> int:
        return len(self.slug)

    def index_of(self, slug: str) -> int:
        """Return the row of the movie `slug`; raise UnknownMovie if the catalog has no such movie."""
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.slug)}
        try:
            return self._index[slug]
        except KeyError:
            raise UnknownMovie(slug) from None

    def tmdb_record(self, i: int, license_cost: bool = False) -> dict[str, Any]:
        """Return the TMDB-shaped JSON record of row `i` (the world API's `/movie/<id>` body).

        Field types follow the course's real records (numbers as strings, `runtime` an integer,
        absent values `"null"`); `license_cost` (2026 edition) adds the simulated USD per play.
        """
        i = operator.index(i)
        if not 0 <= i < len(self):
            raise IndexError(f"movie row {i} is outside the catalog of {len(self)} movies")
        rng = np.random.default_rng([self.seed, i])
        genres = [GENRES[g] for g in np.flatnonzero(self.genres[i])]
        year, pop = int(self.year[i]), float(self.popularity[i])
        budget = 0 if rng.random() < 0.25 else int(round(np.exp(rng.normal(15.5 + 0.3 * np.log1p(pop), 0.8)), -5))
        gross = max(budget, 1e6) * rng.lognormal(0.5, 1.0)
        revenue = 0 if budget == 0 and rng.random() < 0.5 else int(round(gross, -3))
        country = _COUNTRIES[0] if rng.random() < 0.75 else _COUNTRIES[rng.integers(1, len(_COUNTRIES))]
        companies = rng.choice(len(_COMPANIES), size=int(rng.integers(1, 4)), replace=False)
        kind = _KIND[GENRES.index(genres[0])] if genres else "film"
        article = "An" if kind[0] in "aeiou" else "A"
        overview = f"{article} {kind} about {_pick(rng, _WHO)} who {_pick(rng, _WHAT)} {_pick(rng, _WHERE)}."
        release = "null" if year == 0 else f"{year:04d}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
        simulated = list(SIMULATED_ALWAYS) + (list(SIMULATED_IF_SYNTHETIC) if self.synthetic[i] else [])
        record = {
            "id": self.slug[i],
            "tmdb_id": int(self.tmdb_id[i]),
            "imdb_id": self.imdb_id[i],
            "title": self.title[i],
            "original_title": self.title[i],
            "adult": "False",
            "belongs_to_collection": {},
            "budget": str(budget),
            "genres": [{"id": TMDB_GENRES[g][0], "name": TMDB_GENRES[g][1]} for g in genres],
            "homepage": "null" if rng.random() < 0.6 else f"https://movies.example.com/{self.slug[i]}",
            "original_language": "en",
            "overview": overview,
            "popularity": f"{pop:.4f}",
            "poster_path": "/" + "".join(rng.choice(_POSTER_CHARS, 27)) + ".jpg",
            "production_companies": [{"name": _COMPANIES[c], "id": 1000 + int(c)} for c in companies],
            "production_countries": [{"iso_3166_1": country[0], "name": country[1]}],
            "release_date": release,
            "revenue": str(revenue),
            "runtime": int(self.runtime[i]),
            "spoken_languages": [{"iso_639_1": "en", "name": "English"}],
            "status": "Released",
            "tagline": _pick(rng, _TAGLINES),
            "vote_average": f"{float(self.vote_average[i]):.1f}",
            "vote_count": str(int(self.vote_count[i])),
            "simulated": simulated,
        }
        if license_cost:
            record["license_cost"] = round(float(self.license_cost[i]), 4)
            simulated.append("license_cost")
        return record


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def display_title(title: str) -> str:
    """Move a MovieLens trailing article to the front: "Usual Suspects, The" -> "The Usual Suspects"."""
    m = _ARTICLE.match(title)
    if m is None:
        return title
    article = m.group("article")
    sep = "" if article.endswith("'") else " "
    return f"{article}{sep}{m.group('body')}{m.group('rest') or ''}"


def _runtimes(genres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    counts = genres.sum(axis=1)
    median = np.where(counts > 0, genres @ RUNTIME_MEDIAN / np.maximum(counts, 1), DEFAULT_RUNTIME)
    minutes = median * np.exp(rng.normal(0.0, RUNTIME_SPREAD, len(genres)))
    return np.clip(np.rint(minutes), *RUNTIME_RANGE).astype(np.int16)


def _license_costs(popularity: np.ndarray, year: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Dollars per stream: popular and recent movies cost more to license.
    recency = np.clip((year.astype(np.float64) - 1930) / (LATEST_YEAR - 1930), 0, 1)
    cost = (0.02 + 0.10 * np.log1p(popularity) + 0.15 * recency) * rng.lognormal(0.0, 0.2, len(year))
    return np.round(cost, 4).astype(np.float32)


def _unique_ints(rng: np.random.Generator, n: int, high: int, exclude: np.ndarray) -> np.ndarray:
    """Draw n distinct ints in 1..high-1 (widened if too few) that are not in `exclude`, in draw order."""
    high = max(high, 10 * (n + len(exclude)))
    out = np.zeros(0, dtype=np.int64)
    while len(out) < n:
        draw = rng.integers(1, high, 2 * (n - len(out)) + 16)
        draw = draw[~np.isin(draw, exclude) & ~np.isin(draw, out)]
        _, first = np.unique(draw, return_index=True)
        out = np.concatenate([out, draw[np.sort(first)]])
    return out[:n]


def _imdb_ids(numbers: np.ndarray) -> list[str]:
    return [f"tt{n:07d}" for n in numbers.tolist()]


def build_catalog(data: MovieLensData, seed: int = 0) -> Catalog:
    """Build the catalog of a loaded MovieLens data set; simulated fields are drawn from `seed`."""
    movies, ratings = data.movies, data.ratings
    n = len(movies)
    rng = np.random.default_rng([seed, 0xCA7A])
    counts = np.bincount(ratings.movie, minlength=n)[:n]
    sums = np.bincount(ratings.movie, weights=ratings.rating, minlength=n)[:n]
    popularity = (100.0 * counts / max(data.n_users, 1)).astype(np.float32)
    years = movies.year.astype(np.int16)
    return Catalog(
        slug=unique_slugs((t, int(y) or None) for t, y in zip(movies.title, years.tolist(), strict=False)),
        title=[display_title(t) for t in movies.title],
        year=years,
        genres=movies.genres.astype(bool),
        runtime=_runtimes(movies.genres, rng),
        license_cost=_license_costs(popularity, years, rng),
        tmdb_id=_unique_ints(rng, n, 1_000_000, np.zeros(0, np.int64)).astype(np.int32),
        imdb_id=_imdb_ids(_unique_ints(rng, n, 10_000_000, np.zeros(0, np.int64))),
        popularity=popularity,
        vote_average=(2.0 * sums / np.maximum(counts, 1)).astype(np.float32),
        vote_count=counts.astype(np.int32),
        synthetic=np.zeros(n, dtype=bool),
        source_id=movies.source_id.astype(np.int64),
        seed=seed,
    )


def _title_vocabulary(titles: list[str]) -> list[str]:
    words = {w.lower() for t in titles for w in _TITLE_WORD.findall(t)} - _STOP_WORDS
    return sorted(w.capitalize() for w in words) or ["Night", "River", "Story", "Light", "Road", "Summer"]


def _synthetic_titles(vocabulary: list[str], n: int, rng: np.random.Generator) -> list[str]:
    lengths = rng.integers(2, 5, n)
    words = np.asarray(vocabulary, dtype=object)[rng.integers(0, len(vocabulary), (n, 4))]
    with_the = rng.random(n) < 0.2
    return [("The " if the else "") + " ".join(row[:k]) for row, k, the in zip(words, lengths, with_the, strict=False)]


def scale_catalog(catalog: Catalog, n_movies: int, seed: int = 0) -> Catalog:
    """Return a catalog of n_movies rows: `catalog` unchanged, then synthetic movies fitted to its real rows."""
    n_old = len(catalog)
    if n_movies < n_old:
        raise ValueError(f"cannot scale a catalog of {n_old} movies down to {n_movies}")
    real = np.flatnonzero(~catalog.synthetic)
    if len(real) == 0:
        raise ValueError("cannot scale a catalog without real movies: there is nothing to fit")
    n = n_movies - n_old
    rng = np.random.default_rng([seed, 0x5CA1E])
    # Genre sets: sample whole combinations by their empirical frequency, so co-occurrence is kept.
    bits = 1 << np.arange(len(GENRES), dtype=np.int64)
    combos, combo_counts = np.unique(catalog.genres[real] @ bits, return_counts=True)
    genres = (rng.choice(combos, n, p=combo_counts / combo_counts.sum())[:, None] & bits) != 0
    known_years = catalog.year[real][catalog.year[real] > 0]
    years = rng.choice(known_years, n) + rng.integers(-2, 3, n) if len(known_years) else np.full(n, 2000)
    years = np.clip(years, 1888, LATEST_YEAR).astype(np.int16)
    donor = rng.choice(real, n)  # popularity and votes are drawn jointly, keeping their correlation
    popularity = (catalog.popularity[donor] * rng.lognormal(0.0, 0.1, n)).astype(np.float32)
    vote_count = catalog.vote_count[donor].astype(np.int32)
    vote_average = np.where(vote_count > 0, np.clip(catalog.vote_average[donor] + rng.normal(0, 0.2, n), 0, 10), 0)
    titles = _synthetic_titles(_title_vocabulary([catalog.title[i] for i in real]), n, rng)
    # Old slugs stay; a synthetic title whose slug clashes with one gets a suffix instead.
    slugs = catalog.slug + unique_slugs(zip(titles, years.tolist(), strict=False), taken=catalog.slug)
    old_imdb = np.array([int(s[2:]) for s in catalog.imdb_id], dtype=np.int64)
    return Catalog(
        slug=slugs,
        title=catalog.title + titles,
        year=np.concatenate([catalog.year, years]),
        genres=np.concatenate([catalog.genres, genres]),
        runtime=np.concatenate([catalog.runtime, _runtimes(genres, rng)]),
        license_cost=np.concatenate([catalog.license_cost, _license_costs(popularity, years, rng)]),
        tmdb_id=np.concatenate([catalog.tmdb_id, _unique_ints(rng, n, 1_000_000, catalog.tmdb_id).astype(np.int32)]),
        imdb_id=catalog.imdb_id + _imdb_ids(_unique_ints(rng, n, 10_000_000, old_imdb)),
        popularity=np.concatenate([catalog.popularity, popularity]),
        vote_average=np.concatenate([catalog.vote_average, vote_average.astype(np.float32)]),
        vote_count=np.concatenate([catalog.vote_count, vote_count]),
        synthetic=np.concatenate([catalog.synthetic, np.ones(n, dtype=bool)]),
        source_id=np.concatenate([catalog.source_id, np.full(n, -1, dtype=np.int64)]),
        seed=catalog.seed,
    )
