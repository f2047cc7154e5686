"""Offline evaluation: full-ranking metrics, the two split protocols, and the comparison table.

Metrics, per test user (a user row with at least one held-out item), then averaged over those users.
Each user's ranking is over the whole catalog minus the items of that user's training interactions.
- NDCG@k: binary relevance; DCG = Σ_{r≤k} hit_r / log2(r + 1), IDCG = the same with min(|test|, k)
  hits on top (the RecBole / EASE-paper definition).
- Recall@k = hits@k / min(|test|, k) (truncated recall, as in Liang et al. 2018 and Steck 2019);
  `hit_recall@k` = hits@k / |test| is the plain variant.
- Precision@k = hits@k / k.
- Coverage@k = share of catalog items in at least one test user's top k.
- Popularity@k = mean popularity percentile of the recommended items (over all user × slot pairs);
  an item's percentile is its rank by number of training users, scaled to [0, 1] (ties averaged).
  `popularity_test` is the same mean over the held-out items: Popularity@k above it = popularity bias.

Protocols.
1. Published (`ml100k_protocol`): per user, a random floor(20%) of ALL their ratings (at least one when
   they have two) is held out; every rating counts as a positive whatever its value. The catalog is
   every movie of the data set. Fit on the 80%, evaluate on the 20%, for each seed (0..4 by default);
   report the mean and the sample standard deviation over seeds. A (user, movie) pair rated twice
   keeps its latest rating (the number merged is logged): kept twice, it could be in train and test.
2. Time-aware (`time_split`, for store snapshots): one global cut-off at the (1 - test_fraction)
   quantile of interaction times (a cell's time is its last interaction). Train = cells before the
   cut-off; users and items first seen at or after it are not in the training data at all, so nothing
   leaks; test = later cells of training users on training items (the others cannot be recommended).
3. `compare`: per model, the metrics, the training time, the latency of `recommend(user_id)` called one
   user at a time for ≥ 500 random known users (p50, p99), the size on disk (`save` to a temporary
   folder) and in memory (`nbytes`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from movielab.recommender.training.data import TrainingData, latest_per_pair
from movielab.recommender.training.models import Model

logger = logging.getLogger(__name__)

BATCH_CELLS = 1 << 24


def _as_csr(test: sp.spmatrix | Mapping[int, set[int]], shape: tuple[int, int]) -> sp.csr_matrix:
    if isinstance(test, Mapping):
        rows = [r for r, items in test.items() for _ in items]
        cols = [i for items in test.values() for i in items]
        test = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    test = sp.csr_matrix(test, dtype=np.float32)
    if test.shape != shape:
        raise ValueError(f"test matrix has shape {test.shape}, the training data {shape}")
    test.sum_duplicates()
    test.eliminate_zeros()
    return test


def popularity_percentile(x: sp.csr_matrix) -> np.ndarray:
    """Per item, its rank by number of users in x scaled to [0, 1] (ties get their average rank)."""
    counts = np.bincount(sp.csr_matrix(x).indices, minlength=x.shape[1])
    return ((rankdata(counts) - 1) / max(len(counts) - 1, 1)).astype(np.float64)


def evaluate_model(
    model: Model, train: TrainingData, test: sp.spmatrix | Mapping[int, set[int]], ks: Sequence[int] = (10, 20)
) -> dict[str, float]:
    """Full-ranking metrics of a model fitted on train; test maps train rows to held-out item columns."""
    shape = (len(train.users), len(train.items))
    if (model.n_users, model.n_items) != shape:
        raise ValueError(f"model is fitted on {model.n_users}×{model.n_items}, the training data is {shape}")
    truth = _as_csr(test, shape)
    rows = np.flatnonzero(np.diff(truth.indptr) > 0)
    if len(rows) == 0:
        raise ValueError("the test set holds no user with a held-out item")
    kmax = max(ks)
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.cumsum(disc)
    pct = popularity_percentile(train.interactions)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("ndcg", "recall", "hit_recall", "precision")}
    covered = np.zeros((len(ks), shape[1]), bool)
    pop_sum, pop_n = np.zeros(len(ks)), np.zeros(len(ks))
    step = max(1, BATCH_CELLS // shape[1])
    for start in range(0, len(rows), step):
        batch = rows[start : start + step]
        recs = model.recommend_rows(batch, kmax, exclude_seen=True)
        valid = recs >= 0
        relevant = truth[batch].toarray() > 0
        hits = np.take_along_axis(relevant, np.where(valid, recs, 0), axis=1) & valid
        n_test = relevant.sum(axis=1)
        for j, k in enumerate(ks):
            h = hits[:, :k]
            n_hits = h.sum(axis=1)
            sums[f"ndcg@{k}"] += float(((h @ disc[:k]) / ideal[np.minimum(n_test, k) - 1]).sum())
            sums[f"recall@{k}"] += float((n_hits / np.minimum(n_test, k)).sum())
            sums[f"hit_recall@{k}"] += float((n_hits / n_test).sum())
            sums[f"precision@{k}"] += float((n_hits / k).sum())
            shown = recs[:, :k][valid[:, :k]]
            covered[j, shown] = True
            pop_sum[j] += pct[shown].sum()
            pop_n[j] += shown.size
    out = {key: value / len(rows) for key, value in sums.items()}
    for j, k in enumerate(ks):
        out[f"coverage@{k}"] = float(covered[j].mean())
        out[f"popularity@{k}"] = float(pop_sum[j] / max(pop_n[j], 1))
    out["popularity_test"] = float(pct[truth.indices].mean())
    out["users"] = float(len(rows))
    return out


def random_split(user: np.ndarray, seed: int, test_fraction: float = 0.2) -> np.ndarray:
    """Boolean test mask over rating rows: per user a random floor(fraction·n), at least 1 when n ≥ 2."""
    user = np.asarray(user, np.int64)
    order = np.lexsort((np.random.default_rng(seed).random(len(user)), user))
    counts = np.bincount(user)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(user), np.int64)
    rank[order] = np.arange(len(user)) - first[user[order]]
    n_test = np.where(counts >= 2, np.maximum(np.floor(test_fraction * counts), 1), 0)
    return rank < n_test[user]


def ratings_data(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    n_users: int,
    n_items: int,
    snapshot_id: str = "ratings",
) -> TrainingData:
    """TrainingData from rating rows (row indices), keeping the whole n_users × n_items catalog.

    A (user, item) pair given twice keeps its latest row (a sparse matrix would add the two ratings).
    """
    user, item, rating, timestamp = _latest_ratings(user, item, rating, timestamp, snapshot_id)

    def mat(values: np.ndarray, dtype) -> sp.csr_matrix:
        return sp.csr_matrix((np.asarray(values, dtype), (user, item)), shape=(n_users, n_items), dtype=dtype)

    return TrainingData(
        np.arange(n_users, dtype=np.int64),
        [str(i) for i in range(n_items)],
        sp.csr_matrix((n_users, n_items), dtype=np.float32),
        mat(rating, np.float32),
        mat(timestamp, np.float64),
        np.full(n_users, -1, np.int16),
        snapshot_id,
    )


def _latest_ratings(
    user: np.ndarray, item: np.ndarray, rating: np.ndarray, timestamp: np.ndarray, what: str
) -> tuple[np.ndarray, ...]:
    """The rows with the latest rating of each (user, item) pair; logs how many were merged."""
    keep = latest_per_pair(user, item, timestamp)
    if len(keep) == len(user):
        return user, item, rating, timestamp
    logger.warning(
        "%s: %d repeated (user, item) ratings merged into the latest of their pair", what, len(user) - len(keep)
    )
    return tuple(np.asarray(a)[keep] for a in (user, item, rating, timestamp))


def time_split(data: TrainingData, test_fraction: float = 0.2) -> tuple[TrainingData, sp.csr_matrix]:
    """Train = interactions before the global time cut-off, test = later ones of training users and items.

    Raises ValueError when the data has no interactions or the cut-off leaves one side empty.
    """
    x = data.interactions.tocoo()
    if x.nnz == 0:
        raise ValueError(
            f"snapshot {data.snapshot_id} has no interactions to split ({len(data.users)} users × "
            f"{len(data.items)} items): ingest some events first"
        )
    t = np.asarray(data.times[x.row, x.col]).ravel()
    cutoff = float(np.quantile(t, 1.0 - test_fraction))
    before = t < cutoff
    if before.all() or not before.any():
        raise ValueError(f"time cut-off {cutoff} leaves an empty train or test set")
    users, items = np.unique(x.row[before]), np.unique(x.col[before])
    keep = sp.csr_matrix((np.ones(before.sum(), np.float32), (x.row[before], x.col[before])), shape=x.shape)

    def cut(m: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(m.multiply(keep))[users][:, items]

    train = TrainingData(
        data.users[users],
        [data.items[i] for i in items],
        cut(data.watched),
        cut(data.ratings),
        cut(data.times),
        data.segment[users],
        f"{data.snapshot_id}@before-{cutoff:.0f}",
    )
    new_user, new_item = np.full(x.shape[0], -1), np.full(x.shape[1], -1)
    new_user[users], new_item[items] = np.arange(len(users)), np.arange(len(items))
    r, c = new_user[x.row[~before]], new_item[x.col[~before]]
    ok = (r >= 0) & (c >= 0)
    logger.info(
        "time split at %.0f: %d train cells, %d test cells, %d later cells of new users or items dropped",
        cutoff,
        before.sum(),
        ok.sum(),
        (~ok).sum(),
    )
    test = sp.csr_matrix((np.ones(ok.sum(), np.float32), (r[ok], c[ok])), shape=(len(users), len(items)))
    return train, test


@dataclass
class Row:
    """One model's line of the comparison table (means over runs; std of the metrics over runs)."""

    model: str
    params: dict
    metrics: dict[str, float]
    train_s: float
    p50_ms: float
    p99_ms: float
    disk_bytes: int
    memory_bytes: int
    std: dict[str, float] = field(default_factory=dict)
    runs: int = 1


def _latency_ms(model: Model, users: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    ids = np.random.default_rng(seed).choice(users, size=n, replace=len(users) < n).tolist()
    for user_id in ids[:10]:  # warm caches
        model.recommend(user_id)
    took = []
    for user_id in ids:
        t0 = time.perf_counter()
        model.recommend(user_id)
        took.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(took, [50, 99]) * 1e3
    return float(p50), float(p99)


def compare(
    models: list[Model],
    train: TrainingData,
    test: sp.spmatrix | Mapping[int, set[int]],
    latency_users: int = 500,
    seed: int = 0,
) -> list[Row]:
    """Fit each model on train and measure metrics, training time, latency and size."""
    rows = []
    for model in models:
        t0 = time.perf_counter()
        model.fit(train)
        train_s = time.perf_counter() - t0
        metrics = evaluate_model(model, train, test)
        p50, p99 = _latency_ms(model, train.users, latency_users, seed)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp))
            disk = sum(f.stat().st_size for f in Path(tmp).iterdir())
        rows.append(Row(model.name, model.params(), metrics, train_s, p50, p99, disk, model.nbytes))
        logger.info("%s: ndcg@10 %.4f in %.2f s", model.name, metrics["ndcg@10"], train_s)
    return rows


def _mean_row(runs: list[Row]) -> Row:
    vals = {k: np.array([r.metrics[k] for r in runs]) for k in runs[0].metrics}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in vals.items()}
    mean = {k: float(v.mean()) for k, v in vals.items()}
    first, last = runs[0], runs[-1]
    times = [float(np.mean([getattr(r, a) for r in runs])) for a in ("train_s", "p50_ms", "p99_ms")]
    return Row(first.model, first.params, mean, *times, last.disk_bytes, last.memory_bytes, std, len(runs))


def ml100k_protocol(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    timestamp: np.ndarray,
    make_models: Callable[[], list[Model]],
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    test_fraction: float = 0.2,
    latency_users: int = 500,
) -> list[Row]:
    """The published protocol: per-user random 80/20 split of all ratings, per seed; rows of mean ± std."""
    n_users, n_items = int(np.max(user)) + 1, int(np.max(item)) + 1
    user, item, rating, timestamp = _latest_ratings(user, item, rating, timestamp, "the protocol's ratings")
    runs: dict[str, list[Row]] = {}
    for seed in seeds:
        held = random_split(user, seed, test_fraction)
        train = ratings_data(
            user[~held], item[~held], rating[~held], timestamp[~held], n_users, n_items, f"ratings-seed{seed}"
        )
        test = sp.csr_matrix((np.ones(held.sum(), np.float32), (user[held], item[held])), shape=(n_users, n_items))
        for row in compare(make_models(), train, test, latency_users, seed):
            runs.setdefault(row.model, []).append(row)
    return [_mean_row(r) for r in runs.values()]


def _cell(row: Row, key: str) -> str:
    return f"{row.metrics[key]:.4f}" + (f" ± {row.std[key]:.4f}" if row.runs > 1 else "")


def to_markdown(rows: list[Row]) -> str:
    """The comparison table in Markdown, one line per model."""
    head = (
        "| model | NDCG@10 | Recall@20 | Precision@10 | Coverage@20 | Pop@20 | train s | p50 ms | p99 ms "
        "| disk MB | memory MB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r.params.items() if k not in ("num_threads", "max_items"))
        name = f"{r.model} ({params})" if params else r.model
        size = f"{r.disk_bytes / 1e6:.2f} | {r.memory_bytes / 1e6:.2f}"
        lines.append(
            f"| {name} | {_cell(r, 'ndcg@10')} | {_cell(r, 'recall@20')} | {_cell(r, 'precision@10')} "
            f"| {r.metrics['coverage@20']:.3f} | {r.metrics['popularity@20']:.3f} | {r.train_s:.2f} "
            f"| {r.p50_ms:.3f} | {r.p99_ms:.3f} | {size} |"
        )
    if rows:
        lines.append(
            f"\nPop@20: mean popularity percentile of recommended items; of the held-out items: "
            f"{rows[0].metrics['popularity_test']:.3f}. Runs per model: {rows[0].runs}."
        )
    return "\n".join(lines)
