"""Consistency checks every stream must pass, against the world's hidden journal.

The journal records what the stream cannot show: session starts, where viewings start
or resume, and seeks (rewinds and skips). `audit` replays the lines and reports every
violation of the rules of the world's behaviour (README, "How the world behaves").
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass

from movielab.contract import AccountEvent, MalformedEvent, RateEvent, RecommendationEvent, WatchEvent, parse_line


@dataclass(frozen=True)
class Violation:
    """One broken rule: which line (index), which rule, and details."""

    index: int
    rule: str
    detail: str


def audit(
    lines: Iterable[str], journal: Iterable[tuple], known_users: int, known_movies: set[str], limit: int = 100
) -> list[Violation]:
    """Return up to `limit` violations of the stream rules (empty when the stream is consistent)."""
    out: list[Violation] = []

    def bad(i: int, rule: str, detail: str) -> None:
        if len(out) < limit:
            out.append(Violation(i, rule, detail))

    jumps: dict[int, deque] = defaultdict(deque)  # user -> (movie, minute, time) where a viewing jumps to
    sessions: dict[int, deque] = defaultdict(deque)  # user -> session start times
    for kind, t, user, movie, minute in sorted(journal, key=lambda e: e[1]):
        if kind == "session":
            sessions[user].append(t)
        else:
            jumps[user].append((movie, minute, t))
    position: dict[int, tuple[str, int]] = {}  # user -> (movie, last minute)
    started: dict[int, set[str]] = defaultdict(set)
    last_time: dict[int, object] = {}
    requested: dict[int, int] = defaultdict(int)  # sessions asked and not yet followed by a viewing
    for i, line in enumerate(lines):
        try:
            ev = parse_line(line)
        except MalformedEvent as exc:
            bad(i, "parses", str(exc))
            continue
        u = ev.user_id
        if not 1 <= u <= known_users:
            bad(i, "known user", f"user {u} is not in the population")
        if u in last_time and ev.time < last_time[u]:
            bad(i, "time order", f"user {u}: {ev.time} before {last_time[u]}")
        last_time[u] = ev.time
        if isinstance(ev, RecommendationEvent):
            q = sessions[u]
            if not q or abs(q[0] - ev.time.timestamp()) > 1e-3:
                bad(i, "one request per session", f"user {u}: request at {ev.time} matches no session start")
            else:
                q.popleft()
            requested[u] += 1
            continue
        if isinstance(ev, AccountEvent):
            continue
        if ev.movie_id not in known_movies:
            bad(i, "known movie", f"movie {ev.movie_id!r} is not in the catalog")
        if isinstance(ev, RateEvent):
            if ev.movie_id not in started[u]:
                bad(i, "rate only started movies", f"user {u} rated {ev.movie_id!r} without watching it")
            continue
        assert isinstance(ev, WatchEvent)
        pos = position.get(u)
        q = jumps[u]
        if q and q[0][:2] == (ev.movie_id, ev.minute) and abs(q[0][2] - ev.time.timestamp()) < 1:
            # a recorded start, resume or seek, at this line's time
            q.popleft()
            new_viewing = pos is None or pos[0] != ev.movie_id or requested[u] > 0
            if new_viewing and requested[u] == 0:
                bad(i, "viewing follows a request", f"user {u} started {ev.movie_id!r} without a request")
            if new_viewing:
                requested[u] = 0
            position[u] = (ev.movie_id, ev.minute)
            started[u].add(ev.movie_id)
            continue
        if pos is not None and pos == (ev.movie_id, ev.minute - 1):
            position[u] = (ev.movie_id, ev.minute)
            continue
        bad(i, "minutes ascend", f"user {u}: {ev.movie_id!r} minute {ev.minute} after {pos} with no recorded jump")
        position[u] = (ev.movie_id, ev.minute)
    for u, q in sessions.items():
        if q:
            bad(-1, "one request per session", f"user {u}: {len(q)} session(s) without a request line")
    return out
