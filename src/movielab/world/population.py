"""The population: users as numpy arrays (struct of arrays), sized for a million and more.

Row r is user id r + 1. Demographics are drawn from the empirical distribution of the
real MovieLens users (occupations smoothed over the whole ML-1M vocabulary, so every
occupation appears); taste is drawn given demographics by the hidden `TasteModel`.
Activity (sessions a day) is log-normal, so a few power users binge several movies a day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from movielab.world.data.types import GENDERS, OCCUPATIONS, Users
from movielab.world.errors import WorldError
from movielab.world.truth import TasteModel


class UnknownUser(WorldError, KeyError):
    """A user id that is not (yet) in the population."""

    def __init__(self, user_id: object) -> None:
        self.user_id = user_id
        super().__init__(f"unknown user id {user_id!r}")

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Demographics:
    """The real users new users are resampled from (jointly, so a retiree stays old)."""

    age: np.ndarray  # int16
    gender: np.ndarray  # uint8
    occupation: np.ndarray  # uint8
    utc_offset: np.ndarray  # int8 hours
    zip_prefix: np.ndarray  # uint16 first three ZIP digits (0 when not numeric)
    other_occupation_share: float = 0.03  # drawn uniformly over OCCUPATIONS, so each one appears

    @classmethod
    def fit(cls, users: Users | None, utc_offsets: np.ndarray | None) -> Demographics:
        """Keep the real users; without demographics (ml-latest) use a small documented US-like sample."""
        if users is None or len(users) == 0:
            rng = np.random.default_rng(7)
            n = 1000
            return cls(
                np.clip(rng.normal(33, 11, n), 13, 75).astype(np.int16),
                (rng.random(n) < 0.71).astype(np.uint8),
                rng.integers(0, len(OCCUPATIONS), n).astype(np.uint8),
                rng.choice(np.array([-5, -6, -7, -8], np.int8), n, p=[0.47, 0.29, 0.07, 0.17]),
                rng.integers(10, 999, n).astype(np.uint16),
                other_occupation_share=0.0,
            )
        zips = np.array([int(z[:3]) if z[:3].isdigit() else 0 for z in users.zip_code], dtype=np.uint16)
        offsets = utc_offsets if utc_offsets is not None else np.full(len(users), -5, np.int8)
        return cls(
            users.age.astype(np.int16),
            users.gender.astype(np.uint8),
            users.occupation.astype(np.uint8),
            np.asarray(offsets, np.int8),
            zips,
        )


@dataclass
class Population:
    """Users as arrays; only rows below `size` exist. Arrays grow as new users arrive."""

    age: np.ndarray  # int16
    gender: np.ndarray  # uint8 index into GENDERS
    occupation: np.ndarray  # uint8 index into OCCUPATIONS
    utc_offset: np.ndarray  # int8 hours
    zip_prefix: np.ndarray  # uint16
    activity: np.ndarray  # float32 mean sessions a day
    binge: np.ndarray  # float32 probability of picking another movie right after one
    created_at: np.ndarray  # float64 unix seconds of account creation
    taste: np.ndarray  # float32 (capacity, k) — hidden
    bias: np.ndarray  # float32 — hidden
    size: int = 0
    _arrays: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        self._arrays = (
            "age",
            "gender",
            "occupation",
            "utc_offset",
            "zip_prefix",
            "activity",
            "binge",
            "created_at",
            "taste",
            "bias",
        )

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        """Rows allocated (existing users plus room for arrivals)."""
        return len(self.age)

    def row_of(self, user_id: int) -> int:
        """Array row of a user id, or `UnknownUser`."""
        if not isinstance(user_id, int | np.integer) or not 1 <= user_id <= self.size:
            raise UnknownUser(user_id)
        return int(user_id) - 1

    def user_ids(self) -> np.ndarray:
        """Ids of all existing users."""
        return np.arange(1, self.size + 1, dtype=np.int64)

    def describe(self, user_id: int) -> dict[str, object]:
        """What the world API tells about a user (never the hidden taste)."""
        r = self.row_of(user_id)
        return {
            "user_id": int(user_id),
            "age": int(self.age[r]),
            "occupation": OCCUPATIONS[self.occupation[r]],
            "gender": GENDERS[self.gender[r]],
        }

    def _reserve(self, n_more: int) -> None:
        need = self.size + n_more
        if need <= self.capacity:
            return
        new_cap = max(need, int(self.capacity * 1.5) + 1024)
        for name in self._arrays:
            old = getattr(self, name)
            grown = np.zeros((new_cap, *old.shape[1:]), dtype=old.dtype)
            grown[: self.size] = old[: self.size]
            setattr(self, name, grown)

    def add(self, batch: Population) -> np.ndarray:
        """Append users drawn elsewhere (`draw_population`); return their new ids."""
        self._reserve(batch.size)
        lo, hi = self.size, self.size + batch.size
        for name in self._arrays:
            getattr(self, name)[lo:hi] = getattr(batch, name)[: batch.size]
        self.size = hi
        return np.arange(lo + 1, hi + 1, dtype=np.int64)


@dataclass(frozen=True)
class ActivityModel:
    """How active users are: log-normal sessions a day; binge probability grows with activity."""

    median_sessions: float = 0.35
    sigma: float = 1.1
    max_sessions: float = 12.0
    binge_base: float = 0.12
    binge_max: float = 0.75

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(sessions a day, binge probability) for n users."""
        act = np.minimum(self.median_sessions * rng.lognormal(0.0, self.sigma, n), self.max_sessions)
        z = np.log(act / self.median_sessions) / self.sigma  # standard-normal score of the activity
        binge = np.clip(self.binge_base + 0.12 * z, 0.02, self.binge_max)
        return act.astype(np.float32), binge.astype(np.float32)


def draw_population(
    n: int,
    demographics: Demographics,
    taste: TasteModel,
    activity: ActivityModel,
    created_at: np.ndarray | float,
    rng: np.random.Generator,
    capacity: int | None = None,
) -> Population:
    """Draw n synthetic users (demographics, location, activity, hidden taste), room for `capacity`."""
    cap = max(n, capacity or n)
    src = rng.integers(0, len(demographics.age), n)
    age = np.clip(demographics.age[src] + rng.integers(-2, 3, n), 7, 90).astype(np.int16)
    gender = demographics.gender[src]
    occupation = demographics.occupation[src].copy()
    other = rng.random(n) < demographics.other_occupation_share
    occupation[other] = rng.integers(0, len(OCCUPATIONS), int(other.sum()))
    # Students by age, as MovieLens-1M separates them.
    k12, college = OCCUPATIONS.index("K-12 student"), OCCUPATIONS.index("college/grad student")
    student = (occupation == k12) | (occupation == college)
    occupation[student] = np.where(age[student] < 18, k12, college)
    utc_offset = demographics.utc_offset[src]
    zip_prefix = demographics.zip_prefix[src]
    act, binge = activity.draw(n, rng)
    vec, bias = taste.draw_users(age, gender, occupation, rng)

    def room(a: np.ndarray) -> np.ndarray:
        out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
        out[:n] = a
        return out

    created = np.broadcast_to(np.asarray(created_at, dtype=np.float64), (n,))
    return Population(
        age=room(age),
        gender=room(gender),
        occupation=room(occupation),
        utc_offset=room(utc_offset),
        zip_prefix=room(zip_prefix),
        activity=room(act),
        binge=room(binge),
        created_at=room(created.copy()),
        taste=room(vec),
        bias=room(bias),
        size=n,
    )
