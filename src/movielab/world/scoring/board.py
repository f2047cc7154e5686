"""The scoreboard: daily scores kept, written (`scores/<day>.json`, `scores.csv`), shown and exported.

`DailyScorer.on_tick(world)` drives it from a running world: when the slowest lane crosses midnight it
copies the hidden state (taste vectors, demographics), flushes the finished day of the session log and
scores it on a background thread, off the simulation's hot path. `Scoreboard` reads the files back for
the CLI and the instructor's routes; `ScoreCollector` exports the newest day's figures as Prometheus
gauges (for the instructor listener's /metrics only: scores are hidden truth).

The course's checks computed from the teams' topics (`movielab course score`, `course.streamchecks`) are kept
apart, in `stream/<day>.json` and `stream.csv` (`STREAM_COLUMNS`): another process writes them while the
world's scorer rewrites `scores.csv`. The board merges them into each day's rows when it reads (a running
instructor app picks up new ones when `stream.csv` changes).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from prometheus_client.core import GaugeMetricFamily

from movielab.world.manifest import injection_key, manifest_lines, run_chains
from movielab.world.scoring.daily import History, ScoreParams, Truth, score_day
from movielab.world.scoring.errors import ScoringError
from movielab.world.sessionlog import DAY, DayLog, SessionLog, day_of, day_start, read_day

logger = logging.getLogger(__name__)

#: The scoreboard's columns (CSV order); the JSON adds `fairness` (per-group values).
COLUMNS = (
    "day",
    "team",
    "requests",
    "answered",
    "personalized_share",
    "takedown_violations",
    "availability",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "conversion",
    "completion",
    "watch_minutes",
    "true_rating",
    "regret",
    "coverage",
    "popularity_bias",
    "exposure_gini",
    "homogenization",
    "homogenization_change",
    "profit",
    "profit_per_1k",
    "feedback_pull",
    "taste_drift",
    "conversion_gap_age",
    "conversion_gap_gender",
    "conversion_gap_occupation",
    "regret_gap_age",
    "regret_gap_gender",
    "regret_gap_occupation",
)
#: The course's checks from each team's topic (`add_stream`), merged into the rows of the same day and team.
STREAM_COLUMNS = (
    "day",
    "team",
    "topic",
    "stream_answered_24h",
    "stream_personalized_share",
    "stream_availability",
    "stream_window_requests",
    "stream_window_complete",
    "stream_takedown_violations",
    "stream_requests",
    "stream_unparsable",
    "stream_other_lines",
)
#: The stream columns `course score` shows (the table's and one team's).
STREAM_TABLE = (
    "stream_answered_24h",
    "stream_personalized_share",
    "stream_availability",
    "stream_takedown_violations",
)
TABLE = (
    "team",
    "requests",
    "availability",
    "latency_p95",
    "conversion",
    "completion",
    "true_rating",
    "regret",
    "coverage",
    "exposure_gini",
    "homogenization",
    "profit",
    "feedback_pull",
)


def _clean(v):
    """JSON-safe value: nan/inf become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def _private(path: Path):
    """A text file opened for writing with mode 0600 (scores are hidden truth)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", newline="")


class Scoreboard:
    """Every team's scores per day, in memory and (with `state_dir`) under `<state_dir>/scores/`."""

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self.dir = Path(state_dir) if state_dir is not None else None
        self.days: dict[str, list[dict]] = {}
        self.stream: dict[str, list[dict]] = {}  # day -> the course's checks from the topics, one row per team
        self._stream_stamp: int | None = None
        self._lock = threading.Lock()
        if self.dir is not None:
            self.days = _read_rows(self.dir / "scores")
            self._refresh_stream()

    def _refresh_stream(self) -> None:
        """Re-read `stream/` when `stream.csv` (written last by `add_stream`) changed."""
        if self.dir is None:
            return
        try:
            stamp = (self.dir / "stream.csv").stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp != self._stream_stamp:
            try:
                self.stream, self._stream_stamp = _read_rows(self.dir / "stream"), stamp
            except ScoringError as exc:  # being rewritten by `course score` this moment: the next read retries
                logger.warning("stream checks not refreshed: %s", exc)

    def add_stream(self, days: dict[str, list[dict]]) -> None:
        """Keep (and write, with a state dir) the course's checks from the topics: `stream/<day>.json`, `stream.csv`."""
        with self._lock:
            for day, rows in days.items():
                self.stream[day] = [_clean(dict(r)) for r in rows]
            if self.dir is None:
                return
            folder = self.dir / "stream"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for day in days:
                with _private(folder / f"{day}.json") as f:
                    f.write(json.dumps(self.stream[day], indent=1))
            with _private(self.dir / "stream.csv") as f:
                w = csv.DictWriter(f, STREAM_COLUMNS, extrasaction="ignore")
                w.writeheader()
                for d in sorted(self.stream):
                    w.writerows(self.stream[d])
            self._stream_stamp = (self.dir / "stream.csv").stat().st_mtime_ns

    def rows(self, day: str) -> list[dict]:
        """One scored day's rows, each with the same day's and team's checks from the stream when there are."""
        with self._lock:
            self._refresh_stream()
            return self._merged(day)

    def _merged(self, day: str) -> list[dict]:
        extra = {r["team"]: r for r in self.stream.get(day, [])}
        return [
            {**r, **{k: v for k, v in extra.get(r["team"], {}).items() if k.startswith("stream_")}}
            for r in self.days.get(day, [])
        ]

    def add(self, day: str, rows: list[dict]) -> None:
        """Keep (and write, with a state dir) one day's scores: `scores/<day>.json` and the rows of `scores.csv`."""
        rows = [_clean(dict(r)) for r in rows]
        with self._lock:
            before = [d for d in sorted(self.days) if d < day]
            prev = {r["team"]: r for r in self.days[before[-1]]} if before else {}
            for r in rows:  # the homogenization trend: today's value minus the previous scored day's
                h, h0 = r.get("homogenization"), prev.get(r["team"], {}).get("homogenization")
                r["homogenization_change"] = h - h0 if h is not None and h0 is not None else None
            self.days[day] = rows
            if self.dir is None:
                return
            folder = self.dir / "scores"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _private(folder / f"{day}.json") as f:
                f.write(json.dumps(rows, indent=1))
            with _private(self.dir / "scores.csv") as f:
                w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
                w.writeheader()
                for d in sorted(self.days):
                    w.writerows(self.days[d])

    def latest(self) -> list[dict]:
        """The newest day's rows (empty before the first score)."""
        with self._lock:
            self._refresh_stream()
            return self._merged(max(self.days)) if self.days else []

    def team(self, team: int) -> list[dict]:
        """One team's rows, day by day; ScoringError for a team the board does not know."""
        with self._lock:
            self._refresh_stream()
            rows = [r for d in sorted(self.days) for r in self._merged(d) if r["team"] == team]
        if not rows and self.days:
            raise ScoringError(
                f"team {team}: no scores (teams scored: {sorted({r['team'] for d in self.days.values() for r in d})})"
            )
        return rows

    def table(self, day: str | None = None, columns: Iterable[str] = TABLE) -> str:
        """The scoreboard of `day` (default: the newest) as a text table; the stream's checks when there are."""
        if not self.days:
            return "no scores yet"
        day = day or max(self.days)
        if day not in self.days:
            raise ScoringError(f"day {day}: no scores (scored days: {', '.join(sorted(self.days))})")
        rows = self.rows(day)
        out = f"scores of {day}\n" + format_table(rows, list(columns))
        if any("stream_answered_24h" in r for r in rows):
            out += f"\ncourse checks from the teams' topics, {day}\n" + format_table(rows, ["team", *STREAM_TABLE])
        return out


def _read_rows(folder: Path) -> dict[str, list[dict]]:
    """day -> rows of every `<day>.json` in `folder` (none when it does not exist); ScoringError names a bad file."""
    out: dict[str, list[dict]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ScoringError(f"score file {path} cannot be read: {exc}") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "team" in r for r in rows):
            raise ScoringError(f"score file {path}: expected a JSON list of team scores")
        out[path.stem] = rows
    return out


def format_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts as an aligned text table (floats to 3 decimals, missing as '-')."""

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


class ScoreCollector:
    """Prometheus collector: `movielab_score{team, metric}` gauges of the newest scored day, and its date."""

    def __init__(self, board: Scoreboard) -> None:
        self.board = board

    def collect(self):
        """One gauge family; every numeric figure of every team of the newest day."""
        g = GaugeMetricFamily(
            "movielab_score", "Team scores from the hidden truth, newest scored day", labels=["team", "metric"]
        )
        rows = self.board.latest()
        for r in rows:
            for c in COLUMNS[2:] + STREAM_COLUMNS[3:]:
                v = r.get(c)
                if isinstance(v, int | float) and v is not None:
                    g.add_metric([str(r["team"]), c], float(v))
        yield g
        day = GaugeMetricFamily("movielab_score_day", "Unix time of the start of the newest scored day")
        if rows:
            day.add_metric([], day_start(rows[0]["day"]))
        yield day


def read_manifest(path: str | Path, until: float | None = None) -> list[dict]:
    """Injected events from a manifest JSONL, in order of start: each `{"kind", "id", "start", "end"}` (unix s).

    The world's manifest (`world.manifest`) writes two records per injection, `{"event": "start", "id", ...}` when
    it takes effect and `{"event": "end", "id", ...}` when it stops: they are paired by `id` within a run chain
    (`world.manifest.injection_key`: ids repeat across runs appended to one file; the event's `id` is then
    `<chain>/<id>`, the plain id when only one chain has it; the end record's `start`/`end` are when it really ran). A start without an end (the run still going, or stopped by a signal)
    lasts until its declared end, else until `until`, else one hour. A start written again for the same id (a
    restart re-simulating minutes after its checkpoint) replaces the earlier one. Course records (`"event":
    "course"`: restores, team changes) are not injections and are skipped. Records without `event` are read
    tolerantly: `start`/`end` may be named `from`/`to` or `at`/`until`; without an end, one hour.
    Times are unix seconds or ISO-8601 (UTC when without a zone). ScoringError names the file and line of a
    record without a kind or a readable start.
    """

    def when(v, where: str) -> float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                t = dt.datetime.fromisoformat(v)
                return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
            except ValueError:
                pass
        raise ScoringError(f"{where}: time {v!r} is neither unix seconds nor ISO-8601")

    try:
        records = list(manifest_lines(path))
    except OSError as exc:
        raise ScoringError(f"manifest {path} cannot be read: {exc}") from None
    except ValueError as exc:
        raise ScoringError(str(exc)) from None
    chains = run_chains([rec for _, rec in records])
    paired: dict[str, dict] = {}  # injection key -> event (dicts keep the order of first start)
    loose: list[dict] = []
    for n, rec in records:
        where = f"manifest {path} line {n}"
        if not isinstance(rec, dict):
            raise ScoringError(f"{where}: expected a JSON object")
        event = rec.get("event")
        if event not in (None, "start", "end"):
            continue
        kind = rec.get("kind") or rec.get("type") or rec.get("name")
        start = next((rec[k] for k in ("start", "from", "at", "time") if k in rec), None)
        if kind is None or start is None:
            raise ScoringError(f"{where}: needs 'kind' and 'start'")
        t0 = when(start, where)
        end = next((rec[k] for k in ("end", "to", "until") if rec.get(k) is not None), None)
        t1 = when(end, where) if end is not None else None
        if event is None:
            loose.append({"kind": str(kind), "start": t0, "end": max(t0 + 3600 if t1 is None else t1, t0 + 60)})
            continue
        if "id" not in rec:
            raise ScoringError(f"{where}: an injection's {event} record needs its 'id'")
        key = injection_key(rec, chains)
        if event == "start":
            paired.pop(key, None)  # re-simulated after a restore: the latest start counts
            paired[key] = {"kind": str(kind), "id": key, "raw": str(rec["id"]), "start": t0, "end": t1, "ended": False}
        else:
            e = paired.setdefault(key, {"kind": str(kind), "id": key, "raw": str(rec["id"]), "start": t0})
            e.update(start=t0, end=t1 if t1 is not None else t0, ended=True)
    events = []
    runs_of = Counter(e["raw"] for e in paired.values())  # an id in one run chain only is shown as it is
    for e in paired.values():
        end = e["end"] if e["end"] is not None else (until if until is not None else e["start"] + 3600)
        shown = e["id"] if runs_of[e["raw"]] > 1 else e["raw"]
        events.append({"kind": e["kind"], "id": shown, "start": e["start"], "end": max(end, e["start"] + 60)})
    return sorted(loose + events, key=lambda e: e["start"])


def event_effects(days: list[DayLog], team: int, events: list[dict]) -> list[dict]:
    """Per event, a team's conversion and availability before, during and after it (windows as long as the event).

    `team` is 1-based. Each window reports the requests it holds; a window without requests reports None.
    """
    if not days:
        return []
    s = DayLog.concat("all", days).sessions
    mine = s["team"] == team - 1
    t, ok, conv = s["time"][mine], s["ok"][mine], s["from_list"][mine]
    out = []
    for e in events:
        span = e["end"] - e["start"]
        row = {"kind": e["kind"], "id": e.get("id"), "start": e["start"], "end": e["end"]}
        for name, lo, hi in (
            ("before", e["start"] - span, e["start"]),
            ("during", e["start"], e["end"]),
            ("after", e["end"], e["end"] + span),
        ):
            w = (t >= lo) & (t < hi)
            n = int(w.sum())
            row[f"requests_{name}"] = n
            row[f"conversion_{name}"] = float(conv[w].mean()) if n else None
            row[f"availability_{name}"] = float(ok[w].mean()) if n else None
        out.append(row)
    return out


class DailyScorer:
    """Scores each finished day of a running world on a background thread (pass `on_tick` to `World.run`).

    At each midnight the slowest lane reaches: the hidden taste is copied (the next day's start), the
    finished day is flushed from the session log and scored against the start-of-day copy. Users of
    lanes ahead of the slowest one have moved on a little further: their end-of-day taste is a few ticks late.
    """

    def __init__(
        self,
        log: SessionLog,
        board: Scoreboard,
        catalog,
        params: ScoreParams | None = None,
        takedowns: Callable[[], list[tuple[int, float]]] | None = None,
    ) -> None:
        self.log, self.board, self.catalog = log, board, catalog
        self.params = params or ScoreParams()
        self.takedowns = takedowns  # () -> [(movie row, unix time)]: e.g. `ScenarioRuntime.takedowns`
        self.history = History.empty()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self._pending: list[Future] = []
        self._day: float | None = None
        self._taste_start: np.ndarray | None = None
        self._prev: DayLog | None = None

    def on_tick(self, world) -> None:
        """Check for midnight; on crossing one, snapshot and hand the finished day to the scoring thread."""
        today = math.floor(world.now / DAY) * DAY
        if self._day is None:
            self._day, self._taste_start = today, world.pop.taste[: world.pop.size].copy()
            return
        if today <= self._day:
            return
        truth = Truth.from_world(world, self.catalog, self._taste_start)
        self._taste_start = truth.taste_end
        finished, self._day = self.log.take(day_of(self._day)), today
        self._pending.append(self._pool.submit(self.score, finished, truth))

    def score(self, log: DayLog, truth: Truth) -> list[dict]:
        """Write and score one taken day (the background thread's work; also callable directly); add it to the board.

        The day is scored from its file when there is one: a checkpoint writes the records buffered so far, so the
        taken part alone would miss them.
        """
        path = self.log.write(log)
        if path is not None:
            log = read_day(path)
        day = log.day
        downs = self.takedowns() if self.takedowns is not None else []
        rows = score_day(log, truth, self.history, self.log.n_teams, self.params, takedowns=downs)
        self.history = self.history.extended(log)
        self.board.add(day, rows)
        logger.info("scored %s for %d teams", day, len(rows))
        return rows

    def state(self) -> dict[str, np.ndarray]:
        """What a checkpoint keeps (`World.extra_state`): the day being recorded and the users' taste at its start.

        Waits for the day being scored: its records are in its file only once the scoring thread wrote it.
        """
        for f in list(self._pending):
            f.result()
        if self._day is None:
            return {"day": np.array([np.nan]), "taste_start": np.zeros((0, 0), np.float32)}
        # Not a copy: `_taste_start` is replaced at each midnight, never written in place, so a checkpoint keeps it
        # by reference and a delta sees it unchanged (`checkpoint._immutable`) instead of copying 1M × k floats.
        return {"day": np.array([self._day]), "taste_start": self._taste_start}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state()`; the users' pick history is read back from the session log's day files."""
        from movielab.world.sessionlog import read_days

        before = read_days(self.log.dir.parent) if self.log.dir is not None else []
        day = float(np.asarray(state["day"])[0])
        if math.isfinite(day):
            self._day, self._taste_start = day, np.asarray(state["taste_start"], np.float32).copy()
        else:
            self._day, self._taste_start = None, None
        history = History.empty()
        for d in before:
            if self._day is None or day_start(d.day) < self._day:
                history = history.extended(d)
        self.history = history

    def close(self, world=None) -> None:
        """Wait for pending scores; with `world`, also score the unfinished current day as it stands."""
        for f in self._pending:
            f.result()
        if world is not None and self._day is not None and world.now > self._day:  # a day begun, not yet scored
            truth = Truth.from_world(world, self.catalog, self._taste_start)
            self.score(self.log.take(day_of(self._day)), truth)  # the world has stopped: its day as it stands
            self.log.flush(math.inf)  # records that came late for a day already taken
        self._pool.shutdown()


def report(
    state_dir: str | Path,
    team: int | None = None,
    day: str | None = None,
    manifest: str | Path | None = None,
    sessions: str | Path | None = None,
) -> str:
    """The text `movielab course score` prints: the scoreboard of a day, or one team in detail.

    `state_dir` holds `scores/` (a course keeps them in its reports folder); `sessions` the folder holding
    `sessions/` (default: `state_dir`). One team: its figures day by day, its fairness groups on `day` (default:
    the newest), and with a `manifest`, its conversion and availability before/during/after each injected event
    (from the session log).
    """
    board = Scoreboard(state_dir)
    if not board.days:
        raise ScoringError(f"no scores under {Path(state_dir) / 'scores'}: has the world scored a day yet?")
    if team is None:
        return board.table(day)
    rows = board.team(team)
    if day is not None and day not in board.days:
        raise ScoringError(f"day {day}: no scores (scored days: {', '.join(sorted(board.days))})")
    parts = [f"team {team}, day by day", format_table(rows, [c for c in COLUMNS if c != "team"])]
    if any("stream_answered_24h" in r for r in rows):
        parts += [
            f"team {team}: course checks from its topic, day by day",
            format_table(rows, ["day", *STREAM_COLUMNS[3:]]),
        ]
    chosen = next(r for r in rows if r["day"] == (day or rows[-1]["day"]))
    for name, groups in chosen.get("fairness", {}).items():
        shown = ", ".join(f"{g} {v:.3f}" for g, v in groups.items() if v is not None)
        parts.append(f"{name} on {chosen['day']}: {shown or '-'}")
    if manifest is not None:
        from movielab.world.sessionlog import read_days

        logs = read_days(sessions if sessions is not None else state_dir)
        until = float(DayLog.concat("all", logs).sessions["time"].max(initial=0)) if logs else None  # open events
        effects = event_effects(logs, team, read_manifest(manifest, until=until))
        for e in effects:
            e["start"], e["end"] = (
                dt.datetime.fromtimestamp(e[k], dt.UTC).strftime("%Y-%m-%dT%H:%M") for k in ("start", "end")
            )
        cols = ["id", "kind", "start", "end"] + [
            f"{m}_{w}" for m in ("conversion", "availability") for w in ("before", "during", "after")
        ]
        parts += [f"injected events ({manifest})", format_table(effects, cols) if effects else "no events"]
    return "\n".join(parts)
