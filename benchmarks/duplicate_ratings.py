"""Popularity's NDCG@10 on a ratings file in which users re-rated a movie: merged, clean, and taken as it comes.

The file: 20 users rating 4..10 of 30 movies (popular ones more often) plus 3 users with 5 ratings each,
each of whom also rated one of its movies a second time, earlier. The published protocol (per-user random
80/20 split, seeds 0..4) is run on
- the file read by `ratingsfile.read` (the repeated pairs merged into their latest rating),
- the same file with only the latest rating of each pair (the right value: both must agree),
- the baseline, the file's rows taken as they come (how the readers worked before): a repeated pair can
  land in train and test, and the held-out movie, already seen, can never be recommended.

    .venv/bin/python benchmarks/duplicate_ratings.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from movielab.recommender.training import ratingsfile
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.evaluate import evaluate_model, ml100k_protocol, random_split
from movielab.recommender.training.models import create

SEEDS = (0, 1, 2, 3, 4)


def write(path: Path, rerated: bool) -> None:
    rng = np.random.default_rng(7)
    weights = np.linspace(2, 0.2, 30) / np.linspace(2, 0.2, 30).sum()
    rows = []
    for user in range(1, 24):
        n = 5 if user > 20 else int(rng.integers(4, 11))
        movies = rng.choice(30, n, replace=False, p=weights)
        rows += [(user, int(m) + 1, int(rng.integers(1, 6)), 880000000 + 1000 * user + k) for k, m in enumerate(movies)]
    if rerated:
        rows += [(user, next(r for r in rows if r[0] == user)[1], 1, 870000000 + user) for user in (21, 22, 23)]
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))


def protocol(r: ratingsfile.Ratings) -> float:
    rows = ml100k_protocol(
        r.user, r.item, r.rating, r.timestamp, lambda: [create("popularity")], SEEDS, latency_users=5
    )
    return rows[0].metrics["ndcg@10"]


def as_it_comes(path: Path) -> float:
    """The protocol on the raw rows, every row kept (the readers' old behaviour), same seeds and model."""
    raw = np.loadtxt(path, dtype=np.int64)
    user = np.unique(raw[:, 0], return_inverse=True)[1]
    item = np.unique(raw[:, 1], return_inverse=True)[1]
    shape = (int(user.max()) + 1, int(item.max()) + 1)
    scores = []
    for seed in SEEDS:
        held = random_split(user, seed)

        def mat(values, rows, cols, dtype) -> sp.csr_matrix:
            return sp.csr_matrix((np.asarray(values, dtype), (rows, cols)), shape=shape, dtype=dtype)

        train = TrainingData(
            np.arange(shape[0], dtype=np.int64),
            [str(i) for i in range(shape[1])],
            sp.csr_matrix(shape, dtype=np.float32),
            mat(raw[~held, 2], user[~held], item[~held], np.float32),
            mat(raw[~held, 3], user[~held], item[~held], np.float64),
            np.full(shape[0], -1, np.int16),
        )
        test = mat(np.ones(held.sum()), user[held], item[held], np.float32)
        scores.append(evaluate_model(create("popularity").fit(train), train, test)["ndcg@10"])
    return float(np.mean(scores))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        twice, once = Path(tmp) / "twice.data", Path(tmp) / "once.data"
        write(twice, rerated=True)
        write(once, rerated=False)
        merged = ratingsfile.read(twice)
        print(f"popularity NDCG@10, per-user 80/20 split, seeds {SEEDS[0]}..{SEEDS[-1]} (mean)")
        print(f"  re-rated file, read (merged {merged.merged} repeated ratings)         {protocol(merged):.4f}")
        print(f"  file with only the latest rating of each pair          {protocol(ratingsfile.read(once)):.4f}")
        print(f"  baseline: re-rated file taken as it comes              {as_it_comes(twice):.4f}")


if __name__ == "__main__":
    main()
