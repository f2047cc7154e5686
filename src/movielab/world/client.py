"""The world's HTTP client for team recommendation services.

One asyncio loop in a background thread, one aiohttp session (its own connection pool)
per team, every request of a batch in flight at once, each bounded by the time-out
(600 ms by default). Every outcome becomes the data of one recommendation-request line:
status 200 with the ids, or status 0 / the HTTP status with an error text. A slow or
dead team only costs its own requests their time-out; other teams' requests run beside them.

An answer is judged on its whole body, read to its end (the `Content-Length`, the last chunk,
or the connection's close) within the same time-out and up to `MAX_BODY` bytes (after
`Content-Encoding` is undone): however the team's server splits its writes, the same body gets
the same line. The outcomes, each with its own text:

- 200 and the ids joined by ", ": a whole, valid body;
- 200 and `Invalid response from <server>: <reason>`: a whole body that is not a valid answer,
  longer than `MAX_BODY`, or whose content encoding cannot be undone;
- the status and `HTTP <status> from <server>`: any status but 200 (the body is not read);
- 0 and `Request timeout to <server> after <ms> ms`: no whole answer within the time-out
  (slow head or slow body alike);
- 0 and `Truncated response from <server>: ...`: the connection closed before the body's end;
- 0 and `Connection refused to` / `Cannot connect to` / `Connection closed by <server> before a
  response` / `Invalid HTTP response from <server>: ...` / `Request to <server> failed: ...`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from aiohttp.http_exceptions import (
    ContentEncodingError,
    ContentLengthError,
    TransferEncodingError,
)

from movielab.contract import MAX_RECOMMENDATIONS, outcomes
from movielab.contract.slug import MOVIE_ID_PATTERN
from movielab.world.errors import WorldError
from movielab.world.recs import RecAnswers

logger = logging.getLogger(__name__)
_HOST = re.compile(r"[A-Za-z0-9._:-]+")  # a host name, IPv4 or (bracket-less) IPv6 address

_BODY = re.compile(rf"{MOVIE_ID_PATTERN}(?:,{MOVIE_ID_PATTERN})*", re.ASCII)
#: Bytes of a (decoded) answer body the world reads at most; 20 ids of 200 characters take 4,019.
MAX_BODY = 64 * 1024


class _Oversized(Exception):
    """The body (or its announced length) exceeds MAX_BODY."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(size)


async def read_body(resp: aiohttp.ClientResponse, limit: int = MAX_BODY) -> bytes:
    """The whole (decoded) body of `resp`, read to its end; `_Oversized` past `limit` bytes.

    Raises aiohttp's `ClientPayloadError` when the body ends early (connection closed before the
    announced length or the last chunk) and `TimeoutError` when the session's time-out runs out.
    """
    announced = resp.content_length
    if announced is not None and announced > limit and not resp.headers.get("Content-Encoding"):
        raise _Oversized(announced)
    buf = bytearray()
    content = resp.content
    while chunk := await content.readany():
        buf += chunk
        if len(buf) > limit:
            raise _Oversized(len(buf))
    return bytes(buf)


class TeamConfigError(WorldError, ValueError):
    """A team's recommendation URL cannot be used."""


@dataclass(frozen=True)
class Team:
    """A team: its number (topic `movielog<number>`), the URL of its service, and `host:port` for the log."""

    number: int
    url: str
    server: str

    @classmethod
    def parse(cls, number: int | None, url: str) -> Team:
        """Validate `http://host:port[/prefix]`; the world calls `<url>/recommend/<user id>`. TeamConfigError names
        the URL, the reason and team `number` (None: the caller names the team itself, e.g. a config field)."""
        who = "" if number is None else f"team {number}: "
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise TeamConfigError(f"{who}recommendation URL {url!r} must look like http://host:port")
        if any(c.isspace() for c in url) or _HOST.fullmatch(parts.hostname) is None:
            raise TeamConfigError(
                f"{who}recommendation URL {url!r}: the host must be a name or address (letters, digits, . - :), "
                "with no spaces"
            )
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise TeamConfigError(f"{who}recommendation URL {url!r}: {exc}") from None
        if parts.query or parts.fragment:
            raise TeamConfigError(f"{who}recommendation URL {url!r} must not carry a query or fragment")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal keeps its brackets
        base = f"http://{host}:{port}{parts.path.rstrip('/')}"
        return cls(number, base, f"{host}:{port}")


def team_of(user_ids: np.ndarray, n_teams: int) -> np.ndarray:
    """Team index (0-based) of each user: teams own disjoint slices of the population, by id modulo."""
    return ((np.asarray(user_ids, np.int64) - 1) % n_teams).astype(np.int32)


def check_body(body: bytes, index: dict[str, int]) -> tuple[np.ndarray, str] | str:
    """(catalog rows, ids joined by ', ') for a valid answer body, or the reason it is invalid."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    if not text:
        return "empty body"
    if _BODY.fullmatch(text) is None:
        shown = text[:40].encode("unicode_escape").decode("ascii")
        return f"body {shown!r} is not a comma-separated list of movie ids"
    ids = text.split(",")
    if len(ids) > MAX_RECOMMENDATIONS:
        return f"{len(ids)} movie ids, at most {MAX_RECOMMENDATIONS}"
    if len(set(ids)) != len(ids):
        return "movie ids repeat"
    rows = []
    for movie in ids:
        row = index.get(movie)
        if row is None:
            return f"unknown movie id {movie[:60]!r}"
        rows.append(row)
    return np.asarray(rows, np.int32), ", ".join(ids)


def _shown(text: object, limit: int = 80) -> str:
    return str(text)[:limit].encode("unicode_escape").decode("ascii")


def _undecodable(exc: aiohttp.ClientPayloadError) -> bool:
    """The body came whole but its Content-Encoding could not be undone (not a truncation)."""
    return isinstance(exc.__cause__, ContentEncodingError) or "content-encoding" in str(exc).lower()


def _payload_reason(exc: aiohttp.ClientPayloadError) -> str:
    cause = exc.__cause__
    if isinstance(cause, ContentLengthError):
        return f"connection closed before the end of the body ({_shown(cause.message)})"
    if isinstance(cause, TransferEncodingError):
        return "connection closed before the last chunk"
    return f"body incomplete ({_shown(exc)})"


class HttpRecommender:
    """Asks each team's service `GET <url>/recommend/<user>` for its own users, concurrently."""

    def __init__(
        self,
        teams: list[Team],
        movie_index: dict[str, int],
        timeout_ms: int = 600,
        max_connections: int = 64,
    ) -> None:
        if not teams:
            raise TeamConfigError("at least one team is needed")
        if timeout_ms <= 0:
            raise TeamConfigError(f"time-out must be positive, got {timeout_ms} ms")
        self.teams = teams
        self.index = movie_index
        self.timeout_ms = timeout_ms
        self.max_connections = max_connections
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="movielab-rec-client", daemon=True)
        self._thread.start()
        self._sessions: list[aiohttp.ClientSession] = self._call(self._open())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _open(self) -> list[aiohttp.ClientSession]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_ms / 1000)
        # A request waits for one of its team's connections *before* its time-out starts: a burst of
        # sessions (hundreds a minute at course scale) must not be judged on the world's own queue.
        self._slots = [asyncio.Semaphore(self.max_connections) for _ in self.teams]
        return [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
                timeout=timeout,
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
            )
            for _ in self.teams
        ]

    def set_url(self, index: int, url: str) -> Team:
        """Point team `index` (0-based) at a new URL from its next request on (same number, same topic)."""
        team = Team.parse(self.teams[index].number, url)
        self.teams[index] = team  # one reference swap: requests in flight keep the team they started with
        return team

    def add_team(self, team: Team) -> None:
        """Add a team (its own connection pool); users are then split by id modulo the new number of teams.

        Call it between the world's ticks (no request in flight), with `world.lanes.add_lane`.
        """

        async def open_one() -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout_ms / 1000),
                skip_auto_headers=("User-Agent",),
                raise_for_status=False,
            )
            return session, asyncio.Semaphore(self.max_connections)

        session, slot = self._call(open_one())
        self._sessions.append(session)
        self._slots.append(slot)
        self.teams.append(team)  # last: team_of counts teams, so the new pool must exist first

    def recommend(self, user_ids: np.ndarray, times: np.ndarray) -> RecAnswers:
        """Ask every user's team; one answer per user, in order."""
        return self.submit(user_ids, times).result()

    def submit(self, user_ids: np.ndarray, times: np.ndarray) -> Future:
        """Like `recommend`, without waiting: a `concurrent.futures.Future` of the `RecAnswers`.

        The world's lanes use it to keep one team's slow answers from holding back the others.
        """
        teams = team_of(user_ids, len(self.teams))
        return asyncio.run_coroutine_threadsafe(
            self._answers(np.asarray(user_ids).tolist(), teams.tolist()), self._loop
        )

    async def _answers(self, ids: list[int], teams: list[int]) -> RecAnswers:
        servers = [self.teams[t].server for t in teams]  # before the requests: a URL may change meanwhile (set_url)
        results = await self._batch(ids, teams)
        status = np.fromiter((r[0] for r in results), np.int32, len(results))
        ms = np.fromiter((r[1] for r in results), np.int32, len(results))
        empty = np.empty(0, np.int32)
        movies = [r[2] if r[2] is not None else empty for r in results]
        return RecAnswers(servers, status, ms, movies, [r[3] for r in results])

    async def _batch(self, ids: list[int], teams: list[int]) -> list[tuple]:
        return await asyncio.gather(*(self._one(t, u) for u, t in zip(ids, teams, strict=True)))

    async def _one(self, t: int, user_id: int) -> tuple[int, int, np.ndarray | None, str]:
        async with self._slots[t]:  # the clock starts when the request can go out, not while it queues here
            return await self._ask(t, user_id)

    async def _ask(self, t: int, user_id: int) -> tuple[int, int, np.ndarray | None, str]:
        team = self.teams[t]
        start = time.perf_counter()

        def elapsed() -> int:
            return int((time.perf_counter() - start) * 1000)

        try:
            async with self._sessions[t].get(f"{team.url}/recommend/{user_id}", allow_redirects=False) as resp:
                if resp.status != 200:
                    return resp.status, elapsed(), None, f"HTTP {resp.status} from {team.server}"
                try:
                    body = await read_body(resp)
                except _Oversized as exc:
                    return (
                        200,
                        elapsed(),
                        None,
                        (
                            f"{outcomes.INVALID_RESPONSE} {team.server}: body longer than {MAX_BODY}"
                            f" bytes ({exc.size:,} bytes or more)"
                        ),
                    )
                except aiohttp.ClientPayloadError as exc:
                    if not _undecodable(exc):
                        raise  # the body ended early: no whole HTTP answer came
                    encoding = _shown(resp.headers.get("Content-Encoding", ""), 20)
                    return (
                        200,
                        elapsed(),
                        None,
                        (
                            f"{outcomes.INVALID_RESPONSE} {team.server}: body cannot be decoded"
                            f" from Content-Encoding '{encoding}'"
                        ),
                    )
                ms = elapsed()
                checked = check_body(body, self.index)
                if isinstance(checked, str):
                    return 200, ms, None, f"{outcomes.INVALID_RESPONSE} {team.server}: {checked}"
                return 200, ms, checked[0], checked[1]
        except TimeoutError:
            return 0, elapsed(), None, f"{outcomes.TIMEOUT} {team.server} after {self.timeout_ms} ms"
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            reason = outcomes.CONNECTION_REFUSED if refused else outcomes.CANNOT_CONNECT
            return 0, elapsed(), None, f"{reason} {team.server}"
        except aiohttp.ServerDisconnectedError:
            return 0, elapsed(), None, f"Connection closed by {team.server} before a response"
        except aiohttp.ClientPayloadError as exc:
            return 0, elapsed(), None, f"Truncated response from {team.server}: {_payload_reason(exc)}"
        except aiohttp.ClientResponseError as exc:
            return 0, elapsed(), None, f"Invalid HTTP response from {team.server}: {_shown(exc.message)}"
        except (aiohttp.ClientError, OSError) as exc:
            return 0, elapsed(), None, f"Request to {team.server} failed: {type(exc).__name__}"

    def close(self) -> None:
        """Close the sessions and stop the loop thread."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            for s in self._sessions:
                await s.close()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> HttpRecommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
