"""Serving by one in-process server (demo, tests, `--replicas 0`): a `Fleet`'s operations on one app."""

from __future__ import annotations

from pathlib import Path

from movielab.recommender.serving.app import create_app
from movielab.recommender.serving.state import (
    drop_challenger,
    promote,
    prune_coldstart,
    set_challenger,
    set_coldstart,
    set_share,
    swap,
)
from movielab.recommender.serving.versions import load_version
from movielab.webserver import ServerThread


class OneServer:
    """Serving by one in-process server (demo, tests): the same operations as a `Fleet`, on one app."""

    def __init__(self, version: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        loaded = load_version(version)
        self.app = create_app(loaded.table, folder=loaded.folder, manifest=loaded.manifest)
        self.server = ServerThread(self.app, host, port).start()
        self.url = self.server.url
        self.previous: Path | None = None  # the champion before the last rollout or promotion

    @property
    def champion(self) -> Path:
        """The version folder served as champion."""
        return Path(self.app.state.serving.champion.folder)

    def rollout(self, version: Path) -> None:
        """Serve `version` as champion (built first, then swapped in with one assignment)."""
        loaded = load_version(version)
        self.previous = self.champion
        swap(self.app, loaded.table, loaded.folder, loaded.manifest)
        prune_coldstart(self.app)  # users the new version knows no longer need their first list

    def load_challenger(self, version: Path, share: float = 0.0, salt: int = 0) -> None:
        """Serve `version` to `share` of the users, bucketed by `salt`."""
        loaded = load_version(version)
        set_challenger(self.app, loaded.table, share, salt, loaded.folder, loaded.manifest)

    def set_share(self, share: float, salt: int | None = None) -> None:
        """Route `share` of the users to the challenger."""
        set_share(self.app, share, salt)

    def promote(self) -> None:
        """The challenger becomes the champion."""
        self.previous = self.champion
        promote(self.app)

    def rollback(self) -> None:
        """Every user back to the champion."""
        drop_challenger(self.app)

    def set_coldstart(self, lists: list) -> None:
        """Serve new users' cold-start lists (`set_coldstart`)."""
        set_coldstart(self.app, lists)

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()
