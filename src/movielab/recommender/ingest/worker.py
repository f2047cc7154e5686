"""A background thread of the ingest path that is woken for work, can be drained, and stops cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from movielab.recommender.ingest.worldapi import WorldApi


class ApiWorker(threading.Thread):
    """A daemon thread that asks the world API off the ingest path (user records, cold-start lists).

    Subclasses set `_idle` when nothing is queued, clear it when work arrives, set `_wake` to wake the
    loop in `run`, and leave it when `_stopping` is set. Ids to ask again after `retry_after` seconds
    wait in `_later`. `stop` closes the API client.
    """

    def __init__(self, name: str, api: WorldApi) -> None:
        super().__init__(name=name, daemon=True)
        self.api = api
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stopping = threading.Event()
        self.retry_after = 30.0  # seconds before an id put off with `_retry_later` is due again
        self._later: dict[int, float] = {}  # id -> when (time.monotonic) to ask again

    def _retry_later(self, ids: Iterable[int]) -> None:
        """Put `ids` off for `retry_after` seconds (call under the subclass's lock)."""
        when = time.monotonic() + self.retry_after
        self._later.update((i, when) for i in ids)

    def _due(self) -> list[int]:
        """The put-off ids whose time has come, taken out of `_later` (call under the subclass's lock)."""
        now = time.monotonic()
        due = [i for i, t in self._later.items() if t <= now]
        for i in due:
            del self._later[i]
        return due

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued was handled once; False on time-out (seconds)."""
        self._wake.set()
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (waiting at most `timeout` seconds for it) and close the API client."""
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)
        self.api.close()
