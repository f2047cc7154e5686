"""Latency of the recommendation service under wrk: `GET /recommend/<random known user>` against baselines.

Builds an answer table for 100,000 users x the 1,682 ml-100k movies from a cheap fake model (a random
top-20 per user: the serving path does not depend on the model), then serves each app from its own
subprocess (uvicorn, one worker, uvloop + httptools) on a free loopback port and runs
`wrk -t2 -c32 -d10s --latency` against it. Apps, all measured in the same run:

- baseline: a plain FastAPI route returning a constant text;
- serve: `movielab.recommender.serving.app.create_app` with /metrics instrumentation on, flat out, then
  paced to about 5,400 req/s (the target: p99 <= 5 ms at >= 5,000 req/s);
- serve, no metrics: the same app with instrumentation off (the cost of the metrics);
- fastapi route: the same look-up written as an idiomatic FastAPI route (why serve is plain Starlette).

It also prints the memory of the answer table, for these users and for `--memory-users` (1,000,000).

    python benchmarks/serve_wrk.py [--users 100000] [--duration 10] [--connections 32] [--memory-users 1000000]

Needs the `wrk` binary (Debian: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from wrktools import parse_wrk, random_id_lua  # noqa: E402 (sibling module of the benchmarks)

from movielab.contract import unique_slugs
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.training.provenance import Provenance
from movielab.webserver import free_port

logger = logging.getLogger("serve_wrk")

# Paced: each connection waits 3..8 ms (5.5 on average) before its next request, so 32 connections offer
# about 32 / (5.5 ms + latency) = 5,400 req/s, the load the service is sized for (wrk cannot fix a rate).
LUA_DELAY = "function delay()\n  return math.random(3, 8)\nend\n"
APPS = {
    "baseline": "baseline FastAPI constant text",
    "serve": "serve /recommend (metrics on)",
    "serve-bare": "serve /recommend (metrics off)",
    "fastapi": "FastAPI route /recommend",
}
PACED = "serve, paced to ~5,400 req/s"


class RandomTopModel:
    """A fake model: a fixed random top-n per user (seeded), random popularity fallbacks."""

    def __init__(self, n_users: int, items: list[str], seed: int = 0) -> None:
        self.name = "random-top"
        self.users = np.arange(1, n_users + 1, dtype=np.int64)
        self.items = items
        self._seed = seed

    def recommend_rows(self, rows: np.ndarray, n: int = 20, exclude_seen: bool = True) -> np.ndarray:
        """n distinct random items per row: a random start and a random stride coprime to the catalog size."""
        rng = np.random.default_rng((self._seed, int(rows[0]) if len(rows) else 0))
        m = len(self.items)
        strides = np.array([s for s in range(1, m) if math.gcd(s, m) == 1])
        start = rng.integers(0, m, (len(rows), 1))
        stride = rng.choice(strides, (len(rows), 1))
        return ((start + stride * np.arange(min(n, m))) % m).astype(np.int32)

    def fallback(self, segment: int) -> list[str]:
        """A random ordering of the catalog per segment."""
        rng = np.random.default_rng((self._seed, segment + 1))
        return [self.items[i] for i in rng.permutation(len(self.items))[:50]]

    def params(self) -> dict:
        """No parameters."""
        return {"seed": self._seed}


def ml100k_slugs() -> list[str]:
    """The 1,682 ml-100k movie ids (slugs), from the cached data set."""
    from movielab.world.data.sources import fetch_ml100k

    movies = fetch_ml100k(allow_download=False).movies
    return unique_slugs((t, int(y) or None) for t, y in zip(movies.title, movies.year, strict=True))


def build_table(n_users: int, items: list[str]) -> AnswerTable:
    """The answer table of the fake model over `n_users` users."""
    prov = Provenance("random-top", "1", "bench", "dev", "2026-01-01T00:00:00")
    return AnswerTable.build(RandomTopModel(n_users, items), prov)


def rss_bytes() -> int:
    """Resident memory of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def serve_main(kind: str, port: int, users: int) -> None:
    """Child process: build the app `kind` and serve it with uvicorn (uvloop, httptools, one worker)."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse, Response

    from movielab.recommender.serving.app import create_app

    if kind == "baseline":
        app = FastAPI()

        @app.get("/constant", response_class=PlainTextResponse)
        async def constant() -> PlainTextResponse:
            return PlainTextResponse("toy+story+1995,the+usual+suspects+1995,heat+1995")

        @app.get("/healthz")
        async def healthz() -> dict:
            return {"status": "ok"}
    elif kind == "fastapi":
        table = build_table(users, ml100k_slugs())
        app = FastAPI()

        @app.get("/recommend/{userid}")
        async def recommend(userid: str) -> Response:
            body, source = table.lookup(int(userid))
            return Response(body, media_type="text/plain", headers={"x-model": table.headers[source].decode()})

        @app.get("/healthz")
        async def healthz() -> dict:
            return {"status": "ok"}
    else:
        app = create_app(build_table(users, ml100k_slugs()), instrument=kind == "serve")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
    )


def start_server(kind: str, users: int) -> tuple[subprocess.Popen, str]:
    """Start the child serving `kind`; return it and its base URL once /healthz answers."""
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--users", str(users)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server {kind!r} exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server {kind!r} did not answer /healthz within 120 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, duration: int, connections: int, script: Path | None, pid: int) -> dict[str, float]:
    """Run wrk (2 threads) against `url`; its parsed figures plus the server's CPU time per request."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    logger.info("running %s", " ".join([*cmd, url]))
    cpu = cpu_seconds(pid)
    done = subprocess.run([*cmd, url], capture_output=True, text=True, check=True, timeout=duration + 60)
    cpu = cpu_seconds(pid) - cpu
    figures = parse_wrk(done.stdout)
    count = re.search(r"^\s*(\d+) requests in", done.stdout, re.MULTILINE)
    figures["cpu_us"] = 1e6 * cpu / int(count.group(1)) if count else float("nan")
    return figures


def measure(kind: str, args: argparse.Namespace, scripts: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Serve `kind` in a subprocess, run wrk against it (flat out; `serve` also paced), stop it."""
    proc, url = start_server(kind, args.users)
    try:
        if kind == "baseline":
            return {kind: run_wrk(f"{url}/constant", args.duration, args.connections, None, proc.pid)}
        out = {kind: run_wrk(url, args.duration, args.connections, scripts["random"], proc.pid)}
        if kind == "serve":
            out[PACED] = run_wrk(url, args.duration, args.connections, scripts["paced"], proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table_memory(n_users: int, items: list[str]) -> dict[str, float]:
    """Build a table of `n_users` users; its size by `memory_bytes` and by resident-memory growth."""
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    table = build_table(n_users, items)
    seconds = time.perf_counter() - t
    grown = rss_bytes() - before
    size = table.memory_bytes()
    body = sum(len(table.lookup(u)[0]) for u in range(1, min(n_users, 10_000) + 1)) / min(n_users, 10_000)
    del table
    return {"users": n_users, "build_s": seconds, "bytes": size, "rss_growth": grown, "body_len": body}


def main(argv: list[str] | None = None) -> int:
    """Measure memory, then every app under wrk; print the table; 2 if wrk is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--memory-users", type=int, default=1_000_000, help="also size a table this big (0: skip)")
    parser.add_argument("--apps", default=",".join(APPS), help=f"comma-separated subset of {','.join(APPS)}")
    parser.add_argument("--serve", choices=list(APPS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_main(args.serve, args.port, args.users)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if shutil.which("wrk") is None:
        print("wrk is not installed: this benchmark needs it (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    kinds = [k for k in args.apps.split(",") if k]
    unknown = [k for k in kinds if k not in APPS]
    if unknown:
        parser.error(f"unknown app(s) {unknown}; choose from {list(APPS)}")

    items = ml100k_slugs()
    memory = [table_memory(n, items) for n in sorted({args.users, args.memory_users}) if n > 0]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {"random": Path(tmp) / "random_user.lua", "paced": Path(tmp) / "paced.lua"}
        scripts["random"].write_text(random_id_lua("/recommend/", args.users))
        scripts["paced"].write_text(random_id_lua("/recommend/", args.users) + LUA_DELAY)
        for kind in kinds:
            results.update(measure(kind, args, scripts))

    print(f"answer table, {len(items):,} movies, random top-20 per user:")
    for m in memory:
        print(
            f"  {m['users']:>9,} users: {m['bytes'] / 2**20:7.1f} MiB by size ({m['bytes'] / m['users']:.0f} B/user),"
            f" RSS +{m['rss_growth'] / 2**20:.1f} MiB ({m['rss_growth'] / m['users']:.0f} B/user),"
            f" body {m['body_len']:.0f} B, built in {m['build_s']:.1f} s"
        )
    setup = f"wrk -t2 -c{args.connections} -d{args.duration}s, uvicorn 1 worker (uvloop, httptools)"
    print(f"{setup}, {args.users:,} users")
    print(f"{'app':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'CPU us/req':>11}")
    for kind, r in results.items():
        flag = "  socket errors!" if r["socket_errors"] else ""
        print(
            f"{APPS.get(kind, kind):34} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8.0f}"
            f" {r['cpu_us']:11.1f}{flag}"
        )
    if "serve" in results and "baseline" in results:
        print(f"serve/baseline throughput: {results['serve']['rps'] / results['baseline']['rps']:.2f}")
    if "serve" in results and "serve-bare" in results:
        cost = results["serve"]["cpu_us"] - results["serve-bare"]["cpu_us"]
        print(f"metrics cost: {cost:.1f} us of server CPU per request (metrics on minus off)")
    print("CPU us/req is the server process's CPU time over the run divided by its requests (wrk shares the cores)")
    print(json.dumps({"memory": memory, "wrk": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
