"""Fidelity of the simulated stream to ml-100k: ratings and popularity concentration.

Simulates one day of a population on the ml-100k catalog with no recommendation service
and prints, next to the real ml-100k figures: the rating histogram and mean, and the share
of watches (viewings started) going to the 10% most popular movies.

    .venv/bin/python benchmarks/fidelity.py [--users 100000] [--days 1]
"""

from __future__ import annotations

import argparse

import numpy as np

from movielab.world.bootstrap import build_world, run_until
from movielab.world.config import WorldConfig


def top_share(counts: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total held by the top `fraction` of entries."""
    c = np.sort(counts)[::-1]
    return float(c[: max(1, int(len(c) * fraction))].sum() / max(c.sum(), 1))


def main() -> None:
    """Simulate and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=1.0)
    args = ap.parse_args()
    config = WorldConfig(users=args.users, days=args.days)
    world, universe = build_world(config)
    stats = world.run(until=run_until(config))
    real = universe.data.ratings.rating.astype(int)
    real_hist = np.bincount(real, minlength=6)[1:] / len(real)
    sim_hist = stats.rating_hist[1:] / stats.rating_hist.sum()
    print(f"{args.users:,} users, {args.days:g} simulated day(s), ml-100k catalog, no recommendation service")
    print(f"{'':24}{'1★':>7}{'2★':>7}{'3★':>7}{'4★':>7}{'5★':>7}{'mean':>8}{'n':>10}")
    print(f"{'ml-100k ratings':24}" + "".join(f"{x:7.1%}" for x in real_hist) + f"{real.mean():8.3f}{len(real):10,}")
    print(f"{'simulated ratings':24}" + "".join(f"{x:7.1%}" for x in sim_hist)
          + f"{stats.mean_rating:8.3f}{stats.ratings:10,}")  # fmt: skip
    print(f"mean difference: {stats.mean_rating - real.mean():+.3f} stars (target within ±0.15)")
    real_counts = np.bincount(universe.data.ratings.movie, minlength=len(universe.catalog))
    print(f"share of ratings on the top 10% movies, ml-100k:      {top_share(real_counts):.1%}")
    print(f"share of watches on the top 10% movies, simulated:    {top_share(stats.viewings_per_movie):.1%} "
          f"(viewings started); {top_share(stats.watch_lines_per_movie):.1%} (watch lines)")  # fmt: skip


if __name__ == "__main__":
    main()
