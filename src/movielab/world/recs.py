"""How the world asks for recommendations: one interface, several implementations.

The engine asks for a batch of users at once; each answer becomes one
recommendation-request line. HTTP services come in `client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class RecAnswers:
    """Answers to a batch of recommendation requests, one entry per request."""

    servers: list[str]  # host:port asked, per request
    status: np.ndarray  # int32 HTTP status, 0 when no HTTP answer came
    ms: np.ndarray  # int32 response time in whole milliseconds
    movies: list[np.ndarray]  # catalog rows recommended (empty on failure), best first
    result: list[str]  # the line's result: ids joined by ", " on success, else the error text

    def __post_init__(self) -> None:
        n = len(self.status)
        if not (len(self.servers) == len(self.ms) == len(self.movies) == len(self.result) == n):
            raise ValueError("RecAnswers fields must have one entry per request")


class RecommendationService(Protocol):
    """Something the world can ask for recommendations."""

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """Recommendations for each user id, asked at the given simulated times."""


class NoService:
    """No recommendation service: every request fails at once, users pick on their own."""

    reason = "No recommendation service configured"

    def __init__(self, server: str = "none:0") -> None:
        self.server = server

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """Fail every request with status 0 and 0 ms."""
        n = len(user_ids)
        empty = np.empty(0, dtype=np.int32)
        return RecAnswers(
            [self.server] * n, np.zeros(n, np.int32), np.zeros(n, np.int32), [empty] * n, [self.reason] * n
        )


class FixedService:
    """Answers every user with the same catalog rows (tests, baselines)."""

    def __init__(self, rows: np.ndarray, slugs: list[str], server: str = "fixed:1", ms: int = 1) -> None:
        self.server = server
        self.rows = np.asarray(rows, dtype=np.int32)
        self.text = ", ".join(slugs[r] for r in self.rows)
        self.ms = ms

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """The same list for everyone, status 200."""
        n = len(user_ids)
        return RecAnswers(
            [self.server] * n,
            np.full(n, 200, np.int32),
            np.full(n, self.ms, np.int32),
            [self.rows] * n,
            [self.text] * n,
        )


class RandomService:
    """Answers 20 random movies per request (the placeholder a team starts from)."""

    def __init__(self, slugs: list[str], seed: int = 0, n: int = 20, server: str = "random:1") -> None:
        self.server = server
        self.slugs = slugs
        self.n = n
        self.rng = np.random.default_rng(seed)

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """n distinct random catalog rows per user, status 200, 1 ms."""
        k = len(user_ids)
        rows = [self.rng.choice(len(self.slugs), self.n, replace=False).astype(np.int32) for _ in range(k)]
        text = [", ".join(self.slugs[i] for i in r) for r in rows]
        return RecAnswers([self.server] * k, np.full(k, 200, np.int32), np.ones(k, np.int32), rows, text)


class OracleService:
    """Each user's true top-n unseen movies by the hidden choice utility: the ceiling no team can reach.

    Utility = item bias + taste_weight · taste · item factors + familiarity, the parts of a user's
    choice (`behavior.choose`) that a list can know in advance (the user's own bias, the noise and the
    rank bonus do not change the order). Unseen = never started, from the world's journal, so the world
    must be built with one (`ValueError` otherwise). For benchmarks and instructor scoring; never served
    to teams.
    """

    def __init__(self, world, n: int = 20, server: str = "oracle:1") -> None:  # world: engine.World (no import cycle)
        if world.journal is None:
            raise ValueError("the oracle needs a world built with a journal: it leaves out movies already watched")
        self.world, self.n, self.server = world, n, server
        self._row = {s: i for i, s in enumerate(world.slugs)}
        self._pos = 0
        self.seen: dict[int, list[int]] = {}

    def _catch_up(self) -> None:
        journal = self.world.journal
        for entry in journal[self._pos :]:
            if entry[0] == "start":
                self.seen.setdefault(entry[2] - 1, []).append(self._row[entry[3]])
        self._pos = len(journal)

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """The n best unseen catalog rows per user by true utility, status 200, 1 ms."""
        self._catch_up()
        w, k = self.world, len(user_ids)
        rows = np.asarray(user_ids, np.int64) - 1
        util = (
            w.taste.item_bias[None, :]
            + w.familiarity[None, :]
            + w.params.taste_weight * (w.pop.taste[rows] @ w.taste.item_factors.T)
        )
        for i, r in enumerate(rows.tolist()):
            if r in self.seen:
                util[i, self.seen[r]] = -np.inf
        top = np.argpartition(-util, self.n, axis=1)[:, : self.n]
        order = np.argsort(-np.take_along_axis(util, top, axis=1), axis=1)
        best = np.take_along_axis(top, order, axis=1).astype(np.int32)
        movies = list(best)
        text = [", ".join(w.slugs[i] for i in r) for r in best.tolist()]
        return RecAnswers([self.server] * k, np.full(k, 200, np.int32), np.ones(k, np.int32), movies, text)
