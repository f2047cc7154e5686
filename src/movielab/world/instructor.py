"""The instructor app: what only the course staff may read (the hidden scenario manifest), on its own
loopback port, every route behind a bearer token (`movielab.auth.RequireToken`, token file mode 0600).

    GET /manifest        the manifest as JSON lines (application/x-ndjson)
    GET /announcements   what teams were told (the same list the world API serves publicly)

`extra_routes` adds routes (e.g. scores) under the same token.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from movielab.auth import RequireToken, Tokens
from movielab.world.manifest import Manifest


def create_instructor_app(
    manifest: Manifest, tokens: Tokens, *, announcements: list | None = None, extra_routes: Sequence[BaseRoute] = ()
) -> RequireToken:
    """The instructor's ASGI app over a live `manifest`; every request needs a token of `tokens`."""

    async def get_manifest(_request: Request) -> Response:
        lines = manifest.lines()
        body = ("\n".join(lines) + "\n" if lines else "").encode()
        return Response(body, media_type="application/x-ndjson")

    async def get_announcements(_request: Request) -> Response:
        return JSONResponse(list(announcements or []))

    routes = [
        Route("/manifest", get_manifest, methods=["GET"]),
        Route("/announcements", get_announcements, methods=["GET"]),
        *extra_routes,
    ]
    return RequireToken(Starlette(routes=routes), tokens)
