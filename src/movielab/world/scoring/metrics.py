"""The scoring figures as pure array functions (no world, no files): each one testable on hand-made data."""

from __future__ import annotations

import numpy as np

from movielab.world.scoring.errors import ScoringError


def gini(x: np.ndarray) -> float:
    """Gini coefficient of a non-negative vector (0: all equal, → 1: all on one entry); nan for an all-zero vector.

    G = Σ_i (2i − n − 1) x_(i) / (n Σ x) over the values sorted ascending, i = 1..n.
    """
    x = np.sort(np.asarray(x, np.float64).ravel())
    if (x < 0).any():
        raise ScoringError("gini: exposure counts must be non-negative")
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def csr_sets(owner: np.ndarray, item: np.ndarray, n_owners: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of each owner's distinct items, items sorted within an owner (owners 0..n_owners-1)."""
    owner = np.asarray(owner, np.int64)
    item = np.asarray(item, np.int64)
    if len(owner) != len(item):
        raise ScoringError("csr_sets: one owner per item")
    key = np.unique(owner * (int(item.max(initial=0)) + 1) + item)
    width = int(item.max(initial=0)) + 1
    own, it = key // width, key % width
    indptr = np.zeros(n_owners + 1, np.int64)
    np.add.at(indptr, own + 1, 1)
    return np.cumsum(indptr), it


def jaccard_pairs(indptr: np.ndarray, items: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jaccard similarity |A∩B| / |A∪B| of the item sets of owner pairs (a[i], b[i]) from `csr_sets`.

    Pairs where both sets are empty get nan. Vectorized: the pairs' items are tagged by pair and counted once.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    la, lb = indptr[a + 1] - indptr[a], indptr[b + 1] - indptr[b]

    def gather(owners: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pair = np.repeat(np.arange(len(owners)), lengths)
        start = np.repeat(indptr[owners], lengths)
        offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return pair, items[start + offset]

    pa, ia = gather(a, la)
    pb, ib = gather(b, lb)
    width = int(items.max(initial=0)) + 1
    union_keys = np.unique(np.concatenate([pa * width + ia, pb * width + ib]))
    union = np.bincount(union_keys // width, minlength=len(a))
    inter = la + lb - union
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def list_regret(scores: np.ndarray, seen: np.ndarray, served: np.ndarray, k: int = 20) -> np.ndarray:
    """Regret@k of served lists against each user's true top-k unseen movies (stars; ≥ 0 for catalogs ≥ 2k).

    scores (s, m): true scores of every movie for each session's user; seen (s, m) bool: movies the user
    already started; served (s, ≤k) catalog rows, -1 padded. regret = mean of the k best unseen scores −
    mean over the k served slots, where an empty slot or an already-seen movie is worth the user's median
    unseen score (a movie one finds alone). A session serving exactly its oracle set has regret 0.
    """
    scores = np.where(seen, -np.inf, np.asarray(scores, np.float64))
    n_unseen = (~seen).sum(axis=1)
    if (n_unseen < 2 * k).any():
        raise ScoringError(f"regret@{k} needs at least {2 * k} unseen movies per session")
    top = -np.partition(-scores, k - 1, axis=1)[:, :k]
    oracle = top.mean(axis=1)
    filled = np.where(np.isinf(scores), np.nan, scores)
    median = np.nanmedian(filled, axis=1)
    served = np.asarray(served, np.int64)
    if served.shape[1] < k:
        served = np.hstack([served, np.full((len(served), k - served.shape[1]), -1)])
    served = served[:, :k]
    rows = np.arange(len(served))[:, None]
    got = scores[rows, np.maximum(served, 0)]
    useful = (served >= 0) & np.isfinite(got)
    value = np.where(useful, got, median[:, None]).mean(axis=1)
    return oracle - value


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, k) arrays (0 where a row is all zeros)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.einsum("nk,nk->n", a, b) / (na * nb)
    return np.nan_to_num(c)


def group_gap(values: np.ndarray, weights: np.ndarray, min_weight: float) -> tuple[float, dict[int, float]]:
    """(max − min over groups with weight ≥ min_weight, {group: value}) of per-group values; nan gap if < 2."""
    keep = {int(g): float(v) for g, (v, w) in enumerate(zip(values, weights, strict=True)) if w >= min_weight}
    gap = max(keep.values()) - min(keep.values()) if len(keep) >= 2 else float("nan")
    return gap, keep
