"""Behaviour pieces with known answers: discovery through taste, the rating opinion, the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.world.behavior import BehaviorParams, Discovery, rating_value
from movielab.world.bootstrap import build_world, run_until
from movielab.world.config import WorldConfig
from movielab.world.recs import OracleService


def _two_worlds_of_movies(n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Movies 0..n/2-1 lie along +e0, the rest along -e0; genres follow; equal popularity."""
    rng = np.random.default_rng(0)
    q = rng.normal(0, 0.05, (n, 4)).astype(np.float32)
    q[: n // 2, 0] += 1.0
    q[n // 2 :, 0] -= 1.0
    genres = np.zeros((n, 2), bool)
    genres[: n // 2, 0] = genres[n // 2 :, 1] = True
    return q, genres, np.ones(n)


def test_users_find_movies_through_their_taste() -> None:
    q, genres, w = _two_worlds_of_movies()
    d = Discovery.build(q, genres, w, n_clusters=4, taste_share=1.0, temperature=4.0)
    taste = np.zeros((500, 4), np.float32)
    taste[:, 0] = 1.0  # every user likes the first half
    found = d.sample(taste, 20, np.random.default_rng(1))
    assert found.shape == (500, 20) and found.dtype == np.int32
    assert np.mean(found < 200) > 0.95
    blind = Discovery.build(q, genres, w, n_clusters=4, taste_share=0.0, temperature=4.0)
    assert 0.45 < np.mean(blind.sample(taste, 20, np.random.default_rng(1)) < 200) < 0.55


def test_popularity_weights_rule_within_a_neighbourhood() -> None:
    q, genres, w = _two_worlds_of_movies()
    w[:10] = 50.0  # ten blockbusters in the first half
    d = Discovery.build(q, genres, w, n_clusters=2, taste_share=1.0, temperature=4.0)
    taste = np.zeros((2000, 4), np.float32)
    taste[:, 0] = 1.0
    found = d.sample(taste, 10, np.random.default_rng(2)).ravel()
    share = np.mean(found < 10)
    assert share == pytest.approx(500 / (500 + 190), abs=0.03)  # their share of the half's weight


def test_discovery_rejects_mismatched_inputs() -> None:
    q, genres, w = _two_worlds_of_movies()
    with pytest.raises(ValueError, match="one non-negative popularity weight"):
        Discovery.build(q, genres, w[:-1], n_clusters=4, taste_share=0.5, temperature=1.0)
    with pytest.raises(ValueError, match="one non-negative popularity weight"):
        Discovery.build(q, genres, -w, n_clusters=4, taste_share=0.5, temperature=1.0)


def test_rating_opinion_stretches_around_the_users_mean() -> None:
    p = BehaviorParams(rating_spread=2.0, rating_shift=-0.5, rating_rec_bonus=0.25)
    v = rating_value(
        np.array([4.0, 3.0]), np.array([3.5, 3.5]), np.array([True, False]), 0.0, p, np.random.default_rng(0)
    )
    assert v == pytest.approx([3.5 + 2.0 * 0.5 - 0.5 + 0.25, 3.5 - 2.0 * 0.5 - 0.5])


def test_oracle_recommends_each_users_best_unseen_movies(universe) -> None:
    config = WorldConfig(users=500, days=0.5, arrivals_per_day=0, allow_download=False)
    world, _ = build_world(config, universe=universe)
    with pytest.raises(ValueError, match="journal"):
        OracleService(world)
    journal: list[tuple] = []
    world, _ = build_world(config, universe=universe, journal=journal)
    world.run(until=run_until(config))
    oracle = OracleService(world)
    ids = np.arange(1, 501)
    answers = oracle.recommend(ids, np.zeros(500))
    seen: dict[int, set[str]] = {}
    for e in journal:
        if e[0] == "start":
            seen.setdefault(e[2], set()).add(e[3])
    assert any(seen.values())
    for uid, rows in zip(ids.tolist(), answers.movies, strict=True):
        assert len(set(rows.tolist())) == 20
        assert not {world.slugs[r] for r in rows} & seen.get(uid, set())
    u = 0
    util = (
        world.taste.item_bias
        + world.familiarity
        + world.params.taste_weight * world.taste.item_factors @ world.pop.taste[u]
    )
    got = util[answers.movies[u]]
    assert np.all(np.diff(got) <= 0)
    unseen = np.setdiff1d(np.arange(len(util)), [world.slugs.index(s) for s in seen.get(1, set())])
    assert got[-1] >= np.sort(util[unseen])[-20]
