"""The placeholder service a team starts from: 20 random movies among those seen on the stream.

It follows the team's topic to learn which movie ids exist (it knows nothing else), and answers
503 until it has seen one. To be replaced by the real recommender.
"""

from __future__ import annotations

import logging
import random
import threading

from confluent_kafka import Consumer, KafkaError
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from movielab.contract import MalformedEvent, RateEvent, WatchEvent, parse_line
from movielab.kafka.consumer import consumer_config

logger = logging.getLogger(__name__)


class SeenMovies:
    """Movie ids seen so far (thread-safe append, lock-free reads of a list)."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._set: set[str] = set()
        self._lock = threading.Lock()

    def add(self, movie_id: str) -> None:
        """Remember a movie id."""
        if movie_id not in self._set:
            with self._lock:
                if movie_id not in self._set:
                    self._set.add(movie_id)
                    self._ids.append(movie_id)

    def sample(self, k: int, rng: random.Random) -> list[str]:
        """Up to k distinct random ids."""
        ids = self._ids
        return rng.sample(ids, min(k, len(ids)))

    def __len__(self) -> int:
        return len(self._ids)


class StreamFollower(threading.Thread):
    """Consumes the topic(s) and feeds movie ids of watch and rate lines into `SeenMovies`."""

    def __init__(self, bootstrap: str, topics: list[str], seen: SeenMovies, group_id: str = "placeholder") -> None:
        super().__init__(name="placeholder-follower", daemon=True)
        self.seen = seen
        self.malformed = 0
        self._stop_event = threading.Event()
        self.assigned = threading.Event()  # set once the group gave this consumer its partitions
        self._consumer = Consumer(consumer_config(bootstrap, group_id, **{"enable.auto.commit": True}))
        self._consumer.subscribe(topics, on_assign=lambda consumer, partitions: self.assigned.set())

    def run(self) -> None:
        """Poll until stopped."""
        try:
            while not self._stop_event.is_set():
                for msg in self._consumer.consume(num_messages=10_000, timeout=0.2):
                    if msg.error() is not None:
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            logger.warning("placeholder consumer: %s", msg.error())
                        continue
                    try:
                        ev = parse_line(msg.value())
                    except MalformedEvent:
                        self.malformed += 1
                        continue
                    if isinstance(ev, WatchEvent | RateEvent):
                        self.seen.add(ev.movie_id)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        """Stop polling and close the consumer."""
        self._stop_event.set()
        self.join(timeout=10)


def create_app(seen: SeenMovies, seed: int = 0, n: int = 20) -> FastAPI:
    """`GET /recommend/<user>` → n random seen movie ids, comma-joined."""
    app = FastAPI(title="movielab placeholder recommender", docs_url=None, redoc_url=None)
    rng = random.Random(seed)

    @app.get("/recommend/{user_id}", response_class=PlainTextResponse)
    async def recommend(user_id: str) -> PlainTextResponse:
        if not user_id.isascii() or not user_id.isdigit() or user_id.startswith("0"):
            return PlainTextResponse(f"user id {user_id[:40]!r} is not a positive integer", status_code=400)
        if not len(seen):
            return PlainTextResponse("no movie seen on the stream yet", status_code=503)
        return PlainTextResponse(",".join(seen.sample(n, rng)))

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    return app
