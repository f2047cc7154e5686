"""Cold start from self-descriptions vs the demographic fallback: new users' conversion in their first 3 sessions.

One 2026-edition world. History (`--history-days`, no arrivals, no service) goes through the recommender's
validator into its event store (benchmarks/storesink.py); the demographic fallback (segment popularity)
comes from it. Then `--days` with new accounts (`--arrivals` per user per day): each `create_account` line
goes, at the end of its simulated minute, to the cold-start worker's `handle` (world API record over real
HTTP → lexical matcher → blend → store), before the account's first session (1–31 minutes later). New users
are split 50/50 by a stable hash of their id: the self-description arm is served the blended list, the
baseline arm its segment's popularity list (the same worker, the answers ignored). Both arms are one world,
one period; old users get their segment's list. The service answers in process (no HTTP on the request path:
this measures lists, not serving).

A session converts when the user's next watch line after the request is one of its recommended movies;
a new user's figure is conversions / sessions over their first (up to) 3 sessions; the difference of the
arms' means has a 95% Welch interval (users are the unit). Also: the mean TRUE score (hidden taste, 1–10 scale
of the world's model) of converted picks, latency per new account (fetch + match + store, and match alone),
and the matcher's memory (tracemalloc) next to the process RSS.

    .venv/bin/python benchmarks/coldstart.py [--users 50000] [--days 7] [--movies 5000] [--arrivals 0.01]
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
from storesink import StoreSink  # a sibling module of the benchmarks

from movielab.recommender.ingest.coldstart import ColdStart, ColdStartWorker
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.serving import traffic
from movielab.recommender.store.events import EventStore
from movielab.webserver import ServerThread
from movielab.world.api import create_app as world_api
from movielab.world.bootstrap import build_universe, build_world
from movielab.world.config import WorldConfig
from movielab.world.recs import NoService, RecAnswers

DAY = 86_400
FIRST = 3  # sessions per new user that count
SALT = 16


class ListService:
    """Answers each user from a dict of lists (catalog rows), else their segment's list, else the global one."""

    def __init__(self, slugs: list[str], fallback: dict[int, list[str]], segments: dict[int, int]) -> None:
        self.index = {s: i for i, s in enumerate(slugs)}
        self.lists: dict[int, tuple[np.ndarray, str]] = {}
        self.fallback = {k: self._entry(v) for k, v in fallback.items() if v}
        self.segments = segments

    def _entry(self, ids) -> tuple[np.ndarray, str]:
        ids = list(ids)[:20]
        return np.array([self.index[m] for m in ids], np.int32), ", ".join(ids)

    def set(self, user: int, ids) -> None:
        """Serve `ids` to `user` from now on."""
        self.lists[user] = self._entry(ids)

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """One list per user, status 200, 1 ms."""
        got = [
            self.lists.get(u) or self.fallback.get(self.segments.get(u, -1)) or self.fallback[-1]
            for u in user_ids.tolist()
        ]
        n = len(got)
        return RecAnswers(
            ["team1:8082"] * n,
            np.full(n, 200, np.int32),
            np.ones(n, np.int32),
            [g[0] for g in got],
            [g[1] for g in got],
        )


class Tracker:
    """World sink for the measured period: hands new accounts to cold start, follows new users' first sessions."""

    def __init__(self, worker: ColdStartWorker, service: ListService, truth) -> None:
        self.worker, self.service, self.truth = worker, service, truth
        self.arm: dict[int, str] = {}
        self.sessions: dict[int, list[list]] = {}  # user → [[recommended ids, picked movie or None], …]
        self.matched: dict[int, int] = {}  # user → liked titles found
        self.handle_seconds: list[tuple[float, int]] = []

    def write(self, keys, lines) -> None:
        """Follow the lines of new users; build lists for new accounts."""
        new = []
        for key, line in zip(keys, lines, strict=True):
            if key in self.arm:
                self._follow(key, line)
            elif line.endswith("GET /create_account"):
                new.append(int(key))
        if new:
            self._accounts(new)

    def _accounts(self, ids: list[int]) -> None:
        t = time.perf_counter()
        lists = self.worker.handle(ids)  # the ingest path: fetch records over HTTP, match, blend, store
        self.handle_seconds.append((time.perf_counter() - t, len(ids)))
        model = self.worker.model()
        for c in lists:
            arm = "selfdesc" if traffic.in_challenger(c.user_id, SALT, 0.5) else "demographic"
            self.arm[c.user_id] = arm
            self.sessions[c.user_id] = []
            self.matched[c.user_id] = len(c.liked)
            if arm == "selfdesc":
                self.service.set(c.user_id, c.movies)
            else:  # the same record without its self-description: the segment's popularity list
                record = self.worker.store.user_record(c.user_id)
                self.service.set(c.user_id, model.build(replace(record, likes=None, dislikes=None)).movies)

    def _follow(self, user: int, line: str) -> None:
        s = self.sessions[user]
        if ",recommendation request " in line:
            if len(s) < FIRST:
                result = line.split(", result: ", 1)[1].rsplit(", ", 1)[0]
                s.append([set(result.split(", ")), None])
            else:
                self.arm.pop(user)  # done with this user
        elif "GET /data/m/" in line and s and s[-1][1] is None:
            s[-1][1] = line.split("GET /data/m/", 1)[1].rsplit("/", 1)[0]

    def close(self) -> None:
        pass


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Difference of means a − b and its 95% interval (normal approximation, unequal variances)."""
    d = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return d, d - 1.96 * se, d + 1.96 * se


def main() -> None:
    """Run and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--movies", type=int, default=5_000)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--history-days", type=float, default=1.0)
    ap.add_argument("--arrivals", type=float, default=0.01, help="new accounts per user per day")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_all = time.perf_counter()
    config = WorldConfig(
        users=args.users, movies=args.movies, seed=args.seed, days=None, arrivals_per_day=args.arrivals, edition="2026"
    )
    universe = build_universe(config)
    tmp = Path(tempfile.mkdtemp(prefix="movielab-coldstart-"))
    with EventStore(tmp / "store.duckdb") as store:
        world, _ = build_world(config, universe=universe, service=NoService())
        with (
            ServerThread(world_api(world.pop, universe.catalog, rate_limit=None, taste=universe.taste)) as api,
            WorldApi(api.url) as wapi,
        ):
            sink = StoreSink(store, wapi)
            world.sink = sink
            rate, world.arrivals_per_day = world.arrivals_per_day, 0.0  # accounts per day, all users
            t = time.perf_counter()
            end = world.now + args.history_days * DAY
            while world.now < end:
                world.step()
            sink.close()
            print(
                f"history: {args.history_days:g} days of {args.users:,} users, {sink.stored:,} events stored "
                f"({sink.quarantined} quarantined) in {time.perf_counter() - t:.0f} s"
            )
            tracemalloc.start()
            cold = ColdStart.from_store(store)
            matcher_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(
                f"cold-start model: {len(cold.matcher):,} titles known to the store, built with "
                f"{matcher_bytes / 2**20:.1f} MiB peak (tracemalloc)"
            )
            worker = ColdStartWorker(
                store, WorldApi(api.url, cache_users=False, negative_ttl=0), rebuild_every=float("inf")
            )
            worker._model = cold  # the model just measured; the worker rebuilds on its own schedule in production
            service = ListService(universe.catalog.slug, cold.fallback, store.user_segments())
            tracker = Tracker(worker, service, universe.taste)
            world.service, world.sink = service, tracker
            world.arrivals_per_day = rate
            t = time.perf_counter()
            world.run(until=world.now + args.days * DAY)
            wall = time.perf_counter() - t
            worker.api.close()
    print(f"measured period: {args.days:g} days, {world.stats.accounts:,} new accounts, {wall:.0f} s")
    # Latency and a matching-only figure on the same records.
    n_acc = sum(n for _, n in tracker.handle_seconds)
    per = np.array([s / n for s, n in tracker.handle_seconds])
    weights = np.array([n for _, n in tracker.handle_seconds])
    records = _records(tmp / "store.duckdb", list(tracker.sessions)[:2000])
    t = time.perf_counter()
    for r in records:
        cold.build(r)
    match_ms = 1000 * (time.perf_counter() - t) / max(len(records), 1)
    t = time.perf_counter()
    for r in records:
        cold.build(replace(r, likes=None, dislikes=None))
    base_ms = 1000 * (time.perf_counter() - t) / max(len(records), 1)
    print(
        f"\nlatency per new account on the ingest path (fetch over HTTP + match + blend + store), {n_acc:,} "
        f"accounts in {len(per):,} batches: mean {1000 * (per * weights).sum() / weights.sum():.2f} ms, "
        f"p50 {1000 * np.percentile(per, 50):.2f} ms, p99 {1000 * np.percentile(per, 99):.2f} ms per account"
    )
    print(
        f"list building alone: lexical matcher + blend {match_ms:.3f} ms per account; demographic fallback "
        f"alone {base_ms:.3f} ms (baseline, same run)"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"memory: matcher + fallback lists {matcher_bytes / 2**20:.1f} MiB (tracemalloc peak while built); "
        f"process max RSS {rss:.0f} MiB (world, store, API server included)"
    )
    # Conversion per arm.
    rows = []
    truth = universe.taste
    index = {s: i for i, s in enumerate(universe.catalog.slug)}
    for arm in ("demographic", "selfdesc"):
        users = [u for u, s in tracker.sessions.items() if s and _arm(u) == arm]
        conv = np.array(
            [
                sum(p is not None and p in recs for recs, p in tracker.sessions[u]) / len(tracker.sessions[u])
                for u in users
            ]
        )
        sessions = sum(len(tracker.sessions[u]) for u in users)
        conversions = sum(p is not None and p in recs for u in users for recs, p in tracker.sessions[u])
        scores = [
            _true(truth, world.pop, u, index[p])
            for u in users
            for recs, p in tracker.sessions[u]
            if p is not None and p in recs
        ]
        matched = np.mean([tracker.matched[u] > 0 for u in users]) if users else math.nan
        rows.append(
            (arm, len(users), sessions, conversions, conv, float(np.mean(scores)) if scores else math.nan, matched)
        )
    print(
        f"\nnew users' first {FIRST} sessions, {args.users:,} users × {args.days:g} days, {args.movies:,} movies, "
        f"2026 edition, seed {args.seed}"
    )
    print(
        f"{'arm':13}{'users':>7}{'sessions':>10}{'conv.':>8}{'per session':>13}{'per user':>10}"
        f"{'true score':>12}{'title found':>13}"
    )
    for arm, n, sessions, conversions, conv, score, matched in rows:
        print(
            f"{arm:13}{n:7,}{sessions:10,}{conversions:8,}{conversions / max(sessions, 1):13.1%}"
            f"{conv.mean():10.1%}{score:12.2f}{matched:13.0%}"
        )
    (_, _, _, _, base, *_), (_, _, _, _, ours, *_) = rows
    d, lo, hi = welch(ours, base)
    print(
        f"\nself-descriptions − demographic fallback, per-user conversion: {d:+.1%} (95% CI {lo:+.1%} .. {hi:+.1%}); "
        f"relative {d / base.mean():+.0%}"
    )
    print(f"total wall time {time.perf_counter() - t_all:.0f} s")


def _arm(user: int) -> str:
    return "selfdesc" if traffic.in_challenger(user, SALT, 0.5) else "demographic"


def _true(taste, pop, user: int, movie: int) -> float:
    row = pop.row_of(user)
    return float(taste.mu + pop.bias[row] + taste.item_bias[movie] + pop.taste[row] @ taste.item_factors[movie])


def _records(path: Path, users: list[int]) -> list:
    with EventStore(path) as store:
        return [r for r in (store.user_record(u) for u in users) if r is not None]


if __name__ == "__main__":
    main()
