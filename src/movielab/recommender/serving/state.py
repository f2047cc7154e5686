"""What a serving process serves: the champion and optional challenger `Arm`s, the challenger's share and salt,
and the operations that replace that state live (swap, challenger, share, promote, drop, drain, cold-start lists).

The state is one immutable `Serving` object on `app.state.serving`, replaced by a single assignment under a
lock, so a request reads it once and the body and the header of an answer always come from one configuration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from starlette.applications import Starlette

from movielab.contract import MAX_RECOMMENDATIONS, is_movie_id
from movielab.recommender.errors import NoChallenger
from movielab.recommender.serving import traffic
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.metrics import ServeMetrics

logger = logging.getLogger(__name__)

MAX_SALT = 2**63 - 1
_PROVENANCE_TOKEN = re.compile(r"[A-Za-z0-9._:+@-]{1,64}")


@dataclass(frozen=True)
class Arm:
    """One served version: its answer table, the folder and manifest it came from, its X-Model headers."""

    name: str  # "champion" or "challenger"
    table: AnswerTable
    folder: str | None = None
    manifest: dict | None = None
    headers: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, table: AnswerTable, folder: str | Path | None = None, manifest: dict | None = None) -> Arm:
        """The arm `name` serving `table`, with its headers prebuilt (the table's plus `; arm=<name>`)."""
        if not isinstance(table, AnswerTable):
            raise TypeError(f"the {name} needs an AnswerTable, got {type(table).__name__}")
        headers = {s: h + b"; arm=" + name.encode("ascii") for s, h in table.headers.items()}
        return cls(name, table, None if folder is None else str(folder), manifest, headers)

    def renamed(self, name: str) -> Arm:
        """The same version serving as arm `name` (a promoted challenger becomes the champion)."""
        return Arm.of(name, self.table, self.folder, self.manifest)

    def describe(self) -> dict[str, object]:
        """The table's provenance and sizes plus the folder it was loaded from, JSON-ready."""
        return {**self.table.describe(), "folder": self.folder}


@dataclass(frozen=True)
class Serving:
    """The served configuration: champion, optional challenger, its share and salt; replaced, never changed."""

    champion: Arm
    challenger: Arm | None = None
    share: float = 0.0
    salt: int = 0
    threshold: int = 0  # traffic.threshold(share) when a challenger is loaded, else 0 (hot path: no hashing)
    draining: bytes | None = None  # while set, /recommend answers 503 with this body (see `drain`)

    def __post_init__(self) -> None:
        if self.challenger is None and self.share != 0.0:
            raise NoChallenger(f"no challenger is loaded, so its share must stay 0, not {self.share}")
        if not isinstance(self.salt, int) or isinstance(self.salt, bool) or not 0 <= self.salt <= MAX_SALT:
            raise ValueError(f"salt {self.salt!r} must be an integer in 0..{MAX_SALT}")
        object.__setattr__(self, "threshold", traffic.threshold(self.share) if self.challenger is not None else 0)

    def route(self, user_id: int) -> Arm:
        """The arm that answers `user_id`."""
        if self.threshold and traffic.bucket(user_id, self.salt) < self.threshold:
            return self.challenger  # type: ignore[return-value]  # threshold > 0 only with a challenger
        return self.champion

    def describe(self) -> dict[str, object]:
        """Champion, challenger, share and salt, JSON-ready (for /admin/state and logs)."""
        return {
            "champion": self.champion.describe(),
            "challenger": None if self.challenger is None else self.challenger.describe(),
            "share": self.share,
            "salt": self.salt,
            "draining": self.draining is not None,
        }


def set_coldstart(app: Starlette, lists: Iterable) -> int:
    """Serve cold-start lists (`ingest.coldstart.ColdStartList`s) to users the model does not know, in either arm,
    until a version knows them; a list's matcher and fallback join the `X-Model` header. Returns how many
    were set; a list with a movie id outside the contract or an unsafe matcher name raises ValueError."""
    staged = {}
    for c in lists:
        ids = [m for m in c.movies[:MAX_RECOMMENDATIONS] if is_movie_id(m)]
        if len(ids) != len(c.movies[:MAX_RECOMMENDATIONS]) or not ids:
            raise ValueError(
                f"cold-start list of user {c.user_id}: {list(c.movies)[:5]} is empty or has an id outside the contract"
            )
        if not (_PROVENANCE_TOKEN.fullmatch(c.matcher) and _PROVENANCE_TOKEN.fullmatch(c.fallback)):
            raise ValueError(
                f"cold-start list of user {c.user_id}: matcher {c.matcher!r} or fallback "
                f"{c.fallback!r} is not a header token"
            )
        staged[int(c.user_id)] = (
            ",".join(dict.fromkeys(ids)).encode("ascii"),
            f"; matcher={c.matcher}; fallback={c.fallback}".encode("ascii"),
        )
    app.state.coldstart.update(staged)  # one dict update: a request sees a user's old list or the new one
    return len(staged)


def prune_coldstart(app: Starlette) -> int:
    """Drop the cold-start lists of users the champion's model now knows (they get its answers); returns how many."""
    table = app.state.serving.champion.table
    overlay = app.state.coldstart
    known = [u for u in list(overlay) if table.lookup(u)[1] == "model"]
    for u in known:
        overlay.pop(u, None)
    return len(known)


def serving(app: Starlette) -> Serving:
    """What `app` serves right now."""
    return app.state.serving


def _replace(app: Starlette, change, swapped: bool) -> tuple[Serving, Serving]:
    """Apply `change(old) -> new Serving` under the lock with one assignment; update metrics; (old, new)."""
    with app.state.swap_lock:
        old: Serving = app.state.serving
        new: Serving = change(old)
        app.state.serving = new  # one reference assignment: atomic for every reader
        metrics: ServeMetrics | None = app.state.metrics
        if metrics is not None:
            ch = None if new.challenger is None else new.challenger.table.provenance
            metrics.set_models(new.champion.table.provenance, ch, new.share)
            if swapped:
                metrics.swaps.inc()
    return old, new


def swap(
    app: Starlette, table: AnswerTable, folder: str | Path | None = None, manifest: dict | None = None
) -> AnswerTable:
    """Serve `table` as champion from now on and return the previous one; requests in flight finish on the
    configuration they read; a challenger, its share and salt stay."""
    arm = Arm.of("champion", table, folder, manifest)
    old, _ = _replace(app, lambda s: replace(s, champion=arm), swapped=True)
    logger.info("swapped champion: now %s (was %s)", table.describe(), old.champion.table.provenance.as_dict())
    return old.champion.table


def set_challenger(
    app: Starlette,
    table: AnswerTable,
    share: float = 0.0,
    salt: int | None = None,
    folder: str | Path | None = None,
    manifest: dict | None = None,
) -> AnswerTable | None:
    """Serve `table` as challenger to `share` of the users (bucketed by `salt`, default: keep the current one);
    return the challenger it replaces, if any."""
    arm = Arm.of("challenger", table, folder, manifest)
    old, new = _replace(
        app, lambda s: replace(s, challenger=arm, share=share, salt=s.salt if salt is None else salt), swapped=True
    )
    logger.info("challenger %s at share %.4f salt %d", table.describe(), new.share, new.salt)
    return None if old.challenger is None else old.challenger.table


def set_share(app: Starlette, share: float, salt: int | None = None) -> Serving:
    """Route `share` (0..1) of the users to the challenger (salt: keep unless given); NoChallenger if none."""
    if not isinstance(share, int | float) or isinstance(share, bool):
        raise TypeError(f"challenger share {share!r} must be a number between 0 and 1")
    traffic.threshold(share)  # the range check, with its message

    def change(s: Serving) -> Serving:
        if s.challenger is None:
            raise NoChallenger("no challenger is loaded: load one before setting its share")
        return replace(s, share=float(share), salt=s.salt if salt is None else salt)

    old, new = _replace(app, change, swapped=False)
    logger.info("challenger share %.4f -> %.4f (salt %d -> %d)", old.share, new.share, old.salt, new.salt)
    return new


def promote(app: Starlette) -> AnswerTable:
    """Make the challenger the champion for every user (share back to 0); return the old champion's table."""

    def change(s: Serving) -> Serving:
        if s.challenger is None:
            raise NoChallenger("no challenger is loaded: nothing to promote")
        return Serving(s.challenger.renamed("champion"), None, 0.0, s.salt)

    old, new = _replace(app, change, swapped=True)
    logger.info(
        "promoted challenger %s to champion (was %s)",
        new.champion.table.provenance.as_dict(),
        old.champion.table.provenance.as_dict(),
    )
    return old.champion.table


def drain(app: Starlette, reason: str | None) -> Serving:
    """Answer `/recommend` with 503 and `reason` from now on (a proxy sends the request to another replica);
    `None` serves again."""
    body = None if reason is None else f"this replica does not answer right now: {reason}".encode()
    old, new = _replace(app, lambda s: replace(s, draining=body), swapped=False)
    if (old.draining is None) != (new.draining is None):
        logger.info("%s", f"draining: {reason}" if reason is not None else "serving again after draining")
    return new


def drop_challenger(app: Starlette) -> AnswerTable:
    """Send every user back to the champion and forget the challenger; return its table."""

    def change(s: Serving) -> Serving:
        if s.challenger is None:
            raise NoChallenger("no challenger is loaded: nothing to drop")
        return Serving(s.champion, None, 0.0, s.salt)

    old, _ = _replace(app, change, swapped=False)
    logger.info("dropped challenger %s", old.challenger.table.provenance.as_dict())  # type: ignore[union-attr]
    return old.challenger.table  # type: ignore[union-attr]
