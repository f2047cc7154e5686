"""Scoring cost: one daily score of 20 teams at 1,000,000 users × 20,000 movies (target ≤ 60 s).

Running the world for a day at 1M users takes far longer than the scoring itself, so the day is
synthesized at that size from rates measured in the same run on a real world (20,000 users, one day,
the random placeholder team): sessions per user per day, the share that pick, pick from the list and
whose viewing ended by midnight, minutes watched. Users are drawn with log-normal activity, served
lists by catalog popularity (rating count ** 0.6, as users browse), every team answering 97% of
requests; the pick history of 7 earlier days is synthesized the same way. The hidden truth has the
world's shapes (k = 16 factors) with Gaussian values: the cost does not depend on the values.

Baselines in the same run: scoring only one team's share of the same day (1 team), and the engine's
cost of keeping the session log (the 20,000-user day simulated with and without it).

The course's checks from the stream (`movielab course score FILE`: every team's topic read back from the broker
and graded line by line, `course.streamchecks`) cost one pass over every line of the course. They are measured on
a real world day (`--stream-users`, the random team, 20 answers per request) produced to the embedded broker:
the check alone over the lines in memory (CPU per line), and read back from the broker with the check, against
the baseline of only reading the topic back; then scaled to a day of 1M users and to a semester by the
lines per user per day measured.

    .venv/bin/python benchmarks/scoring.py [--users 1000000] [--movies 20000] [--teams 20] [--stream-only]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from datetime import datetime, timedelta

import numpy as np

from movielab.world.bootstrap import build_world, run_until
from movielab.world.config import WorldConfig
from movielab.world.recs import RandomService
from movielab.world.scoring.daily import History, ScoreParams, Truth, score_day
from movielab.world.sessionlog import DAY, DayLog, SessionLog, day_start

START = day_start("2026-03-20")


def measure_rates(users: int) -> dict[str, float]:
    """Rates of a real world day (random team) and its wall time with and without the session log."""
    config = WorldConfig(users=users, days=1, arrivals_per_day=0, allow_download=False)
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for with_log in (False, True, True, False):  # alternated; CPU time of this process (the machine is shared)
        log = SessionLog(n_teams=1) if with_log else None
        world, universe = build_world(config, sessionlog=log)
        world.service = RandomService(universe.catalog.slug, seed=1)
        t = time.process_time()
        world.run(until=run_until(config))
        cpu[with_log].append(time.process_time() - t)
        if with_log:
            kept = log
    s = kept.day("2026-03-20").sessions
    ends = kept.day("2026-03-20").ends
    conv = s["from_list"]
    ended = np.isin(s["sid"][conv], ends["end_sid"])
    return {
        "sessions_per_user": len(s["sid"]) / users,
        "pick": float(s["picked"].mean()),
        "from_list_of_picks": float(conv.sum() / max(s["picked"].sum(), 1)),
        "ended": float(ended.mean()),
        "minutes_mean": float(ends["minutes"].mean()),
        "completed": float(ends["completed"].mean()),
        "cpu_without_log": min(cpu[False]),
        "cpu_with_log": min(cpu[True]),
        "sessions": len(s["sid"]),
    }


def synth_day(
    n_users: int,
    n_movies: int,
    n_teams: int,
    rates: dict[str, float],
    day: float,
    sid0: int,
    rng: np.random.Generator,
    popularity: np.ndarray,
) -> DayLog:
    """A day's session log at this size with the measured rates (see the module)."""
    n = int(rates["sessions_per_user"] * n_users)
    act = rng.lognormal(0, 1.1, n_users)
    rows = np.searchsorted(np.cumsum(act) / act.sum(), rng.random(n)).astype(np.int32)
    cdf = np.cumsum((popularity + 1.0) ** 0.6)
    cdf /= cdf[-1]
    served = np.searchsorted(cdf, rng.random((n, 20))).astype(np.int32)
    ok = rng.random(n) < 0.97
    served[~ok] = -1
    picked = rng.random(n) < rates["pick"]
    from_list = picked & ok & (rng.random(n) < rates["from_list_of_picks"])
    rank = np.where(from_list, rng.integers(0, 20, n), -1).astype(np.int8)
    movie = np.where(from_list, served[np.arange(n), np.maximum(rank, 0)], np.searchsorted(cdf, rng.random(n))).astype(
        np.int32
    )
    movie[~picked] = -1
    sid = np.arange(sid0, sid0 + n, dtype=np.int64)
    sessions = {
        "sid": sid,
        "time": np.sort(day + rng.random(n) * DAY),
        "team": (rows % n_teams).astype(np.int16),
        "row": rows,
        "status": np.where(ok, 200, 0).astype(np.int16),
        "ms": np.where(ok, rng.lognormal(3, 1, n), 600).astype(np.int32),
        "ok": ok,
        "served": served,
        "picked": picked,
        "movie": movie,
        "resumed": picked & ~from_list & (rng.random(n) < 0.3),
        "from_list": from_list,
        "rank": rank,
        "true_score": np.where(picked, rng.normal(3.8, 0.6, n), np.nan).astype(np.float32),
    }
    done = np.flatnonzero(picked & (rng.random(n) < rates["ended"]))
    ends = {
        "end_sid": sid[done],
        "end_time": sessions["time"][done] + 3600,
        "minutes": rng.exponential(rates["minutes_mean"], len(done)).astype(np.int32),
        "completed": rng.random(len(done)) < rates["completed"],
    }
    return DayLog("2026-03-20", sessions, ends)


def stream_cost(users: int, scale_users: int, semester_days: int = 105) -> None:
    """Print the cost of the course's checks from the stream: a real day's lines, in memory and via the broker."""
    from movielab.course.streamchecks import REREAD_DAYS, read_to_end
    from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics
    from movielab.world.scoring.coursechecks import StreamChecks
    from movielab.world.sinks import MemorySink

    config = WorldConfig(users=users, days=1, arrivals_per_day=0, allow_download=False)
    sink = MemorySink()
    world, universe = build_world(config, sink=sink)
    world.service = RandomService(universe.catalog.slug, seed=1)
    world.run(until=run_until(config))
    lines, keys = sink.lines, sink.keys
    recs = sum(1 for x in lines if "recommendation request" in x)
    print(f"stream checks: a real {users:,}-user day, {len(lines):,} lines ({recs:,} recommendation requests)")
    raw = [x.encode() for x in lines]
    c = time.process_time()
    noon = datetime.fromisoformat(lines[0][:10]) + timedelta(hours=12)  # a takedown at noon: the check's slow path
    checks = StreamChecks(takedowns=[(universe.catalog.slug[0], noon)])
    for value in raw:
        checks.add(value)
    in_memory = time.process_time() - c
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1"], partitions=4)
        with KafkaSink(broker.bootstrap, "movielog1") as out:
            out.write(keys, lines)
        t, c = time.perf_counter(), time.process_time()
        n = sum(1 for _ in read_to_end(broker.bootstrap, "movielog1"))
        read_wall, read_cpu = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        again = StreamChecks()
        for value in read_to_end(broker.bootstrap, "movielog1"):
            again.add(value)
        both_wall, both_cpu = time.perf_counter() - t, time.process_time() - c
    assert n == len(lines) == again.recommendation_lines + again.other_lines + again.unparsable
    per_line = both_wall / n
    day_lines = len(lines) / users * scale_users
    print(
        f"  the check alone, in memory: {in_memory / n * 1e6:.2f} µs CPU a line ({len(lines) / in_memory:,.0f} lines/s)"
    )
    print(
        f"  baseline, reading the topic back only: {read_wall:.2f} s wall, {read_cpu:.2f} s CPU "
        f"({n / read_wall:,.0f} lines/s)"
    )
    print(f"  reading back + the check: {both_wall:.2f} s wall, {both_cpu:.2f} s CPU ({n / both_wall:,.0f} lines/s)")
    reread = REREAD_DAYS + 2  # the slack day, the days graded again, and the newest
    print(
        f"  at {scale_users:,} users: {day_lines / 1e6:,.1f} M lines a day -> {day_lines * per_line:,.0f} s a day "
        f"of topic; `course score` after the first reads the last {reread} days: {reread * day_lines * per_line / 60:,.0f}"
        f" min, whatever the course's length (the first, or --full-stream, reads all: "
        f"{day_lines * semester_days * per_line / 3600:,.1f} h at the end of a {semester_days}-day semester). "
        "Off the world's hot path (another process); memory: one entry per distinct answer list per day"
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--movies", type=int, default=20_000)
    ap.add_argument("--teams", type=int, default=20)
    ap.add_argument("--measure-users", type=int, default=20_000)
    ap.add_argument("--stream-users", type=int, default=5_000, help="users of the real day the stream checks read")
    ap.add_argument("--stream-only", action="store_true", help="only the cost of the course's checks from the stream")
    args = ap.parse_args()
    stream_cost(args.stream_users, args.users)
    if args.stream_only:
        return
    rates = measure_rates(args.measure_users)
    print(
        f"measured on a real {args.measure_users:,}-user day ({rates['sessions']:,} sessions): "
        f"{rates['sessions_per_user']:.3f} sessions/user, pick {rates['pick']:.3f}, from the list "
        f"{rates['from_list_of_picks']:.3f} of picks, ended by midnight {rates['ended']:.3f}, "
        f"{rates['minutes_mean']:.1f} min watched"
    )
    overhead = rates["cpu_with_log"] / rates["cpu_without_log"] - 1
    print(
        f"engine with the session log: {rates['cpu_with_log']:.2f} s CPU vs {rates['cpu_without_log']:.2f} s "
        f"without ({overhead:+.1%}) for that day (best of 2 each, alternated)"
    )
    rng = np.random.default_rng(0)
    k, n, m, T = 16, args.users, args.movies, args.teams
    popularity = rng.pareto(1.2, m) * 10
    taste = rng.normal(0, 0.5, (n, k)).astype(np.float32)
    truth = Truth(
        3.5,
        rng.normal(0, 0.5, (m, k)).astype(np.float32),
        rng.normal(0, 0.4, m).astype(np.float32),
        rng.uniform(0.02, 0.5, m).astype(np.float32),
        popularity,
        taste,
        taste + rng.normal(0, 0.01, (n, k)).astype(np.float32),
        rng.normal(0, 0.3, n).astype(np.float32),
        rng.integers(13, 70, n),
        rng.integers(0, 2, n),
        rng.integers(0, 21, n),
    )
    history, sid = History.empty(), 0
    for d in range(7):
        past = synth_day(n, m, T, rates, START - (7 - d) * DAY, sid, rng, popularity)
        sid += len(past)
        history = history.extended(past)
    day = synth_day(n, m, T, rates, START, sid, rng, popularity)
    print(
        f"synthesized day: {len(day):,} sessions of {n:,} users, {T} teams, {m:,} movies; "
        f"history {len(history.row):,} picks"
    )
    params = ScoreParams()
    one = day.sessions["team"] == 0
    day1 = DayLog(
        day.day,
        {c: v[one] for c, v in day.sessions.items()},
        {c: v[np.isin(day.ends["end_sid"], day.sessions["sid"][one])] for c, v in day.ends.items()},
    )
    t, c = time.perf_counter(), time.process_time()
    score_day(day1, truth, history, 1, params)
    base, base_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    rows = score_day(day, truth, history, T, params)
    full, full_cpu = time.perf_counter() - t, time.process_time() - c
    print(f"baseline, 1 team ({len(day1):,} sessions): {base:.1f} s wall, {base_cpu:.1f} s CPU")
    print(
        f"one daily score of {T} teams at {n:,} users: {full:.1f} s wall, {full_cpu:.1f} s CPU (target ≤ 60 s; "
        f"{full / base:.1f}× one team); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; team 1: "
        f"availability {rows[0]['availability']:.3f}, conversion {rows[0]['conversion']:.3f}, "
        f"regret {rows[0]['regret']:.3f}, coverage {rows[0]['coverage']:.3f}"
    )


if __name__ == "__main__":
    main()
