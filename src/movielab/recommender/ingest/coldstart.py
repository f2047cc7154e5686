"""Cold start from self-descriptions: a new user's first list from their free-text likes and dislikes.

The 2026 edition's user records carry answers to "what movies do you like / not like". They are
written the way people write: titles with typos, without their year or article, in lower case,
joined by "and" and commas, mixed with genre names and vague phrases. `matching.LexicalMatcher` finds the
catalog's titles and genre names in such a text; `blend` turns the matches into a list:
liked titles first, then the demographic fallback (segment popularity) re-ordered by liked and
disliked genres, disliked titles left out. `ColdStartWorker` runs it on the ingest path: the ingestor
offers it the ids of `create_account` lines, it fetches those records from the world API, stores them,
builds the lists and stores them too (`EventStore.save_coldstart`); `take()` hands the new lists to
whoever serves them (the serving overlay in `serving.state.set_coldstart`).

A list names its matcher (`matcher`, e.g. `lexical-v1`) and its fallback (`segment:<n>`, `global`),
which the served answer's `X-Model` header carries as its provenance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np

from movielab.contract import MAX_RECOMMENDATIONS
from movielab.recommender.errors import StoreError, WorldApiUnavailable
from movielab.recommender.ingest.matching import LexicalMatcher, Matcher, Preferences
from movielab.recommender.ingest.worker import ApiWorker
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import UserInfo, segment_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlendWeights:
    """How a list is blended (scores add up; the fallback's rank gives 1 at the top, falling to 0)."""

    liked_title: float = 3.0  # a named liked title goes first: it is a movie the user wants and has not seen
    liked_genre: float = 0.5  # per liked genre of a fallback movie
    disliked_genre: float = 0.7  # per disliked genre of a fallback movie (subtracted)


def blend(
    prefs: Preferences,
    fallback: Sequence[str],
    genres_of: Mapping[str, Sequence[str]],
    n: int = MAX_RECOMMENDATIONS,
    weights: BlendWeights = BlendWeights(),
) -> list[str]:
    """Up to `n` distinct movie ids: liked titles, then `fallback` re-ordered by genre leanings; disliked
    titles never. `genres_of` maps a movie id to its genre names (movies it lacks have none)."""
    if n < 1:
        raise ValueError(f"blend: n={n}, expected at least 1")
    banned = set(prefs.disliked)
    like_g, dislike_g = set(prefs.liked_genres), set(prefs.disliked_genres)
    scores: dict[str, float] = {}
    m = max(len(fallback), 1)
    for rank, movie in enumerate(fallback):
        if movie in banned or movie in scores:
            continue
        g = set(genres_of.get(movie, ()))
        scores[movie] = (
            1.0 - rank / m + weights.liked_genre * len(g & like_g) - weights.disliked_genre * len(g & dislike_g)
        )
    for i, movie in enumerate(prefs.liked):  # in the order named
        if movie not in banned:
            scores[movie] = scores.get(movie, 0.0) + weights.liked_title - 1e-3 * i
    return [k for k, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:n]]


@dataclass(frozen=True)
class ColdStartList:
    """A new user's first list and what made it (stored with `EventStore.save_coldstart`)."""

    user_id: int
    movies: tuple[str, ...]
    liked: tuple[str, ...]
    disliked: tuple[str, ...]
    genres: tuple[str, ...]  # liked genres, then "-" + each disliked one
    matcher: str  # e.g. lexical-v1; "none" when the record had no self-description
    fallback: str  # segment:<n> or global


class ColdStart:
    """Builds cold-start lists from user records, given a matcher and the demographic fallback lists."""

    def __init__(
        self,
        matcher: Matcher,
        fallback: Mapping[int, Sequence[str]],
        genres_of: Mapping[str, Sequence[str]],
        n: int = MAX_RECOMMENDATIONS,
        weights: BlendWeights = BlendWeights(),
    ) -> None:
        if not fallback.get(-1):
            raise ValueError("ColdStart: the global fallback list (segment -1) is missing or empty")
        self.matcher = matcher
        self.fallback = fallback
        self.genres_of = genres_of
        self.n = n
        self.weights = weights

    @classmethod
    def from_store(
        cls, store: EventStore, matcher: Matcher | None = None, since: datetime | None = None, **options
    ) -> ColdStart:
        """From the stored movie records (lexical matcher by default) and segment popularity since `since`."""
        movies = store.movie_records()
        fallback = store.segment_popularity(since)
        order = {m: i for i, m in enumerate(fallback.get(-1, []))}
        movies.sort(key=lambda m: (order.get(m.movie_id, len(order)), m.movie_id))  # popular first: ties go to them
        return cls(matcher or LexicalMatcher(movies), fallback, {m.movie_id: m.genres for m in movies}, **options)

    def build(self, user: UserInfo) -> ColdStartList:
        """The user's list: from the self-description when there is one, else the demographic fallback alone."""
        seg = int(
            segment_of(
                np.array([user.age if user.age is not None else -1]),
                np.array([{"F": 0, "M": 1}.get(user.gender or "", -1)]),
            )[0]
        )
        own = self.fallback.get(seg) if seg >= 0 else None
        base = own or self.fallback[-1]
        source = f"segment:{seg}" if own else "global"
        described = user.likes is not None or user.dislikes is not None
        prefs = self.matcher.preferences(user.likes, user.dislikes) if described else Preferences()
        movies = blend(prefs, base, self.genres_of, self.n, self.weights)
        return ColdStartList(
            user.user_id,
            tuple(movies),
            prefs.liked,
            prefs.disliked,
            prefs.liked_genres + tuple("-" + g for g in prefs.disliked_genres),
            self.matcher.name if described else "none",
            source,
        )


class ColdStartWorker(ApiWorker):
    """On the ingest path: for each new account offered, fetch its record, build and store its first list.

    The cold-start model (matcher and fallback lists) is rebuilt from the store every `rebuild_every`
    seconds; records the API does not know yet are asked again after `retry_after` seconds. `take()`
    returns the lists built since the last call (to push to serving). Counters: `built`, `failed`, `seconds`.
    Accounts still queued at `stop` are dropped from memory: their users get the fallback.
    """

    def __init__(
        self,
        store: EventStore,
        api: WorldApi,
        *,
        matcher_factory=None,
        rebuild_every: float = 600.0,
        window: timedelta = timedelta(days=7),
        retry_after: float = 30.0,
    ) -> None:
        super().__init__("ingest-coldstart", api)
        self.store = store
        self.matcher_factory = matcher_factory  # movies → Matcher; None: LexicalMatcher
        self.rebuild_every = rebuild_every
        self.window = window
        self.retry_after = retry_after
        self.built = 0
        self.failed = 0
        self.seconds = 0.0  # time spent fetching, matching and storing
        self._model: ColdStart | None = None
        self._model_at = -float("inf")
        self._lock = threading.Lock()
        self._pending: list[int] = []
        self._ready: list[ColdStartList] = []

    def offer(self, user_ids: Iterable[int]) -> None:
        """Queue new accounts (ids of `create_account` lines)."""
        ids = [int(u) for u in user_ids]
        if ids:
            with self._lock:
                self._pending.extend(ids)
                self._idle.clear()
            self._wake.set()

    def take(self) -> list[ColdStartList]:
        """The lists built since the last call."""
        with self._lock:
            ready, self._ready = self._ready, []
        return ready

    def run(self) -> None:
        """Handle queued accounts until stopped; API or store trouble is logged and retried."""
        while not self._stopping.is_set():
            with self._lock:
                self._pending.extend(self._due())
                ids, self._pending = self._pending, []
                if not ids:
                    self._idle.set()
                    self._wake.clear()
            if not ids:
                self._wake.wait(1.0)
                continue
            try:
                self.handle(ids)
            except (WorldApiUnavailable, StoreError, duckdb.Error, ValueError) as exc:
                self.failed += len(ids)
                logger.warning(
                    "cold-start lists of %d new account(s) not built now (retrying in %.0f s): %s",
                    len(ids),
                    self.retry_after,
                    exc,
                )
                with self._lock:
                    self._retry_later(ids)

    def handle(self, user_ids: Sequence[int]) -> list[ColdStartList]:
        """Fetch, build and store the lists of `user_ids` now; returns them (unknown users are retried later)."""
        t = time.perf_counter()
        model = self.model()
        known, unknown = self.api.users(user_ids, fresh=True)
        self.store.refresh_records(users=known.values())
        lists = [model.build(u) for u in known.values()]
        self.store.save_coldstart(lists)
        self.seconds += time.perf_counter() - t
        self.built += len(lists)
        with self._lock:
            self._ready.extend(lists)
            self._retry_later(unknown)
        return lists

    def model(self) -> ColdStart:
        """The current cold-start model, rebuilt from the store when older than `rebuild_every` seconds."""
        now = time.monotonic()
        if self._model is None or now - self._model_at >= self.rebuild_every:
            since = datetime.now(UTC).replace(tzinfo=None) - self.window
            latest = self.store.read("SELECT max(time) FROM events")[0][0]
            if latest is not None:  # stream time, not wall time: a replayed or simulated stream is in its own past
                since = latest - self.window
            matcher = None
            if self.matcher_factory is not None:
                matcher = self.matcher_factory(self.store.movie_records())
            self._model = ColdStart.from_store(self.store, matcher, since)
            self._model_at = now
        return self._model
