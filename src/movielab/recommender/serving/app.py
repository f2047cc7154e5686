"""The recommendation service: `GET /recommend/<userid>` from precomputed answer tables, a champion and an
optional challenger (canary), swappable live and driven by admin endpoints.

Routes: `/recommend/<userid>` (text/plain ids, the contract), `/healthz` (JSON provenance), `/metrics`
(Prometheus), `/explain/<userid>` (JSON: the answer, its source, arm and provenance, the version's manifest)
and `/admin/...` (JSON; load a version folder, set the challenger's share, promote, drop). Every answer
carries the header

    X-Model: <model>/<version>; snapshot=<snapshot id>; code=<code version>; source=<model|segment|global|coldstart>; arm=<champion|challenger>

A replica behind nginx can be drained without touching nginx: `POST /admin/load` with `"drain": true`
makes `/recommend` answer 503 (`Retry-After: 1`) while the new table is built, and nginx, which treats a 503
as a failed try (`proxy_next_upstream ... http_503`), passes the request to another replica and leaves this
one out for its `fail_timeout`. No nginx reload, so no client connection is closed (see `movielab.recommender.serving.nginx`).

A user goes to the challenger iff `split.in_challenger(user, salt, share)`: sticky per user, and raising the
share keeps the users already in the challenger there.

The hot path is a raw ASGI endpoint that a small middleware calls before Starlette's router (the router
costs ~20 us a request): parse the id, read the serving state once, hash the id when a challenger is on,
one dict look-up, send prebuilt bytes. No I/O, no thread pool. The state is one immutable `Serving` object
replaced by a single assignment, so the body and the header of an answer always come from one configuration.

Provenance of every answer is recoverable without an INFO line per request: the header tells the caller;
every change of the served tables is logged at INFO; `recommend_requests_total{arm,source}` and
`model_info{arm,...}` say where answers came from; each answer is logged at DEBUG for when that detail is wanted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from movielab.auth import RequireToken, Tokens, identity_of
from movielab.contract import MAX_RECOMMENDATIONS, is_movie_id
from movielab.recommender.errors import BadSegments, BadUserId, NoChallenger
from movielab.recommender.serving import traffic as split
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.metrics import CONTENT_TYPE, ServeMetrics
from movielab.recommender.store.records import N_SEGMENTS

logger = logging.getLogger(__name__)

MAX_USER_ID_DIGITS = 18  # every such id fits a signed 64-bit integer
MAX_SALT = 2**63 - 1
_TEXT = b"text/plain; charset=utf-8"
PREFIX = "/recommend/"
# nginx sets this on every request it forwards; admin routes refuse such requests (defence in depth: the
# generated nginx config does not forward /admin at all).
PROXY_HEADER = "x-movielab-proxy"
ADMIN_POST = ("/admin/load", "/admin/share", "/admin/promote", "/admin/drop")
_PROVENANCE_TOKEN = re.compile(r"[A-Za-z0-9._:+@-]{1,64}")
SEGMENT_FILES = ("segments.json", "segments.arrow")  # looked for next to the artifact when none is named


def parse_user_id(text: str) -> int:
    """The user id in `text`: ASCII digits, no sign, no leading zero, 1..18 digits; else `BadUserId`."""
    if 0 < len(text) <= MAX_USER_ID_DIGITS and text.isascii() and text.isdigit() and text[0] != "0":
        return int(text)
    if not text:
        raise BadUserId(text, "is empty")
    if not (text.isascii() and text.isdigit()):
        raise BadUserId(text, "is not a positive integer (ASCII digits only, no sign)")
    if len(text) > MAX_USER_ID_DIGITS:
        raise BadUserId(text, f"has {len(text)} digits, at most {MAX_USER_ID_DIGITS}")
    raise BadUserId(text, "is not positive" if text.strip("0") == "" else "has a leading zero")


# --- what is served ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One served version: its answer table, the folder and manifest it came from, its X-Model headers."""

    name: str  # "champion" or "challenger"
    table: AnswerTable
    folder: str | None = None
    manifest: dict | None = None
    headers: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, table: AnswerTable, folder: str | Path | None = None,
           manifest: dict | None = None) -> Arm:  # fmt: skip
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
    threshold: int = 0  # split.threshold(share) when a challenger is loaded, else 0 (hot path: no hashing)
    draining: bytes | None = None  # while set, /recommend answers 503 with this body (see `drain`)

    def __post_init__(self) -> None:
        if self.challenger is None and self.share != 0.0:
            raise NoChallenger(f"no challenger is loaded, so its share must stay 0, not {self.share}")
        if not isinstance(self.salt, int) or isinstance(self.salt, bool) or not 0 <= self.salt <= MAX_SALT:
            raise ValueError(f"salt {self.salt!r} must be an integer in 0..{MAX_SALT}")
        object.__setattr__(self, "threshold", split.threshold(self.share) if self.challenger is not None else 0)

    def route(self, user_id: int) -> Arm:
        """The arm that answers `user_id`."""
        if self.threshold and split.bucket(user_id, self.salt) < self.threshold:
            return self.challenger  # type: ignore[return-value]  # threshold > 0 only with a challenger
        return self.champion

    def describe(self) -> dict[str, object]:
        """Champion, challenger, share and salt, JSON-ready (for /admin/state and logs)."""
        return {"champion": self.champion.describe(),
                "challenger": None if self.challenger is None else self.challenger.describe(),
                "share": self.share, "salt": self.salt, "draining": self.draining is not None}  # fmt: skip


# --- the hot path --------------------------------------------------------------------------------
class RecommendEndpoint:
    """ASGI endpoint of `/recommend/<userid>`: the answer of the user's arm, the state read once per request."""

    def __init__(self, app: Starlette, metrics: ServeMetrics | None) -> None:
        self.state = app.state
        self.metrics = metrics
        self.coldstart: dict[int, tuple[bytes, bytes]] = {}  # user → (body, "; matcher=…; fallback=…")

    async def __call__(self, scope, receive, send) -> None:
        start = time.perf_counter()
        raw = scope["path_params"]["userid"]
        try:
            user_id = parse_user_id(raw)
        except BadUserId as exc:
            if self.metrics is not None:
                self.metrics.bad_requests.inc()
            await _send(send, 400, str(exc).encode("utf-8"), [])
            return
        s: Serving = self.state.serving  # one read: body and header come from the same configuration
        if s.draining is not None:
            await _send(send, 503, s.draining, [(b"retry-after", b"1")])
            return
        arm = s.champion
        if s.threshold and split.bucket(user_id, s.salt) < s.threshold:
            arm = s.challenger
        body, source = arm.table.lookup(user_id)
        header = arm.headers[source]
        if source != "model":  # a new user the model does not know yet: their cold-start list, if one was made
            cold = self.coldstart.get(user_id)
            if cold is not None:
                body, source = cold[0], "coldstart"
                header = arm.headers[source] + cold[1]
        await _send(send, 200, body, [(b"x-model", header)])
        logger.debug("recommend user=%d arm=%s source=%s %s", user_id, arm.name, source, arm.table.provenance)
        m = self.metrics
        if m is not None:
            m.requests[arm.name][source].inc()
            if source != "model":
                m.fallbacks["empty_row" if user_id in arm.table.empty_rows else "unknown_user"].inc()
            m.latency[arm.name].observe(time.perf_counter() - start)


class RecommendFastPath:
    """ASGI middleware: GET `/recommend/<userid>` straight to its endpoint, past the router (~20 us/request)."""

    def __init__(self, app, endpoint: RecommendEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX) and scope["method"] in ("GET", "HEAD"):
            scope["path_params"] = {"userid": scope["path"][len(PREFIX) :]}
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", _TEXT), (b"content-length", b"%d" % len(body)), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- the app -------------------------------------------------------------------------------------
def create_app(table: AnswerTable, instrument: bool = True, *, folder: str | Path | None = None,
               manifest: dict | None = None) -> Starlette:  # fmt: skip
    """The public service with `table` as champion (from `folder`/`manifest` if known): `/recommend/<user>`,
    `/healthz`, `/metrics` and nothing else; `instrument=False` leaves out the /metrics bookkeeping (for
    benchmarks). The admin and explain routes are a separate app on its own listener (`create_admin_app`)."""
    metrics = ServeMetrics() if instrument else None

    async def healthz(request: Request) -> JSONResponse:
        # What a caller may know (the X-Model header tells as much): no folders, salts or challenger.
        s: Serving = request.app.state.serving
        return JSONResponse({"status": "ok", "provenance": s.champion.table.provenance.as_dict(),
                             "draining": s.draining is not None})  # fmt: skip

    async def metrics_page(request: Request) -> Response:
        if metrics is None:
            return PlainTextResponse("metrics are off in this app", status_code=404)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app = Starlette(exception_handlers={Exception: _internal_error})
    recommend = RecommendEndpoint(app, metrics)
    app.router.routes.extend([
        Route(PREFIX + "{userid:path}", recommend, methods=["GET"]),  # the fast path's twin: 405s, docs
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ])  # fmt: skip
    # Inside the catch-all (ServerErrorMiddleware), in front of the router.
    app.add_middleware(RecommendFastPath, endpoint=recommend)
    app.state.metrics = metrics
    app.state.swap_lock = threading.Lock()
    app.state.loading = None  # the arm an admin load is building, else None (one load at a time)
    app.state.serving = Serving(Arm.of("champion", table, folder, manifest))
    app.state.coldstart = recommend.coldstart
    if metrics is not None:
        metrics.set_models(table.provenance, None, 0.0)
    logger.info("serving answer table %s", table.describe())
    return app


async def _internal_error(request: Request, exc: Exception) -> PlainTextResponse:
    logger.error("%s %s failed: %r", request.method, request.url.path, exc)
    return PlainTextResponse(f"internal error serving {request.method} {request.url.path}: "
                             f"{type(exc).__name__}", status_code=500)  # fmt: skip


def set_coldstart(app: Starlette, lists: Iterable) -> int:
    """Serve cold-start lists (`coldstart.ColdStartList`s) to users the model does not know, in either arm,
    until a version knows them; a list's matcher and fallback join the `X-Model` header. Returns how many
    were set; a list with a movie id outside the contract or an unsafe matcher name raises ValueError."""
    staged = {}
    for c in lists:
        ids = [m for m in c.movies[:MAX_RECOMMENDATIONS] if is_movie_id(m)]
        if len(ids) != len(c.movies[:MAX_RECOMMENDATIONS]) or not ids:
            raise ValueError(f"cold-start list of user {c.user_id}: {list(c.movies)[:5]} is empty or has an id "
                             "outside the contract")  # fmt: skip
        if not (_PROVENANCE_TOKEN.fullmatch(c.matcher) and _PROVENANCE_TOKEN.fullmatch(c.fallback)):
            raise ValueError(f"cold-start list of user {c.user_id}: matcher {c.matcher!r} or fallback "
                             f"{c.fallback!r} is not a header token")  # fmt: skip
        staged[int(c.user_id)] = (",".join(dict.fromkeys(ids)).encode("ascii"),
                                  f"; matcher={c.matcher}; fallback={c.fallback}".encode("ascii"))  # fmt: skip
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


def swap(app: Starlette, table: AnswerTable, folder: str | Path | None = None,
         manifest: dict | None = None) -> AnswerTable:  # fmt: skip
    """Serve `table` as champion from now on and return the previous one; requests in flight finish on the
    configuration they read; a challenger, its share and salt stay."""
    arm = Arm.of("champion", table, folder, manifest)
    old, _ = _replace(app, lambda s: replace(s, champion=arm), swapped=True)
    logger.info("swapped champion: now %s (was %s)", table.describe(), old.champion.table.provenance.as_dict())
    return old.champion.table


def set_challenger(app: Starlette, table: AnswerTable, share: float = 0.0, salt: int | None = None,
                   folder: str | Path | None = None, manifest: dict | None = None) -> AnswerTable | None:  # fmt: skip
    """Serve `table` as challenger to `share` of the users (bucketed by `salt`, default: keep the current one);
    return the challenger it replaces, if any."""
    arm = Arm.of("challenger", table, folder, manifest)
    old, new = _replace(app, lambda s: replace(s, challenger=arm, share=share, salt=s.salt if salt is None else salt),
                        swapped=True)  # fmt: skip
    logger.info("challenger %s at share %.4f salt %d", table.describe(), new.share, new.salt)
    return None if old.challenger is None else old.challenger.table


def set_share(app: Starlette, share: float, salt: int | None = None) -> Serving:
    """Route `share` (0..1) of the users to the challenger (salt: keep unless given); NoChallenger if none."""
    if not isinstance(share, int | float) or isinstance(share, bool):
        raise TypeError(f"challenger share {share!r} must be a number between 0 and 1")
    split.threshold(share)  # the range check, with its message

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
    logger.info("promoted challenger %s to champion (was %s)", new.champion.table.provenance.as_dict(),
                old.champion.table.provenance.as_dict())  # fmt: skip
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


# --- loading a version folder --------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedVersion:
    """A version folder's answer table, with the folder and its manifest."""

    table: AnswerTable
    folder: Path
    manifest: dict


def load_version(folder: str | Path, segments: str | Path | None = None) -> LoadedVersion:
    """Load a saved version and precompute its answers; segments from `segments`, else from a segments file
    next to the artifact (`segments.json` / `segments.arrow`), else none (unknown users get the global list)."""
    from movielab.recommender.training.pipeline import load  # models and the store's modules load only when asked

    folder = Path(folder)
    trained = load(folder)
    if segments is None:
        segments = next((folder / n for n in SEGMENT_FILES if (folder / n).is_file()), None)
    user_segments = read_segments(segments) if segments is not None else {}
    table = AnswerTable.build(trained.model, trained.provenance, user_segments)
    logger.info("loaded %s from %s (%d segment users from %s)", trained.provenance.header("model"), folder,
                len(user_segments), segments)  # fmt: skip
    return LoadedVersion(table, folder, trained.manifest)


def read_segments(path: str | Path) -> dict[int, int]:
    """User id -> segment (-1..13) from a JSON object `{"<user id>": segment}` or an Arrow IPC file with int
    columns `user_id` and `segment`; BadSegments names the file and the reason."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise BadSegments(f"segments file {path}: expected a JSON object of user id -> segment, "
                                  f"got {type(raw).__name__}")  # fmt: skip
            pairs = list(raw.items())
        elif path.suffix in (".arrow", ".feather"):
            from pyarrow import feather

            t = feather.read_table(path)
            missing = {"user_id", "segment"} - set(t.column_names)
            if missing:
                raise BadSegments(f"segments file {path}: missing column(s) {', '.join(sorted(missing))}")
            pairs = list(zip(t.column("user_id").to_pylist(), t.column("segment").to_pylist(), strict=True))
        else:
            raise BadSegments(f"segments file {path}: unknown format {path.suffix!r}, expected .json or .arrow")
    except (OSError, ValueError) as exc:
        if isinstance(exc, BadSegments):
            raise
        raise BadSegments(f"segments file {path} cannot be read: {exc}") from exc
    out: dict[int, int] = {}
    for user, seg in pairs:
        u = _int_or_none(user)
        if u is None or u < 1:
            raise BadSegments(f"segments file {path}: user id {user!r} is not a positive integer")
        if isinstance(seg, bool) or not isinstance(seg, int) or not -1 <= seg < N_SEGMENTS:
            raise BadSegments(f"segments file {path}: segment {seg!r} of user {u} is not an integer in "
                              f"-1..{N_SEGMENTS - 1}")  # fmt: skip
        out[u] = seg
    return out


def write_segments(path: str | Path, segments: dict[int, int]) -> Path:
    """Write user id -> segment for the replicas, as JSON (`.json`) or an Arrow IPC file (`.arrow`)."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps({str(int(u)): int(s) for u, s in segments.items()}))
    elif path.suffix == ".arrow":
        import pyarrow as pa
        from pyarrow import feather

        table = pa.table({"user_id": pa.array([int(u) for u in segments], pa.int64()),
                          "segment": pa.array([int(s) for s in segments.values()], pa.int16())})  # fmt: skip
        feather.write_feather(table, path)
    else:
        raise ValueError(f"segments file {path}: unknown format {path.suffix!r}, expected .json or .arrow")
    return path


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


# --- admin and explain: a separate app, its own listener, a token (bad input is 4xx, never 500) ----------
MAX_BODY = 16_384  # bytes of an admin request body
MAX_PATH = 1024  # characters of a folder or segments path


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoadBody(_Body):
    """`POST /admin/load`: a version folder (inside the artifacts root) as champion or challenger."""

    folder: str = Field(min_length=1, max_length=MAX_PATH)
    arm: Literal["champion", "challenger"] = "champion"
    segments: str | None = Field(None, min_length=1, max_length=MAX_PATH)
    share: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    salt: int | None = Field(None, ge=0, le=MAX_SALT)
    drain: bool = False


class ShareBody(_Body):
    """`POST /admin/share`: the challenger's share (0..1) and optionally a new salt."""

    share: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    salt: int | None = Field(None, ge=0, le=MAX_SALT)


class EmptyBody(_Body):
    """`POST /admin/promote`, `/admin/drop`: no fields."""


class _AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_admin_app(app: Starlette, tokens: Tokens, root: str | Path | Sequence[str | Path]) -> Starlette:
    """The admin and explain routes over `app`'s serving state, for a listener of their own (loopback):
    `GET /admin/state`, `POST /admin/load|share|promote|drop`, `GET /explain/<user>`; every request needs a
    token of `tokens` (401 otherwise) and folders must resolve inside `root` (the artifacts root; several
    roots, e.g. the artifacts and the registry's download cache, may be given)."""
    roots = [root] if isinstance(root, str | Path) else list(root)
    if not roots:
        raise ValueError("the admin app needs at least one artifacts root")
    admin = Starlette(exception_handlers={Exception: _internal_error})
    admin.state.public = app
    admin.state.roots = tuple(Path(r).resolve() for r in roots)
    admin.router.routes.extend([
        Route("/explain/{userid:path}", _explain, methods=["GET"]),
        Route("/admin/state", _admin_state, methods=["GET"]),
        Route("/admin/load", _admin_load, methods=["POST"]),
        Route("/admin/share", _admin_share, methods=["POST"]),
        Route("/admin/promote", _admin_promote, methods=["POST"]),
        Route("/admin/drop", _admin_drop, methods=["POST"]),
        Route("/admin/{rest:path}", _admin_unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])  # fmt: skip
    admin.add_middleware(RequireToken, tokens=tokens)
    return admin


def _admin(handler):
    """Wrap an admin handler: refuse proxied requests, turn known errors into JSON answers with a status."""

    async def wrapped(request: Request) -> JSONResponse:
        if PROXY_HEADER in request.headers:
            return JSONResponse({"error": "admin endpoints are not served through the proxy"}, status_code=403)
        try:
            return JSONResponse(await handler(request))
        except _AdminError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except NoChallenger as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)

    return wrapped


async def _body(request: Request, model: type[_Body]) -> _Body:
    """The request body checked against `model` (an empty body is `{}`); 413 when too large, 400 naming the
    fields and reasons (never the values) otherwise."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise _AdminError(413, f"request body has {len(raw)} bytes, at most {MAX_BODY}")
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False)[:5])  # fmt: skip
        raise _AdminError(400, f"bad request body: {problems}") from None


def _inside(roots: tuple[Path, ...], given: str, what: str) -> Path:
    """`given` resolved (relative to the first root); 400 unless it lies inside one of `roots`. The answer
    names neither the path nor whether it exists."""
    try:
        path = (roots[0] / given).resolve()
    except (OSError, RuntimeError, ValueError):
        path = None
    if path is None or not any(path.is_relative_to(r) for r in roots):
        raise _AdminError(400, f"{what} must lie inside the artifacts root")
    return path


def _public(request: Request) -> Starlette:
    return request.app.state.public


def _state(app: Starlette) -> dict:
    return {**serving(app).describe(), "loading": app.state.loading}


@_admin
async def _admin_state(request: Request) -> dict:
    return _state(_public(request))


@_admin
async def _admin_load(request: Request) -> dict:
    """Load a version folder as champion or challenger; the table is built in a worker thread, and with
    `"drain": true` the replica answers `/recommend` with 503 until the new table is in."""
    body: LoadBody = await _body(request, LoadBody)  # type: ignore[assignment]
    if body.arm == "champion" and (body.share is not None or body.salt is not None):
        raise _AdminError(400, "share and salt apply to a challenger only")
    roots: tuple[Path, ...] = request.app.state.roots
    folder = _inside(roots, body.folder, "folder")
    segments = None if body.segments is None else _inside(roots, body.segments, "segments")
    try:
        exists = folder.is_dir()
    except OSError:
        exists = False
    if not exists:
        raise _AdminError(404, "no version folder there")
    app = _public(request)
    if app.state.loading is not None:
        raise _AdminError(409, f"a {app.state.loading} load is in progress; retry when it is done")
    who = identity_of(request)
    logger.info("admin load of %s as %s by %s", folder, body.arm, who)
    app.state.loading = body.arm  # set and cleared on the event loop: no other request runs in between
    if body.drain:
        drain(app, f"loading a new {body.arm}")
    try:
        t = time.perf_counter()
        loaded = await asyncio.to_thread(load_version, folder, segments)
        seconds = time.perf_counter() - t
        if body.arm == "champion":
            swap(app, loaded.table, loaded.folder, loaded.manifest)
        else:
            set_challenger(app, loaded.table, body.share or 0.0, body.salt, loaded.folder, loaded.manifest)
    except Exception as exc:  # noqa: BLE001 - any failure: the reason goes to the log, the caller gets no file facts
        logger.warning("admin load of %s as %s by %s failed: %r", folder, body.arm, who, exc)
        raise _AdminError(400, f"cannot load that version as {body.arm}: its files are missing or invalid "
                          "(the reason is in the replica's log); the previous one keeps serving") from None  # fmt: skip
    finally:
        app.state.loading = None
        if body.drain:  # serve again, with the new table or, after a failed load, the old one
            drain(app, None)
    return {**_state(app), "loaded": body.arm, "load_seconds": round(seconds, 3)}


@_admin
async def _admin_share(request: Request) -> dict:
    body: ShareBody = await _body(request, ShareBody)  # type: ignore[assignment]
    set_share(_public(request), body.share, body.salt)
    logger.info("admin share %g by %s", body.share, identity_of(request))
    return _state(_public(request))


@_admin
async def _admin_promote(request: Request) -> dict:
    await _body(request, EmptyBody)
    promote(_public(request))
    logger.info("admin promote by %s", identity_of(request))
    return _state(_public(request))


@_admin
async def _admin_drop(request: Request) -> dict:
    await _body(request, EmptyBody)
    drop_challenger(_public(request))
    logger.info("admin drop by %s", identity_of(request))
    return _state(_public(request))


@_admin
async def _admin_unknown(request: Request) -> dict:
    path = request.url.path
    if path in ADMIN_POST:
        raise _AdminError(405, f"{request.method} {path}: use POST")
    if path == "/admin/state":
        raise _AdminError(405, f"{request.method} {path}: use GET")
    raise _AdminError(404, "no such admin endpoint; there are GET /admin/state, POST /admin/load, /admin/share, "
                      "/admin/promote, /admin/drop")  # fmt: skip


async def _explain(request: Request) -> JSONResponse:
    """Why a user gets their answer: arm, source, bucket, provenance, the version's manifest."""
    try:
        user_id = parse_user_id(request.path_params["userid"])
    except BadUserId as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(explain_user(serving(_public(request)), user_id))


def explain_user(s: Serving, user_id: int) -> dict[str, object]:
    """What the table and the manifest know about the answer `s` gives `user_id`, JSON-ready."""
    arm = s.route(user_id)
    body, source = arm.table.lookup(user_id)
    if source == "model":
        reason = "the model's own list for this user"
    else:
        why = "the model has no movie left for this user" if user_id in arm.table.empty_rows else \
            "the model does not know this user"  # fmt: skip
        reason = f"{why}: the {'segment' if source == 'segment' else 'overall'} popularity list"
    bucket = split.bucket(user_id, s.salt)
    lineage: dict[str, object] = {}
    if arm.folder is not None:  # the version's lineage and the user's training data (movielab.recommender.serving.explain)
        from movielab.recommender.serving import explain

        try:
            lineage["explain"] = explain.explain(user_id, arm.table, arm.folder)
        except (KeyError, OSError, ValueError) as exc:  # a manifest from before lineage fields: say what is missing
            lineage["explain_error"] = f"{type(exc).__name__}: {exc}"
    return {**lineage, "user": user_id, "answer": body.decode("ascii").split(","), "source": source, "reason": reason,
            "arm": arm.name, "bucket": bucket, "threshold": s.threshold, "share": s.share, "salt": s.salt,
            "header": arm.headers[source].decode("ascii"), "provenance": arm.table.provenance.as_dict(),
            "folder": arm.folder, "manifest": arm.manifest}  # fmt: skip
