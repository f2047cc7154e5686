"""The live world end to end: events/s delivered through Kafka, requests/s, the client's own latency.

1. End to end: the world (1,000,000 users, 27,000 movies, as fast as possible) against a local
   recommendation service answering 20 ids in ~1 ms (separate process), producing to the embedded
   broker while a consumer (separate process) reads everything back. Rate = lines read back /
   seconds from the world's first tick to the consumer's last message. Next to it, in the same run:
   raw confluent-kafka produce of the same number of pre-formatted lines (the ceiling).
2. Requests/s the world's client sustains against that service (batches of 2,000 users).
3. The world's own added latency per request: its client's round trip one request at a time,
   next to a bare asyncio HTTP/1.1 GET on a kept-alive socket (the floor), same service, same run.

    .venv/bin/python benchmarks/live_world.py [--users 1000000] [--movies 27000] [--minutes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time

import numpy as np
from confluent_kafka import Consumer, Producer

from movielab.kafka.admin import ensure_topics
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.consumer import consumer_config
from movielab.kafka.producer import KafkaSink
from movielab.webserver import free_port
from movielab.world.bootstrap import build_universe, build_world
from movielab.world.client import HttpRecommender, Team
from movielab.world.config import WorldConfig


def fixed_list_service(port: int, ids: list[str]) -> None:
    """A team service on 127.0.0.1:`port` answering every request with `ids` (run in a child process)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    body = ",".join(ids)

    async def recommend(request):
        return PlainTextResponse(body)

    uvicorn.run(
        Starlette(routes=[Route("/recommend/{u}", recommend)]),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def _count(bootstrap: str, topic: str, expected, ready, result) -> None:
    c = Consumer(consumer_config(bootstrap, f"bench-{os.getpid()}"))
    c.subscribe([topic], on_assign=lambda *_: ready.set())
    n, last = 0, time.time()
    while expected.value < 0 or n < expected.value:
        msgs = c.consume(num_messages=50_000, timeout=0.5)
        good = sum(1 for m in msgs if m.error() is None)
        if good:
            n += good
            last = time.time()
    c.close()
    result.value = last


def _wait_http(port: int) -> None:
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("service did not start")


async def _bare_get(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for i in range(n):
        t = time.perf_counter()
        writer.write(f"GET /recommend/{i + 1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
        out.append(time.perf_counter() - t)
    writer.close()
    return out


def main() -> None:
    """Run the three measurements and print them."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--movies", type=int, default=27_000)
    ap.add_argument("--minutes", type=float, default=60, help="simulated minutes measured (after a warm-up)")
    ap.add_argument("--warmup-minutes", type=float, default=120)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    config = WorldConfig(users=args.users, movies=args.movies, days=None)
    universe = build_universe(config)
    port = free_port()
    service = ctx.Process(target=fixed_list_service, args=(port, universe.catalog.slug[:20]), daemon=True)
    service.start()
    _wait_http(port)
    index = {s: i for i, s in enumerate(universe.catalog.slug)}
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1", "warmup", "ceiling"], partitions=4)
        client = HttpRecommender([Team.parse(1, f"http://127.0.0.1:{port}")], index)
        # Warm up the world's viewings into steady state without Kafka in the way.
        warm_sink = KafkaSink(broker.bootstrap, "warmup")
        world, _ = build_world(config, universe=universe, service=client, sink=warm_sink)
        world.run(until=world.now + args.warmup_minutes * 60)
        expected, ready, result = ctx.Value("q", -1), ctx.Event(), ctx.Value("d", 0.0)
        counter = ctx.Process(target=_count, args=(broker.bootstrap, "movielog1", expected, ready, result))
        counter.start()
        ready.wait(60)
        sink = KafkaSink(broker.bootstrap, "movielog1")
        world.sink = sink
        before = sum(world.stats.lines.values())
        sessions0 = world.stats.sessions
        t0 = time.time()
        world.run(until=world.now + args.minutes * 60)  # closes (flushes) the sink
        t_world = time.time() - t0
        n = sum(world.stats.lines.values()) - before
        expected.value = n
        counter.join(300)
        e2e = n / (result.value - t0)
        requests = world.stats.sessions - sessions0
        # The ceiling: raw produce of the same number of pre-formatted lines, read back by nobody.
        slugs = universe.catalog.slug
        lines = [
            f"2026-03-20T08:12:{i % 60:02d},{i % 1_000_000 + 1},GET /data/m/{slugs[i % len(slugs)]}/"
            f"{i % 120 + 1}.mpg".encode()
            for i in range(n)
        ]
        p = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "linger.ms": 10,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 2_000_000,
            }
        )
        t = time.perf_counter()
        for i, line in enumerate(lines):
            while True:
                try:
                    p.produce("ceiling", line, str(i % 1_000_000 + 1).encode())
                    break
                except BufferError:
                    p.poll(0.01)
        p.flush(120)
        ceiling = n / (time.perf_counter() - t)
        del p, lines
        # Requests/s the client sustains, and its latency one request at a time.
        ids = np.arange(1, 2001)
        t, done, failed = time.perf_counter(), 0, 0
        while time.perf_counter() - t < 5:
            ans = client.recommend(ids, np.zeros(len(ids)))
            failed += int((ans.status != 200).sum())  # time-outs when the machine is too busy
            done += len(ids)
        rps = (done - failed) / (time.perf_counter() - t)
        single = []
        for i in range(500):
            t = time.perf_counter()
            client.recommend(np.array([i + 1]), np.zeros(1))
            single.append(time.perf_counter() - t)
        bare = asyncio.run(_bare_get(port, 500))
        client.close()
        counter.join(5)
    service.terminate()
    print(f"{args.users:,} users, {args.movies:,} movies, {args.minutes:g} simulated minutes measured")
    print(
        f"end to end (world → Kafka → consumer): {e2e:10,.0f} events/s  (target ≥ 50,000; {n:,} lines, "
        f"world alone {n / t_world:,.0f}/s)"
    )
    print(f"raw confluent-kafka produce (ceiling): {ceiling:10,.0f} lines/s  (same run)")
    print(f"recommendation requests in the run:    {requests / t_world:10,.0f} req/s  ({requests:,} requests)")
    print(
        f"client capacity, batches of 2,000:     {rps:10,.0f} req/s  (target ≥ 1,000; answered 200; "
        f"{failed:,} of {done:,} not)"
    )
    p50, p99 = np.percentile(single, 50) * 1000, np.percentile(single, 99) * 1000
    b50, b99 = np.percentile(bare, 50) * 1000, np.percentile(bare, 99) * 1000
    print(
        f"one request at a time: world client p50 {p50:.2f} ms p99 {p99:.2f} ms; bare socket p50 {b50:.2f} ms "
        f"p99 {b99:.2f} ms; the world adds {p50 - b50:.2f} ms at p50"
    )
    print(f"(the reference service answers in ~{b50:.1f} ms on this machine)")


if __name__ == "__main__":
    main()
