"""Movie ids: opaque tokens to a consumer, made from titles by the course's slug rule.

A consumer treats a movie id as an opaque token of the course's alphabet: printable ASCII
without whitespace, `,` or `/` (those separate ids in lists and segments of a path), 1 to
`MAX_MOVIE_ID_LENGTH` characters. `is_movie_id` / `check_movie_id` check that, and
`MOVIE_ID_PATTERN` is the one regular expression every copy of the rule uses.

The world makes ids with the rule observed in the course's stream (see README, "Editions"):
lower-case; `,` becomes `_`; `.`, `-` and `+` are kept; apostrophes, `:`, `!`, `?`, `&`,
brackets, every other punctuation mark and every non-ASCII letter are dropped (not folded:
`Les Misérables` gives `les+misrables`); each space becomes `+` (so a vanished word leaves `++`:
`Harold & Kumar` gives `harold++kumar`); then `+` and the year, or a trailing `+` when there is
none. Before that, a MovieLens title is put in its TMDB form: alternative titles in parentheses
are dropped and a trailing article moves to the front (`Usual Suspects, The` → `The Usual Suspects`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from movielab.contract.errors import InvalidMovieId

MAX_MOVIE_ID_LENGTH = 200
#: Characters of a movie id, as a regex character-class body: `!`..`~` without `,` (0x2C) and `/` (0x2F).
MOVIE_ID_CHARS = r"!-+\-.0-~"
#: One movie id (length is checked apart: `{1,200}` would slow every regex that embeds it).
MOVIE_ID_PATTERN = rf"[{MOVIE_ID_CHARS}]+"
_MOVIE_ID_RE = re.compile(MOVIE_ID_PATTERN, re.ASCII)

_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_PARENS = re.compile(r"\([^()]*\)")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<body>.*?),\s*(?P<article>the|a|an|les|la|le|l'|il|el|das|der|die|den|det|lo|los|las|i|gli|un|une)\s*$",
    re.IGNORECASE,
)
_DROPPED = re.compile(r"[^a-z0-9_.+\- ]")  # after lower-casing and `,` → `_`; spaces become `+` next
_SPACE = re.compile(r"\s")
_ALNUM = re.compile(r"[a-z0-9]")


def split_title_year(title: str) -> tuple[str, int | None]:
    """Split a MovieLens title like `Heat (1995)` into (`Heat`, 1995); the year is None when absent."""
    m = _YEAR_SUFFIX.search(title)
    if m is None:
        return title.strip(), None
    return title[: m.start()].strip(), int(m.group(1))


def tmdb_title(title: str) -> str:
    """A MovieLens title (without its year) in TMDB form: alternative titles dropped, article in front.

    `City of Lost Children, The (Cité des enfants perdus, La)` → `The City of Lost Children`.
    """
    body = _PARENS.sub(" ", title).strip() or title.strip()
    m = _TRAILING_ARTICLE.match(body.strip())
    if m is None:
        return body.strip()
    article = m.group("article")
    sep = "" if article.endswith("'") else " "
    return f"{article}{sep}{m.group('body').strip()}"


def slugify(title: str, year: int | None) -> str:
    """The course's slug of a title (without its year suffix) and a year: see the module docstring.

    `slugify("Monsters, Inc.", 2001)` is `monsters_+inc.+2001`; a title with no letter or digit
    left becomes `untitled`; the result is at most `MAX_MOVIE_ID_LENGTH` characters.
    """
    text = tmdb_title(title).strip()
    text = "".join(c for c in text if c < "\x80").lower().replace(",", "_")
    text = _SPACE.sub("+", _DROPPED.sub("", text))
    if _ALNUM.search(text) is None:
        text = "untitled"
    tail = f"+{year}" if year is not None else "+"
    return text[: MAX_MOVIE_ID_LENGTH - len(tail)] + tail


def unique_slugs(titles_years: Iterable[tuple[str, int | None]], taken: Iterable[str] = ()) -> list[str]:
    """Slug every (title, year); a clash (with `taken` or an earlier one) gets `+2`, `+3`, … in input order."""
    seen: dict[str, int] = {}
    used: set[str] = set(taken)
    out: list[str] = []
    for title, year in titles_years:
        base = slugify(title, year)
        slug = base
        n = seen.get(base, 1)
        while slug in used:
            n += 1
            slug = f"{base[: MAX_MOVIE_ID_LENGTH - 1 - len(str(n))]}+{n}"
        seen[base] = n
        used.add(slug)
        out.append(slug)
    return out


def is_movie_id(movie_id: str) -> bool:
    """True when `movie_id` is a token of the course's id alphabet (1 to 200 characters)."""
    return 0 < len(movie_id) <= MAX_MOVIE_ID_LENGTH and _MOVIE_ID_RE.fullmatch(movie_id) is not None


def movie_id_problem(movie_id: object) -> str | None:
    """Why `movie_id` is not a movie id of the contract, or None when it is one."""
    if not isinstance(movie_id, str):
        return f"expected a string, got {type(movie_id).__name__}"
    if not movie_id:
        return "empty"
    if len(movie_id) > MAX_MOVIE_ID_LENGTH:
        return f"longer than {MAX_MOVIE_ID_LENGTH} characters"
    if _MOVIE_ID_RE.fullmatch(movie_id) is None:
        bad = next(c for c in movie_id if _MOVIE_ID_RE.fullmatch(c) is None)
        return f"character {bad!r} is not in the id alphabet (printable ASCII without spaces, ',' or '/')"
    return None


def check_movie_id(movie_id: object) -> str:
    """Return `movie_id` if it is a movie id of the contract, else raise `InvalidMovieId` with the reason."""
    problem = movie_id_problem(movie_id)
    if problem is not None:
        raise InvalidMovieId(movie_id, problem)
    return movie_id  # type: ignore[return-value]
