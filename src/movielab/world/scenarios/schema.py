"""The scenario file: a list of timed injections, validated by pydantic (one model per kind, keyed on `kind`).

A scenario is TOML (`tomllib`, standard library):

    name = "shill"
    description = "bots push one movie"
    [[injections]]
    kind = "shilling"
    start = "+2h"          # an offset from the run's start (s, m, h, d, w) or an ISO-8601 UTC time
    duration = "3h"        # or end = "+5h" / an ISO time; omitted: until the run ends
    teams = [1]            # omitted: every team
    target = "auto"        # the kind's parameters

`load_scenario` raises `ScenarioError` naming the entry (`injections[3] (shilling)`), the field and the reason.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from movielab.validation import reason
from movielab.world.data.types import GENRES, OCCUPATIONS
from movielab.world.errors import WorldError

_OFFSET = re.compile(r"^\+?(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ScenarioError(WorldError, ValueError):
    """A scenario file or preset that cannot be used; the message names the entry, the field and the reason."""


def parse_offset(text: str) -> float:
    """Seconds of an offset like `+90m`, `2h`, `1.5d`, `3w`; ValueError naming the text otherwise."""
    m = _OFFSET.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is neither an offset like '+2h' (units s, m, h, d, w) nor an ISO-8601 time")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _time_or_offset(v: object) -> str:
    if isinstance(v, datetime):
        return v.isoformat()
    if not isinstance(v, str):
        raise ValueError(f"expected an offset like '+2h' or an ISO-8601 time, got {v!r}")  # noqa: TRY004 (pydantic wants ValueError)
    if _OFFSET.match(v.strip()):
        return v.strip()
    try:
        datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{v!r} is neither an offset like '+2h' (units s, m, h, d, w) nor an ISO-8601 time") from None
    return v


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def entry_label(index: int, kind: object, name: object = None) -> str:
    """How errors name an entry: `injections[3] (shilling 'campaign')` (kind and name when known)."""
    what = " ".join(x for x in (str(kind) if kind else "", repr(name) if isinstance(name, str) else "") if x)
    return f"injections[{index}] ({what})" if what else f"injections[{index}]"


def resolve(text: str, run_start: float) -> float:
    """Unix seconds of a start/end given as an offset from `run_start` or an ISO-8601 time (UTC when no zone)."""
    if _OFFSET.match(text.strip()):
        return run_start + parse_offset(text)
    from movielab.world.clock import parse_start

    return parse_start(text)


class Group(BaseModel):
    """A demographic group of users: every given condition must hold (none given: everyone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    age: tuple[int, int] | None = Field(None, description="reported age range, inclusive")
    gender: Literal["M", "F"] | None = None
    occupation: str | None = Field(None, description="a MovieLens-1M occupation")

    @field_validator("occupation")
    @classmethod
    def _known_occupation(cls, v: str | None) -> str | None:
        if v is not None and v not in OCCUPATIONS:
            raise ValueError(f"unknown occupation {v!r}; one of {', '.join(OCCUPATIONS)}")
        return v

    @field_validator("age")
    @classmethod
    def _ordered(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] <= v[1] <= 130:
            raise ValueError(f"age range {list(v)} must be [low, high] with 0 <= low <= high <= 130")
        return v


def _genre(v: str) -> str:
    if v not in GENRES:
        raise ValueError(f"unknown genre {v!r}; one of {', '.join(GENRES)}")
    return v


class _Injection(BaseModel):
    """Fields every injection has: when, for which teams, and a name for the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, description="label in the manifest (default: the kind)")
    start: str = Field(description="offset from the run's start ('+2h') or ISO-8601 UTC time")
    end: str | None = Field(None, description="offset or ISO time; omitted (and no duration): until the run ends")
    duration: str | None = Field(None, description="length ('3h'); instead of end")
    teams: list[int] | None = Field(None, description="team numbers (1..T) it applies to; omitted: all")

    _check_start = field_validator("start", "end", mode="before")(
        classmethod(lambda cls, v: v if v is None else _time_or_offset(v))
    )

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, v: str | None, info: ValidationInfo) -> str | None:
        start = info.data.get("start")
        if v is not None and start is not None:
            both_offsets = _OFFSET.match(v) and _OFFSET.match(start)
            if both_offsets and parse_offset(v) <= parse_offset(start):
                raise ValueError(f"{v!r} is not after start {start!r}")
            if not _OFFSET.match(v) and not _OFFSET.match(start) and resolve(v, 0) <= resolve(start, 0):
                raise ValueError(f"{v!r} is not after start {start!r}")
        return v

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            if parse_offset(v) <= 0:
                raise ValueError(f"{v!r} is not a positive length")
            if info.data.get("end") is not None:
                raise ValueError("give end or duration, not both")
        return v

    @field_validator("teams")
    @classmethod
    def _teams(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("teams must be a non-empty list of team numbers >= 1 (omit it for every team)")
        if v is not None and len(set(v)) < len(v):
            raise ValueError(f"teams {v} name a team twice")
        return v

    def window(self, run_start: float) -> tuple[float, float]:
        """(start, end) in unix seconds; end is +inf when the injection lasts until the run ends."""
        s = resolve(self.start, run_start)
        if self.duration is not None:
            return s, s + parse_offset(self.duration)
        if self.end is not None:
            e = resolve(self.end, run_start)
            if e <= s:
                raise ValueError(f"{self.end!r} is not after start {self.start!r} (the run starts {_iso(run_start)})")
            return s, e
        return s, float("inf")


# --- drift (hidden state: truth / population) --------------------------------------------------------
class TasteShift(_Injection):
    """A group's taste moves toward (stars > 0) or away from (< 0) a genre, linearly over the window."""

    kind: Literal["taste_shift"]
    group: Group = Group()
    genres: list[str] = Field(min_length=1)
    stars: float = Field(
        description="change of the group's score of the genres' movies relative to others, in "
        "stars, reached at the window's end (the shift stays afterwards)"
    )
    _g = field_validator("genres")(classmethod(lambda cls, v: [_genre(g) for g in v]))


class PopularityShock(_Injection):
    """A movie many users want: a share of browse candidates and a score boost during the window (reverted after)."""

    kind: Literal["popularity_shock"]
    movie: str = Field("auto", description="slug, or 'auto' (a seeded pick among well-rated, mid-popular movies)")
    share: float = Field(0.05, gt=0, lt=1, description="share of browse candidates that are this movie")
    boost: float = Field(1.0, ge=0, le=10, description="stars added to everyone's score of it")


class MovieRemoved(_Injection):
    """Catalog change: a movie leaves the catalog (no new viewings start) from start; back at end if given."""

    kind: Literal["movie_removed"]
    movie: str = "auto"


class MovieAdded(_Injection):
    """Catalog change: a movie joins the catalog at start (a new release). Before it, no user finds it and the world
    API answers 404 for it, as for any unknown id; from start the API serves its record and users pick it by its
    hidden truth (the catalog row's fitted factors and bias, like every movie's), so its id appears in the stream.
    Its window is its launch: `share` of the browse candidates go to it until the end (a new release is promoted;
    0: none, users find it by taste and popularity alone); the movie stays after the end."""

    kind: Literal["movie_added"]
    movie: str = Field("auto", description="slug, or 'auto' (a seeded pick among well-rated, mid-popular movies)")
    share: float = Field(0.02, ge=0, lt=1, description="share of browse candidates during the window (0: none)")
    announced: bool = Field(False, description="posted on the public announcements channel when it starts")


class MovieRenamed(_Injection):
    """Catalog change: a movie's title changes from start (back at end if given). Like the course's world, which
    makes a movie's id once from its title and year and keeps it, the id (the slug in stream lines and API paths),
    `original_title`, `tmdb_id` and `imdb_id` stay; only the API's `title` changes. A consumer that rebuilds ids
    from titles, or joins on titles, breaks; one that keys on the id does not."""

    kind: Literal["movie_renamed"]
    movie: str = Field("auto", description="slug, or 'auto' (a seeded pick among mid-popular movies)")
    title: str | None = Field(None, min_length=1, description="the new title; omitted: '<title> (Remastered)'")
    announced: bool = False


class ActivityChange(_Injection):
    """Sessions scaled by `factor`: > 1 adds (factor - 1) x the users' mean daily session rate, as sessions of users
    not watching (a holiday surge, 10x load); < 1 keeps a share 1 - factor of the users away for the window."""

    kind: Literal["activity_change"]
    factor: float = Field(gt=0, le=100)


class UserWave(_Injection):
    """New accounts at `per_hour` with a different demographic mix (a flash crowd when the rate is high)."""

    kind: Literal["user_wave"]
    per_hour: float = Field(gt=0, le=1_000_000)
    group: Group = Group()


# --- schema and format changes, corrupt data (the line and API layers) -------------------------------
LineKind = Literal["watch", "rate", "account", "recommendation"]
CorruptMode = Literal[
    "truncated",
    "garbled",
    "swapped_fields",
    "duplicated",
    "out_of_order",
    "future_time",
    "past_time",
    "unknown_movie",
    "unknown_user",
]


class CorruptLines(_Injection):
    """A share of lines broken in one way (`mode`); each broken line is counted in the manifest."""

    kind: Literal["corrupt_lines"]
    mode: CorruptMode
    share: float = Field(gt=0, le=1)
    lines: list[LineKind] = Field(default_factory=lambda: ["watch", "rate"], min_length=1)


class FormatChange(_Injection):
    """A line format variant: a new field in rate lines, minutes-only stamps, or another fraction precision."""

    kind: Literal["format_change"]
    change: Literal["rate_extra_field", "minute_stamps", "fraction_digits"]
    digits: int = Field(6, ge=1, le=9, description="fraction_digits: digits of recommendation stamps")
    announced: bool = Field(False, description="posted on the public announcements channel when it starts")


class ApiFieldChange(_Injection):
    """An API field renamed, added, retyped (as a string) or set to "null" in user or movie records."""

    kind: Literal["api_field_change"]
    record: Literal["user", "movie"]
    change: Literal["rename", "add", "retype", "null"]
    field: str
    to: str | None = Field(None, description="rename: the new field name; add: the value (a string)")
    announced: bool = False

    @model_validator(mode="after")
    def _needs_to(self):
        if self.change in ("rename", "add") and not self.to:
            raise ValueError(f"change {self.change!r} needs 'to' (the new name or the added value)")
        return self


class WrongApiValues(_Injection):
    """API answers with wrong values: a share of user records with a wrong age, or movie records with a wrong runtime."""

    kind: Literal["wrong_api_values"]
    record: Literal["user", "movie"]
    share: float = Field(gt=0, le=1)


# --- outages and incidents ---------------------------------------------------------------------------
class ApiOutage(_Injection):
    """The world API slow (`delay_ms`), failing a share of requests with 5xx, or down (every request 503)."""

    kind: Literal["api_outage"]
    mode: Literal["slow", "errors", "down"]
    delay_ms: int = Field(2000, ge=1, le=60_000)
    share: float = Field(0.5, gt=0, le=1)
    status: int = Field(503, ge=500, le=599)


class StreamPause(_Injection):
    """The stream stops for the window; the held lines are published in one burst at its end."""

    kind: Literal["stream_pause"]


class Takedown(_Injection):
    """A movie that must not be recommended from start: announced; recommendation lines still listing it are counted."""

    kind: Literal["takedown"]
    movie: str = "auto"
    reason: str = "legal request"


class InvalidRequests(_Injection):
    """Invalid requests to a team's service, as the course staff send: malformed or unknown ids, at `per_minute`."""

    kind: Literal["invalid_requests"]
    per_minute: int = Field(10, ge=1, le=10_000)
    timeout_ms: int = Field(600, ge=1, le=60_000)


# --- biased data -------------------------------------------------------------------------------------
class MisreportedAge(_Injection):
    """A share of a group reports a wrong age (e.g. minors who say they are adults); the true age stays hidden."""

    kind: Literal["misreported_age"]
    group: Group = Group(age=(13, 17))
    share: float = Field(0.5, gt=0, le=1)
    reported: tuple[int, int] = Field((18, 30), description="range the wrong ages are drawn from")


class RatingBias(_Injection):
    """A group's ratings shifted by `stars` (clipped to the scale): what the group says differs from what it means."""

    kind: Literal["rating_bias"]
    group: Group
    stars: int = Field(ge=-9, le=9)


# --- attacks -----------------------------------------------------------------------------------------
class Shilling(_Injection):
    """Bot accounts (created through create_account) watch and rate a target movie top and its competitors bottom."""

    kind: Literal["shilling"]
    target: str = "auto"
    competitors: int = Field(3, ge=0, le=50, description="nearest movies in taste space rated lowest")
    bots: int = Field(50, ge=1, le=100_000, description="bot accounts per team")
    watch_minutes: int = Field(3, ge=0, le=300, description="minutes of the target each bot watches first")
    realistic: bool = Field(True, description="spread over the window at human pace; false: all in one burst")


class SybilPush(_Injection):
    """Bot accounts push a movie through watch lines only (many short viewings)."""

    kind: Literal["sybil_push"]
    target: str = "auto"
    bots: int = Field(50, ge=1, le=100_000)
    watch_minutes: int = Field(10, ge=1, le=300)


class RatingSpam(_Injection):
    """Existing users' accounts post random ratings of random movies at `per_hour` (per team)."""

    kind: Literal["rating_spam"]
    per_hour: float = Field(gt=0, le=1_000_000)


class Probe(_Injection):
    """Scraping: requests to a team's `/recommend/<id>` for consecutive user ids at `per_minute`."""

    kind: Literal["probe"]
    per_minute: int = Field(60, ge=1, le=100_000)
    timeout_ms: int = Field(600, ge=1, le=60_000)


# --- ground truth and goals --------------------------------------------------------------------------
class GoalChange(_Injection):
    """The business goal scoring uses from start: 'profit' (value of a play minus its license cost) or 'rating'."""

    kind: Literal["goal_change"]
    goal: Literal["profit", "rating"]
    value_per_play: float = Field(1.0, gt=0, description="profit: revenue of one play, USD")
    announced: bool = True


class TruthRefit(_Injection):
    """At the window's end the hidden movie biases are re-fitted toward what was watched in it: each movie gains
    `stars` per standard deviation of its log viewing count in the window above the mean (the truth follows the crowd)."""

    kind: Literal["truth_refit"]
    stars: float = Field(0.5, ge=-5, le=5)


Injection = Annotated[
    TasteShift
    | PopularityShock
    | MovieRemoved
    | MovieAdded
    | MovieRenamed
    | ActivityChange
    | UserWave
    | CorruptLines
    | FormatChange
    | ApiFieldChange
    | WrongApiValues
    | ApiOutage
    | StreamPause
    | Takedown
    | InvalidRequests
    | MisreportedAge
    | RatingBias
    | Shilling
    | SybilPush
    | RatingSpam
    | Probe
    | GoalChange
    | TruthRefit,
    Field(discriminator="kind"),
]


_KINDS = [get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(Injection)[0])]


class Scenario(BaseModel):
    """A named timeline of injections."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    injections: list[Injection] = Field(default_factory=list)
    _source: str = PrivateAttr("scenario")  # the file or preset it was read from (errors name it)

    @property
    def source(self) -> str:
        """The file or preset this scenario was read from (what its errors name)."""
        return self._source


def _where(loc: tuple, data: dict) -> str:
    """`injections[3] (shilling 'campaign').bots` from a pydantic error location."""
    parts, items = [], data.get("injections") if isinstance(data, dict) else None
    i = 0
    while i < len(loc):
        p = loc[i]
        if p == "injections" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            n = loc[i + 1]
            item = items[n] if isinstance(items, list) and n < len(items) and isinstance(items[n], dict) else {}
            kind = item.get("kind")
            parts.append(entry_label(n, kind, item.get("name")))
            i += 3 if i + 2 < len(loc) and loc[i + 2] == kind else 2
            continue
        parts.append(str(p))
        i += 1
    return ".".join(parts) or "scenario"


def _field(error: dict) -> str:
    return ".kind" if error.get("type") in ("union_tag_invalid", "union_tag_not_found") else ""


def _reason(error: dict) -> str:
    if error.get("type") == "union_tag_invalid":
        return f"kind {error.get('input', {}).get('kind')!r} is unknown; one of {error['ctx']['expected_tags']}"
    if error.get("type") == "union_tag_not_found":
        return "no 'kind' (what to inject); one of " + ", ".join(_KINDS)
    return reason(error)


def parse_scenario(data: dict, source: str) -> Scenario:
    """Validate a scenario mapping; ScenarioError lists each problem as `scenario <source>: <entry>.<field>: <reason>`
    (the entry by index, kind and name)."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_where(tuple(e['loc']), data)}{_field(e)}: {_reason(e)}" for e in exc.errors()]
        raise ScenarioError(f"scenario {source}: " + "; ".join(problems)) from None
    scenario._source = source
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a TOML scenario file (ScenarioError naming the file and the problem)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario {path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path))
