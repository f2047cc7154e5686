"""Precomputed answers: the exact `/recommend` body of every known user, built once from a model.

The serving hot path is one dict look-up: bytes ready to send, no model call, no formatting.
Users the model does not know get their demographic segment's popularity list when their
segment is known, else the global one; a user whose model row came back empty falls back the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from movielab.contract import MAX_RECOMMENDATIONS, is_movie_id
from movielab.recommender.store.records import N_SEGMENTS
from movielab.recommender.training.provenance import Provenance

if TYPE_CHECKING:  # the serving process loads models and the store only when asked
    from movielab.recommender.store.events import EventStore
    from movielab.recommender.training.pipeline import Trained

logger = logging.getLogger(__name__)

# "coldstart": a new user's first list from their self-description (served from `state.set_coldstart`'s overlay).
Source = Literal["model", "segment", "global", "coldstart"]
SOURCES: tuple[Source, ...] = ("model", "segment", "global", "coldstart")


class Model(Protocol):
    """What the table needs of a trained model (see `movielab.recommender.training.models`)."""

    name: str
    users: np.ndarray
    items: list[str]

    def recommend_rows(self, rows: np.ndarray, n: int = 20, exclude_seen: bool = True) -> np.ndarray:
        """Item indices, best first, -1 padded: int32 (len(rows), n)."""
        ...

    def fallback(self, segment: int) -> list[str]:
        """Popular movie ids for a segment (0..13), or overall for -1."""
        ...


class AnswerTable:
    """Ready-to-send answer bodies: one per model user, one per segment, one global; immutable once built."""

    def __init__(
        self,
        provenance: Provenance,
        bodies: dict[int, bytes],
        segment_bodies: tuple[bytes | None, ...],
        global_body: bytes,
        user_segments: dict[int, int],
        empty_rows: frozenset[int] = frozenset(),
    ) -> None:
        if not global_body:
            raise ValueError("AnswerTable: the global fallback body is empty")
        if len(segment_bodies) != N_SEGMENTS:
            raise ValueError(f"AnswerTable: {len(segment_bodies)} segment bodies, expected {N_SEGMENTS}")
        self.provenance = provenance
        self.empty_rows = empty_rows
        self._bodies = bodies
        self._user_segments = user_segments
        self._global = global_body
        # A segment without its own list answers the global one, and says so.
        self._segment_answers = tuple((b, "segment") if b else (global_body, "global") for b in segment_bodies)
        self.headers: dict[str, bytes] = {s: provenance.header(s).encode("ascii") for s in SOURCES}

    @classmethod
    def build(
        cls,
        model: Model,
        provenance: Provenance,
        user_segments: dict[int, int] | None = None,
        n: int = MAX_RECOMMENDATIONS,
        batch: int = 10_000,
    ) -> AnswerTable:
        """Precompute the answer of every model user (in batches of `recommend_rows`) and every fallback."""
        if not 1 <= n <= MAX_RECOMMENDATIONS:
            raise ValueError(f"AnswerTable.build: n={n}, expected 1..{MAX_RECOMMENDATIONS}")
        if batch < 1:
            raise ValueError(f"AnswerTable.build: batch={batch}, expected at least 1")
        items = _item_bytes(model)
        users = np.asarray(model.users, np.int64)
        if users.ndim != 1 or len(np.unique(users)) != len(users):
            raise ValueError(f"model {model.name!r}: users must be distinct ids in one dimension")
        bodies: dict[int, bytes] = {}
        empty: set[int] = set()
        repeated = 0
        for start in range(0, len(users), batch):
            rows = np.arange(start, min(start + batch, len(users)))
            recs = _checked_rows(model, rows, n, len(items))
            repeated += _add_bodies(bodies, empty, users[rows].tolist(), recs, items)
        if repeated:
            logger.warning("model %r repeated movie ids in %d rows; kept the first of each", model.name, repeated)
        if empty:
            logger.warning("model %r had no movie for %d users; they get fallbacks", model.name, len(empty))
        global_body = _fallback_body(model, -1, n)
        if not global_body:
            raise ValueError(f"model {model.name!r}: the global fallback list is empty")
        segment_bodies = tuple(_fallback_body(model, s, n) or None for s in range(N_SEGMENTS))
        segs = {
            int(u): int(s) for u, s in (user_segments or {}).items() if 0 <= s < N_SEGMENTS and int(u) not in bodies
        }
        return cls(provenance, bodies, segment_bodies, global_body, segs, frozenset(empty))

    def lookup(self, user_id: int) -> tuple[bytes, Source]:
        """(answer body, source) of a user: the model's list, else the user's segment list, else global."""
        body = self._bodies.get(user_id)
        if body is not None:
            return body, "model"
        seg = self._user_segments.get(user_id)
        if seg is not None:
            return self._segment_answers[seg]
        return self._global, "global"

    def __len__(self) -> int:
        return len(self._bodies)

    def memory_bytes(self) -> int:
        """Approximate memory held by the table: dicts, keys and bodies."""
        size = sys.getsizeof(self._bodies) + sys.getsizeof(self._user_segments)
        size += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in self._bodies.items())
        size += sum(sys.getsizeof(k) for k in self._user_segments)  # segment values are cached small ints
        return size

    def describe(self) -> dict[str, object]:
        """Provenance and sizes, JSON-ready (for /healthz and logs)."""
        return {
            "provenance": self.provenance.as_dict(),
            "model_users": len(self._bodies),
            "segment_users": len(self._user_segments),
            "empty_rows": len(self.empty_rows),
        }


def _item_bytes(model: Model) -> list[bytes]:
    """The model's movie ids as bytes; an id outside the contract's id alphabet is an error."""
    for movie in model.items:
        if not isinstance(movie, str) or not is_movie_id(movie):
            raise ValueError(f"model {model.name!r}: movie id {movie!r} is not a contract movie id")
    return [m.encode("ascii") for m in model.items]


def _checked_rows(model: Model, rows: np.ndarray, n: int, n_items: int) -> np.ndarray:
    """`recommend_rows` for `rows`, checked for shape and index range."""
    recs = np.asarray(model.recommend_rows(rows, n=n, exclude_seen=True))
    if recs.ndim != 2 or recs.shape[0] != len(rows) or recs.shape[1] > n:
        raise ValueError(f"model {model.name!r}: recommend_rows gave shape {recs.shape}, expected ({len(rows)}, {n})")
    if recs.size and (recs.min() < -1 or recs.max() >= n_items):
        raise ValueError(f"model {model.name!r}: recommend_rows gave item indices outside -1..{n_items - 1}")
    return recs


def _add_bodies(
    bodies: dict[int, bytes], empty: set[int], users: list[int], recs: np.ndarray, items: list[bytes]
) -> int:
    """Join each row's ids into its body; return how many rows repeated an id (deduplicated here)."""
    ordered = np.sort(recs, axis=1)
    repeats = ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)
    for user, row, rep in zip(users, recs.tolist(), repeats.tolist(), strict=True):
        ids = [i for i in row if i >= 0]
        if rep:
            ids = list(dict.fromkeys(ids))
        if ids:
            bodies[user] = b",".join([items[i] for i in ids])
        else:
            empty.add(user)
    return int(repeats.sum())


def _fallback_body(model: Model, segment: int, n: int) -> bytes:
    """The body of a fallback list: its first n distinct valid ids (empty if none)."""
    ids: list[str] = []
    for movie in model.fallback(segment):
        if not isinstance(movie, str) or not is_movie_id(movie):
            raise ValueError(
                f"model {model.name!r}: fallback({segment}) has movie id {movie!r}, not a contract movie id"
            )
        if movie not in ids:
            ids.append(movie)
        if len(ids) == n:
            break
    return ",".join(ids).encode("ascii")


def answer_table(trained: Trained, store: EventStore | None = None) -> AnswerTable:
    """Precompute every answer of a trained model; users the store knows get their segment's fallback."""
    segments = store.user_segments() if store is not None else {}
    return AnswerTable.build(trained.model, trained.provenance, segments)
