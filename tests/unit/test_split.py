"""The sticky traffic split: Python and numpy agree, buckets are uniform, raising the share keeps users."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from movielab.recommender.serving.traffic import BUCKETS, bucket, buckets, in_challenger, threshold

IDS = np.concatenate([np.arange(1, 20_001), np.array([2**31 - 1, 2**40 + 7, 2**62 + 3, 2**63 - 1])])


@pytest.mark.parametrize("salt", [0, 1, 0xDEADBEEF, 2**64 - 1])
def test_python_and_numpy_agree(salt: int) -> None:
    assert buckets(IDS, salt).tolist() == [bucket(int(u), salt) for u in IDS]


def test_buckets_are_uniform() -> None:
    # 200k consecutive ids (how the world numbers users) over 100 groups of 100 buckets each
    counts = np.bincount(buckets(np.arange(1, 200_001), 12345) // 100, minlength=100)
    assert counts.sum() == 200_000 and stats.chisquare(counts).pvalue > 0.001


def test_share_is_met() -> None:
    users = np.arange(1, 100_001)
    for share in (0.01, 0.1, 0.5, 0.9):
        got = float(np.mean(buckets(users, 7) < threshold(share)))
        assert got == pytest.approx(share, abs=0.005)


def test_raising_the_share_keeps_every_challenger_user() -> None:
    users = np.arange(1, 50_001)
    b = buckets(users, 99)
    previous = np.zeros(users.size, bool)
    for share in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0):
        now = b < threshold(share)
        assert not np.any(previous & ~now)  # nobody leaves the challenger arm
        previous = now
    assert previous.all()
    assert [in_challenger(int(u), 99, 0.1) for u in users[:500]] == (b[:500] < threshold(0.1)).tolist()


def test_a_new_salt_reshuffles_users() -> None:
    users = np.arange(1, 50_001)
    a, b = buckets(users, 1) < threshold(0.5), buckets(users, 2) < threshold(0.5)
    assert 0.45 < float(np.mean(a == b)) < 0.55  # independent halves agree half the time


@pytest.mark.parametrize("share", [-0.1, 1.01, float("nan")])
def test_a_share_outside_0_1_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="challenger share"):
        threshold(share)


def test_thresholds() -> None:
    assert (threshold(0.0), threshold(0.1), threshold(1.0)) == (0, 1000, BUCKETS)
    assert all(0 <= bucket(u, 5) < BUCKETS for u in range(1, 1000))
