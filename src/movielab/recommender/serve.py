"""The recommendation service: `GET /recommend/<userid>` from a precomputed `AnswerTable`, swappable live.

Routes: `/recommend/<userid>` (text/plain ids, the contract), `/healthz` (JSON provenance), `/metrics`
(Prometheus). Every answer carries the header

    X-Model: <model>/<version>; snapshot=<snapshot id>; code=<code version>; source=<model|segment|global>

The hot path is a raw ASGI endpoint that a small middleware calls before Starlette's router (the router
costs ~20 us a request): parse the id, one dict look-up, send prebuilt bytes. No I/O, no thread pool.

Provenance of every answer is recoverable without an INFO line per request: the header tells the caller;
`create_app` and `swap` log the table's provenance at INFO (so the log says which table served when);
`recommend_requests_total{source}` and `model_info` say where answers came from; each answer is logged at
DEBUG (user, source, provenance) for when that detail is wanted.
"""

from __future__ import annotations

import logging
import threading
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from movielab.recommender.answers import AnswerTable
from movielab.recommender.metrics import CONTENT_TYPE, ServeMetrics

logger = logging.getLogger(__name__)

MAX_USER_ID_DIGITS = 18  # every such id fits a signed 64-bit integer
_TEXT = b"text/plain; charset=utf-8"
PREFIX = "/recommend/"


class BadUserId(ValueError):
    """A `/recommend/<userid>` path segment that is not a user id; names the id and the reason."""

    def __init__(self, user_id: str, reason: str) -> None:
        self.user_id = user_id
        self.reason = reason
        shown = repr(user_id if len(user_id) <= 40 else user_id[:40] + "...")
        super().__init__(f"user id {shown} {reason}")


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


class RecommendEndpoint:
    """ASGI endpoint of `/recommend/<userid>`: the answer of `app.state.table`, read once per request."""

    def __init__(self, app: Starlette, metrics: ServeMetrics | None) -> None:
        self.state = app.state
        self.metrics = metrics

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
        table: AnswerTable = self.state.table  # one read: body and header come from the same table
        body, source = table.lookup(user_id)
        await _send(send, 200, body, [(b"x-model", table.headers[source])])
        logger.debug("recommend user=%d source=%s %s", user_id, source, table.provenance)
        m = self.metrics
        if m is not None:
            m.requests[source].inc()
            if source != "model":
                m.fallbacks["empty_row" if user_id in table.empty_rows else "unknown_user"].inc()
            m.latency.observe(time.perf_counter() - start)


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


def create_app(table: AnswerTable, instrument: bool = True) -> Starlette:
    """The service over `table`; `instrument=False` leaves out the /metrics bookkeeping (for benchmarks)."""
    metrics = ServeMetrics() if instrument else None

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **request.app.state.table.describe()})

    async def metrics_page(request: Request) -> Response:
        if metrics is None:
            return PlainTextResponse("metrics are off in this app", status_code=404)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def internal_error(request: Request, exc: Exception) -> PlainTextResponse:
        logger.error("%s %s failed: %r", request.method, request.url.path, exc)
        return PlainTextResponse(f"internal error serving {request.method} {request.url.path}: "
                                 f"{type(exc).__name__}", status_code=500)  # fmt: skip

    app = Starlette(exception_handlers={Exception: internal_error})
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
    app.state.table = table
    if metrics is not None:
        metrics.set_model(table.provenance)
    logger.info("serving answer table %s", table.describe())
    return app


def swap(app: Starlette, table: AnswerTable) -> AnswerTable:
    """Serve `table` from now on and return the previous one; requests in flight finish on the table they read."""
    if not isinstance(table, AnswerTable):
        raise TypeError(f"swap needs an AnswerTable, got {type(table).__name__}")
    with app.state.swap_lock:
        old: AnswerTable = app.state.table
        app.state.table = table  # one reference assignment: atomic for every reader
        metrics: ServeMetrics | None = app.state.metrics
        if metrics is not None:
            metrics.set_model(table.provenance)
            metrics.swaps.inc()
    logger.info("swapped answer table: now %s (was %s)", table.describe(), old.provenance.as_dict())
    return old
