"""The hidden taste model is a real fit, and demographics carry signal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from movielab.world.data.types import GENRES, Ratings
from movielab.world.truth import ModelFitError, fit_factors, heldout_rmse


def _low_rank(n_users=300, n_items=200, k=3, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.7, (n_users, k)), rng.normal(0, 0.7, (n_items, k))
    bu, bi = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_items)
    mask = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(mask)
    r = 3.5 + bu[u] + bi[i] + np.einsum("ij,ij->i", p[u], q[i]) + rng.normal(0, 0.1, len(u))
    return Ratings(u.astype(np.int32), i.astype(np.int32), r.astype(np.float32), np.zeros(len(u), np.int64))


def test_fit_recovers_a_known_low_rank_matrix() -> None:
    ratings = _low_rank()
    rmse = heldout_rmse(ratings, 300, 200, k=3, reg=0.01, reg_bias=0.01, iterations=15)
    assert rmse < 0.2  # noise is 0.1; predicting the mean would give ~1.0
    assert np.std(ratings.rating) > 0.8


def test_fit_refuses_empty_data() -> None:
    empty = Ratings(*(np.zeros(0, t) for t in (np.int32, np.int32, np.float32, np.int64)))
    with pytest.raises(ModelFitError, match="zero ratings"):
        fit_factors(empty, 1, 1)


def test_heldout_rmse_on_ml100k_is_a_real_fit(ml100k) -> None:
    rmse = heldout_rmse(ml100k.ratings, ml100k.n_users, len(ml100k.movies), seed=0)
    baseline = float(np.std(ml100k.ratings.rating))  # predicting the global mean
    assert rmse <= 0.95 < baseline


def test_synthetic_users_taste_depends_on_gender(universe) -> None:
    taste = universe.taste
    rng = np.random.default_rng(0)
    n = 20_000
    age = np.full(n, 30, np.int16)
    occupation = np.zeros(n, np.uint8)
    gender = (np.arange(n) % 2).astype(np.uint8)  # 0 = F, 1 = M
    vec, bias = taste.draw_users(age, gender, occupation, rng)
    g = universe.catalog.genres
    romance, action = g[:, GENRES.index("Romance")], g[:, GENRES.index("Action")]
    # Preference for romance over action, per user.
    pref = vec @ (taste.item_factors[romance].mean(0) - taste.item_factors[action].mean(0))
    t = stats.ttest_ind(pref[gender == 0], pref[gender == 1], equal_var=False)
    assert t.pvalue < 1e-6 and pref[gender == 0].mean() > pref[gender == 1].mean()


def test_synthetic_movies_follow_their_genres(universe) -> None:
    taste, catalog = universe.taste, universe.catalog
    synth = catalog.synthetic
    assert synth.sum() == len(catalog) - 1682 and len(taste.item_factors) == len(catalog)
    horror = catalog.genres[:, GENRES.index("Horror")]
    real_gap = taste.item_bias[~synth & horror].mean() - taste.item_bias[~synth & ~horror].mean()
    synth_gap = taste.item_bias[synth & horror].mean() - taste.item_bias[synth & ~horror].mean()
    assert real_gap < 0 and synth_gap < 0  # horror is rated lower in ml-100k, and so in the synthetic catalog
