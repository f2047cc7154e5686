"""Time of one `MonitorLoop.update` window on a store holding a day of synthetic events of 100,000 users.

Synthetic day (seeded): each user has a few sessions; a session is one recommendation request (20 ids,
99.5% answered), then minutes of one movie (often a recommended one), sometimes a rating. Events go
straight into a DuckDB file store (no Kafka, no parsing: this measures the monitor, not ingest).
Reported, in the same run, for the last hour of the day:
- the baseline: a plain `SELECT count(*)` of the same event-time window;
- `update` after a full catch-up (the steady state: counters over the rows since the last update,
  here one more minute of events, plus the window profile and drift against the first hour);
- the first `update` of a fresh loop (counts the whole table once, as after an operator restart).

    .venv/bin/python benchmarks/monitor.py [--users 100000] [--sessions 3] [--minutes 20] [--window-minutes 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from movielab.recommender.monitoring.drift import profile_window
from movielab.recommender.monitoring.exporter import OperatorMetrics
from movielab.recommender.monitoring.monitor import MonitorLoop
from movielab.recommender.store.events import (
    EVENT_SCHEMA,
    QUARANTINE_SCHEMA,
    Batch,
    EventStore,
)
from movielab.recommender.store.records import MovieInfo, UserInfo

DAY0 = datetime(2026, 3, 20)
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Thriller", "Documentary", "Animation")
OCCUPATIONS = ("writer", "artist", "engineer", "college/grad student", "other or not specified")


def synthetic_day(users: int, movies: int, sessions: int, minutes: int, seed: int) -> pa.Table:
    """A day of events as an EVENT_SCHEMA table (without seq), sorted by time like a stream."""
    rng = np.random.default_rng(seed)
    slugs = np.array([f"movie+{i}+{1950 + i % 70}" for i in range(movies)], dtype=object)
    popularity = 1.0 / np.arange(1, movies + 1) ** 0.8
    popularity /= popularity.sum()
    n_sess = users * sessions
    user = rng.integers(1, users + 1, n_sess)
    start = rng.uniform(0, 86_400, n_sess)
    recs = rng.choice(movies, (n_sess, 20), p=popularity)
    ok = rng.random(n_sess) < 0.995
    picked_rec = rng.random(n_sess) < 0.4
    pick = np.where(picked_rec & ok, recs[:, 0], rng.choice(movies, n_sess, p=popularity))
    length = rng.integers(1, minutes * 2, n_sess)
    rated = rng.random(n_sess) < 0.3
    # Recommendation lines.
    cols: dict[str, list] = {
        k: []
        for k in (
            "time",
            "user_id",
            "kind",
            "movie_id",
            "minute",
            "rating",
            "status",
            "recommendations",
            "error",
            "response_ms",
        )
    }
    t_rec = start
    rec_lists = [list(slugs[r]) if o else None for r, o in zip(recs, ok, strict=True)]
    _extend(
        cols,
        t_rec,
        user,
        "recommendation",
        None,
        None,
        None,
        np.where(ok, 200, 0),
        rec_lists,
        [None if o else "Request timeout to team1.local:8082 after 600 ms" for o in ok],
        np.where(ok, rng.integers(3, 80, n_sess), 601),
    )
    # Watch lines: one per minute watched.
    rep = np.repeat(np.arange(n_sess), length)
    minute = np.concatenate([np.arange(1, k + 1) for k in length])
    _extend(
        cols, start[rep] + 5 + 60 * minute, user[rep], "watch", slugs[pick[rep]], minute, None, None, None, None, None
    )
    # Ratings after some sessions.
    r = np.flatnonzero(rated)
    _extend(
        cols,
        start[r] + 60 * (length[r] + 2),
        user[r],
        "rate",
        slugs[pick[r]],
        None,
        rng.integers(1, 6, len(r)),
        None,
        None,
        None,
        None,
    )
    times = np.concatenate(cols.pop("time"))
    order = np.argsort(times, kind="stable")
    order = order[times[order] < 86_400]  # the day ends at midnight: later minutes belong to tomorrow
    n = len(order)
    table = {
        "topic": pa.array(["movielog1"] * n),
        "partition": pa.array(np.zeros(n, np.int32)),
        "offset": pa.array(np.arange(n, dtype=np.int64)),
        "time": pa.array(np.datetime64(DAY0, "us") + (times[order] * 1e6).astype("timedelta64[us]")),
        "server": pa.array(["team1.local:8082"] * n),
    }
    for name, parts in cols.items():
        flat = [v for part in parts for v in (part if isinstance(part, list) else part.tolist())]
        table[name] = pa.array([flat[i] for i in order.tolist()], EVENT_SCHEMA.field(name).type)
    return pa.table(table).select([f.name for f in EVENT_SCHEMA]).cast(EVENT_SCHEMA)


def _extend(cols, times, users, kind, movie, minute, rating, status, recs, error, ms) -> None:
    n = len(times)

    def col(v):
        return [None] * n if v is None else (v if isinstance(v, list) else np.asarray(v))

    for name, v in (
        ("time", np.asarray(times, np.float64)),
        ("user_id", np.asarray(users)),
        ("kind", [kind] * n),
        ("movie_id", col(movie)),
        ("minute", col(minute)),
        ("rating", col(rating)),
        ("status", col(status)),
        ("recommendations", col(recs)),
        ("error", col(error)),
        ("response_ms", col(ms)),
    ):
        cols[name].append(v)


def main() -> None:
    """Build the store, then print the baseline and the update times."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--movies", type=int, default=5_000)
    ap.add_argument("--sessions", type=int, default=3, help="sessions per user per day")
    ap.add_argument("--minutes", type=int, default=20, help="mean minutes watched per session")
    ap.add_argument("--window-minutes", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    t = time.perf_counter()
    day = synthetic_day(args.users, args.movies, args.sessions, args.minutes, args.seed)
    print(f"synthetic day: {day.num_rows:,} events of {args.users:,} users in {time.perf_counter() - t:.1f} s")
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp, EventStore(Path(tmp) / "events.duckdb") as store:
        store.add_records(
            movies=[
                MovieInfo(f"movie+{i}+{1950 + i % 70}", 90, (GENRES[i % 8], GENRES[(i * 3) % 8]), f"M{i}")
                for i in range(args.movies)
            ],
            users=[
                UserInfo(u, int(a), g, OCCUPATIONS[u % 5])
                for u, a, g in zip(
                    range(1, args.users + 1),
                    rng.integers(12, 70, args.users),
                    rng.choice(["F", "M"], args.users),
                    strict=True,
                )
            ],
        )
        t = time.perf_counter()
        last_minute = int(
            np.searchsorted(
                day["time"].to_numpy(), np.datetime64(DAY0 + timedelta(hours=24) - timedelta(minutes=1), "us")
            )
        )
        for lo in range(0, last_minute, 1_000_000):
            store.append(Batch(day.slice(lo, min(1_000_000, last_minute - lo)), QUARANTINE_SCHEMA.empty_table()))
        print(f"stored {last_minute:,} events in {time.perf_counter() - t:.1f} s")
        end = DAY0 + timedelta(hours=24)
        start = end - timedelta(minutes=args.window_minutes)

        t = time.perf_counter()
        (n,) = store._query(
            "SELECT count(*) FROM events WHERE time >= $start AND time < $end", {"start": start, "end": end}
        )[0]
        baseline = time.perf_counter() - t

        ref = profile_window(store, DAY0, DAY0 + timedelta(minutes=args.window_minutes))
        fresh = MonitorLoop(OperatorMetrics(), window=timedelta(minutes=args.window_minutes), reference=ref)
        t = time.perf_counter()
        fresh.update(store, end)
        first = time.perf_counter() - t

        # Steady state: one more minute of events arrives, then the next update.
        store.append(Batch(day.slice(last_minute), QUARANTINE_SCHEMA.empty_table()))
        t = time.perf_counter()
        report = fresh.update(store, end)
        steady = time.perf_counter() - t
        t = time.perf_counter()
        profile_window(store, start, end)
        profile = time.perf_counter() - t

        print(f"window: last {args.window_minutes} min of the day, {n:,} events")
        print(f"SELECT count(*) of the window: {baseline * 1e3:8.1f} ms   (baseline, same run)")
        print(
            f"update, steady state:          {steady * 1e3:8.1f} ms   (= {steady / baseline:.0f}x baseline; "
            f"{day.num_rows - last_minute:,} new rows counted)"
        )
        print(f"  of which the window profile: {profile * 1e3:8.1f} ms")
        print(f"update, first after a restart: {first * 1e3:8.1f} ms   (counts all {last_minute:,} rows once)")
        if report is not None:
            psi = ", ".join(f"{k}={v.psi:.3f}" for k, v in report.features.items())
            print(
                f"drift vs the first hour: {psi}; watch share recommended "
                f"{report.current.recommended_watch_share:.2f}, exposure Gini {report.current.exposure_gini:.2f}"
            )


if __name__ == "__main__":
    main()
