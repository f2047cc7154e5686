"""Events/s of the recommender's ingestion (consume → parse → check → DuckDB store → commit).

Starts an embedded broker, lets a world (`build_world` + `KafkaSink`) publish N lines to
`movielog1`, serves the world API on that world's population (so movie checks are real HTTP
lookups; the API runs in a forked process, as a separate service would), then, in the same run:
- the baseline: a bare consumer group reading every message (touching each value) and nothing else;
- the contract parser alone over the same values (the floor of any parsing ingest, no Kafka);
- the Ingestor consuming every message into a DuckDB file store.
Rates are timed from the first message received to the last one stored (group joins excluded).

    .venv/bin/python benchmarks/ingest.py [-n 1000000] [--users 50000] [--movies 10000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn
from confluent_kafka import Consumer

from movielab.contract import MalformedEvent, parse_line
from movielab.kafka import EmbeddedBroker, KafkaSink, consumer_config, ensure_topics
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore
from movielab.webserver import free_port
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig

TOPIC = "movielog1"


def publish(bootstrap: str, n: int, users: int, movies: int):
    """Run a world into the topic until at least n lines are out; return (world, universe, lines sent)."""
    config = WorldConfig(users=users, movies=movies, days=None, allow_download=False)
    sink = KafkaSink(bootstrap, TOPIC)
    world, universe = build_world(config, sink=sink)
    while sink.sent < n:
        world.step()
    sink.close()
    return world, universe, sink.sent


def serve_api(world, universe) -> tuple[str, multiprocessing.Process]:
    """The world API on the world's population, in a forked process (a separate service, as in production)."""
    port = free_port()

    def serve() -> None:
        uvicorn.run(
            create_app(world.pop, universe.catalog, taste=universe.taste),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )

    process = multiprocessing.get_context("fork").Process(target=serve, name="world-api", daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1.0).raise_for_status()
            return url, process
        except httpx.HTTPError:
            if time.monotonic() > deadline or not process.is_alive():
                raise RuntimeError(f"world API on {url} did not start") from None
            time.sleep(0.1)


def bare_consumer(bootstrap: str, total: int) -> tuple[float, list[bytes]]:
    """Messages/s of a consumer group that only reads; also returns a sample of values for the parser floor."""
    consumer = Consumer(consumer_config(bootstrap, "bench-bare"))
    consumer.subscribe([TOPIC])
    seen, first, sample = 0, None, []
    try:
        while seen < total:
            # Short waits, as the Ingestor does: consume() waits for a full batch, at the end the whole time-out.
            batch = consumer.consume(num_messages=20_000, timeout=0.05)
            if batch and first is None:  # from the moment the first batch came (not the group join)
                first = time.perf_counter()
            for msg in batch:
                if msg.error() is None:
                    value = msg.value()
                    seen += 1
                    if len(sample) < 200_000:
                        sample.append(value)
        return seen / (time.perf_counter() - first), sample
    finally:
        consumer.close()


def parser_floor(values: list[bytes]) -> float:
    """Lines/s of the contract parser alone over `values`."""
    t = time.perf_counter()
    for v in values:
        try:
            parse_line(v)
        except MalformedEvent:
            pass
    return len(values) / (time.perf_counter() - t)


def ingest(bootstrap: str, api_url: str, total: int, store_path: Path, batch_size: int) -> tuple[float, Ingestor]:
    """Events/s of the Ingestor into a DuckDB file, first message to last."""
    with EventStore(store_path, threads=1) as store, WorldApi(api_url) as api:
        ingestor = Ingestor(bootstrap, [TOPIC], store, api, group_id="bench-ingest", batch_size=batch_size)
        first, handed = None, 0
        try:
            while handed < total:
                t, waited = time.perf_counter(), ingestor.stage_seconds["consume"]
                n = ingestor.step()
                if n and first is None:  # from the moment the first batch came (not the group join)
                    first = t + ingestor.stage_seconds["consume"] - waited
                handed += n
        finally:
            ingestor.close()  # stores and commits the last batch
        dt = time.perf_counter() - first
        counts = store.counts()
    assert counts["events"] + counts["quarantine"] == total, counts
    return total / dt, ingestor


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=1_000_000, help="lines to publish (at least)")
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--movies", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=20_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        ensure_topics(broker.bootstrap, [TOPIC], partitions=args.partitions)
        t = time.perf_counter()
        world, universe, total = publish(broker.bootstrap, args.n, args.users, args.movies)
        print(
            f"published {total:,} world lines ({args.users:,} users, {len(universe.catalog):,} movies) "
            f"in {time.perf_counter() - t:.1f} s"
        )
        api_url, server = serve_api(world, universe)
        try:
            bare, sample = bare_consumer(broker.bootstrap, total)
            floor = parser_floor(sample)
            rate, ing = ingest(broker.bootstrap, api_url, total, Path(tmp) / "events.duckdb", args.batch)
            size = (Path(tmp) / "events.duckdb").stat().st_size / 2**20
        finally:
            server.terminate()
            server.join(10)
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(ing.stage_seconds.items()))
        print(f"bare consumer:    {bare:12,.0f} msg/s     (baseline, same run)")
        print(f"parse_line only:  {floor:12,.0f} lines/s   (contract parser, no Kafka, no store)")
        print(f"ingest → DuckDB:  {rate:12,.0f} events/s  (target ≥ 50,000; ingest/bare = {rate / bare:.2f})")
        print(
            f"  {ing.batches} batches of ≤ {args.batch:,}; stages: {stages}; quarantined {dict(ing.quarantined)}; "
            f"API requests {ing.api.requests}; store file {size:,.0f} MB"
        )


if __name__ == "__main__":
    main()
