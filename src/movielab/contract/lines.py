"""Formatting and the strict parser of the course's event lines (see DESIGN.md)."""

from __future__ import annotations

import re
from datetime import datetime

from movielab.contract.errors import MalformedEvent
from movielab.contract.events import AccountEvent, Event, RateEvent, RecommendationEvent, WatchEvent
from movielab.contract.slug import MAX_SLUG_LENGTH, SLUG_PATTERN

MAX_RECOMMENDATIONS = 20
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
TIME_FORMAT_US = "%Y-%m-%dT%H:%M:%S.%f"

_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"
_USER = r"[1-9]\d{0,9}"
_HEAD = re.compile(rf"(?P<time>{_TIME}(?P<us>\.\d{{6}})?),(?P<user>{_USER}),(?P<rest>.*)", re.DOTALL | re.ASCII)
_WATCH = re.compile(rf"GET /data/m/(?P<movie>{SLUG_PATTERN})/(?P<minute>[1-9]\d{{0,4}})\.mpg", re.ASCII)
_RATE = re.compile(rf"GET /rate/(?P<movie>{SLUG_PATTERN})=(?P<rating>[1-5])", re.ASCII)
_ACCOUNT = "GET /create_account"
_REC = re.compile(
    r"recommendation request (?P<server>[A-Za-z0-9._-]+:\d{1,5}), status (?P<status>0|[1-9]\d{2}), "
    r"result: (?P<result>.*), (?P<ms>0|[1-9]\d{0,8}) ms",
    re.DOTALL | re.ASCII,
)
_REC_LIST = re.compile(rf"{SLUG_PATTERN}(?:, {SLUG_PATTERN})*")


def format_time(t: datetime) -> str:
    """Time stamp of watch, rate and account lines: `YYYY-MM-DDTHH:MM:SS`."""
    return t.replace(tzinfo=None).isoformat(timespec="seconds")  # strftime does not pad years below 1000


def format_time_us(t: datetime) -> str:
    """Time stamp of recommendation lines, with microseconds: `YYYY-MM-DDTHH:MM:SS.ffffff`."""
    return t.replace(tzinfo=None).isoformat(timespec="microseconds")


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


def format_event(event: Event) -> str:
    """The one line of the stream that says `event`."""
    if isinstance(event, WatchEvent):
        return watch_line(format_time(event.time), event.user_id, event.movie_id, event.minute)
    if isinstance(event, RateEvent):
        return rate_line(format_time(event.time), event.user_id, event.movie_id, event.rating)
    if isinstance(event, AccountEvent):
        return account_line(format_time(event.time), event.user_id)
    if isinstance(event, RecommendationEvent):
        result = ", ".join(event.recommendations) if event.error is None else event.error
        return recommendation_line(
            format_time_us(event.time), event.user_id, event.server, event.status, result, event.response_ms
        )
    raise TypeError(f"not an event of the contract: {type(event).__name__}")


def _parse_time(text: str, with_us: bool, line: str | bytes) -> datetime:
    try:  # the shape was checked by the regex; fromisoformat checks the date and is ~10x faster than strptime
        return datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEvent(line, f"time stamp {text!r} is not a valid date and time") from None


def parse_line(line: str | bytes) -> Event:
    """Parse one line into a typed event, or raise `MalformedEvent` naming the line and the reason."""
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
        raise MalformedEvent(raw, "expected '<time>,<userid>,<request>' with time YYYY-MM-DDTHH:MM:SS[.ffffff]")
    user_id = int(head["user"])
    rest = head["rest"]
    with_us = head["us"] is not None
    if rest.startswith("GET "):
        if with_us:
            raise MalformedEvent(raw, "only recommendation lines carry microseconds in the time stamp")
        time = _parse_time(head["time"], False, raw)
        if (m := _WATCH.fullmatch(rest)) is not None:
            return WatchEvent(time, user_id, _movie(m["movie"], raw), int(m["minute"]))
        if (m := _RATE.fullmatch(rest)) is not None:
            return RateEvent(time, user_id, _movie(m["movie"], raw), int(m["rating"]))
        if rest == _ACCOUNT:
            return AccountEvent(time, user_id)
        if rest.startswith("GET /rate/"):
            raise MalformedEvent(raw, "rate request must be 'GET /rate/<movie id>=<rating 1..5>'")
        if rest.startswith("GET /data/m/"):
            raise MalformedEvent(raw, "watch request must be 'GET /data/m/<movie id>/<minute ≥ 1>.mpg'")
        raise MalformedEvent(raw, f"unknown request {rest[:60]!r}")
    if rest.startswith("recommendation request "):
        if not with_us:
            raise MalformedEvent(raw, "recommendation lines carry microseconds: YYYY-MM-DDTHH:MM:SS.ffffff")
        m = _REC.fullmatch(rest)
        if m is None:
            raise MalformedEvent(
                raw, "expected 'recommendation request <host:port>, status <code>, result: <result>, <ms> ms'"
            )
        time = _parse_time(head["time"], True, raw)
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
            return RecommendationEvent(time, user_id, m["server"], status, ids, None, int(m["ms"]))
        if not result.strip():
            raise MalformedEvent(raw, "a failed recommendation request must carry an error text")
        return RecommendationEvent(time, user_id, m["server"], status, (), result, int(m["ms"]))
    raise MalformedEvent(raw, f"unknown request {rest[:60]!r}")


def _movie(movie_id: str, raw: str | bytes) -> str:
    if len(movie_id) > MAX_SLUG_LENGTH:
        raise MalformedEvent(raw, f"movie id longer than {MAX_SLUG_LENGTH} characters")
    return movie_id
