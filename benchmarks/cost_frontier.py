"""License cost vs satisfaction: the cost-aware re-ranker's frontier, measured online in a 2026 world.

First the check that the trade-off is real: the correlation of the world's simulated license costs with
popularity and with the TRUE mean rating (hidden taste model, averaged over the population), Pearson and
Spearman, all movies and real (MovieLens) movies only.

Then: history (`--history-days`, no service) goes through the recommender's validator into its event store
(benchmarks/storesink.py); one cost-aware model (`--base` relevance, default EASE) is fitted on it, with the
license costs as of the snapshot. For each trade-off setting (0 = the base model: the baseline, same run),
plus popularity as a reference, a world with the same seed replays the history identically and runs one more
day served by that setting's precomputed answer table (in process: the same `AnswerTable` the service
serves). The day's figures: plays (viewings started), license cost per play and per 1,000 requests (USD, from
the catalog's costs, every play counted, recommended or not), conversion (sessions whose pick was
recommended), the mean TRUE score of recommended picks and the mean rating users gave (1–10).

    .venv/bin/python benchmarks/cost_frontier.py [--users 20000] [--movies 5000] [--trade-offs 0,0.25,0.5,1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats
from storesink import StoreSink  # a sibling module of the benchmarks

from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import create
from movielab.recommender.training.provenance import Provenance
from movielab.webserver import ServerThread
from movielab.world.api import create_app as world_api
from movielab.world.bootstrap import build_universe, build_world
from movielab.world.config import WorldConfig
from movielab.world.recs import NoService, RecAnswers

DAY = 86_400


class TableService:
    """The world asks an `AnswerTable` in process: the served bytes, turned into catalog rows."""

    def __init__(self, table: AnswerTable, slugs: list[str]) -> None:
        self.table = table
        self.index = {s: i for i, s in enumerate(slugs)}
        self._rows: dict[bytes, tuple[np.ndarray, str]] = {}

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """The table's answer per user, status 200, 1 ms."""
        got = []
        for u in user_ids.tolist():
            body = self.table.lookup(u)[0]
            entry = self._rows.get(body)
            if entry is None:
                ids = body.decode().split(",")
                entry = self._rows[body] = (np.array([self.index[m] for m in ids], np.int32), ", ".join(ids))
            got.append(entry)
        n = len(got)
        return RecAnswers(
            ["team1:8082"] * n,
            np.full(n, 200, np.int32),
            np.ones(n, np.int32),
            [g[0] for g in got],
            [g[1] for g in got],
        )


def correlations(universe, pop) -> None:
    """Print how the simulated license costs follow popularity and the true mean rating."""
    c = universe.catalog
    taste = universe.taste
    n = pop.size
    mean_taste = pop.taste[:n].mean(axis=0)
    true_mean = taste.mu + float(pop.bias[:n].mean()) + taste.item_bias + taste.item_factors @ mean_taste
    cost = np.asarray(c.license_cost, np.float64)
    popularity = np.asarray(c.popularity, np.float64)
    real = ~np.asarray(c.synthetic, bool)
    years = np.asarray(c.year)
    print("license cost (USD per play) vs. what licensing follows:")
    print(f"{'':44}{'Pearson':>9}{'Spearman':>10}   movies")
    for name, mask in (("all movies", np.ones(len(cost), bool)), ("real (MovieLens) movies", real)):
        for label, x in (("popularity", popularity), ("true mean rating", true_mean), ("release year", years)):
            ok = mask & (x > 0 if label == "release year" else np.isfinite(x))
            r = stats.pearsonr(cost[ok], x[ok])[0]
            rho = stats.spearmanr(cost[ok], x[ok])[0]
            print(f"  {label + ', ' + name:42}{r:9.2f}{rho:10.2f}   {int(ok.sum()):,}")
    for lo, hi in ((0, 1960), (1960, 1980), (1980, 1990), (1990, 10_000)):
        era = (years >= lo) & (years < hi) & (years > 0)
        top = era & (popularity >= np.quantile(popularity, 0.9))
        low = era & (popularity <= np.quantile(popularity, 0.5))
        print(
            f"  released {lo or '…'}–{hi - 1 if hi < 10_000 else '…'}: mean {cost[era].mean():.3f} USD per play "
            f"({int(era.sum()):,} movies); top-10% popular {cost[top].mean():.3f}, bottom half "
            f"{cost[low].mean():.3f}"
        )
    q = np.quantile(cost, [0.1, 0.5, 0.9])
    print(f"  cost quantiles 10/50/90%: {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} USD per play\n")


def main() -> None:
    """Run and print the frontier."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--movies", type=int, default=5_000)
    ap.add_argument("--history-days", type=float, default=3.0)
    ap.add_argument("--base", default="ease")
    ap.add_argument("--trade-offs", default="0,0.25,0.5,1,2")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_all = time.perf_counter()
    config = WorldConfig(
        users=args.users, movies=args.movies, seed=args.seed, days=None, arrivals_per_day=0.0, edition="2026"
    )
    universe = build_universe(config)
    cost = np.asarray(universe.catalog.license_cost, np.float64)
    tmp = Path(tempfile.mkdtemp(prefix="movielab-cost-"))
    with EventStore(tmp / "store.duckdb") as store:
        world, _ = build_world(config, universe=universe, service=NoService())
        correlations(universe, world.pop)
        with (
            ServerThread(world_api(world.pop, universe.catalog, rate_limit=None, taste=universe.taste)) as api,
            WorldApi(api.url) as wapi,
        ):
            sink = StoreSink(store, wapi)
            world.sink = sink
            t = time.perf_counter()
            world.run(until=world.now + args.history_days * DAY)
            print(
                f"history: {args.history_days:g} days of {args.users:,} users, {sink.stored:,} events stored "
                f"in {time.perf_counter() - t:.0f} s"
            )
        snapshot = store.create_snapshot("history", None, None)
        data = TrainingData.from_snapshot(store, snapshot)
        segments = store.user_segments()
    known = np.isfinite(data.item_cost).mean() if data.item_cost is not None else 0.0
    t = time.perf_counter()
    model = create("costaware", base=args.base, trade_off=0.0).fit(data)
    print(
        f"fitted costaware({args.base}) on {data.users.size:,} users × {len(data.items):,} movies "
        f"({known:.0%} with a license cost) in {time.perf_counter() - t:.1f} s\n"
    )
    popularity = create("popularity").fit(data)
    settings = [("popularity", popularity, None)] + [
        (f"λ={float(x):g}", model, float(x)) for x in args.trade_offs.split(",")
    ]
    results = []
    for name, m, trade_off in settings:
        if trade_off is not None:
            m.trade_off = trade_off
        table = AnswerTable.build(m, Provenance(m.name, "1", snapshot.id, "bench", "2026-01-01T00:00:00"), segments)
        world, _ = build_world(config, universe=universe, service=NoService())
        world.run(until=world.now + args.history_days * DAY)  # the same history, identically
        s = world.stats
        before = (
            s.sessions,
            s.picked_recommended,
            s.true_score_of_recommended_picks,
            s.viewings,
            s.viewings_per_movie.copy(),
            s.rating_hist.copy(),
        )
        world.service = TableService(table, universe.catalog.slug)
        t = time.perf_counter()
        world.run(until=world.now + DAY)
        sessions = s.sessions - before[0]
        picks = s.picked_recommended - before[1]
        true = (s.true_score_of_recommended_picks - before[2]) / max(picks, 1)
        plays_per_movie = s.viewings_per_movie - before[4]
        plays = int(plays_per_movie.sum())
        spent = float(plays_per_movie @ cost[: len(plays_per_movie)])
        hist = s.rating_hist - before[5]
        rating = float((hist * np.arange(len(hist))).sum() / max(hist.sum(), 1))
        results.append(
            (
                name,
                sessions,
                plays,
                spent / max(plays, 1),
                1000 * spent / max(sessions, 1),
                picks / max(sessions, 1),
                true,
                rating,
                int(hist.sum()),
            )
        )
        print(f"  {name}: one served day in {time.perf_counter() - t:.0f} s")
    base = next(r for r in results if r[0] == "λ=0")
    print(
        f"\n{args.users:,} users, {args.movies:,} movies, seed {args.seed}: one day served after "
        f"{args.history_days:g} days of history (2026 edition; λ = trade-off, λ=0 is {args.base} itself)"
    )
    print(
        f"{'setting':12}{'sessions':>9}{'plays':>8}{'USD/play':>10}{'vs λ=0':>8}{'USD/1k req':>12}"
        f"{'conversion':>12}{'true score':>12}{'mean rating':>13}{'ratings':>9}"
    )
    for name, sessions, plays, per_play, per_1k, conv, true, rating, n_ratings in results:
        print(
            f"{name:12}{sessions:9,}{plays:8,}{per_play:10.4f}{per_play / base[3] - 1:+8.0%}{per_1k:12.2f}"
            f"{conv:12.1%}{true:12.2f}{rating:13.2f}{n_ratings:9,}"
        )
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
