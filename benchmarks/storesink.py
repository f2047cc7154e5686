"""A world sink that ingests straight into the recommender's event store (benchmark helper).

The lines go through the recommender's own validator (contract parser, movie checks against the world API
over HTTP, duplicates) and `EventStore.append`, in chunks: the ingest path without Kafka, for benchmarks
whose subject is not the broker (benchmarks/ingest.py measures that one).
"""

from __future__ import annotations

from collections.abc import Sequence

from movielab.recommender.ingest.validation import Validator
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore


class StoreSink:
    """Validates and appends world lines to `store` every `chunk` lines (and on `flush`/`close`)."""

    def __init__(self, store: EventStore, api: WorldApi, topic: str = "movielog1", chunk: int = 50_000) -> None:
        self.store, self.api, self.topic, self.chunk = store, api, topic, chunk
        self.validator = Validator(api, store)
        self.offset = 0
        self.pending: list[tuple[str, int, int, bytes]] = []
        self.users: set[int] = set()
        self.stored = 0
        self.quarantined = 0

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Queue the lines; store a chunk when enough are queued."""
        for line in lines:
            self.pending.append((self.topic, 0, self.offset, line.encode()))
            self.offset += 1
        self.users.update(int(k) for k in keys)
        if len(self.pending) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        """Validate and append what is queued."""
        if not self.pending:
            return
        batch = self.validator.check(self.pending)
        appended = self.store.append(batch)
        self.validator.stored(batch)
        self.stored += appended.events
        self.quarantined += appended.quarantined
        self.pending = []

    def close(self) -> None:
        """Store the rest, and every user's record (the demographics the fallback needs)."""
        self.flush()
        ids = sorted(self.users - self.store.user_ids())
        for start in range(0, len(ids), 5000):
            known, _ = self.api.users(ids[start : start + 5000])
            self.store.add_records(users=known.values())
