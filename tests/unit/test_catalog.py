"""The catalog: slugs, real and simulated fields, TMDB records, and the synthetic scale-up."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from movielab.contract import is_movie_id
from movielab.world.data.catalog import Catalog, build_catalog, display_title, scale_catalog
from movielab.world.data.errors import UnknownMovie
from movielab.world.data.types import GENRES, MovieLensData, Movies, Ratings

# The TMDB fields the world API's /movie/<id> answers with (README, "Editions").
TMDB_FIELDS = {
    "id",
    "tmdb_id",
    "imdb_id",
    "title",
    "original_title",
    "adult",
    "belongs_to_collection",
    "budget",
    "genres",
    "homepage",
    "original_language",
    "overview",
    "popularity",
    "poster_path",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
    "vote_average",
    "vote_count",
}
COMBOS = [
    (("Drama",), 0.4),
    (("Comedy",), 0.25),
    (("Comedy", "Romance"), 0.15),
    (("Animation", "Children's"), 0.1),
    (("War", "Drama"), 0.07),
    ((), 0.03),
]
FIXED_TITLES = ["Usual Suspects, The", "Avventura, L'", "Heat", "Heat", "Double vie de Véronique, La (Double Life)"]


def _movielens(n_movies: int = 500, n_users: int = 50, seed: int = 1) -> MovieLensData:
    rng = np.random.default_rng(seed)
    genres = np.zeros((n_movies, len(GENRES)), dtype=bool)
    for row, combo in enumerate(rng.choice(len(COMBOS), n_movies, p=[p for _, p in COMBOS])):
        genres[row, [GENRES.index(g) for g in COMBOS[combo][0]]] = True
    words = ["Night", "River", "Stranger", "Summer", "Kings", "Return", "Midnight", "Garden"]
    titles = FIXED_TITLES + [f"{words[i % 8]} {words[(i // 8) % 8]} {i}" for i in range(len(FIXED_TITLES), n_movies)]
    years = rng.integers(1930, 2000, n_movies)
    years[2:4] = 1995  # two movies called "Heat (1995)": the slug clash gets a suffix
    n_ratings = 20 * n_movies
    movies = Movies(
        source_id=np.arange(1, n_movies + 1, dtype=np.int64) * 3,
        title=titles,
        year=years.astype(np.int16),
        genres=genres,
    )
    movie = np.minimum(rng.zipf(1.5, n_ratings) - 1, n_movies - 1).astype(np.int32)
    ratings = Ratings(
        user=rng.integers(0, n_users, n_ratings).astype(np.int32),
        movie=movie,
        rating=rng.integers(1, 6, n_ratings).astype(np.float32),
        timestamp=rng.integers(8e8, 9e8, n_ratings).astype(np.int64),
    )
    return MovieLensData(name="fixture", movies=movies, ratings=ratings, users=None, n_users=n_users, source="test")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(_movielens())


@pytest.fixture(scope="module")
def scaled(catalog) -> Catalog:
    return scale_catalog(catalog, 20_000, seed=3)


def test_build_catalog_keeps_movielens_facts(catalog):
    data = _movielens()
    assert len(catalog) == 500 and not catalog.synthetic.any()
    assert catalog.title[:3] == ["The Usual Suspects", "L'Avventura", "Heat"]
    year0, year1 = data.movies.year[:2]
    assert catalog.slug[:4] == [f"the+usual+suspects+{year0}", f"lavventura+{year1}", "heat+1995", "heat+1995+2"]
    assert np.array_equal(catalog.source_id, data.movies.source_id)
    assert np.array_equal(catalog.genres, data.movies.genres)
    counts = np.bincount(data.ratings.movie, minlength=500)
    assert np.array_equal(catalog.vote_count, counts)
    assert catalog.popularity[0] == pytest.approx(100 * counts[0] / 50)
    mean0 = data.ratings.rating[data.ratings.movie == 0].mean()
    assert catalog.vote_average[0] == pytest.approx(2 * mean0, rel=1e-5)
    assert catalog.year.dtype == np.int16 and catalog.runtime.dtype == np.int16 and catalog.tmdb_id.dtype == np.int32
    assert catalog.license_cost.dtype == np.float32 and catalog.popularity.dtype == np.float32


@pytest.mark.parametrize(
    ("title", "shown"),
    [
        ("Usual Suspects, The", "The Usual Suspects"),
        ("Avventura, L'", "L'Avventura"),
        ("Heat", "Heat"),
        (
            "Double vie de Véronique, La (Double Life of Veronique, The)",
            "La Double vie de Véronique (Double Life of Veronique, The)",
        ),
        ("Good, the Bad and the Ugly, The", "The Good, the Bad and the Ugly"),
    ],
)
def test_display_title_moves_the_article_to_the_front(title, shown):
    assert display_title(title) == shown


def test_slugs_are_unique_valid_and_indexed(scaled):
    assert len(set(scaled.slug)) == len(scaled) and all(is_movie_id(s) for s in scaled.slug)
    assert all(scaled.index_of(scaled.slug[i]) == i for i in (0, 3, 499, 500, 19_999))


def test_unknown_slug_raises_unknown_movie_naming_it(catalog):
    with pytest.raises(UnknownMovie) as caught:
        catalog.index_of("no+such+movie+1999")
    assert isinstance(caught.value, KeyError) and "no+such+movie+1999" in str(caught.value)


def test_scale_catalog_keeps_real_rows_unchanged(catalog, scaled):
    assert len(scaled) == 20_000 and scaled.synthetic.sum() == 19_500 and not scaled.synthetic[:500].any()
    for name in ("slug", "title", "imdb_id"):
        assert getattr(scaled, name)[:500] == getattr(catalog, name)
    for name in (
        "year",
        "genres",
        "runtime",
        "license_cost",
        "tmdb_id",
        "popularity",
        "vote_average",
        "vote_count",
        "source_id",
    ):
        assert np.array_equal(getattr(scaled, name)[:500], getattr(catalog, name)), name
    assert scaled.tmdb_record(7) == catalog.tmdb_record(7)
    assert (scaled.source_id[500:] == -1).all()


def test_synthetic_genre_sets_follow_the_real_frequencies(catalog, scaled):
    def frequencies(genres: np.ndarray) -> Counter:
        return Counter(tuple(row) for row in genres)

    real, synthetic = frequencies(catalog.genres), frequencies(scaled.genres[500:])
    assert set(synthetic) <= set(real)
    distance = sum(abs(real[k] / 500 - synthetic[k] / 19_500) for k in real) / 2
    assert distance < 0.03


def test_synthetic_fields_are_in_range(catalog, scaled):
    synthetic = slice(500, None)
    assert scaled.runtime.min() >= 60 and scaled.runtime.max() <= 240
    years = scaled.year[synthetic]
    assert years.min() >= catalog.year.min() - 2 and years.max() <= min(catalog.year.max() + 2, 2026)
    assert (scaled.vote_average >= 0).all() and (scaled.vote_average <= 10).all()
    assert set(scaled.vote_count[synthetic]) <= set(catalog.vote_count)
    assert len(np.unique(scaled.tmdb_id)) == len(scaled) and len(set(scaled.imdb_id)) == len(scaled)
    assert all(re.fullmatch(r"tt\d{7,}", i) for i in scaled.imdb_id)
    assert all(2 <= len(t.split()) <= 5 for t in scaled.title[synthetic])
    assert (scaled.license_cost > 0).all()


def test_runtime_depends_on_genre(scaled):
    animation = scaled.genres[:, GENRES.index("Animation")]
    war = scaled.genres[:, GENRES.index("War")]
    assert 80 < np.median(scaled.runtime[animation]) < 95 < 115 < np.median(scaled.runtime[war]) < 130


def test_scale_catalog_is_deterministic_and_seeded(catalog, scaled):
    again = scale_catalog(catalog, 20_000, seed=3)
    assert again.slug == scaled.slug and np.array_equal(again.runtime, scaled.runtime)
    assert again.tmdb_record(12_345) == scaled.tmdb_record(12_345)
    other = scale_catalog(catalog, 20_000, seed=4)
    assert other.slug[500:] != scaled.slug[500:]
    assert build_catalog(_movielens()).tmdb_record(3) == catalog.tmdb_record(3)


def test_scale_catalog_refuses_to_shrink_and_allows_the_same_size(catalog):
    with pytest.raises(ValueError, match="500 movies down to 10"):
        scale_catalog(catalog, 10)
    assert scale_catalog(catalog, 500).slug == catalog.slug
    rescaled = scale_catalog(scale_catalog(catalog, 600), 700)
    assert rescaled.synthetic.sum() == 200 and len(set(rescaled.slug)) == 700


def test_tmdb_record_has_every_field_and_is_json(catalog, scaled):
    record = catalog.tmdb_record(0)
    assert TMDB_FIELDS <= set(record) and json.loads(json.dumps(record)) == record
    assert record["id"] == catalog.slug[0] and record["title"] == "The Usual Suspects"
    assert record["adult"] == "False" and record["belongs_to_collection"] == {} and record["status"] == "Released"
    for field in ("budget", "popularity", "revenue", "vote_average", "vote_count"):
        assert isinstance(record[field], str), field
    assert record["runtime"] == int(catalog.runtime[0]) and "license_cost" not in record  # an integer, as the course
    assert catalog.tmdb_record(0, license_cost=True)["license_cost"] == pytest.approx(float(catalog.license_cost[0]))
    assert record["vote_count"] == str(catalog.vote_count[0])
    assert record["release_date"].startswith(str(catalog.year[0]))
    assert record["homepage"] == "null" or record["homepage"].startswith("https://")
    assert "title" not in record["simulated"] and "runtime" in record["simulated"]
    synthetic = scaled.tmdb_record(10_000)
    assert TMDB_FIELDS <= set(synthetic) and {"title", "genres", "popularity"} <= set(synthetic["simulated"])


def test_tmdb_record_genre_ids():
    data = _movielens()
    genres = np.zeros_like(data.movies.genres)
    genres[0, [GENRES.index("Children's"), GENRES.index("Sci-Fi"), GENRES.index("Musical")]] = True
    movies = Movies(data.movies.source_id, data.movies.title, data.movies.year, genres)
    record = build_catalog(MovieLensData("f", movies, data.ratings, None, 50, "t")).tmdb_record(0)
    assert record["genres"] == [
        {"id": 10751, "name": "Family"},
        {"id": 10402, "name": "Music"},
        {"id": 878, "name": "Science Fiction"},
    ]


def test_tmdb_record_refuses_rows_outside_the_catalog(catalog):
    with pytest.raises(IndexError, match="row 500 is outside the catalog of 500"):
        catalog.tmdb_record(500)
