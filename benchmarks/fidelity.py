"""Fidelity of the world to ml-100k, on the same protocol: `movielab world fidelity` as a benchmark.

An ml-100k-shaped population (its 943 users' demographics, its 1,682 movies) lives in the world until
each user started as many movies as the real one rated; then both go through the recommender's published
protocol (per-user random 80/20, full ranking, seeds 0–4) and the same descriptive figures. The real
ml-100k column is the baseline, measured in the same run. Targets (issue 12): each model's NDCG@10 within
±20% of its real value and the same order, the rating histogram within 2 points per star, the top-10%
share and the Gini of interactions per movie within 10%. See `movielab.fidelity`.

    .venv/bin/python benchmarks/fidelity.py [--seeds 5] [--out fidelity]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from movielab.fidelity import fidelity_report, write_plots
from movielab.world.config import WorldConfig


def main() -> None:
    """Simulate, evaluate both data sets and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--out", default="fidelity")
    args = ap.parse_args()
    t = time.perf_counter()
    report = fidelity_report(
        WorldConfig(seed=args.seed, arrivals_per_day=0.0, allow_download=False), seeds=range(args.seeds)
    )
    print(report.table())
    files = write_plots(report, Path(args.out))
    print(f"plots: {', '.join(map(str, files))}; total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
