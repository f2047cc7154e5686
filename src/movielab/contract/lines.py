"""Formatting and the strict parser of the course's event lines (the formats are in this module and `contract/editions.py`)."""

from __future__ import annotations

import re
from datetime import datetime

from movielab.contract.errors import MalformedEvent
from movielab.contract.events import AccountEvent, Event, RateEvent, RecommendationEvent, WatchEvent
from movielab.contract.slug import MAX_MOVIE_ID_LENGTH, MOVIE_ID_PATTERN

MAX_RECOMMENDATIONS = 20
MAX_RATING = 10  # the largest scale of any edition; an edition may allow less (see `editions`)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
TIME_FORMAT_US = "%Y-%m-%dT%H:%M:%S.%f"

_TO_MINUTE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}"
#: A time stamp of the stream: minutes only, seconds, or seconds with 1–9 fractional digits.
TIME_PATTERN = rf"{_TO_MINUTE}(?::\d{{2}}(?:\.\d{{1,9}})?)?"
# The same shape with its parts named: the whole minutes or seconds, then the fraction (only after seconds).
_STAMP = rf"(?P<time>{_TO_MINUTE}(?::\d{{2}})?)(?:(?<=:\d\d:\d\d)\.(?P<frac>\d{{1,9}}))?"
_STAMP_RE = re.compile(_STAMP, re.ASCII)
_USER = r"[1-9]\d{0,9}"
_HEAD = re.compile(rf"{_STAMP},(?P<user>{_USER}),(?P<rest>.*)", re.DOTALL | re.ASCII)
_FIELDS = re.compile(r"(?P<time>[^,]*),(?P<user>[^,]*),", re.DOTALL)
_WATCH = re.compile(rf"GET /data/m/(?P<movie>{MOVIE_ID_PATTERN})/(?P<minute>[1-9]\d{{0,4}})\.mpg", re.ASCII)
_RATE = re.compile(rf"GET /rate/(?P<movie>{MOVIE_ID_PATTERN})=(?P<rating>0|[1-9]\d{{0,2}})", re.ASCII)
_ACCOUNT = "GET /create_account"
_REC = re.compile(
    r"recommendation request (?P<server>(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}), "  # host or [IPv6]
    r"status (?P<status>0|[1-9]\d{2}), "
    r"result: (?P<result>.*), (?P<ms>0|[1-9]\d{0,8}) ms",
    re.DOTALL | re.ASCII,
)
_REC_LIST = re.compile(rf"{MOVIE_ID_PATTERN}(?:, {MOVIE_ID_PATTERN})*", re.ASCII)


def format_time(t: datetime, digits: int = 0, nanosecond: int = 0) -> str:
    """`YYYY-MM-DDTHH:MM:SS`, with `digits` (0–9) fractional digits of `t` and its sub-µs `nanosecond`."""
    base = t.replace(tzinfo=None, microsecond=0).isoformat(timespec="seconds")  # strftime does not pad years < 1000
    if digits <= 0:
        return base
    if not 0 <= nanosecond <= 999:
        raise ValueError(f"nanosecond {nanosecond} is outside 0..999")
    frac = f"{t.microsecond * 1000 + nanosecond:09d}"
    return f"{base}.{frac[: min(digits, 9)]}"


def format_time_us(t: datetime) -> str:
    """Time stamp of recommendation lines, with microseconds: `YYYY-MM-DDTHH:MM:SS.ffffff`."""
    return t.replace(tzinfo=None).isoformat(timespec="microseconds")


def parse_time(text: str) -> tuple[datetime, int]:
    """(time to the microsecond, sub-microsecond nanoseconds 0..999) of a stream time stamp.

    Accepts `TIME_PATTERN`: `2024-10-14T15:22`, `2019-09-05T19:27:01`, `2026-02-14T00:09:20.426`,
    `2025-10-17T01:33:45.122692921`. Raises `ValueError` naming the stamp for any other text.
    """
    m = _STAMP_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"time stamp {text!r} is not YYYY-MM-DDTHH:MM[:SS[.f…]] (1–9 fractional digits)")
    try:
        return _stamp_of(m)
    except ValueError:
        raise ValueError(f"time stamp {text!r} is not a valid date and time") from None


def _stamp_of(m: re.Match[str]) -> tuple[datetime, int]:
    """(time, nanoseconds) of a match of `_STAMP`; ValueError for a date that does not exist.

    The shape was checked by the regex; fromisoformat checks the date and is ~10x faster than strptime.
    """
    t = datetime.fromisoformat(m["time"])
    frac = m["frac"]
    if not frac:
        return t, 0
    ns = int(frac.ljust(9, "0"))
    return t.replace(microsecond=ns // 1000), ns % 1000


def watch_line(time: str, user_id: int, movie_id: str, minute: int) -> str:
    """`<time>,<user>,GET /data/m/<movie>/<minute>.mpg` from a formatted time stamp."""
    return f"{time},{user_id},GET /data/m/{movie_id}/{minute}.mpg"


def rate_line(time: str, user_id: int, movie_id: str, rating: int) -> str:
    """`<time>,<user>,GET /rate/<movie>=<rating>` from a formatted time stamp."""
    return f"{time},{user_id},GET /rate/{movie_id}={rating}"


def account_line(time: str, user_id: int) -> str:
    """`<time>,<user>,GET /create_account` from a formatted time stamp."""
    return f"{time},{user_id},GET /create_account"


def recommendation_line(time_us: str, user_id: int, server: str, status: int, result: str, ms: int) -> str:
    """The recommendation-request line; `result` is the ids joined by `, ` or the error text."""
    return f"{time_us},{user_id},recommendation request {server}, status {status}, result: {result}, {ms} ms"


def _digits(event: Event, at_least: int) -> int:
    if event.nanosecond:
        return 9
    return 6 if event.time.microsecond or at_least else 0


def format_event(event: Event) -> str:
    """The one line of the stream that says `event`.

    Watch, rate and account lines carry seconds (plus 6 or 9 fractional digits when the event has
    a fraction); recommendation lines carry 6 fractional digits, or 9 when the event has nanoseconds.
    """
    if isinstance(event, WatchEvent):
        stamp = format_time(event.time, _digits(event, 0), event.nanosecond)
        return watch_line(stamp, event.user_id, event.movie_id, event.minute)
    if isinstance(event, RateEvent):
        return rate_line(
            format_time(event.time, _digits(event, 0), event.nanosecond), event.user_id, event.movie_id, event.rating
        )
    if isinstance(event, AccountEvent):
        return account_line(format_time(event.time, _digits(event, 0), event.nanosecond), event.user_id)
    if isinstance(event, RecommendationEvent):
        result = ", ".join(event.recommendations) if event.error is None else event.error
        stamp = format_time(event.time, _digits(event, 6), event.nanosecond)
        return recommendation_line(stamp, event.user_id, event.server, event.status, result, event.response_ms)
    raise TypeError(f"not an event of the contract: {type(event).__name__}")


def parse_line(line: str | bytes) -> Event:
    """Parse one line into a typed event, or raise `MalformedEvent` naming the line and the reason.

    Structure is strict (the four line shapes, a valid date, a user id of 1–10 digits, minutes
    1..99999, ratings 1..10, at most 20 distinct ids in a list); movie ids are opaque tokens of the
    course's alphabet (see `movielab.contract.slug`); time stamps may have minutes only, seconds,
    or 1–9 fractional digits, kept to the nanosecond (`event.nanosecond`).
    """
    try:
        return _parse(line)
    except MalformedEvent:
        raise
    except Exception as exc:  # the contract promises one error type, whatever the input
        raise MalformedEvent(line, f"unexpected {type(exc).__name__}: {exc}") from exc


def _parse(raw: str | bytes) -> Event:
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            line = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent(bytes(raw), f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    elif isinstance(raw, str):
        line = raw
    else:
        raise MalformedEvent(repr(raw), f"expected str or bytes, got {type(raw).__name__}")
    if not line:
        raise MalformedEvent(raw, "empty line")
    if "\n" in line or "\r" in line:
        raise MalformedEvent(raw, "contains a line break; a value is exactly one line")
    head = _HEAD.fullmatch(line)
    if head is None:
        fields = _FIELDS.match(line)
        if fields is not None and _STAMP_RE.fullmatch(fields["time"]) is not None:
            raise MalformedEvent(
                raw,
                f"user id {fields['user'][:30]!r} is not a positive integer of 1–10 digits "
                "without sign or leading zero",
            )
        raise MalformedEvent(
            raw, "expected '<time>,<userid>,<request>' with time YYYY-MM-DDTHH:MM[:SS[.f…]] (1–9 fractional digits)"
        )
    try:
        time, ns = _stamp_of(head)
    except ValueError:
        raise MalformedEvent(raw, f"time stamp {head['time']!r} is not a valid date and time") from None
    user_id = int(head["user"])
    rest = head["rest"]
    if rest.startswith("GET "):
        if (m := _WATCH.fullmatch(rest)) is not None:
            return WatchEvent(time, user_id, _movie(m["movie"], raw), int(m["minute"]), ns)
        if (m := _RATE.fullmatch(rest)) is not None:
            rating = int(m["rating"])
            if not 1 <= rating <= MAX_RATING:
                raise MalformedEvent(raw, f"rating {m['rating']} is outside 1..{MAX_RATING}")
            return RateEvent(time, user_id, _movie(m["movie"], raw), rating, ns)
        if rest == _ACCOUNT:
            return AccountEvent(time, user_id, ns)
        if rest.startswith("GET /rate/"):
            raise MalformedEvent(raw, f"rate request must be 'GET /rate/<movie id>=<rating 1..{MAX_RATING}>'")
        if rest.startswith("GET /data/m/"):
            raise MalformedEvent(raw, "watch request must be 'GET /data/m/<movie id>/<minute ≥ 1>.mpg'")
        raise MalformedEvent(raw, f"unknown request {rest[:60]!r}")
    if rest.startswith("recommendation request "):
        m = _REC.fullmatch(rest)
        if m is None:
            raise MalformedEvent(
                raw, "expected 'recommendation request <host:port>, status <code>, result: <result>, <ms> ms'"
            )
        status = int(m["status"])
        result = m["result"]
        port = int(m["server"].rsplit(":", 1)[1])
        if port > 65535:
            raise MalformedEvent(raw, f"port {port} of server {m['server']!r} is above 65535")
        if status == 200 and _REC_LIST.fullmatch(result) is not None:
            ids = tuple(result.split(", "))
            if len(ids) > MAX_RECOMMENDATIONS:
                raise MalformedEvent(raw, f"{len(ids)} recommendations; at most {MAX_RECOMMENDATIONS}")
            if len(set(ids)) != len(ids):
                raise MalformedEvent(raw, "recommended movie ids repeat")
            for movie in ids:
                _movie(movie, raw)
            return RecommendationEvent(time, user_id, m["server"], status, ids, None, int(m["ms"]), ns)
        if not result.strip():
            raise MalformedEvent(raw, "a failed recommendation request must carry an error text")
        return RecommendationEvent(time, user_id, m["server"], status, (), result, int(m["ms"]), ns)
    raise MalformedEvent(raw, f"unknown request {rest[:60]!r}")


def _movie(movie_id: str, raw: str | bytes) -> str:
    if len(movie_id) > MAX_MOVIE_ID_LENGTH:
        raise MalformedEvent(raw, f"movie id longer than {MAX_MOVIE_ID_LENGTH} characters")
    return movie_id
