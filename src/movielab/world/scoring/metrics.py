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


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d array by sorting (numpy's hash-based unique is several times slower on millions of int64)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


def csr_sets(owner: np.ndarray, item: np.ndarray, n_owners: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of each owner's distinct items, items sorted within an owner (owners 0..n_owners-1)."""
    owner = np.asarray(owner, np.int64)
    item = np.asarray(item, np.int64)
    if len(owner) != len(item):
        raise ScoringError("csr_sets: one owner per item")
    width = int(item.max(initial=0)) + 1
    key = sorted_unique(owner * width + item)
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
    union_keys = sorted_unique(np.concatenate([pa * width + ia, pb * width + ib]))
    union = np.bincount(union_keys // width, minlength=len(a))
    inter = la + lb - union
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def list_regret(scores: np.ndarray, seen: tuple[np.ndarray, np.ndarray], served: np.ndarray, k: int = 20) -> np.ndarray:
    """Regret@k of served lists against each user's true top-k unseen movies (stars; ≥ 0).

    scores (s, m): true scores of every movie for each session's user (a per-user constant such as μ + b_u
    may be left out: it cancels), overwritten here; seen (session index, movie row) arrays: movies each user already
    started (pairs may repeat); served (s, ≤k) catalog
    rows, -1 padded. regret = mean of the k best unseen scores − mean over the k served slots, where an empty
    slot or an already-seen movie is worth a typical unseen movie (the mean unseen score, capped at the k-th
    best: a movie one finds alone). A session serving exactly its oracle set has regret 0.
    """
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    si, sj = (np.asarray(a, np.int64) for a in seen)
    if len(si):  # each (session, movie) once
        key = np.unique(si * scores.shape[1] + sj)
        si, sj = key // scores.shape[1], key % scores.shape[1]
    n_unseen = scores.shape[1] - np.bincount(si, minlength=len(scores))
    if (n_unseen < k).any():
        raise ScoringError(f"regret@{k} needs at least {k} unseen movies per session")
    seen_sum = np.bincount(si, weights=scores[si, sj], minlength=len(scores))
    mean_unseen = (scores.sum(axis=1, dtype=np.float64) - seen_sum) / n_unseen
    scores[si, sj] = -np.inf
    top = np.partition(scores, scores.shape[1] - k, axis=1)[:, -k:].astype(np.float64)
    oracle = top.mean(axis=1)
    typical = np.minimum(mean_unseen, top.min(axis=1))
    served = np.asarray(served, np.int64)
    if served.shape[1] < k:
        served = np.hstack([served, np.full((len(served), k - served.shape[1]), -1)])
    served = served[:, :k]
    got = scores[np.arange(len(served))[:, None], np.maximum(served, 0)].astype(np.float64)
    useful = (served >= 0) & np.isfinite(got)
    # Repeated ids in one list count once: a slot repeating an earlier one is empty.
    srt = np.sort(served, axis=1)
    dup_sorted = np.zeros(served.shape, np.bool_)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    n_dup = (dup_sorted & (srt >= 0)).sum(axis=1)
    value = np.where(useful, got, typical[:, None]).sum(axis=1)
    if n_dup.any():  # rare: subtract each repeat's score, add a typical movie instead
        rep = np.where(dup_sorted & (srt >= 0), scores[np.arange(len(srt))[:, None], np.maximum(srt, 0)], 0.0)
        rep = np.where(np.isfinite(rep), rep, typical[:, None])
        value += n_dup * typical - rep.sum(axis=1)
    return oracle - value / k


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
