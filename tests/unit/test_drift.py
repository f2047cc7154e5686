"""Drift statistics with known answers, and window profiles read from a real in-memory event store."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from batches import lines_batch

from movielab.contract import format_time_us, rate_line, recommendation_line, watch_line
from movielab.recommender.errors import DriftError
from movielab.recommender.monitoring.drift import (
    PSI_STRONG,
    WindowProfile,
    align,
    bucket_counts,
    chi_square,
    compare,
    compare_categorical,
    compare_numeric,
    gini,
    ks,
    level,
    profile_window,
    psi,
    psi_samples,
)
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo

T0 = datetime(2026, 3, 20, 8, 0, 0)
A, B, C, D = "a+2000", "b+2001", "c+2002", "d+2003"


# --- pure statistics -------------------------------------------------------------------------------
def test_psi_known_value() -> None:
    # shares (0.5, 0.5) → (0.25, 0.75): 0.25 ln 2 + 0.25 ln 1.5 … by hand: sum (c - r) ln(c / r)
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)  # same shares, any scale


def test_psi_is_symmetric_and_finite_on_empty_buckets() -> None:
    assert psi([1, 3], [3, 1]) == pytest.approx(psi([3, 1], [1, 3]))
    assert math.isfinite(psi([10, 0], [0, 10])) and psi([10, 0], [0, 10]) > PSI_STRONG


@pytest.mark.parametrize(
    ("ref", "cur", "reason"),
    [
        ([1, 2], [1, 2, 3], "aligned"),
        ([0, 0], [1, 1], "reference"),
        ([1, 1], [0, 0], "current"),
        ([1, -1], [1, 1], "non-negative"),
    ],
)
def test_psi_refuses_bad_counts(ref, cur, reason) -> None:
    with pytest.raises(DriftError, match=reason):
        psi(ref, cur)


def test_levels_follow_the_convention() -> None:
    assert [level(x) for x in (0.0, 0.099, 0.1, 0.2, 0.25, 3.0)] == [
        "none",
        "none",
        "moderate",
        "moderate",
        "strong",
        "strong",
    ]


def test_numeric_drift_same_distribution_vs_shifted() -> None:
    rng = np.random.default_rng(1)
    ref, same, shifted = rng.normal(0, 1, 20_000), rng.normal(0, 1, 20_000), rng.normal(1, 1, 20_000)
    stable, moved = compare_numeric("x", ref, same), compare_numeric("x", ref, shifted)
    assert stable.psi < 0.02 and stable.ks_pvalue > 0.001 and stable.level == "none"
    assert moved.psi > PSI_STRONG and moved.ks_statistic > 0.3 and moved.ks_pvalue < 1e-6 and moved.level == "strong"


def test_quantile_buckets_hold_equal_shares_of_the_reference() -> None:
    ref = np.arange(1000, dtype=float)
    counts = bucket_counts(ref, np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
    assert counts.sum() == 1000 and counts.min() >= 99 and counts.max() <= 101
    assert psi_samples(ref, ref) == pytest.approx(0.0)


def test_ks_matches_a_hand_count() -> None:
    # ECDFs of {1,2,3} and {3,4,5} differ most at 2..3: 2/3 - 0.
    stat, p = ks(np.array([1.0, 2, 3]), np.array([3.0, 4, 5]))
    assert stat == pytest.approx(2 / 3) and 0 < p <= 1
    with pytest.raises(DriftError, match="current is empty"):
        ks(np.array([1.0]), np.array([]))


def test_categorical_drift_aligns_categories() -> None:
    keys, r, c = align({"F": 10, "M": 30}, {"M": 5, "X": 5})
    assert keys == ["F", "M", "X"] and r.tolist() == [10, 30, 0] and c.tolist() == [0, 5, 5]
    same = compare_categorical("gender", {"F": 400, "M": 600}, {"F": 410, "M": 590})
    flipped = compare_categorical("gender", {"F": 400, "M": 600}, {"F": 600, "M": 400})
    assert same.psi < 0.01 and same.chi2_pvalue > 0.05
    assert flipped.psi > 0.1 and flipped.chi2_pvalue < 1e-6
    with pytest.raises(DriftError, match="feature 'gender'"):
        compare_categorical("gender", {"F": 1}, {})


def test_chi_square_single_category_cannot_differ() -> None:
    assert chi_square([5, 0], [7, 0]) == (0.0, 1.0)


def test_gini_known_values() -> None:
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 10]) == pytest.approx(0.75)  # (n - 1) / n for one holder of everything
    assert gini([1, 2, 3]) == pytest.approx(2 / 9)
    assert gini([]) == 0.0 and gini([0, 0]) == 0.0
    with pytest.raises(DriftError, match="non-negative"):
        gini([1, -2])


def test_compare_skips_empty_features_with_the_reason() -> None:
    ref = WindowProfile(T0, T0 + timedelta(hours=1), ratings={"4": 10, "5": 10}, gender={"F": 5, "M": 5})
    cur = WindowProfile(T0, T0 + timedelta(hours=1), ratings={"1": 10, "2": 10}, gender={"F": 5, "M": 5})
    report = compare(ref, cur, min_sample=1)
    assert set(report.features) == {"rating", "gender"}
    assert report.strong == ["rating"] and report.features["rating"].ks_statistic == pytest.approx(1.0)
    assert "activity" in report.skipped and "empty" in report.skipped["activity"]
    # By default 20 ratings and 10 users are too few for a PSI worth alerting on: skipped, saying why.
    small = compare(ref, cur)
    assert small.features == {} and small.strong == []
    assert "too few observations for a stable PSI: 20 in the reference, 20 now" in small.skipped["rating"]


# --- profiles read from a store ----------------------------------------------------------------------


def rec(t: datetime, user: int, movies: list[str], status: int = 200, ms: int = 20) -> str:
    result = ", ".join(movies) if status == 200 else "Request timeout to team1.local:8082 after 600 ms"
    return recommendation_line(format_time_us(t), user, "team1.local:8082", status, result, ms)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
def store():
    with EventStore(None) as s:
        s.add_records(
            movies=[
                MovieInfo(A, 100, ("Drama",), "A"),
                MovieInfo(B, 90, ("Comedy", "Drama"), "B"),
                MovieInfo(C, 90, ("Horror",), "C"),
                MovieInfo(D, 90, (), "D"),
            ],
            users=[UserInfo(1, 30, "F", "writer"), UserInfo(2, 17, "M", "K-12 student")],
        )
        yield s


def known_window() -> list[str]:
    """User 1: answered [A, B], watches A (recommended, converted), rates A 5; then a time-out, then watches C.
    User 2: answered [A, C], then a second answer [B] before watching C (C was not in the latest list).
    User 3 (no record): watches B without any recommendation and rates it 2."""
    return [
        rec(at(0), 1, [A, B]),
        watch_line(stamp(at(1)), 1, A, 1),
        watch_line(stamp(at(2)), 1, A, 2),
        rate_line(stamp(at(3)), 1, A, 5),
        rec(at(10), 1, [], status=0, ms=601),
        watch_line(stamp(at(11)), 1, C, 1),
        rec(at(0), 2, [A, C]),
        rec(at(5), 2, [B]),
        watch_line(stamp(at(6)), 2, C, 1),
        watch_line(stamp(at(7)), 3, B, 1),
        rate_line(stamp(at(8)), 3, B, 2),
        watch_line(stamp(at(90)), 3, D, 1),
    ]  # outside the window


def test_profile_window_counts_a_known_window(store: EventStore) -> None:
    store.append(lines_batch(known_window()))
    p = profile_window(store, T0, T0 + timedelta(hours=1))
    assert p.ratings == {"5": 1, "2": 1}
    assert p.requests == 4 and p.answered == 3 and p.availability == pytest.approx(3 / 4)
    # Watch sessions started: (1, A), (1, C), (2, C), (3, B); only (1, A) was in the latest answer before it.
    assert p.watches == 4 and p.watches_recommended == 1
    # Answered requests: user 1 [A, B] → A (converted); user 2 [A, C] → next request came first; [B] → C: no.
    assert p.converted == 1 and p.conversion == pytest.approx(1 / 3)
    assert p.exposure == {A: 2, B: 2, C: 1} and p.catalog == 4
    assert p.recommendation_coverage == pytest.approx(3 / 4) and p.watch_coverage == pytest.approx(3 / 4)
    assert p.exposure_gini == pytest.approx(gini([2, 2, 1, 0]))
    assert p.genres == {"Drama": 2, "Comedy": 1, "Horror": 2}
    assert p.activity == {6: 1, 3: 1, 2: 1}  # events in the window: user 1 six, user 2 three, user 3 two
    assert p.gender == {"F": 1, "M": 1, "unknown": 1}
    assert p.age == {"25-34": 1, "under 18": 1, "unknown": 1}
    assert p.occupation == {"writer": 1, "K-12 student": 1, "unknown": 1}


def test_profile_window_refuses_an_empty_window(store: EventStore) -> None:
    with pytest.raises(DriftError, match="end is not after start"):
        profile_window(store, T0, T0)
