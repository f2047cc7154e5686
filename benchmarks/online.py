"""Online comparison in the world: share of sessions that picked a recommended movie, and how good those picks were.

Day 1 (no recommendation service) runs once through the real pipeline: the world produces to the
embedded Kafka broker, the recommender's ingestor stores it (DuckDB), and every model is trained on
one snapshot of it (training time per model is printed: the issue's "one simulated day" figure).
Then, for each service — random, the oracle (each user's true top-20 unseen, from the hidden truth), MostPop (popularity), item-kNN, ALS, EASE — a world with the same
seed replays day 1 identically (no service, no Kafka) and runs day 2 against that service over real
HTTP (the recommender's serving app under uvicorn). Day 2's figures are compared: share of sessions
with a pick from the recommended list, and the mean TRUE rating (hidden taste model) of those picks.

    .venv/bin/python benchmarks/online.py [--users 100000] [--movies 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from movielab.kafka.admin import ensure_topics
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.producer import KafkaSink
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.serving.answers import answer_table
from movielab.recommender.serving.app import create_app as serve_app
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.evaluate import compare, time_split, to_markdown
from movielab.recommender.training.models import create
from movielab.recommender.training.pipeline import train
from movielab.webserver import ServerThread
from movielab.world.api import create_app as world_api
from movielab.world.bootstrap import build_universe, build_world
from movielab.world.client import HttpRecommender, Team
from movielab.world.config import WorldConfig
from movielab.world.recs import NoService, OracleService, RandomService

DAY = 86_400


def main() -> None:
    """Run and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--movies", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--history-days", type=float, default=7.0, help="simulated days without a service before day 2")
    ap.add_argument("--models", default="popularity,itemknn,als,ease")
    args = ap.parse_args()
    config = WorldConfig(users=args.users, movies=args.movies, seed=args.seed, days=None, arrivals_per_day=0.0)
    universe = build_universe(config)
    index = {s: i for i, s in enumerate(universe.catalog.slug)}
    tmp = Path(tempfile.mkdtemp(prefix="movielab-online-"))
    # Day 1 through the real pipeline.
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1"], partitions=4)
        world, _ = build_world(
            config, universe=universe, service=NoService(), sink=KafkaSink(broker.bootstrap, "movielog1")
        )
        with ServerThread(world_api(world.pop, universe.catalog, rate_limit=None, taste=universe.taste)) as api:
            t = time.perf_counter()
            world.run(until=world.now + args.history_days * DAY)
            produced = sum(world.stats.lines.values())
            print(
                f"history ({args.history_days:g} days): {produced:,} events produced in {time.perf_counter() - t:.1f} s"
            )
            store = EventStore(tmp / "store.duckdb")
            with WorldApi(api.url) as wapi:
                t = time.perf_counter()
                ing = Ingestor(broker.bootstrap, ["movielog1"], store, wapi)
                ing.run_until_idle(idle_seconds=3.0, timeout=900)
            print(
                f"ingested {ing.events_stored:,} events ({dict(ing.quarantined) or 'none quarantined'}) "
                f"in {time.perf_counter() - t:.1f} s"
            )
    snapshot = store.create_snapshot("day1", None, None)
    trained = {}
    print(
        f"\ntraining on snapshot {snapshot.id} ({snapshot.rows:,} events, {args.history_days:g} simulated days of {args.users:,} users)"
    )
    for spec in args.models.split(","):
        # "als:popularity_weight=1.0" → model als with that parameter
        model, _, rest = spec.partition(":")
        params = {k: float(v) for k, v in (kv.split("=") for kv in rest.split(";") if kv)}
        name = spec
        t = time.perf_counter()
        trained[name] = train(store, model, tmp / "models", snapshot=snapshot, params=params)
        print(
            f"  {name:11s} trained in {time.perf_counter() - t:6.2f} s "
            f"(fit {trained[name].manifest['train_seconds']:.2f} s)"
        )
    tables = {name: answer_table(tr, store) for name, tr in trained.items()}
    # The same models offline, on the snapshot's own time-aware split: do offline and online agree?
    train_part, test_part = time_split(TrainingData.from_snapshot(store, snapshot))
    models = [create(spec.partition(":")[0], **tr.manifest["params"]) for spec, tr in trained.items()]
    print("\noffline, time-aware 80/20 split of the same snapshot:")
    print(to_markdown(compare(models, train_part, test_part)))
    store.close()
    # Day 2 per service, after an identical replay of day 1.
    results = []
    for name in ["random", "oracle", *tables]:
        # The oracle leaves out what each user already watched: it reads the (hidden) journal.
        journal = [] if name == "oracle" else None
        world, _ = build_world(config, universe=universe, service=NoService(), journal=journal)
        world.run(until=world.now + args.history_days * DAY)
        s0 = (
            world.stats.sessions,
            world.stats.picked_recommended,
            world.stats.true_score_of_recommended_picks,
            world.stats.viewings,
        )
        server = None
        if name == "random":
            world.service = RandomService(universe.catalog.slug, seed=args.seed)
        elif name == "oracle":
            world.service = OracleService(world)
        else:
            server = ServerThread(serve_app(tables[name])).start()
            world.service = HttpRecommender([Team.parse(1, server.url)], index)
        t = time.perf_counter()
        world.run(until=world.now + DAY)
        wall = time.perf_counter() - t
        if server is not None:
            world.service.close()
            server.stop()
        sessions = world.stats.sessions - s0[0]
        picks = world.stats.picked_recommended - s0[1]
        true = (world.stats.true_score_of_recommended_picks - s0[2]) / max(picks, 1)
        ok = world.stats.requests_ok
        results.append((name, sessions, picks, true, wall, ok))
        print(f"day 2 with {name}: {sessions:,} sessions in {wall:.1f} s")
    base = results[0][2] / results[0][1]
    print(f"\n{args.users:,} users, {args.movies:,} movies, seed {args.seed}: day 2 (same seed, same simulated day)")
    print(f"{'service':12}{'sessions':>10}{'picked rec.':>13}{'share':>8}{'× random':>10}{'true rating':>13}")
    shares = {}
    for name, sessions, picks, true, _, _ in results:
        share = shares[name] = picks / sessions
        print(f"{name:12}{sessions:10,}{picks:13,}{share:8.1%}{share / base:10.2f}{true:13.2f}")
    learned = {n: s for n, s in shares.items() if n not in ("random", "oracle", "popularity")}
    if learned and "popularity" in shares:
        best = max(learned, key=learned.get)
        print(
            f"best learned model {best}: {learned[best] / shares['popularity']:.3f} × popularity's share "
            f"(target ≥ 1.2), {learned[best] / shares['oracle']:.3f} × the oracle's (target ≥ 0.8)"
        )


if __name__ == "__main__":
    main()
