"""The fidelity report's parts: figures with known answers, the ml-100k-shaped simulation, the plots."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from movielab.fidelity import (
    Interactions,
    Report,
    describe,
    fidelity_report,
    first_ratings,
    gini,
    real_interactions,
    simulated_interactions,
    top_share,
    write_plots,
)
from movielab.world.bootstrap import build_universe
from movielab.world.config import WorldConfig


@pytest.fixture(scope="module")
def ml_universe(ml100k):
    """ml-100k with its own catalog (no synthetic movies), as the report uses it."""
    return build_universe(WorldConfig(allow_download=False), data=ml100k)


def test_gini_and_top_share_known_values() -> None:
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n - 1) / n when one holds everything
    assert top_share(np.array([5, 1, 1, 1, 1, 1, 1, 1, 1, 1]), 0.1) == pytest.approx(5 / 14)


def test_describe_counts_what_it_is_given() -> None:
    x = Interactions(
        user=np.array([0, 0, 1, 1, 1]),
        movie=np.array([0, 1, 0, 1, 2]),
        time=np.arange(5.0),
        ratings=np.array([[0, 0, 1], [0, 1, 5], [1, 2, 3]], np.float32),
        session_gaps_h=np.array([1.0, 2.0, 3.0]),
        completion=np.array([1.0, 0.5]),
        n_users=2,
        n_movies=4,
    )
    genres = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool)
    d = describe(x, genres)
    assert d["rating_hist"] == pytest.approx([1 / 3, 0, 1 / 3, 0, 1 / 3])
    assert d["mean_rating"] == pytest.approx(3.0)
    assert d["genre_share"] == pytest.approx([3 / 6, 3 / 6])
    assert d["per_user_q"][-1] == 3 and d["interactions"] == 5
    assert d["completion_mean"] == pytest.approx(0.75) and d["completion_full"] == pytest.approx(0.5)
    assert d["session_gap_h_q"][1] == pytest.approx(2.0)


def test_simulated_population_never_exceeds_the_real_counts(ml_universe) -> None:
    sim = simulated_interactions(ml_universe, max_days=1.0)
    real = real_interactions(ml_universe)
    target = np.bincount(real.user, minlength=real.n_users)
    got = np.bincount(sim.user, minlength=sim.n_users)
    assert got.sum() > 3_000 and (got <= target).all()
    pairs = set(zip(sim.user.tolist(), sim.movie.tolist(), strict=True))
    assert len(pairs) == len(sim.user)  # distinct movies per user
    rated = set(zip(sim.ratings[:, 0].astype(int).tolist(), sim.ratings[:, 1].astype(int).tolist(), strict=True))
    assert rated <= pairs and set(sim.ratings[:, 2].astype(int).tolist()) <= {1, 2, 3, 4, 5}
    assert len(rated) == len(sim.ratings) > 300 and sim.notes["repeat_ratings_of_kept_pairs"] == 0  # one per pair
    assert 0 < sim.completion.min() and sim.completion.max() <= 1


def test_first_ratings_keeps_each_kept_pairs_first_and_counts_the_rest() -> None:
    lines = [(1, 5, 2), (2, 5, 4), (1, 5, 5), (1, 6, 3), (3, 7, 1), (1, 6, 1)]
    got, repeats = first_ratings(lines, kept={(0, 5), (0, 6), (1, 5)})
    assert got.tolist() == [[0, 5, 2], [1, 5, 4], [0, 6, 3]] and repeats == 2  # (2, 7) was not kept


def test_report_refuses_data_without_demographics() -> None:
    with pytest.raises(ValueError, match="ml-latest-small"):
        fidelity_report(WorldConfig(dataset="ml-latest-small", data_dir="/nonexistent", allow_download=False))


def test_checks_and_plots(tmp_path) -> None:
    base = {
        "rating_hist": [0.06, 0.11, 0.27, 0.34, 0.22],
        "top10_share": 0.43,
        "gini": 0.63,
        "popularity_curve": [0.5, 0.8, 1.0],
        "activity_sorted": [30, 20, 1],
    }
    models = {
        m: {"ndcg@10": v, "recall@20": v}
        for m, v in (("popularity", 0.2), ("itemknn", 0.35), ("als", 0.42), ("ease", 0.44))
    }
    off = dict(base, rating_hist=[0.02, 0.11, 0.31, 0.34, 0.22], gini=0.5)
    report = Report(base, off, models, dict(models, ease={"ndcg@10": 0.41, "recall@20": 0.4}), {})
    checks = report.checks()
    assert not checks["histogram ±2 points"] and not checks["gini ±10%"] and checks["top10_share ±10%"]
    assert not checks["order ease > als > itemknn > popularity"] and checks["ndcg ease ±20%"]
    files = write_plots(report, tmp_path)
    for f in files[:3]:
        assert ET.parse(f).getroot().tag.endswith("svg") and f.read_text().count("<polyline") == 2


def test_cli_fidelity_names_what_it_cannot_compare(capsys) -> None:
    from movielab.cli import main

    assert main(["world", "fidelity", "--dataset", "ml-latest-small", "--data-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "fidelity report needs a data set with demographics" in err and "ml-latest-small" in err
