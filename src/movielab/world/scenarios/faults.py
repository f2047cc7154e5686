"""Corrupt lines and line-format changes: the line layer, applied to each batch of lines before the sink.

Corrupt modes and what a consumer sees (the recommender's ingest quarantine reason in brackets):
`truncated` — the line cut 5 or more characters before its end [malformed]; `garbled` — the request
re-encoded as UTF-16-LE read as Latin-1, NULs and all [malformed]; `swapped_fields` — user id and time
stamp swapped [malformed]; `duplicated` — the line published twice [duplicate]; `out_of_order` — held
back 1-5 simulated minutes, then published with its original time stamp [accepted]; `future_time` —
time stamp 400 days ahead [bad_time]; `past_time` — time stamp in 1990 [bad_time]; `unknown_movie` —
the movie id replaced by one the catalog lacks [unknown_movie]; `unknown_user` — the user id raised by
10^9 [accepted: the recommender never quarantines unknown users, see its validate module].
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from movielab.world.clock import fraction_stamp
from movielab.world.scenarios.base import Effect
from movielab.world.sinks import kind_of

_ISO = "%Y-%m-%dT%H:%M:%S"


def _stamp_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp[:19])


def _selected(effect: Effect, lane: int, t0: float, keys: list[int], lines: list[str], kinds: set[str]) -> np.ndarray:
    """Indices of the batch's lines of the effect's teams and kinds chosen with probability `share`."""
    if not lines:
        return np.empty(0, np.int64)
    # Each line independently with probability `share` (a binomial count, then a uniform subset of that size: the
    # same law, O(drawn) work); then look only at the drawn lines: a small share costs little on the hot path.
    rng = effect.rng(lane + 1, int(t0) // 60)
    n = len(lines)
    idx = np.sort(rng.choice(n, int(rng.binomial(n, effect.spec.share)), replace=False))
    idx = idx[effect.key_in_teams([keys[i] for i in idx.tolist()])]
    return np.asarray([i for i in idx.tolist() if kind_of(lines[i]) in kinds], np.int64)


class CorruptLines(Effect):
    """A share of the lines broken one way; every broken line counted."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if self.spec.mode == "unknown_movie" and not set(self.spec.lines) <= {"watch", "rate"}:
            raise self.refuse("lines", "unknown_movie applies to watch and rate lines only")
        self.held: dict[int, list[tuple[float, int, str]]] = {}  # lane -> (due, key, line) for out_of_order

    def pending(self) -> bool:
        return any(self.held.values())

    def filter(self, lane, t0, active, times, keys, lines):
        out_t, out_k, out_l = times, keys, lines
        held = self.held.get(lane, [])
        if held:  # release what is due, first in the batch (their stamps are older than its lines)
            due = [h for h in held if h[0] <= t0]
            self.held[lane] = [h for h in held if h[0] > t0]
            if due:
                out_t = [t0] * len(due) + list(out_t)
                out_k = [k for _, k, _ in due] + list(out_k)
                out_l = [x for _, _, x in due] + list(out_l)
        if not active or not lines:
            return out_t, out_k, out_l
        base = len(out_l) - len(lines)
        idx = _selected(self, lane, t0, keys, lines, set(self.spec.lines))
        if len(idx) == 0:
            return out_t, out_k, out_l
        mode = self.spec.mode
        rng = self.rng(lane + 1, int(t0) // 60, 1)
        pos = (base + idx).tolist()
        if mode == "duplicated":  # each copy right after its original
            out_t, out_k, out_l = (_splice(col, pos, copy=True) for col in (out_t, out_k, out_l))
        elif mode == "out_of_order":  # held back, released first in a later batch
            delays = rng.integers(1, 6, len(idx)) * 60
            self.held.setdefault(lane, []).extend(
                (t0 + float(d), out_k[p], out_l[p]) for p, d in zip(pos, delays.tolist(), strict=True)
            )
            out_t, out_k, out_l = (_splice(col, pos, copy=False) for col in (out_t, out_k, out_l))
        else:
            for j in idx.tolist():
                out_l[base + j] = _corrupt(out_l[base + j], mode, rng)
        self.count([keys[j] for j in idx.tolist()])
        return out_t, out_k, out_l

    def state(self) -> dict[str, Any]:
        return {"held": {str(k): v for k, v in self.held.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.held = {int(k): [tuple(h) for h in v] for k, v in state.get("held", {}).items()}

    def drain(self) -> tuple[list[int], list[str]]:
        items = sorted(h for held in self.held.values() for h in held)
        self.held = {}
        return [k for _, k, _ in items], [x for _, _, x in items]


def _splice(col: list, positions: list[int], copy: bool) -> list:
    """`col` with each item at the (sorted) positions repeated (copy) or left out (not copy), in O(len(col))."""
    out, prev = [], 0
    for p in positions:
        out.extend(col[prev : p + 1] if copy else col[prev:p])
        if copy:
            out.append(col[p])
        prev = p + 1
    out.extend(col[prev:])
    return out


def _corrupt(line: str, mode: str, rng: np.random.Generator) -> str:
    stamp, user, rest = line.split(",", 2)
    if mode == "truncated":
        return line[: int(rng.integers(max(1, len(line) // 3), len(line) - 4))]
    if mode == "garbled":
        return f"{stamp},{user}," + rest.encode("utf-16-le").decode("latin-1")
    if mode == "swapped_fields":
        return f"{user},{stamp},{rest}"
    if mode in ("future_time", "past_time"):
        t = _stamp_time(stamp)
        t = t + timedelta(days=400) if mode == "future_time" else t.replace(year=1990)
        return f"{t.strftime(_ISO)}{stamp[19:]},{user},{rest}"
    if mode == "unknown_movie":
        fake = f"unknown-{int(rng.integers(0, 1 << 32)):08x}+2099"
        if rest.startswith("GET /data/m/"):
            _, minute = rest[len("GET /data/m/") :].rsplit("/", 1)
            return f"{stamp},{user},GET /data/m/{fake}/{minute}"
        _, rating = rest.rsplit("=", 1)
        return f"{stamp},{user},GET /rate/{fake}={rating}"
    if mode == "unknown_user":
        return f"{stamp},{int(user) + 1_000_000_000},{rest}"
    raise ValueError(f"unknown corrupt mode {mode!r}")


class FormatChange(Effect):
    """A line format variant from start: a new field in rate lines, minutes-only stamps, other fraction digits."""

    def begin(self, world, t):
        if self.spec.announced:
            self.ctx.announcements.append(
                {
                    "kind": "format_change",
                    "change": self.spec.change,
                    "from": datetime.fromtimestamp(t, UTC).strftime(_ISO),
                    **({"digits": self.spec.digits} if self.spec.change == "fraction_digits" else {}),
                }
            )
        return {}

    def filter(self, lane, t0, active, times, keys, lines):
        if not active or not lines:
            return times, keys, lines
        change = self.spec.change
        mine = self.key_in_teams(keys)
        out = list(lines)
        touched = []
        for j, (line, ok) in enumerate(zip(lines, mine.tolist(), strict=True)):
            if not ok:
                continue
            kind = kind_of(line)
            if change == "rate_extra_field" and kind == "rate":
                out[j] = line + ",web"  # e.g. the device the rating came from
            elif change == "minute_stamps" and kind in ("watch", "rate", "account"):
                out[j] = line[:16] + line[19:]
            elif change == "fraction_digits" and kind == "recommendation":
                rest = line.split(",", 1)[1]
                out[j] = fraction_stamp(times[j], self.spec.digits) + "," + rest
            else:
                continue
            touched.append(keys[j])
        self.count(touched)
        return times, keys, out


class ApiEffect(Effect):
    """An effect of the world API's answers (a catalog- and API-wide change: every caller sees it)."""

    all_teams_only = True

    def begin(self, world, t):
        self.ctx.api_effects.append(self)
        if getattr(self.spec, "announced", False):
            self.ctx.announcements.append(
                {"kind": self.spec.kind, **self.params(), "from": datetime.fromtimestamp(t, UTC).strftime(_ISO)}
            )
        return {}

    def finish(self, world):
        if self in self.ctx.api_effects:
            self.ctx.api_effects.remove(self)

    def applies(self, record: str) -> bool:
        """Whether answers about `record` ('user' or 'movie') are changed."""
        return getattr(self.spec, "record", None) == record

    def change(self, record: dict[str, Any], rng: np.random.Generator) -> bool:
        """Change one JSON record in place; True when it was changed."""
        return False


class ApiFieldChange(ApiEffect):
    """A field of user or movie records renamed, added, retyped as a string or set to "null"."""

    def change(self, record, rng):
        f, c = self.spec.field, self.spec.change
        if c == "add":
            record[f] = self.spec.to
            return True
        if f not in record:
            return False
        if c == "rename":
            record[self.spec.to] = record.pop(f)
        elif c == "retype":
            record[f] = str(record[f])
        else:
            record[f] = "null"
        return True


class WrongApiValues(ApiEffect):
    """A share of answers with a wrong value: a user's age or a movie's runtime drawn at random."""

    def change(self, record, rng):
        if rng.random() >= self.spec.share:
            return False
        if self.spec.record == "user":
            record["age"] = int(rng.integers(1, 100))
        else:
            record["runtime"] = int(rng.integers(1, 400))
        return True
