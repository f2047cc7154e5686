"""The population: arrays, demographics vocabulary, heavy-tailed activity, growth."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.world.data.types import GENDERS, OCCUPATIONS
from movielab.world.population import ActivityModel, UnknownUser, draw_population


@pytest.fixture(scope="module")
def pop(universe):
    rng = np.random.default_rng(1)
    return draw_population(50_000, universe.demographics, universe.taste, ActivityModel(), 0.0, rng, capacity=60_000)


def test_arrays_and_vocabularies(pop, universe) -> None:
    assert len(pop) == 50_000 and pop.capacity == 60_000
    assert pop.taste.shape == (60_000, universe.taste.k) and pop.taste.dtype == np.float32
    assert set(np.unique(pop.occupation[:50_000])) == set(range(len(OCCUPATIONS)))  # every occupation appears
    assert set(np.unique(pop.gender[:50_000])) == {0, 1}
    assert pop.age[:50_000].min() >= 7 and pop.age[:50_000].max() <= 90
    k12 = pop.occupation[:50_000] == OCCUPATIONS.index("K-12 student")
    assert (pop.age[:50_000][k12] < 18).all()
    assert set(np.unique(pop.utc_offset[:50_000])) <= {-5, -6, -7, -8}


def test_activity_is_heavy_tailed(pop) -> None:
    act = np.sort(pop.activity[:50_000])[::-1]
    assert act[:500].sum() / act.sum() > 0.05  # the top 1% of users do over 5% of the sessions
    assert act[0] > 20 * np.median(act)  # power users binge
    top = pop.activity[:50_000] > np.quantile(pop.activity[:50_000], 0.99)
    assert pop.binge[:50_000][top].mean() > 2 * pop.binge[:50_000][~top].mean()


def test_describe_shows_demographics_not_taste(pop) -> None:
    d = pop.describe(1)
    assert set(d) == {"user_id", "age", "occupation", "gender"}
    assert d["occupation"] in OCCUPATIONS and d["gender"] in GENDERS
    with pytest.raises(UnknownUser, match="unknown user id 50001"):
        pop.describe(50_001)
    with pytest.raises(UnknownUser):
        pop.row_of(0)


def test_add_grows_past_capacity(pop, universe) -> None:
    rng = np.random.default_rng(2)
    big = draw_population(20_000, universe.demographics, universe.taste, ActivityModel(), 5.0, rng)
    before = pop.taste[:50_000].copy()
    ids = pop.add(big)
    assert ids[0] == 50_001 and ids[-1] == 70_000 and len(pop) == 70_000 and pop.capacity >= 70_000
    assert np.array_equal(pop.taste[:50_000], before)
    assert np.array_equal(pop.taste[50_000:70_000], big.taste[:20_000])
