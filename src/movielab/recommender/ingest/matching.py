"""Finding a user's liked and disliked movies and genres in their free-text self-description (2026 edition).

People write titles with typos, without their year or article, in lower case, joined by "and" and commas,
mixed with genre names and vague phrases. `LexicalMatcher` finds the catalog's titles in such a text by fuzzy
matching (RapidFuzz's normalized Indel ratio over titles normalized the same way) and the genre names by word
match; the result is a user's `Preferences`, which `coldstart.blend` turns into a first list.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from rapidfuzz import fuzz, process

from movielab.recommender.store.records import MovieInfo

logger = logging.getLogger(__name__)

# Genre names as people write them → the genre name of the movie records (TMDB names, as the API gives them).
GENRE_ALIASES: dict[str, str] = {
    "sci-fi": "Science Fiction",
    "scifi": "Science Fiction",
    "science fiction": "Science Fiction",
    "children's": "Family",
    "childrens": "Family",
    "kids": "Family",
    "family": "Family",
    "musical": "Music",
    "musicals": "Music",
    "music": "Music",
    "film-noir": "Film-Noir",
    "noir": "Film-Noir",
    "animated": "Animation",
    "animation": "Animation",
    "action": "Action",
    "adventure": "Adventure",
    "comedy": "Comedy",
    "comedies": "Comedy",
    "crime": "Crime",
    "documentary": "Documentary",
    "documentaries": "Documentary",
    "drama": "Drama",
    "dramas": "Drama",
    "fantasy": "Fantasy",
    "horror": "Horror",
    "mystery": "Mystery",
    "romance": "Romance",
    "romantic": "Romance",
    "thriller": "Thriller",
    "thrillers": "Thriller",
    "war": "War",
    "western": "Western",
    "westerns": "Western",
}
# Words that frame a title in a sentence ("I love …", "… was boring"); stripped from a phrase's ends only.
_FRAME = frozenset(
    [
        "i",
        "i'm",
        "im",
        "love",
        "loved",
        "like",
        "liked",
        "likes",
        "really",
        "big",
        "fan",
        "fans",
        "of",
        "favorites",
        "favourites",
        "favorite",
        "favourite",
        "especially",
        "anything",
        "everything",
        "something",
        "stuff",
        "things",
        "enjoy",
        "enjoyed",
        "enjoying",
        "didn't",
        "didnt",
        "don't",
        "dont",
        "do",
        "did",
        "not",
        "never",
        "no",
        "into",
        "movies",
        "movie",
        "films",
        "film",
        "flicks",
        "e.g",
        "eg",
        "was",
        "were",
        "is",
        "are",
        "boring",
        "most",
        "mostly",
        "nothing",
        "with",
        "too",
        "much",
        "such",
        "as",
        "and",
        "or",
        "but",
        "also",
        "all",
        "any",
        "some",
        "my",
        "me",
        "watch",
        "watching",
        "want",
        "to",
        "see",
        "seen",
    ]
)
_ARTICLES = ("the ", "a ", "an ")
_YEAR = re.compile(r"\(\s*((?:18|19|20)\d\d)\s*\)|\b((?:19|20)\d\d)\b")
_SEPARATORS = re.compile(r"(\s*[,;:!?\n]\s*|\.(?:\s+|$)|\be\.g\.\s*|\s+(?:and|&)\s+)")
MAX_PIECES = 5  # a title spans at most this many separated pieces


def normalize(text: str) -> str:
    """Lower case, accents and punctuation dropped, spaces collapsed, a leading article removed."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9 ]+", " ", text.replace("'", ""))
    text = " ".join(text.split())
    for article in _ARTICLES:
        if text.startswith(article):
            return text[len(article) :]
    return text


def _strip_frame(words: list[str]) -> list[str]:
    lo, hi = 0, len(words)
    while lo < hi and words[lo] in _FRAME:
        lo += 1
    while hi > lo and words[hi - 1] in _FRAME:
        hi -= 1
    return words[lo:hi]


@dataclass(frozen=True)
class Preferences:
    """What a self-description says: liked and disliked movie ids and genre names (record names)."""

    liked: tuple[str, ...] = ()
    disliked: tuple[str, ...] = ()
    liked_genres: tuple[str, ...] = ()
    disliked_genres: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.liked or self.disliked or self.liked_genres or self.disliked_genres)


class Matcher(Protocol):
    """Finds catalog movies and genre names in free text; `name` goes into the provenance of a list."""

    name: str

    def match(self, text: str) -> tuple[list[str], list[str]]:
        """(movie ids named, best match first in text order; genre names named) of one answer."""
        ...


class LexicalMatcher:
    """Fuzzy title matching with RapidFuzz: typos, missing years and articles, case and punctuation tolerated.

    `movies` are the catalog's records (id, title, year, genres), most popular first where known: among
    titles that match equally well (remakes, same names) the year named decides, then that order.
    A phrase matches a title when their normalized Indel similarity is at least `cutoff` (0–100).
    """

    name = "lexical-v1"

    def __init__(self, movies: Iterable[MovieInfo], cutoff: float = 86.0) -> None:
        if not 0 < cutoff <= 100:
            raise ValueError(f"LexicalMatcher cutoff {cutoff} must be in (0, 100]")
        self.cutoff = cutoff
        movies = list(movies)
        self._ids: list[str] = []
        self._years: list[int | None] = []
        self._titles: list[str] = []
        for m in movies:
            if m.title:
                key = normalize(m.title)
                if len(key) >= 2:
                    self._ids.append(m.movie_id)
                    self._years.append(m.year)
                    self._titles.append(key)
        self._genres = {**GENRE_ALIASES, **{g.lower(): g for m in movies for g in m.genres}}
        self._genre_re = re.compile(
            r"\b(" + "|".join(sorted(map(re.escape, self._genres), key=len, reverse=True)) + r")\b"
        )

    def __len__(self) -> int:
        return len(self._titles)

    def match(self, text: str) -> tuple[list[str], list[str]]:
        """(movie ids, genre names) named in `text`; empty lists for an empty or vague text."""
        lower = (text or "").lower()
        genres = list(dict.fromkeys(self._genres[g] for g in self._genre_re.findall(lower)))
        # Pieces between separators (commas, "and", full stops, …); a title may span several ("Steal Big,
        # Steal Little", "Mr. Magoo"): of the runs of pieces from here, the best match wins (the longer on ties).
        pieces = _SEPARATORS.split(lower)
        texts, seps = pieces[0::2], pieces[1::2] + [""]
        found: list[str] = []
        i = 0
        while i < len(texts):
            best: tuple[float, int, str] | None = None
            for j in range(i + 1, min(len(texts), i + MAX_PIECES) + 1):
                phrase = "".join(t + s for t, s in zip(texts[i : j - 1], seps[i : j - 1], strict=True)) + texts[j - 1]
                hit = self._title(phrase)
                if hit is not None and (best is None or hit[0] >= best[0]):
                    best = (hit[0], j, hit[1])
            if best is None:
                i += 1
            else:
                found.append(best[2])
                i = best[1]
        return list(dict.fromkeys(found)), genres

    def _title(self, phrase: str) -> tuple[float, str] | None:
        """(similarity, movie id) of the title `phrase` names best, None below the cut-off."""
        year = None
        m = _YEAR.search(phrase)
        if m:
            year = int(m.group(1) or m.group(2))
            phrase = phrase[: m.start()] + " " + phrase[m.end() :]
        raw = normalize(phrase)
        stripped = normalize(" ".join(_strip_frame(raw.split())))
        best: tuple[float, int, int] | None = None  # (score, year matches, -index)
        for candidate in dict.fromkeys((stripped, raw)):
            if len(candidate) < 3 or candidate in self._genres or candidate in _FRAME:
                continue
            for _, score, idx in process.extract(
                candidate, self._titles, scorer=fuzz.ratio, score_cutoff=self.cutoff, limit=5
            ):
                key = (round(score, 6), int(year is not None and self._years[idx] == year), -idx)
                if best is None or key > best:
                    best = key
        return None if best is None else (best[0], self._ids[-best[2]])

    def preferences(self, likes: str | None, dislikes: str | None) -> Preferences:
        """Both answers matched; a movie or genre named in both counts as disliked only."""
        liked, liked_genres = self.match(likes or "")
        disliked, disliked_genres = self.match(dislikes or "")
        return Preferences(
            tuple(m for m in liked if m not in disliked),
            tuple(disliked),
            tuple(g for g in liked_genres if g not in disliked_genres),
            tuple(disliked_genres),
        )
