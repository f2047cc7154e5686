"""User records fetched from the world API for users seen on the stream, and stored records refreshed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import duckdb

from movielab.recommender.errors import StoreError, WorldApiUnavailable
from movielab.recommender.ingest.worker import ApiWorker
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore

logger = logging.getLogger(__name__)


class UserFetcher(ApiWorker):
    """Fetches and stores the records of users seen on the stream, off the ingest path (never blocks it).

    When idle it also refreshes stored records (users and movies) older than `refresh_after` seconds,
    a bulk request at a time, since the world may change a user's or a movie's details; None never refreshes.
    Ids still queued at `stop` are fetched after the next start (the store knows who has no record).
    """

    def __init__(
        self,
        store: EventStore,
        api: WorldApi,
        per_request: int = 200,
        retry_after: float = 30.0,
        refresh_after: float | None = 24 * 3600.0,
        refresh_every: float = 60.0,
    ) -> None:
        super().__init__("ingest-users", api)
        self.store = store
        self.per_request = per_request
        self.retry_after = retry_after
        self.refresh_after = refresh_after
        self.refresh_every = refresh_every
        self.refreshed = 0  # records fetched again and replaced
        self._next_refresh = 0.0
        self.fetched = 0
        self.unknown = 0  # ids the API did not know when asked (asked again later)
        self._lock = threading.Lock()
        self._known: set[int] = set()
        self._pending: set[int] = set()

    def start(self) -> None:
        """Load what the store knows (records, and users still without one), then start fetching."""
        self._known = self.store.user_ids()
        self._pending = self.store.users_without_record()
        super().start()

    def offer(self, user_ids: Iterable[int]) -> None:
        """Queue the ids without a record yet."""
        with self._lock:
            new = set(user_ids) - self._known - self._pending - self._later.keys()
            if new:
                self._pending |= new
                self._idle.clear()
                self._wake.set()

    def run(self) -> None:
        """Fetch queued ids in bulk until stopped; an API outage is waited out, not fatal."""
        delay = 0.5
        while not self._stopping.is_set():
            with self._lock:
                self._pending.update(self._due())
                ids = [self._pending.pop() for _ in range(min(self.per_request, len(self._pending)))]
                if not ids:
                    self._idle.set()
                    self._wake.clear()
            if not ids:
                if not self._refresh():
                    self._wake.wait(1.0)
                continue
            try:
                known, unknown = self.api.users(ids)
                if self._stopping.is_set():  # the store may be closing
                    return
                self.store.add_records(users=known.values())
            except (WorldApiUnavailable, StoreError, duckdb.Error) as exc:
                logger.warning("user records not fetched now (retrying in %.1f s): %s", delay, exc)
                with self._lock:
                    self._pending.update(ids)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            with self._lock:
                self._known.update(known)
                self.fetched += len(known)
                self.unknown += len(unknown)
                self._retry_later(unknown)  # the API may lag behind a new account

    def _refresh(self) -> bool:
        """Fetch again one bulk of records older than `refresh_after`; True if there was anything to refresh."""
        now = time.monotonic()
        if self.refresh_after is None or now < self._next_refresh:
            return False
        before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=self.refresh_after)
        try:
            users = self.store.stale_records("users", before, self.per_request)
            movies = self.store.stale_records("movies", before, self.per_request)
            if not users and not movies:
                self._next_refresh = now + self.refresh_every
                return False
            if len(users) < self.per_request and len(movies) < self.per_request:  # the last bulk of this pass
                self._next_refresh = now + self.refresh_every
            known_users, gone_users = self.api.users(users, fresh=True) if users else ({}, set())
            known_movies, gone_movies = self.api.movies(movies, fresh=True) if movies else ({}, set())
            if self._stopping.is_set():
                return False
            self.store.refresh_records(movies=known_movies.values(), users=known_users.values())
            # Ids the API no longer knows keep their last record (better than none); their fetch time moves
            # on so the oldest-first scan reaches the others, and they are asked again next period.
            self.store.mark_checked("users", gone_users)
            self.store.mark_checked("movies", gone_movies)
        except (WorldApiUnavailable, StoreError, duckdb.Error) as exc:
            logger.warning("records not refreshed now (next try in %.0f s): %s", self.refresh_every, exc)
            self._next_refresh = now + self.refresh_every
            return False
        self.refreshed += len(known_users) + len(known_movies)
        if gone_users or gone_movies:
            logger.warning(
                "the world API no longer knows %d users and %d movies whose records are stored; "
                "their old records are kept, e.g. %s",
                len(gone_users),
                len(gone_movies),
                sorted(map(str, gone_users | gone_movies))[:5],
            )
        return True
