"""What models train on: a user × movie matrix built from one named store snapshot (`TrainingData.from_snapshot`).

Implicit feedback comes from watching: the value of (user, movie) is the share of the movie
the user watched (distinct minutes watched / runtime, capped at 1; runtime from the world's
movie API). Explicit feedback comes from ratings (1..5, or 1..10 in the 2026 edition; the latest one counts). Both are kept
so each model can choose; see each model's docstring for what it uses.

A (user, movie) pair appears once: where input repeats a pair (a user who re-rated a movie), the
latest row counts and the number merged is logged (`latest_per_pair`). Kept twice, the pair would
land in both train and test of a split, and a held-out movie already seen can never be recommended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import SEGMENT_COLUMNS, as_of, segment_of
from movielab.recommender.store.snapshots import Snapshot, ratings_sql, sessions_sql

logger = logging.getLogger(__name__)


def latest_per_pair(user: np.ndarray, item: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Sorted row indices that keep, of each (user, item) pair, the row with the latest time (the later row on ties).

    `user` and `item` are integer arrays of one length n (ids or indices), `time` numbers; returns int64
    indices into the n rows. `len(user) - len(result)` rows were merged into a later one of their pair.
    """
    user, item, time = np.asarray(user), np.asarray(item), np.asarray(time)
    if not len(user) == len(item) == len(time):
        raise ValueError(f"user, item and time have different lengths: {len(user)}, {len(item)}, {len(time)}")
    if len(user) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(len(user)), time, item, user))
    u, i = user[order], item[order]
    last = np.ones(len(order), bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return np.sort(order[last]).astype(np.int64)


@dataclass(frozen=True)
class TrainingData:
    """A snapshot as matrices; row i is user `users[i]`, column j is movie `items[j]`."""

    users: np.ndarray  # int64 user ids, sorted ascending
    items: list[str]  # movie ids (slugs)
    watched: sp.csr_matrix  # float32 (n_users, n_items): share watched in (0, 1]
    ratings: sp.csr_matrix  # float32 (n_users, n_items): latest rating 1..5 or 1..10, 0 = none
    times: sp.csr_matrix  # float64 (n_users, n_items): unix time of the last interaction
    segment: np.ndarray  # int16 per user row: segment_of(age, gender), -1 when unknown
    snapshot_id: str = "unnamed"
    _user_row: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    # float32 per item: license cost in USD per play (2026 edition), NaN where unknown; None: no costs at all
    item_cost: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n_u, n_i = len(self.users), len(self.items)
        for name in ("watched", "ratings", "times"):
            if getattr(self, name).shape != (n_u, n_i):
                raise ValueError(f"TrainingData.{name} has shape {getattr(self, name).shape}, expected {(n_u, n_i)}")
        if len(self.segment) != n_u:
            raise ValueError(f"TrainingData.segment has {len(self.segment)} rows, expected {n_u}")
        if self.item_cost is not None and np.shape(self.item_cost) != (n_i,):
            raise ValueError(f"TrainingData.item_cost has shape {np.shape(self.item_cost)}, expected ({n_i},)")
        if not self._user_row:
            self._user_row.update({int(u): i for i, u in enumerate(self.users.tolist())})

    @property
    def interactions(self) -> sp.csr_matrix:
        """Binary (user, movie) matrix: 1 where the user watched or rated the movie."""
        m = ((self.watched + self.ratings) > 0).astype(np.float32)
        return sp.csr_matrix(m)

    def row_of(self, user_id: int) -> int | None:
        """Matrix row of a user id, None for users not in the snapshot."""
        return self._user_row.get(int(user_id))

    @classmethod
    def from_triples(
        cls,
        user_ids: np.ndarray,
        movie_ids: list[str] | np.ndarray,
        watched: np.ndarray,
        ratings: np.ndarray,
        times: np.ndarray,
        segments: dict[int, int] | None = None,
        snapshot_id: str = "unnamed",
        item_cost: dict[str, float] | None = None,
    ) -> TrainingData:
        """Build from rows per (user, movie): share watched (0 if only rated), rating (0 if none), time;
        `item_cost` maps movie ids to a license cost in USD per play (movies it lacks: NaN).

        A pair given twice keeps its row with the latest time (a sparse matrix would add the two up);
        how many were merged is logged.
        """
        users, u_idx = np.unique(np.asarray(user_ids, np.int64), return_inverse=True)
        items, i_idx = np.unique(np.asarray(movie_ids, dtype=object).astype(str), return_inverse=True)
        shape = (len(users), len(items))
        keep = latest_per_pair(u_idx, i_idx, np.asarray(times))
        if len(keep) < len(u_idx):
            logger.info(
                "training data %s: %d repeated (user, movie) rows merged into their latest",
                snapshot_id,
                len(u_idx) - len(keep),
            )
            u_idx, i_idx = u_idx[keep], i_idx[keep]
            watched, ratings, times = (np.asarray(a)[keep] for a in (watched, ratings, times))

        def mat(values: np.ndarray, dtype) -> sp.csr_matrix:
            m = sp.csr_matrix((np.asarray(values, dtype), (u_idx, i_idx)), shape=shape, dtype=dtype)
            m.eliminate_zeros()
            return m

        seg = np.array([(segments or {}).get(int(u), -1) for u in users.tolist()], np.int16)
        cost = None if item_cost is None else np.array([item_cost.get(m, np.nan) for m in items.tolist()], np.float32)
        return cls(
            users,
            items.tolist(),
            mat(watched, np.float32),
            mat(ratings, np.float32),
            mat(times, np.float64),
            seg,
            snapshot_id,
            item_cost=cost,
        )

    @classmethod
    def from_snapshot(cls, store: EventStore, snapshot: str | Snapshot) -> TrainingData:
        """The snapshot as `TrainingData`: watch shares, latest ratings, last times, demographic segments and
        license costs, from the user and movie records as they were when the snapshot was taken.

        Raises `UnknownSnapshot` (from the store) for a name or id no snapshot has.
        """
        snap = store.snapshot(snapshot)
        params = store.snapshot_params(snap)
        sql = f"""WITH s AS ({sessions_sql()}), r AS ({ratings_sql()})
            SELECT user_id, movie_id, coalesce(s.completion, 0)::FLOAT AS watched,
                   coalesce(r.rating, 0)::FLOAT AS rating, epoch_us(greatest(s.last_time, r.time)) / 1e6 AS t
            FROM s FULL OUTER JOIN r USING (user_id, movie_id)"""
        triples = store.read_arrow(sql, params)
        users = store.read_arrow(f"SELECT {SEGMENT_COLUMNS} FROM ({as_of('users')})", {"created": snap.created_at})
        seg = segment_of(users["age"].to_numpy(), users["gender"].to_numpy())
        segments = dict(zip(users["user_id"].to_numpy().tolist(), seg.tolist(), strict=True))
        movies = triples["movie_id"].to_numpy(zero_copy_only=False)
        costs = {
            m: float(c)
            for m, c in store.read(
                f"""SELECT movie_id, license_cost FROM ({as_of("movies")})
                                                       WHERE license_cost IS NOT NULL""",
                {"created": snap.created_at},
            )
        }
        return cls.from_triples(
            triples["user_id"].to_numpy(),
            movies,
            triples["watched"].to_numpy(),
            triples["rating"].to_numpy(),
            triples["t"].to_numpy(),
            segments,
            snapshot_id=snap.id,
            item_cost=costs or None,
        )
