"""Sticky traffic split: a stable hash of the user id puts every user in one of 10,000 buckets.

A challenger with share `s` (0..1) gets the users whose bucket is below `s * 10_000`, so raising the
share from 10% to 50% keeps the first 10% in the challenger arm (like Flagger/Argo Rollouts steps).
The salt names the experiment: a new experiment reshuffles users, the same one never does.
The hash is splitmix64's finalizer, so neighbouring ids spread evenly; serving (one user, Python ints)
and analysis (numpy arrays of users) use the same arithmetic and always agree.
"""

from __future__ import annotations

import numpy as np

BUCKETS = 10_000
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def bucket(user_id: int, salt: int = 0) -> int:
    """The user's bucket (0..9999) in the experiment named by `salt`."""
    z = (user_id * _GOLDEN + salt) & _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return (z ^ (z >> 31)) % BUCKETS


def buckets(user_ids: np.ndarray, salt: int = 0) -> np.ndarray:
    """`bucket` of every user id in an array (uint64 arithmetic wraps like the masked Python ints)."""
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids).astype(np.uint64) * np.uint64(_GOLDEN) + np.uint64(salt & _MASK)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return ((z ^ (z >> np.uint64(31))) % np.uint64(BUCKETS)).astype(np.int64)


def threshold(share: float) -> int:
    """Buckets below this number go to the challenger at `share` (0..1)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"challenger share {share!r} must be between 0 and 1")
    return round(share * BUCKETS)


def in_challenger(user_id: int, salt: int, share: float) -> bool:
    """Whether the user is in the challenger arm at this share."""
    return bucket(user_id, salt) < threshold(share)
