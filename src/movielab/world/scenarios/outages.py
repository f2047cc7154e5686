"""Outages and incidents: the API slow, failing or down; the stream paused and replayed; takedowns;
invalid requests sent to a team's service. (Load surges and flash crowds are `activity_change` and
`user_wave` with large factors: see drift.py and the presets.)"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from movielab.world.scenarios.base import Effect, lines_containing
from movielab.world.scenarios.faults import _ISO, ApiEffect
from movielab.world.sinks import kind_of


class ApiOutage(ApiEffect):
    """The world API slow, answering a share of requests with 5xx, or down (every request 503)."""

    def applies(self, record: str) -> bool:
        return True


class StreamPause(Effect):
    """No lines of the teams reach the topic during the window; at its end they all come in one burst."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.held: dict[int, tuple[list[int], list[str]]] = {}

    def pending(self) -> bool:
        return any(ls for _, ls in self.held.values())

    def filter(self, lane, t0, active, times, keys, lines):
        mine = self.key_in_teams(keys).tolist()
        if active:
            hk, hl = self.held.setdefault(lane, ([], []))
            keep = [i for i, m in enumerate(mine) if not m]
            for i, m in enumerate(mine):
                if m:
                    hk.append(keys[i])
                    hl.append(lines[i])
            self.count([keys[i] for i, m in enumerate(mine) if m])
            return [times[i] for i in keep], [keys[i] for i in keep], [lines[i] for i in keep]
        hk, hl = self.held.pop(lane, ([], []))
        if not hl:
            return times, keys, lines
        return [t0] * len(hl) + list(times), hk + list(keys), hl + list(lines)

    def state(self) -> dict[str, Any]:
        return {"held": {str(k): v for k, v in self.held.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.held = {int(k): (list(v[0]), list(v[1])) for k, v in state.get("held", {}).items()}

    def drain(self) -> tuple[list[int], list[str]]:
        keys, lines = [], []
        for hk, hl in self.held.values():
            keys += hk
            lines += hl
        self.held = {}
        return keys, lines


class Takedown(Effect):
    """A movie must not be recommended from start: announced publicly; recommendations still listing it counted."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.movie = self.ctx.movie(self.spec.movie, self.rng(0), f"{self.where}.movie")
        self.slug = self.ctx.catalog.slug[self.movie]

    def params(self) -> dict[str, Any]:
        return {**super().params(), "movie": self.slug}

    def begin(self, world, t):
        self.ctx.announcements.append(
            {
                "kind": "takedown",
                "movie": self.slug,
                "reason": self.spec.reason,
                "from": datetime.fromtimestamp(t, UTC).strftime(_ISO),
                "teams": self.teams,
            }
        )
        return {"ids": [self.slug]}

    def filter(self, lane, t0, active, times, keys, lines):
        if not active:
            return times, keys, lines
        slug = self.slug
        hits = lines_containing(lines, slug)
        hits = [
            i
            for i in hits
            if kind_of(lines[i]) == "recommendation"
            and slug in lines[i].split("result: ", 1)[-1].rsplit(", ", 1)[0].split(", ")
        ]
        mine = self.key_in_teams([keys[i] for i in hits]).tolist()
        self.count([keys[i] for i, m in zip(hits, mine, strict=True) if m])
        return times, keys, lines


class InvalidRequests(Effect):
    """Malformed or unknown user ids sent to each team's `/recommend/`, as the course staff do; answers counted."""

    BAD_IDS = ("-1", "abc", "0", "99999999999", "1%2C2", "%00", "1.5", "")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.outcomes: Counter = Counter()

    def tick(self, world, lane_index, t0, t1):
        lanes = len(world.lanes)
        rng = self.rng(lane_index, int(t0) // 60)
        for team in self.teams:
            if lanes > 1 and team - 1 != lane_index or team > len(self.ctx.team_urls):
                continue
            base = self.ctx.team_urls[team - 1].rstrip("/")
            for bad in rng.choice(self.BAD_IDS, self.spec.per_minute).tolist():
                self.outcomes[_call(f"{base}/recommend/{bad}", self.spec.timeout_ms)] += 1
                self.touched[f"team{team}"] += 1
        return []

    def state(self) -> dict[str, Any]:
        return {"outcomes": dict(self.outcomes)}

    def restore(self, state: dict[str, Any]) -> None:
        self.outcomes = Counter(state.get("outcomes", {}))

    def report(self) -> dict[str, Any]:
        return {"answers": dict(self.outcomes)}


def _call(url: str, timeout_ms: int) -> str:
    """'200', '404', … or 'timeout'/'refused' for one GET (the world's view of a team's answer)."""
    try:
        with urllib.request.urlopen(
            url, timeout=timeout_ms / 1000
        ) as resp:  # team URLs are http(s): config checks them
            resp.read(65536)
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except TimeoutError:
        return "timeout"
    except (urllib.error.URLError, OSError) as exc:
        return "timeout" if "timed out" in str(exc) else "refused"
