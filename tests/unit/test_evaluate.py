"""Offline evaluation: metric values on hand-checked cases, splits without leakage, the comparison table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.evaluate import (
    compare,
    evaluate_model,
    ml100k_protocol,
    random_split,
    ratings_data,
    time_split,
    to_markdown,
)
from movielab.recommender.training.models import Model, create


class Fixed(Model):
    """Scores every user the same: item 0 best, then 1, 2, …"""

    name = "fixed"

    def params(self) -> dict[str, Any]:
        return {}

    def _fit(self, data: TrainingData) -> None:
        pass

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.repeat(-np.arange(self.n_items, dtype=np.float32)[None, :], len(rows), axis=0)


def six_items() -> TrainingData:
    """Three users, six items; training: user 0 saw item 0, user 1 item 5, user 2 item 0."""
    return ratings_data(np.array([0, 1, 2]), np.array([0, 5, 0]), np.full(3, 4.0), np.zeros(3), 3, 6)


def test_metrics_match_a_hand_computed_case() -> None:
    train = six_items()
    model = Fixed().fit(train)
    # user 0 ranks 1,2,3,4,5 and holds out {2, 5}; user 1 ranks 0,1,2,3,4 and holds out {0}; user 2 has none
    test = {0: {2, 5}, 1: {0}}
    m = evaluate_model(model, train, test, ks=(2, 5))
    l3, l6 = 1 / np.log2(3), 1 / np.log2(6)
    assert m["users"] == 2
    assert m["ndcg@2"] == pytest.approx((l3 / (1 + l3) + 1) / 2)
    assert m["ndcg@5"] == pytest.approx(((l3 + l6) / (1 + l3) + 1) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["hit_recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["precision@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert m["coverage@2"] == pytest.approx(3 / 6) and m["coverage@5"] == pytest.approx(1.0)
    # training users per item: [2, 0, 0, 0, 0, 1] → percentiles [1.0, .3, .3, .3, .3, .8]
    assert m["popularity@2"] == pytest.approx((0.3 + 0.3 + 1.0 + 0.3) / 4)
    assert m["popularity_test"] == pytest.approx((0.3 + 0.8 + 1.0) / 3)
    as_csr = sp.csr_matrix((np.ones(3), ([0, 0, 1], [2, 5, 0])), shape=(3, 6))
    assert evaluate_model(model, train, as_csr, ks=(2, 5)) == m


def test_recall_is_truncated_at_k() -> None:
    train = six_items()
    m = evaluate_model(Fixed().fit(train), train, {1: {0, 1, 2, 3}}, ks=(2,))
    assert m["recall@2"] == 1.0 and m["hit_recall@2"] == 0.5 and m["ndcg@2"] == pytest.approx(1.0)


def test_evaluate_refuses_mismatched_or_empty_test() -> None:
    train = six_items()
    model = Fixed().fit(train)
    with pytest.raises(ValueError, match="no user"):
        evaluate_model(model, train, {})
    with pytest.raises(ValueError, match="shape"):
        evaluate_model(model, train, sp.csr_matrix((3, 7)))


def test_random_split_holds_out_a_fifth_of_each_user() -> None:
    user = np.repeat(np.arange(4), [10, 11, 2, 1])
    held = random_split(user, seed=0)
    assert np.bincount(user[held], minlength=4).tolist() == [2, 2, 1, 0]
    assert (random_split(user, seed=0) == held).all()
    assert any((random_split(user, seed=s) != held).any() for s in range(1, 5))


def dated() -> TrainingData:
    """Users 1..4 over items m0..m4 at known times; user 4 and item m4 appear only late."""
    cells = [
        (1, "m0", 1),
        (1, "m1", 2),
        (2, "m0", 3),
        (2, "m2", 4),
        (3, "m1", 5),
        (3, "m3", 6),
        (1, "m2", 7),
        (2, "m3", 8),
        (4, "m0", 9),
        (3, "m4", 10),
    ]
    u, m, t = zip(*cells, strict=True)
    n = len(cells)
    return TrainingData.from_triples(
        np.array(u),
        list(m),
        np.full(n, 0.5),
        np.zeros(n),
        np.array(t, float),
        {1: 3, 2: 4, 3: 3, 4: 5},
        snapshot_id="dated",
    )


def test_time_split_does_not_leak() -> None:
    data = dated()
    train, test = time_split(data, test_fraction=0.4)
    assert train.users.tolist() == [1, 2, 3] and train.items == ["m0", "m1", "m2", "m3"]
    assert train.times.data.max() < 7 and train.interactions.nnz == 6
    assert train.segment.tolist() == [3, 4, 3]
    # later cells: (1, m2) and (2, m3) are testable; user 4 and item m4 were first seen after the cut-off
    got = {(int(train.users[r]), train.items[c]) for r, c in zip(*test.nonzero(), strict=True)}
    assert got == {(1, "m2"), (2, "m3")}
    model = create("popularity").fit(train)
    assert evaluate_model(model, train, test)["users"] == 2


def test_compare_and_markdown() -> None:
    train = six_items()
    rows = compare([create("popularity"), create("itemknn", k=3)], train, {0: {2}, 1: {0}}, latency_users=50)
    assert [r.model for r in rows] == ["popularity", "itemknn"]
    for r in rows:
        assert r.train_s >= 0 and 0 < r.p50_ms <= r.p99_ms and r.disk_bytes > 0 and r.memory_bytes > 0
    table = to_markdown(rows)
    assert table.splitlines()[0].startswith("| model | NDCG@10 |") and "| itemknn (k=3) |" in table
    assert len({line.count("|") for line in table.splitlines()[: 2 + len(rows)]}) == 1


def test_ml100k_protocol_averages_over_seeds() -> None:
    rng = np.random.default_rng(0)
    user, item = np.nonzero(rng.random((60, 40)) < 0.3)
    rating, stamp = rng.integers(1, 6, len(user)).astype(np.float32), np.arange(len(user))
    rows = ml100k_protocol(
        user,
        item,
        rating,
        stamp,
        lambda: [create("popularity"), create("ease", lam=10)],
        seeds=(0, 1),
        latency_users=20,
    )
    assert [r.model for r in rows] == ["popularity", "ease"]
    assert all(r.runs == 2 and r.std["ndcg@10"] >= 0 for r in rows)
    assert "±" in to_markdown(rows)


@pytest.mark.slow
def test_ease_beats_popularity_on_ml100k(ml100k) -> None:
    r = ml100k.ratings
    held = random_split(r.user, seed=0)
    n_users, n_items = ml100k.n_users, len(ml100k.movies)
    train = ratings_data(r.user[~held], r.movie[~held], r.rating[~held], r.timestamp[~held], n_users, n_items)
    test = sp.csr_matrix((np.ones(held.sum()), (r.user[held], r.movie[held])), shape=(n_users, n_items))
    pop = evaluate_model(create("popularity").fit(train), train, test)["ndcg@10"]
    ease = evaluate_model(create("ease", lam=250).fit(train), train, test)["ndcg@10"]
    assert 0.18 < pop < 0.26 and ease > pop + 0.15


def test_a_pair_given_twice_keeps_its_latest_rating_not_the_sum() -> None:
    data = ratings_data(np.array([0, 0, 1]), np.array([2, 2, 2]), np.array([5.0, 2.0, 4.0]), np.array([9, 3, 1]), 2, 3)
    assert data.ratings.toarray().tolist() == [[0, 0, 5], [0, 0, 4]]  # user 0's rating at time 9, not 5 + 2
    triples = TrainingData.from_triples(
        np.array([7, 7]), ["a", "a"], np.array([0.2, 0.9]), np.zeros(2), np.array([5.0, 4.0])
    )
    assert triples.watched.toarray().tolist() == [[pytest.approx(0.2)]] and triples.times.toarray()[0, 0] == 5.0


def test_time_split_of_no_interactions_is_a_clear_error() -> None:
    empty = np.zeros(0)
    data = TrainingData.from_triples(empty.astype(np.int64), [], empty, empty, empty, snapshot_id="snap-0")
    with pytest.raises(ValueError, match="snapshot snap-0 has no interactions to split"):
        time_split(data)
