"""Stub team services on loopback ports: good, slow past the time-out, garbage, and down."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from movielab.webserver import ServerThread, free_port


def stub_app(behaviour: str, movies: list[str]) -> Starlette:
    """A team service: 'good' answers 20 known ids, 'slow' sleeps past 600 ms, 'garbage' answers junk."""
    answer = ",".join(movies[:20])

    async def recommend(request) -> PlainTextResponse:
        if behaviour == "slow":
            await asyncio.sleep(1.0)
        if behaviour == "garbage":
            return PlainTextResponse("<html>not ids</html>")
        if behaviour == "error":
            return PlainTextResponse("boom", status_code=500)
        return PlainTextResponse(answer)

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


@pytest.fixture(scope="module")
def stub_teams(universe):
    """URLs of four teams: good, slow, garbage, down (nothing listens)."""
    servers = [ServerThread(stub_app(b, universe.catalog.slug)).start() for b in ("good", "slow", "garbage")]
    urls = [s.url for s in servers] + [f"http://127.0.0.1:{free_port()}"]
    yield urls
    for s in servers:
        s.stop()
