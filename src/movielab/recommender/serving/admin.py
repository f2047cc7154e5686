"""The admin and explain routes of a serving replica: a separate app on its own loopback listener, behind a token.

`GET /admin/state`, `POST /admin/load|share|promote|drop` (JSON) and `GET /explain/<user>`. Bad input is a 4xx
naming the field and the reason, never a 500; folders must resolve inside the artifacts root; requests that
came through nginx (`PROXY_HEADER`) are refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from movielab.auth import RequireToken, Tokens, identity_of
from movielab.recommender.errors import BadUserId, NoChallenger
from movielab.recommender.serving.app import internal_error, parse_user_id
from movielab.recommender.serving.state import (
    MAX_SALT,
    drain,
    drop_challenger,
    promote,
    serving,
    set_challenger,
    set_coldstart,
    set_share,
    swap,
)
from movielab.recommender.serving.versions import load_version

logger = logging.getLogger(__name__)

# nginx sets this on every request it forwards; admin routes refuse such requests (defence in depth: the
# generated nginx config does not forward /admin at all).
PROXY_HEADER = "x-movielab-proxy"
ADMIN_POST = ("/admin/load", "/admin/share", "/admin/promote", "/admin/drop", "/admin/coldstart")
MAX_BODY = 16_384  # bytes of an admin request body
MAX_COLDSTART_LISTS = 500  # cold-start lists per `POST /admin/coldstart`
MAX_COLDSTART_BODY = 1_048_576  # bytes of that request (500 lists of 20 long ids)
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


class ColdStartEntry(_Body):
    """One new user's cold-start list, as the operator's ingest path made it (`ingest.coldstart.ColdStartList`)."""

    user_id: int = Field(ge=0, le=2**63 - 1)
    movies: list[str] = Field(min_length=1, max_length=100)
    matcher: str = Field(min_length=1, max_length=64)
    fallback: str = Field(min_length=1, max_length=64)


class ColdStartBody(_Body):
    """`POST /admin/coldstart`: up to 500 lists, served to users the model does not know (`state.set_coldstart`)."""

    lists: list[ColdStartEntry] = Field(min_length=1, max_length=MAX_COLDSTART_LISTS)


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
    admin = Starlette(exception_handlers={Exception: internal_error})
    admin.state.public = app
    admin.state.roots = tuple(Path(r).resolve() for r in roots)
    admin.router.routes.extend(
        [
            Route("/explain/{userid:path}", _explain, methods=["GET"]),
            Route("/admin/state", _admin_state, methods=["GET"]),
            Route("/admin/load", _admin_load, methods=["POST"]),
            Route("/admin/share", _admin_share, methods=["POST"]),
            Route("/admin/promote", _admin_promote, methods=["POST"]),
            Route("/admin/drop", _admin_drop, methods=["POST"]),
            Route("/admin/coldstart", _admin_coldstart, methods=["POST"]),
            Route("/admin/{rest:path}", _admin_unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )
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


async def _body(request: Request, model: type[_Body], limit: int = MAX_BODY) -> _Body:
    """The request body checked against `model` (an empty body is `{}`); 413 when over `limit` bytes, 400 naming
    the fields and reasons (never the values) otherwise."""
    raw = await request.body()
    if len(raw) > limit:
        raise _AdminError(413, f"request body has {len(raw)} bytes, at most {limit}")
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:5]
        )
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
        raise _AdminError(
            400,
            f"cannot load that version as {body.arm}: its files are missing or invalid "
            "(the reason is in the replica's log); the previous one keeps serving",
        ) from None
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
async def _admin_coldstart(request: Request) -> dict:
    """Serve new users' cold-start lists on this replica (the operator pushes what its ingest path made)."""
    body: ColdStartBody = await _body(request, ColdStartBody, MAX_COLDSTART_BODY)  # type: ignore[assignment]
    app = _public(request)
    try:
        n = set_coldstart(app, body.lists)
    except ValueError as exc:
        raise _AdminError(400, str(exc)) from None
    logger.info("admin coldstart: %d lists by %s", n, identity_of(request))
    return {"set": n, "coldstart_users": len(app.state.coldstart)}


@_admin
async def _admin_unknown(request: Request) -> dict:
    path = request.url.path
    if path in ADMIN_POST:
        raise _AdminError(405, f"{request.method} {path}: use POST")
    if path == "/admin/state":
        raise _AdminError(405, f"{request.method} {path}: use GET")
    raise _AdminError(
        404,
        "no such admin endpoint; there are GET /admin/state, POST /admin/load, /admin/share, "
        "/admin/promote, /admin/drop",
    )


async def _explain(request: Request) -> JSONResponse:
    """Why a user gets their answer: arm, source, bucket, provenance, the version's manifest."""
    try:
        user_id = parse_user_id(request.path_params["userid"])
    except BadUserId as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    from movielab.recommender.serving.explain import explain_user  # the registry and the store load only when asked

    return JSONResponse(explain_user(serving(_public(request)), user_id))
