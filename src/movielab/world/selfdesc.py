"""Users' free-text answers to "what movies do you like / not like" (the 2026 edition's user records).

Generated from the hidden taste, imperfect on purpose so they carry real but partial signal for
cold start: a user names some of the well-known movies they would rate highest (and lowest) and
the genres they lean toward (and away from); titles come with typos, without their article or
year, in lower case; a share of answers is vague ("pretty much anything") and some named titles
are simply wrong (a random well-known movie). About a fifth of users leave an answer empty.

Every knob below is a guess at how people answer a sign-up form, not a fitted figure. An answer is
drawn once per user, from the taste the user has when first asked, with a generator seeded by the
world seed and the user id, and kept for the run (people do not rewrite their sign-up answers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movielab.world.data.catalog import Catalog
from movielab.world.data.types import GENRES
from movielab.world.population import Population
from movielab.world.truth import TasteModel


@dataclass(frozen=True)
class SelfDescriptionParams:
    """How users answer the sign-up questions (guesses, see the module docstring)."""

    known_movies: int = 2000  # users name movies among the most popular ones
    top_k: int = 40  # a liked title is drawn from the user's true top-k of the known movies
    empty_p: float = 0.2  # the answer is left empty
    vague_p: float = 0.12  # the answer names nothing ("anything good")
    wrong_title_p: float = 0.15  # a named title is a random known movie instead
    typo_p: float = 0.2  # a named title has one character dropped or swapped
    no_year_p: float = 0.6  # a named title comes without its year
    no_article_p: float = 0.4  # a leading "The"/"A"/"An" is left out
    lower_p: float = 0.5  # the whole answer is lower-cased


_LIKE_TEMPLATES = (
    "I love {titles}.",
    "{genres} movies, especially {titles}",
    "Big fan of {genres}. Favorites: {titles}",
    "anything like {titles}",
    "{titles} and most {genres} films",
    "Mostly {genres}.",
)
_DISLIKE_TEMPLATES = (
    "Not into {genres}.",
    "I don't like {genres} movies, e.g. {titles}",
    "Didn't enjoy {titles}.",
    "{genres}, and {titles} was boring",
    "nothing with too much {genres}",
)
_VAGUE_LIKES = ("pretty much anything", "good movies", "I like a bit of everything", "whatever is popular")
_VAGUE_DISLIKES = ("not sure", "bad movies", "nothing in particular", "boring ones")
_ARTICLES = ("The ", "A ", "An ")


class SelfDescriptions:
    """Answers `(likes, dislikes)` for users of a population, drawn from the hidden taste."""

    def __init__(
        self,
        population: Population,
        taste: TasteModel,
        catalog: Catalog,
        seed: int = 0,
        params: SelfDescriptionParams | None = None,
    ) -> None:
        self.population = population
        self.taste = taste
        self.catalog = catalog
        self.seed = seed
        self.params = params or SelfDescriptionParams()
        n = min(self.params.known_movies, len(catalog))
        self._known = np.argsort(-np.asarray(catalog.popularity, np.float64), kind="stable")[:n]
        self._genres = np.asarray(catalog.genres, bool)[self._known]
        self._answers: dict[int, tuple[str, str]] = {}

    def answers(self, user_id: int) -> tuple[str, str]:
        """`(likes, dislikes)` of `user_id` ("" where the user left it empty); raises UnknownUser."""
        got = self._answers.get(user_id)
        if got is None:
            got = self._draw(user_id)
            self._answers[user_id] = got
        return got

    def _draw(self, user_id: int) -> tuple[str, str]:
        row = self.population.row_of(user_id)
        p = self.params
        rng = np.random.default_rng([self.seed, user_id, 0x5E1F])
        q = self.taste.item_factors[self._known]
        personal = q @ self.population.taste[row]  # the user-specific part: what sets this user apart
        score = personal + self.taste.item_bias[self._known]
        genre_lean = _genre_lean(personal, self._genres)
        order = np.argsort(-score, kind="stable")
        likes = self._answer(rng, order[: p.top_k], np.argsort(-genre_lean)[:2], _LIKE_TEMPLATES, _VAGUE_LIKES)
        dislikes = self._answer(
            rng, order[::-1][: p.top_k], np.argsort(genre_lean)[:1], _DISLIKE_TEMPLATES, _VAGUE_DISLIKES
        )
        return likes, dislikes

    def _answer(
        self,
        rng: np.random.Generator,
        pool: np.ndarray,
        genres: np.ndarray,
        templates: tuple[str, ...],
        vague: tuple[str, ...],
    ) -> str:
        p = self.params
        if rng.random() < p.empty_p:
            return ""
        if rng.random() < p.vague_p or len(pool) == 0:
            return vague[int(rng.integers(len(vague)))]
        k = int(rng.integers(1, 4))
        picks = rng.choice(pool, size=min(k, len(pool)), replace=False)
        titles = [
            self._title(
                int(self._known[i])
                if rng.random() >= p.wrong_title_p
                else int(self._known[rng.integers(len(self._known))]),
                rng,
            )
            for i in picks
        ]
        genre_names = [GENRES[int(g)] for g in genres if g < len(GENRES)]
        text = templates[int(rng.integers(len(templates)))].format(
            titles=_join(titles), genres=_join(genre_names) or "drama"
        )
        return text.lower() if rng.random() < p.lower_p else text

    def _title(self, row: int, rng: np.random.Generator) -> str:
        p = self.params
        title = self.catalog.title[row]
        if rng.random() < p.no_article_p:
            for article in _ARTICLES:
                if title.startswith(article):
                    title = title[len(article) :]
                    break
        if rng.random() < p.typo_p and len(title) > 4:
            title = _typo(title, rng)
        year = int(self.catalog.year[row])
        if year and rng.random() >= p.no_year_p:
            title = f"{title} ({year})"
        return title


def _genre_lean(personal: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """Mean user-specific score of the known movies of each genre (a genre with none: 0)."""
    counts = genres.sum(axis=0)
    sums = personal.astype(np.float64) @ genres
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def _typo(title: str, rng: np.random.Generator) -> str:
    """One character dropped, or two neighbours swapped."""
    i = int(rng.integers(1, len(title) - 1))
    if rng.random() < 0.5:
        return title[:i] + title[i + 1 :]
    return title[:i] + title[i + 1] + title[i] + title[i + 2 :]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
