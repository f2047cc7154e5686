"""The checks the course grades from a team's Kafka topic, computed from its lines alone.

Every line goes through `movielab.contract.parse_line`; lines that do not parse are counted
(`unparsable`), never silently dropped. Only recommendation-request lines enter the checks:

- answered_24h: requests answered OK (status 200 with a list) in (t − 24 h, t].
- personalized_share: of those answers, the share whose list (ids in order) no other user got in the same
  24 hours. A constant list served to everyone scores 0; a list repeated to one user (who asked twice) counts.
- availability: share of requests answered OK in the window [t − 72 h, t + 96 h] (the course's grading window
  around a given time), with the number of requests in it.
- takedown_violations: per taken-down movie id, the answers at or after its takedown time that still list it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

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
    downs = []
    for item in takedowns:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], datetime)):
            raise ScoringError(f"takedown {item!r}: expected (movie id, datetime of the takedown)")
        downs.append((str(item[0]), item[1]))
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
