"""Lines/s of the contract's parser and of the recommender's columnar validation path, 1,000,000 lines.

The lines are a world-like mix (98% watch, 1% rate, 1% recommendation, a few accounts) with
movie ids in the course's alphabet. Baseline measured in the same run: splitting each line on
its first two commas (the floor of any parser that looks at every line).

    .venv/bin/python benchmarks/parser.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from movielab.contract import parse_line
from movielab.recommender.ingest.validation import parse_values

_IDS = [
    "the+usual+suspects+1995",
    "monsters_+inc.+2001",
    "ben-hur+1959",
    "dr.+no+1962",
    "les+misrables+1998",
    "harold++kumar+go+to+white+castle+2004",
    "the+hunger+games+mockingjay+-+part+1+2014",
    "toy+story+1995",
]


_PLAIN_IDS = [
    "the+usual+suspects+1995",
    "toy+story+1995",
    "heat+1995",
    "fargo+1996",
    "scream+1996",
    "casino+1995",
    "babe+1995",
    "twelve+monkeys+1995",
]


def make_lines(n: int, seed: int = 0, ids: list[str] = _IDS) -> list[str]:
    """`n` lines of the four kinds in the stream's proportions (canonical second stamps)."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(4, size=n, p=[0.978, 0.01, 0.01, 0.002])
    users = rng.integers(1, 1_000_001, n).tolist()
    movies = rng.integers(0, len(ids), n).tolist()
    minutes = rng.integers(1, 120, n).tolist()
    secs = rng.integers(0, 60, n).tolist()
    out = []
    for k, u, m, mn, s in zip(kinds.tolist(), users, movies, minutes, secs, strict=True):
        t = f"2026-03-20T10:{mn % 60:02d}:{s:02d}"
        if k == 0:
            out.append(f"{t},{u},GET /data/m/{ids[m]}/{mn}.mpg")
        elif k == 1:
            out.append(f"{t},{u},GET /rate/{ids[m]}={1 + mn % 5}")
        elif k == 2:
            listed = ", ".join(ids[(m + j) % len(ids)] for j in range(5))
            out.append(f"{t}.{s:06d},{u},recommendation request 127.0.0.1:8082, status 200, result: {listed}, {mn} ms")
        else:
            out.append(f"{t},{u},GET /create_account")
    return out


def rate(fn, items) -> float:
    """Items per second of `fn(items)`."""
    t = time.perf_counter()
    fn(items)
    return len(items) / (time.perf_counter() - t)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument(
        "--plain-ids",
        action="store_true",
        help="only ids of letters, digits and '+' (what parsers before the course alphabet accepted)",
    )
    args = ap.parse_args()
    lines = make_lines(args.lines, ids=_PLAIN_IDS if args.plain_ids else _IDS)
    raw = [line.encode() for line in lines]
    floor = rate(lambda xs: [x.split(",", 2) for x in xs], lines)
    parser = rate(lambda xs: [parse_line(x) for x in xs], lines)
    columnar = rate(lambda xs: parse_values(xs), raw)
    print(f"{args.lines:,} lines (98% watch; {'plain' if args.plain_ids else 'course-alphabet'} movie ids)")
    print(f"  baseline: split on the first two commas   {floor:>12,.0f} lines/s")
    print(f"  contract parse_line (typed events)        {parser:>12,.0f} lines/s  ({parser / floor:.3f} of baseline)")
    print(
        f"  recommender parse_values (columnar)       {columnar:>12,.0f} lines/s  ({columnar / floor:.3f} of baseline)"
    )


if __name__ == "__main__":
    main()
