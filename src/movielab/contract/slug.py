"""The movie-id slug rule: lower-case title words joined by `+`, then the year.

`Usual Suspects, The (1995)` becomes `the+usual+suspects+1995`. Accents are folded
to ASCII, apostrophes vanish inside words (`Don't` → `dont`), other punctuation
separates words, alternative titles in parentheses (`(a.k.a. …)`, foreign titles)
are dropped, and a trailing article (`, The`, `, A`, `, Les`, …) moves to the front.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from movielab.contract.errors import InvalidMovieId

SLUG_PATTERN = r"[a-z0-9]+(?:\+[a-z0-9]+)*"
#: The regular expression (no anchors) of one movie id a consumer or the world API accepts; `check_slug`
#: checks the same (plus `MAX_SLUG_LENGTH`). OpenAPI documents and answer checks build on this one constant.
MOVIE_ID_PATTERN = SLUG_PATTERN
_SLUG_RE = re.compile(SLUG_PATTERN)
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_PARENS = re.compile(r"\([^()]*\)")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.*),\s*(?P<article>the|a|an|les|la|le|l'|il|el|das|der|die|den|det|lo|los|las|i|gli|un|une)\s*$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9]+")
MAX_SLUG_LENGTH = 200


def split_title_year(title: str) -> tuple[str, int | None]:
    """Split a MovieLens title like `Heat (1995)` into (`Heat`, 1995); the year is None when absent."""
    m = _YEAR_SUFFIX.search(title)
    if m is None:
        return title.strip(), None
    return title[: m.start()].strip(), int(m.group(1))


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return text.encode("ascii", "ignore").decode("ascii").lower()


def slugify(title: str, year: int | None) -> str:
    """Return the slug of a title (without its year suffix) and a year; `untitled` if no word is left."""
    body = _PARENS.sub(" ", title).strip() or title
    m = _TRAILING_ARTICLE.match(body.strip())
    if m is not None:
        body = f"{m.group('article')} {m.group('body')}"
    folded = _fold(body).replace("'", "").replace("’", "")
    words = _WORD.findall(folded)
    if not words:
        words = ["untitled"]
    if year is not None:
        words.append(str(year))
    return "+".join(words)[:MAX_SLUG_LENGTH].strip("+")


def unique_slugs(titles_years: Iterable[tuple[str, int | None]]) -> list[str]:
    """Slug every (title, year); a clash gets `+2`, `+3`, … in input order, so the result is deterministic."""
    seen: dict[str, int] = {}
    taken: set[str] = set()
    out: list[str] = []
    for title, year in titles_years:
        base = slugify(title, year)
        slug = base
        n = seen.get(base, 1)
        while slug in taken:
            n += 1
            slug = f"{base}+{n}"
        seen[base] = n
        taken.add(slug)
        out.append(slug)
    return out


def is_slug(movie_id: str) -> bool:
    """True when `movie_id` has the shape of a contract slug."""
    return len(movie_id) <= MAX_SLUG_LENGTH and _SLUG_RE.fullmatch(movie_id) is not None


def check_slug(movie_id: object) -> str:
    """Return `movie_id` if it is a slug, else raise `InvalidMovieId` naming it and the reason."""
    if not isinstance(movie_id, str):
        raise InvalidMovieId(movie_id, f"expected a string, got {type(movie_id).__name__}")
    if len(movie_id) > MAX_SLUG_LENGTH:
        raise InvalidMovieId(movie_id, f"longer than {MAX_SLUG_LENGTH} characters")
    if _SLUG_RE.fullmatch(movie_id) is None:
        raise InvalidMovieId(movie_id, "expected lower-case words of a-z0-9 joined by '+'")
    return movie_id
