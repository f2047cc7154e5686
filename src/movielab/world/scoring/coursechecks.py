"""The checks the course grades from a team's Kafka topic, computed from its lines alone.

Every line goes through `movielab.contract.parse_line`; lines that do not parse are counted
(`unparsable`), never silently dropped. Only recommendation-request lines enter the checks:

- answered_24h: requests answered OK (status 200 with a list) in (t − 24 h, t].
- personalized_share: of those answers, the share whose list (ids in order) no other user got in the same
  24 hours. A constant list served to everyone scores 0; a list repeated to one user (who asked twice) counts.
- availability: share of requests answered OK in the window [t − 72 h, t + 96 h] (the course's grading window
  around a given time), with the number of requests in it.
- takedown_violations: per taken-down movie id, the answers at or after its takedown time that still list it.

`course_checks` answers them at one time `t` from a list of lines. `StreamChecks` answers them at the end of every
calendar day (UTC) of a whole topic read once, in order or not: it keeps per day the request and OK counts, the
day's distinct answer lists (one entry per distinct list: memory grows with the day's distinct lists, not with
the topic) and the violations. Only lines containing `recommendation request` are parsed; the others are
counted (`other_lines`), so a topic's lines all appear in one count or another. The lines not parsed
(`other_lines`, `unparsable`) are counted per day by their first ten characters (the date of their time stamp),
those without a date there as `undated()`: summed over the days and `undated`, they are the totals.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from movielab.contract import RecommendationEvent, parse_line
from movielab.contract.errors import ContractError
from movielab.world.scoring.errors import ScoringError


def course_checks(
    lines: Iterable[str], at: datetime, takedowns: Iterable[tuple[str, datetime]] = ()
) -> dict[str, object]:
    """The course's checks of one team's topic lines at time `at` (naive UTC, like the stream's stamps).

    Returns {answered_24h, personalized_share, availability, window_requests, takedown_violations {id: n},
    recommendation_lines, unparsable}. ScoringError when a takedown is not (movie id, datetime).
    """
    downs = _takedowns(takedowns)
    day_ago, lo, hi = at - timedelta(hours=24), at - timedelta(hours=72), at + timedelta(hours=96)
    answered, window_total, window_ok, recs, bad = 0, 0, 0, 0, 0
    lists: Counter = Counter()
    users_of: dict[tuple[str, ...], set[int]] = {}
    violations = {movie: 0 for movie, _ in downs}
    for line in lines:
        try:
            event = parse_line(line)
        except ContractError:
            bad += 1
            continue
        if not isinstance(event, RecommendationEvent):
            continue
        recs += 1
        if lo <= event.time <= hi:
            window_total += 1
            window_ok += event.ok
        if event.ok and day_ago < event.time <= at:
            answered += 1
            lists[event.recommendations] += 1
            users_of.setdefault(event.recommendations, set()).add(event.user_id)
        if event.ok and downs:
            listed = set(event.recommendations)
            for movie, since in downs:
                if movie in listed and event.time >= since:
                    violations[movie] += 1
    personal = sum(n for key, n in lists.items() if len(users_of[key]) == 1)
    return {
        "answered_24h": answered,
        "personalized_share": personal / answered if answered else float("nan"),
        "availability": window_ok / window_total if window_total else float("nan"),
        "window_requests": window_total,
        "takedown_violations": violations,
        "recommendation_lines": recs,
        "unparsable": bad,
    }


def _takedowns(takedowns: Iterable[tuple[str, datetime]]) -> list[tuple[str, datetime]]:
    downs = []
    for item in takedowns:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], datetime)):
            raise ScoringError(f"takedown {item!r}: expected (movie id, datetime of the takedown)")
        downs.append((str(item[0]), item[1]))
    return downs


#: The course's availability window around a time t: from 72 hours before to 96 hours after.
WINDOW_DAYS_BEFORE, WINDOW_DAYS_AFTER = 3, 4
_MARK = b"recommendation request"
_DATE = re.compile(rb"\d{4}-\d{2}-\d{2}")


def _date(key: bytes) -> date | None:
    """The day a line's first ten bytes name (YYYY-MM-DD), None when they are not a date."""
    if not _DATE.fullmatch(key):
        return None
    try:
        return date.fromisoformat(key.decode("ascii"))
    except ValueError:
        return None


@dataclass
class _Day:
    requests: int = 0
    ok: int = 0
    lists: dict[str, list[int]] = field(default_factory=dict)  # answer list -> [its one user or -1, answers]
    violations: Counter = field(default_factory=Counter)


class StreamChecks:
    """The course's checks at the end of each day of one team's topic, fed line by line (`add`), read by `day`.

    `takedowns`: (movie id, naive UTC datetime it was taken down). ScoringError for a takedown of another shape.
    """

    def __init__(self, takedowns: Iterable[tuple[str, datetime]] = ()) -> None:
        self.takedowns = _takedowns(takedowns)
        self._down_ids = {m for m, _ in self.takedowns}
        self.days: dict[date, _Day] = {}
        self.recommendation_lines = 0
        self.other_lines = 0
        self.unparsable = 0  # lines that look like recommendation requests but do not parse
        # Lines not parsed, per day by the date their first ten bytes name (kept as bytes: no parsing per line).
        self._other: Counter[bytes] = Counter()
        self._unparsable: Counter[bytes] = Counter()

    def add(self, line: str | bytes) -> None:
        """Count one line of the topic (bytes as Kafka gives them, or text)."""
        raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
        if _MARK not in raw:
            self.other_lines += 1
            self._other[raw[:10]] += 1
            return
        try:
            event = parse_line(raw.decode("utf-8"))
        except (UnicodeDecodeError, ContractError):
            self.unparsable += 1
            self._unparsable[raw[:10]] += 1
            return
        if not isinstance(event, RecommendationEvent):  # e.g. a watch line of a movie id holding the words
            self.other_lines += 1
            self._other[raw[:10]] += 1
            return
        self.recommendation_lines += 1
        d = self.days.get(event.time.date())
        if d is None:
            d = self.days[event.time.date()] = _Day()
        d.requests += 1
        if not event.ok:
            return
        d.ok += 1
        key = ",".join(event.recommendations)
        seen = d.lists.get(key)
        if seen is None:
            d.lists[key] = [event.user_id, 1]
        else:
            seen[1] += 1
            if seen[0] != event.user_id:
                seen[0] = -1
        if self._down_ids and not self._down_ids.isdisjoint(event.recommendations):
            for movie, since in self.takedowns:
                if event.time >= since and movie in event.recommendations:
                    d.violations[movie] += 1

    def dates(self) -> set[date]:
        """Every day a line read is stamped with: of a recommendation request, or (by its first ten characters) of
        another or unparsable line."""
        seen = set(self.days)
        for counts in (self._other, self._unparsable):
            seen.update(d for d in map(_date, counts) if d is not None)
        return seen

    def undated(self) -> dict[str, int]:
        """{other_lines, unparsable}: the lines of each count whose first ten characters are not a date (in no day)."""
        return {
            name: sum(n for key, n in counts.items() if _date(key) is None)
            for name, counts in (("other_lines", self._other), ("unparsable", self._unparsable))
        }

    def day(self, day: date) -> dict[str, object]:
        """The checks at the end of `day` (its 24 hours; availability from 72 h before to 96 h after its end).

        Returns {answered_24h, personalized_share, availability, window_requests, window_complete,
        takedown_violations (that day, all movies), requests, unparsable, other_lines}; window_complete is False
        while the topic has no line of the window's last day yet (the figure will still change). `unparsable` and
        `other_lines` count that day's lines of each kind (dated by their first ten characters).
        """
        d = self.days.get(day, _Day())
        personal = sum(n for user, n in d.lists.values() if user != -1)
        key = day.isoformat().encode("ascii")
        return {
            "answered_24h": d.ok,
            "personalized_share": personal / d.ok if d.ok else float("nan"),
            **availability_window({k: (v.requests, v.ok) for k, v in self.days.items()}, day),
            "takedown_violations": sum(d.violations.values()),
            "requests": d.requests,
            "unparsable": self._unparsable.get(key, 0),
            "other_lines": self._other.get(key, 0),
        }


def availability_window(counts: dict[date, tuple[int, int]], day: date) -> dict[str, object]:
    """{availability, window_requests, window_complete} at the end of `day` from (requests, OK answers) per day.

    The window runs from 72 h before to 96 h after the day's end; window_complete is False while `counts` has no
    day at or after the window's last one (the figure will still change).
    """
    window = [day + timedelta(days=k) for k in range(1 - WINDOW_DAYS_BEFORE, WINDOW_DAYS_AFTER + 1)]
    total = sum(counts[w][0] for w in window if w in counts)
    ok = sum(counts[w][1] for w in window if w in counts)
    return {
        "availability": ok / total if total else float("nan"),
        "window_requests": total,
        "window_complete": bool(counts) and max(counts) >= window[-1],
    }
