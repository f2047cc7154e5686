"""The recommendation service's public app and its hot path: `GET /recommend/<userid>` from precomputed answer
tables, `/healthz` and `/metrics`.

Routes: `/recommend/<userid>` (text/plain ids, the contract), `/healthz` (JSON provenance), `/metrics`
(Prometheus). What is served (champion, optional challenger, share, salt) and the live operations on it are in
`serving.state`; the admin and explain routes (`/admin/...`, `/explain/<userid>`) are a separate app on their
own listener (`serving.admin`); version folders load in `serving.versions`. Every answer carries the header

    X-Model: <model>/<version>; snapshot=<snapshot id>; code=<code version>; source=<model|segment|global|coldstart>; arm=<champion|challenger>

A replica behind nginx can be drained without touching nginx: `POST /admin/load` with `"drain": true`
makes `/recommend` answer 503 (`Retry-After: 1`) while the new table is built, and nginx, which treats a 503
as a failed try (`proxy_next_upstream ... http_503`), passes the request to another replica and leaves this
one out for its `fail_timeout`. No nginx reload, so no client connection is closed (see `movielab.recommender.serving.nginx`).

A user goes to the challenger iff `traffic.in_challenger(user, salt, share)`: sticky per user, and raising the
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

import logging
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from movielab.recommender.errors import BadUserId
from movielab.recommender.serving import traffic
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.metrics import CONTENT_TYPE, ServeMetrics
from movielab.recommender.serving.state import Arm, Serving

logger = logging.getLogger(__name__)

MAX_USER_ID_DIGITS = 18  # every such id fits a signed 64-bit integer
_TEXT = b"text/plain; charset=utf-8"
PREFIX = "/recommend/"


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
        if s.threshold and traffic.bucket(user_id, s.salt) < s.threshold:
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
def create_app(
    table: AnswerTable, instrument: bool = True, *, folder: str | Path | None = None, manifest: dict | None = None
) -> Starlette:
    """The public service with `table` as champion (from `folder`/`manifest` if known): `/recommend/<user>`,
    `/healthz`, `/metrics` and nothing else; `instrument=False` leaves out the /metrics bookkeeping (for
    benchmarks). The admin and explain routes are a separate app on its own listener (`create_admin_app`)."""
    metrics = ServeMetrics() if instrument else None

    async def healthz(request: Request) -> JSONResponse:
        # What a caller may know (the X-Model header tells as much): no folders, salts or challenger.
        s: Serving = request.app.state.serving
        return JSONResponse(
            {"status": "ok", "provenance": s.champion.table.provenance.as_dict(), "draining": s.draining is not None}
        )

    async def metrics_page(request: Request) -> Response:
        if metrics is None:
            return PlainTextResponse("metrics are off in this app", status_code=404)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app = Starlette(exception_handlers={Exception: internal_error})
    recommend = RecommendEndpoint(app, metrics)
    app.router.routes.extend(
        [
            Route(PREFIX + "{userid:path}", recommend, methods=["GET"]),  # the fast path's twin: 405s, docs
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ]
    )
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


async def internal_error(request: Request, exc: Exception) -> PlainTextResponse:
    logger.error("%s %s failed: %r", request.method, request.url.path, exc)
    return PlainTextResponse(
        f"internal error serving {request.method} {request.url.path}: {type(exc).__name__}", status_code=500
    )
