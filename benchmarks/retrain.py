"""Wall time of each retraining stage for a store of synthetic events, next to training alone in the same run.

Fills a DuckDB file store with a week of synthetic watch (and some rating) events of N users, built
directly with numpy in the store's batch format: users belong to taste groups that favour their own
block of movies, on top of a Zipf popularity. Then, with a fresh MLflow sqlite registry:
- baseline: the model's `fit` alone on the snapshot's training data (the irreducible work);
- run 1 (no champion yet: the gate scores candidate and popularity) and, after one more day of events,
  run 2 (a champion exists: the gate also refits it), each stage timed by the Retrainer's record;
  the rollout callback downloads the accepted version from the registry, loads it and builds the answer
  table, as the operator does before serving: "answer table" below.
Retrain-to-serving is the sum of all stages. The issue's target: ≤ 60 s for a 100,000-user world.

    .venv/bin/python benchmarks/retrain.py [--users 100000] [--movies 3000] [--watches 10] [--model ease]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from movielab.recommender.serving.answers import answer_table
from movielab.recommender.store.events import EVENT_SCHEMA, QUARANTINE_SCHEMA, Batch, EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo
from movielab.recommender.training import pipeline
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.gate import RetrainPolicy
from movielab.recommender.training.models import create
from movielab.recommender.training.registry import Registry, default_tracking_uri
from movielab.recommender.training.retrain import Retrainer

T0 = np.datetime64("2026-03-20T00:00:00", "us")
DAY_US = 86_400 * 1_000_000
GROUPS = 50
STAGES = ("snapshot", "checks", "train", "gate", "register", "rollout")


def synthetic_batch(
    rng: np.random.Generator,
    users: int,
    movies: int,
    watches: int,
    minutes: int,
    first_offset: int,
    start: np.datetime64,
    days: float,
) -> Batch:
    """`watches` movies per user (its group's block two times in three, else by popularity), `minutes` lines each."""
    group = np.arange(users) % GROUPS
    block = max(1, movies // GROUPS)
    popular = 1.0 / np.arange(1, movies + 1) ** 0.8
    popular /= popular.sum()
    n = users * watches
    user = np.repeat(np.arange(1, users + 1, dtype=np.int64), watches)
    own = rng.random(n) < 2 / 3
    movie = np.where(own, group[user - 1] * block + rng.integers(0, block, n), rng.choice(movies, n, p=popular))
    t = start + (rng.random(n) * days * DAY_US).astype("timedelta64[us]")
    # one line per minute watched, a minute apart; a rating for one watch in four
    m = np.tile(np.arange(1, minutes + 1, dtype=np.int32), n)
    times = np.repeat(t, minutes) + ((m - 1).astype(np.int64) * 60_000_000).astype("timedelta64[us]")
    rated = rng.random(n) < 0.25
    n_w, n_r = n * minutes, int(rated.sum())
    ids = np.array([f"movie+{i}+2000" for i in range(movies)], dtype=object)
    kind = np.array(["watch"] * n_w + ["rate"] * n_r, dtype=object)
    cols = {
        "time": np.concatenate([times, t[rated] + np.timedelta64(minutes, "m")]),
        "user_id": np.concatenate([np.repeat(user, minutes), user[rated]]),
        "movie_id": np.concatenate([ids[np.repeat(movie, minutes)], ids[movie[rated]]]),
        "minute": np.concatenate([m, np.zeros(n_r, np.int32)]),
        "rating": np.concatenate([np.zeros(n_w, np.int32), rng.integers(1, 6, n_r).astype(np.int32)]),
    }
    total = n_w + n_r
    none = pa.nulls(total)
    events = pa.table(
        {
            "topic": pa.array(np.full(total, "movielog1", dtype=object)),
            "partition": pa.array(np.zeros(total, np.int32)),
            "offset": pa.array(np.arange(first_offset, first_offset + total, dtype=np.int64)),
            "time": pa.array(cols["time"]),
            "user_id": pa.array(cols["user_id"]),
            "kind": pa.array(kind),
            "movie_id": pa.array(cols["movie_id"]),
            "minute": pa.array(cols["minute"], mask=np.arange(total) >= n_w),
            "rating": pa.array(cols["rating"], mask=np.arange(total) < n_w),
            "server": none,
            "status": none,
            "recommendations": none,
            "error": none,
            "response_ms": none,
        }
    ).cast(EVENT_SCHEMA)
    films = [MovieInfo(str(i), minutes, ("Drama",), None) for i in ids]
    people = [UserInfo(u, 18 + u % 50, "FM"[u % 2], "other") for u in range(1, users + 1)]
    return Batch(events, QUARANTINE_SCHEMA.empty_table(), films, people)


def fill(store: EventStore, batch: Batch, chunk: int = 1_000_000) -> None:
    """Append a big batch in chunks (records with the first chunk), as ingestion would."""
    for i in range(0, batch.events.num_rows, chunk):
        first = i == 0
        store.append(
            Batch(
                batch.events.slice(i, chunk),
                QUARANTINE_SCHEMA.empty_table(),
                batch.movies if first else [],
                batch.users if first else [],
            )
        )


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--movies", type=int, default=3_000)
    ap.add_argument("--watches", type=int, default=10, help="movies watched per user in the first week")
    ap.add_argument("--minutes", type=int, default=3, help="watch lines per movie watched")
    ap.add_argument("--model", default="ease")
    ap.add_argument("--params", default="{}", help="JSON hyper-parameters")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = json.loads(args.params)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, EventStore(Path(tmp) / "store.duckdb") as store:
        t = time.perf_counter()
        week = synthetic_batch(rng, args.users, args.movies, args.watches, args.minutes, 0, T0, 7.0)
        fill(store, week)
        print(
            f"store: {week.events.num_rows:,} events of {args.users:,} users, {args.movies:,} movies "
            f"(built and stored in {time.perf_counter() - t:.1f} s)"
        )

        snap = store.create_snapshot("baseline", None, None)
        t = time.perf_counter()
        data = TrainingData.from_snapshot(store, snap)
        data_s = time.perf_counter() - t
        t = time.perf_counter()
        create(args.model, **params).fit(data)
        fit_s = time.perf_counter() - t
        print(
            f"baseline: {args.model} fit alone {fit_s:.2f} s (training data query {data_s:.2f} s; "
            f"{len(data.users):,} users × {len(data.items):,} movies)"
        )
        del data

        artifacts = Path(tmp) / "models"
        t = time.perf_counter()
        registry = Registry(
            default_tracking_uri(artifacts), "movielab-bench", Path(tmp) / "cache", Path(tmp) / "mlruns"
        )
        print(f"registry: MLflow import + new sqlite database {time.perf_counter() - t:.1f} s (once per operator)")
        tables = []

        def rollout(mv, record) -> None:
            tables.append(answer_table(pipeline.load(registry.folder(mv)), store))

        policy = RetrainPolicy(model=args.model, params=params, window_days=8)
        retrainer = Retrainer(store, registry, artifacts, policy, Path(tmp) / "retrain.jsonl", rollout)
        runs = [retrainer.run()]
        day = synthetic_batch(
            rng,
            args.users,
            args.movies,
            max(1, args.watches // 7),
            args.minutes,
            week.events.num_rows,
            T0 + 7 * DAY_US,
            1.0,
        )
        fill(store, day)
        runs.append(retrainer.run())

        print("\n| stage | run 1 (no champion) s | run 2 (with champion) s |\n|---|---|---|")
        names = {"rollout": "answer table (load + build)"}
        for stage in STAGES:
            cells = " | ".join(f"{r.seconds.get(stage, float('nan')):.2f}" for r in runs)
            print(f"| {names.get(stage, stage)} | {cells} |")
        print("| **retrain-to-serving** | " + " | ".join(f"**{r.seconds['total']:.2f}**" for r in runs) + " |")
        print(f"| baseline: fit alone | {fit_s:.2f} | |")
        for i, r in enumerate(runs, 1):
            print(
                f"run {i}: {r.status} ({r.decision}) {r.reason}; snapshot {r.snapshot['rows']:,} events; "
                f"retrain-to-serving / fit alone = {r.seconds['total'] / fit_s:.1f}×; target ≤ 60 s"
            )
        if tables:
            print(f"answer table: {len(tables[-1]):,} users")


if __name__ == "__main__":
    main()
