"""Events generated per second by the world (sink that discards), 1,000,000 users × 27,000 movies.

Prints the build time (data, fit, catalog, population), the generation rate over a measured
window after a warm-up (so viewings are in steady state), the share of watch lines, peak RSS,
and — measured in the same run — the rate of merely formatting the same number of lines
(the floor on the cost of any generator of this stream).

    .venv/bin/python benchmarks/world_events.py [--users 1000000] [--movies 27000] [--hours 2]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from movielab.world.bootstrap import build_world
from movielab.world.clock import second_stamps
from movielab.world.config import WorldConfig
from movielab.world.sinks import KindCounter


def format_floor(n: int, slugs: list[str], seed: int = 0) -> float:
    """Lines/s of formatting n watch lines from ready arrays (no simulation at all; n is capped for memory)."""
    rng = np.random.default_rng(seed)
    stamps = second_stamps(1_773_964_800, 60)
    sec = rng.integers(0, 60, n).tolist()
    users = rng.integers(1, 1_000_001, n).tolist()
    movies = rng.integers(0, len(slugs), n).tolist()
    minutes = rng.integers(1, 120, n).tolist()
    t = time.perf_counter()
    lines = [
        f"{stamps[s]},{u},GET /data/m/{slugs[m]}/{mn}.mpg"
        for s, u, m, mn in zip(sec, users, movies, minutes, strict=True)
    ]
    dt = time.perf_counter() - t
    assert len(lines) == n
    return n / dt


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--movies", type=int, default=27_000)
    ap.add_argument("--warmup-hours", type=float, default=3.0)
    ap.add_argument("--hours", type=float, default=2.0)
    args = ap.parse_args()
    counter = KindCounter()
    t = time.perf_counter()
    world, universe = build_world(WorldConfig(users=args.users, movies=args.movies, days=None), sink=counter)
    build = time.perf_counter() - t
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in universe.timings.items())
    print(f"world built in {build:.1f} s ({timings}); target ≤ 60 s")
    world.run(until=world.now + args.warmup_hours * 3600)
    before = sum(world.stats.lines.values())
    t = time.perf_counter()
    world.run(until=world.now + args.hours * 3600)
    dt = time.perf_counter() - t
    n = sum(world.stats.lines.values()) - before
    watch_share = world.stats.lines["watch"] / sum(world.stats.lines.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the floor's own line list
    floor = format_floor(min(n, 2_000_000), universe.catalog.slug)
    print(f"simulated {args.hours:g} h after {args.warmup_hours:g} h warm-up: {n:,} events in {dt:.2f} s")
    print(
        f"world:            {n / dt:12,.0f} events/s  (target ≥ 100,000; watch lines {watch_share:.1%}, target ≥ 95%)"
    )
    print(f"formatting only:  {floor:12,.0f} lines/s   (floor on cost, same run; world/floor = {n / dt / floor:.2f})")
    print(f"peak RSS:         {rss:12,.0f} MB        (target ≤ 1,536 MB)")
    seen = getattr(world, "seen", None)  # absent in worlds before the watched-movie memory
    if seen is not None:
        sizes = [f"{seen.shape[1] * 64} bits a user", f"{seen.nbytes / 2**20:,.0f} MB"]
        watched = np.bitwise_count(seen[: world.pop.size]).sum(axis=1)
        sizes.append(f"bits set per user: mean {watched.mean():.2f}, max {watched.max()}")
        print("watched-movie memory: " + ", ".join(sizes))
    print(f"simulated real-time rate of this population: {n / (args.hours * 3600):,.0f} events/s")


if __name__ == "__main__":
    main()
