"""Figures computed from an event stream alone (what a team can see): requests, latency, conversion.

Imports only the contract: the demo measures both teams with it, as a team could from its topic alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from movielab.contract import MalformedEvent, RateEvent, RecommendationEvent, WatchEvent, parse_line


@dataclass
class StreamStats:
    """Per-stream counts; `picks_recommended / picks` is the share of viewings started from a recommendation."""

    lines: Counter = field(default_factory=Counter)
    malformed: int = 0
    requests: int = 0
    requests_ok: int = 0
    response_ms: list[int] = field(default_factory=list)
    picks: int = 0
    picks_recommended: int = 0
    ratings: list[int] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    @property
    def success_rate(self) -> float:
        """Share of requests answered 200 with a valid list."""
        return self.requests_ok / self.requests if self.requests else float("nan")

    def latency_ms(self, q: float) -> float:
        """Percentile q (0..100) of the response times of successful requests."""
        return float(np.percentile(self.response_ms, q)) if self.response_ms else float("nan")

    @property
    def pick_share(self) -> float:
        """Share of picks (viewings started after a request) that were in the recommended list."""
        return self.picks_recommended / self.picks if self.picks else float("nan")


def _error_kind(text: str) -> str:
    return " ".join(text.split()[:2])


def stream_stats(lines: Iterable[str | bytes]) -> StreamStats:
    """Count a stream: a pick is the first watch line of a user after one of their recommendation requests."""
    s = StreamStats()
    pending: dict[int, frozenset[str]] = {}  # user -> ids of the request awaiting the user's pick
    for line in lines:
        try:
            ev = parse_line(line)
        except MalformedEvent:
            s.malformed += 1
            continue
        if isinstance(ev, WatchEvent):
            s.lines["watch"] += 1
            recs = pending.pop(ev.user_id, None)
            if recs is not None:
                s.picks += 1
                s.picks_recommended += ev.movie_id in recs
        elif isinstance(ev, RecommendationEvent):
            s.lines["recommendation"] += 1
            s.requests += 1
            if ev.ok:
                s.requests_ok += 1
                s.response_ms.append(ev.response_ms)
            else:
                s.errors[_error_kind(ev.error or "")] += 1
            pending[ev.user_id] = frozenset(ev.recommendations)
        elif isinstance(ev, RateEvent):
            s.lines["rate"] += 1
            s.ratings.append(ev.rating)
        else:
            s.lines["account"] += 1
    return s
