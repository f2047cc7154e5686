"""The API layer of scenarios: an ASGI wrapper of the world API that applies active API effects and serves
the public announcements channel (`GET /announcements`: takedowns and announced changes, never the manifest).

Effects act on `/user/…` and `/movie/…` answers only: outages (slow, 5xx on a share, down = every request
503), fields renamed/added/retyped/"null", wrong values, a movie's title renamed. Each changed answer is counted
on its effect. A movie a `movie_added` injection has not added yet is answered 404, as an unknown id (counted on
that injection).
"""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np

from movielab.world.api import MalformedId, UnknownIds, _shown, parse_movie_id, split_ids
from movielab.world.data.errors import UnknownMovie
from movielab.world.scenarios.runtime import ScenarioRuntime

_JSON = [(b"content-type", b"application/json")]


class ScenarioApi:
    """ASGI middleware: `ScenarioApi(world_api_app, runtime)`."""

    def __init__(self, app, runtime: ScenarioRuntime, seed: int = 0) -> None:
        self.app = app
        self.runtime = runtime
        self._rng = np.random.default_rng([seed, 14])
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/announcements" and scope["method"] in ("GET", "HEAD"):
            body = json.dumps(self.runtime.announcements).encode()
            await _answer(send, 200, body)
            return
        record = "user" if path.startswith("/user/") else "movie" if path.startswith("/movie/") else None
        if record == "movie" and await self._not_added_yet(path[len("/movie/") :], send):
            return
        effects = [e for e in list(self.runtime.api_effects) if record is not None and e.applies(record)]
        if not effects:
            await self.app(scope, receive, send)
            return
        for e in effects:
            if e.spec.kind != "api_outage":
                continue
            e.touched["api"] += 1
            if e.spec.mode == "slow":
                await asyncio.sleep(e.spec.delay_ms / 1000)
            elif e.spec.mode == "down" or self._rng.random() < e.spec.share:
                status = 503 if e.spec.mode == "down" else e.spec.status
                body = json.dumps({"error": f"the world API is unavailable (HTTP {status})", "id": None}).encode()
                await _answer(send, status, body)
                return
            else:
                e.touched["api"] -= 1  # this request passed
        changers = [e for e in effects if e.spec.kind != "api_outage"]
        if not changers:
            await self.app(scope, receive, send)
            return
        await self._rewrite(scope, receive, send, changers)

    async def _not_added_yet(self, raw: str, send) -> bool:
        """Answer 404 (as the API does for ids the catalog lacks) when a requested movie is not added yet."""
        unreleased = self.runtime.unreleased()
        if not unreleased:
            return False
        try:
            slugs = [parse_movie_id(s) for s in split_ids(raw, "movie")]
        except MalformedId:
            return False  # the API's own 400 comes first
        held = [s for s in slugs if s in unreleased]
        if not held:
            return False
        unknown = [s for s in slugs if s in unreleased or not self._in_catalog(s)]
        err = UnknownIds("movie", unknown)
        for e in self.runtime.effects:
            if e.spec.kind == "movie_added" and e.slug in held:
                e.touched["api"] += 1
        body = {"error": str(err), "id": _shown(err.ids[0]), "ids": [_shown(i) for i in err.ids]}
        await _answer(send, 404, json.dumps(body).encode())
        return True

    def _in_catalog(self, slug: str) -> bool:
        try:
            self.runtime.ctx.catalog.index_of(slug)
        except UnknownMovie:
            return False
        return True

    async def _rewrite(self, scope, receive, send, changers) -> None:
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._send_changed(send, start, b"".join(chunks), changers)

        await self.app(scope, receive, capture)

    async def _send_changed(self, send, start: dict, body: bytes, changers) -> None:
        if start.get("status") == 200 and body:
            data = json.loads(body)
            records = data if isinstance(data, list) else [data]
            with self._lock:
                for e in changers:
                    changed = sum(e.change(r, self._rng) for r in records if isinstance(r, dict))
                    if changed:
                        e.touched["api"] += 1
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send(
            {
                "type": "http.response.start",
                "status": start.get("status", 500),
                "headers": [*headers, (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _answer(send, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [*_JSON, (b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})
