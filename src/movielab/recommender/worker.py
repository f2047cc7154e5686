"""A background thread of the ingest path that is woken for work, can be drained, and stops cleanly."""

from __future__ import annotations

import threading

from movielab.recommender.worldapi import WorldApi


class ApiWorker(threading.Thread):
    """A daemon thread that asks the world API off the ingest path (user records, cold-start lists).

    Subclasses set `_idle` when nothing is queued, clear it when work arrives, set `_wake` to wake the
    loop in `run`, and leave it when `_stopping` is set. `stop` closes the API client.
    """

    def __init__(self, name: str, api: WorldApi) -> None:
        super().__init__(name=name, daemon=True)
        self.api = api
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._stopping = threading.Event()

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
