"""Per-client rate limiting for the world API: one token bucket per client host.

A bucket holds up to `burst` tokens and refills at `rate_per_s`; a request takes one token or is
refused with 429 and a `Retry-After` in whole seconds (at least 1). Buckets live in a plain dict
ordered by last use, so the least recently seen client is found in O(1): a bucket that has been
idle long enough to be full again is dropped (it is indistinguishable from a new client), and at
most `max_clients` buckets are kept (past that the least recently seen client is forgotten, which
only ever gives that client a fresh bucket). Everything runs on the event loop thread, so no lock.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateLimit:
    """How fast one client may call the API: `rate_per_s` sustained, `burst` at once."""

    rate_per_s: float
    burst: int
    max_clients: int = 100_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"rate limit rate_per_s must be a positive number, got {self.rate_per_s!r}")
        if self.burst < 1:
            raise ValueError(f"rate limit burst must be at least 1 request, got {self.burst!r}")
        if self.max_clients < 1:
            raise ValueError(f"rate limit max_clients must be at least 1, got {self.max_clients!r}")


DEFAULT_RATE_LIMIT = RateLimit(rate_per_s=2_000.0, burst=4_000)


class TokenBuckets:
    """The buckets of every recently seen client; `take(client)` spends one token."""

    def __init__(self, limit: RateLimit, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # client -> [tokens, last refill time]
        self._refill_s = limit.burst / limit.rate_per_s  # idle time after which a bucket is full again

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> int:
        """Spend one of `client`'s tokens: 0 if allowed, else the whole seconds (>= 1) to wait."""
        now = self.clock()
        buckets, limit = self._buckets, self.limit
        bucket = buckets.get(client)
        if bucket is None:
            self._evict(now)
            bucket = buckets[client] = [float(limit.burst), now]
        else:
            buckets.move_to_end(client)
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(float(limit.burst), bucket[0] + elapsed * limit.rate_per_s)
                bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket[0]) / limit.rate_per_s))

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        # Oldest first: stop at the first bucket that may still be below full.
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self._refill_s:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self.limit.max_clients:
            buckets.popitem(last=False)


class RateLimitMiddleware:
    """ASGI middleware that applies `TokenBuckets` to requests whose path starts with one of `prefixes`."""

    def __init__(self, app: ASGIApp, limit: RateLimit, prefixes: tuple[str, ...], clock: Clock = time.monotonic):
        self.app = app
        self.buckets = TokenBuckets(limit, clock)
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            client = scope.get("client")
            host = client[0] if client else "unknown"
            wait = self.buckets.take(host)
            if wait:
                await _send_429(send, host, wait, self.buckets.limit)
                return
        await self.app(scope, receive, send)


async def _send_429(send: Send, host: str, wait: int, limit: RateLimit) -> None:
    body = json.dumps(
        {
            "error": f"rate limit exceeded for client {host}: {limit.rate_per_s:g} requests/s, burst {limit.burst};"
            f" retry after {wait} s",
            "id": None,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(wait).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
