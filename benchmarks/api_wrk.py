"""Latency of the world API under wrk: `GET /user/<random id>` against a constant-JSON FastAPI route.

Starts uvicorn (one worker, in a thread of this process) on free loopback ports: the world API over a
realistic world (100,000 users, the ml-100k catalog; the rate limit on, set high enough never to refuse)
and, as the baseline measured in the same run, a plain FastAPI app whose one route returns a constant
JSON object. Then runs `wrk -t2 -c32 -d10s --latency` against each and prints requests/s, p50 and p99.

    python benchmarks/api_wrk.py [--users 100000] [--duration 10] [--connections 32]

Needs the `wrk` binary (Debian: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI
from wrktools import parse_wrk, random_id_lua  # noqa: E402 (sibling module of the benchmarks)

from movielab.webserver import ServerThread
from movielab.world.api import create_app, server_options
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.ratelimit import RateLimit

logger = logging.getLogger("api_wrk")


def constant_app() -> FastAPI:
    """The baseline: a plain FastAPI route returning a constant JSON object."""
    app = FastAPI()

    @app.get("/constant")
    async def constant() -> dict[str, object]:
        return {"user_id": 1, "age": 27, "occupation": "self-employed", "gender": "F"}

    return app


def run_wrk(url: str, duration: int, connections: int, script: Path | None = None) -> dict[str, float]:
    """Run wrk (2 threads) against `url` and return its parsed figures."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    logger.info("running %s", " ".join(cmd + [url]))
    done = subprocess.run(cmd + [url], capture_output=True, text=True, check=True, timeout=duration + 60)
    return parse_wrk(done.stdout)


def main(argv: list[str] | None = None) -> int:
    """Build the world, run both measurements, print the table; 2 if wrk is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if shutil.which("wrk") is None:
        print("wrk is not installed: this benchmark needs it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    t = time.perf_counter()
    world, universe = build_world(WorldConfig(users=args.users, allow_download=False))
    logger.info(
        "world of %d users, %d movies built in %.1f s", world.pop.size, len(universe.catalog), time.perf_counter() - t
    )
    # The limiter runs (its cost is measured) but never refuses: wrk is one client.
    api = create_app(
        world.pop, universe.catalog, taste=universe.taste, rate_limit=RateLimit(rate_per_s=1e9, burst=10**9)
    )
    options = server_options()  # as `movielab world run` serves it
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "random_user.lua"
        script.write_text(random_id_lua("/user/", world.pop.size))
        with ServerThread(constant_app()) as server:
            results["baseline GET /constant"] = run_wrk(f"{server.url}/constant", args.duration, args.connections)
        with ServerThread(api, **options) as server:
            results["world GET /user/<random>"] = run_wrk(server.url, args.duration, args.connections, script)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, uvicorn 1 worker, {world.pop.size:,} users")
    print(f"{'target':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:28} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8.0f}")
    base_rps, api_rps = (r["rps"] for r in results.values())
    print(f"world/baseline throughput: {api_rps / base_rps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
