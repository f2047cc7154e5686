"""Client of the world's user/movie API: bulk lookups (≤ 200 ids a request), a cache, 429 back-off.

Answers are cached for the life of the client: known ids for good (the world's catalog and
demographics do not change), unknown ids for `negative_ttl` seconds (the API may lag behind
the stream, e.g. for a brand-new account). Network trouble raises `WorldApiUnavailable`, so a
caller can wait and retry instead of mistaking an outage for unknown ids.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from movielab.recommender.errors import WorldApiUnavailable
from movielab.recommender.store.records import MovieInfo, UserInfo

logger = logging.getLogger(__name__)

MAX_IDS = 200
MAX_PATH_CHARS = 6000  # keep request lines well under the server's limit, whatever the slug lengths


def movie_info(record: dict[str, Any]) -> MovieInfo:
    """A `MovieInfo` from one TMDB-shaped record; runtime "null" or non-numeric becomes None."""
    runtime = _int_or_none(record.get("runtime"))
    genres = tuple(str(g["name"]) for g in record.get("genres") or () if isinstance(g, dict) and "name" in g)
    title = record.get("title")
    return MovieInfo(
        str(record["id"]),
        runtime if runtime and runtime > 0 else None,
        genres,
        None if title in (None, "null") else str(title),
        _cost_or_none(record.get("license_cost")),
        _year_or_none(record.get("release_date")),
    )


def user_info(record: dict[str, Any]) -> UserInfo:
    """A `UserInfo` from one user record."""
    gender = record.get("gender")
    occupation = record.get("occupation")
    return UserInfo(
        int(record["user_id"]),
        _int_or_none(record.get("age")),
        None if gender in (None, "null") else str(gender),
        None if occupation in (None, "null") else str(occupation),
        _text_or_none(record.get("likes")),
        _text_or_none(record.get("dislikes")),
    )


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value != "null" else None


def _cost_or_none(value: object) -> float | None:
    """A license cost in USD per play; absent, "null", negative or not a finite number → None."""
    try:
        cost = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return cost if math.isfinite(cost) and cost >= 0 else None


def _year_or_none(value: object) -> int | None:
    """The year of a `YYYY-MM-DD` release date (None if absent or malformed)."""
    text = str(value or "")
    return int(text[:4]) if len(text) >= 4 and text[:4].isdigit() and int(text[:4]) > 1800 else None


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class WorldApi:
    """Cached bulk lookups of movies and users; `movies(ids)` → (known, unknown)."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        *,
        max_retries: int = 5,
        max_wait: float = 30.0,
        negative_ttl: float = 300.0,
        cache_users: bool = True,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.negative_ttl = negative_ttl
        self.cache_users = cache_users  # a million users' records need not stay in memory
        self._sleep = sleep
        self._clock = clock
        self._transport = transport
        self._client: httpx.Client | None = None  # built on first use: nothing connects at construction
        self._movies: dict[str, MovieInfo] = {}
        self._users: dict[int, UserInfo] = {}
        self._unknown_movies: dict[str, float] = {}  # id -> when it may be asked again
        self._unknown_users: dict[int, float] = {}
        self.requests = 0
        self.rate_limited = 0

    # --- public ----------------------------------------------------------------------------------
    def movies(self, ids: Iterable[str], fresh: bool = False) -> tuple[dict[str, MovieInfo], set[str]]:
        """Look movies up (cache first unless `fresh`, then bulk requests): (known id → info, unknown ids)."""
        return self._lookup("movie", list(dict.fromkeys(ids)), self._movies, self._unknown_movies, fresh)

    def users(self, ids: Iterable[int], fresh: bool = False) -> tuple[dict[int, UserInfo], set[int]]:
        """Look users up (cache first unless `fresh`, then bulk requests): (known id → info, unknown ids)."""
        return self._lookup("user", list(dict.fromkeys(int(i) for i in ids)), self._users, self._unknown_users, fresh)

    def prime(self, movies: Iterable[MovieInfo] = (), users: Iterable[UserInfo] = ()) -> None:
        """Fill the cache with records known from elsewhere (e.g. the event store after a restart)."""
        self._movies.update((m.movie_id, m) for m in movies)
        self._users.update((u.user_id, u) for u in users)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> WorldApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- lookups ---------------------------------------------------------------------------------
    def _lookup(self, kind: str, ids: list, cache: dict, negative: dict, fresh: bool = False) -> tuple[dict, set]:
        now = self._clock()
        known = {} if fresh else {i: cache[i] for i in ids if i in cache}
        unknown = set() if fresh else {i for i in ids if i not in known and negative.get(i, 0.0) > now}
        missing = [i for i in ids if i not in known and i not in unknown]
        keep = kind == "movie" or self.cache_users
        for chunk in _chunks([str(i) for i in missing]):
            found, absent = self._fetch(kind, chunk)
            for record in found:
                try:
                    info = movie_info(record) if kind == "movie" else user_info(record)
                except (KeyError, TypeError, ValueError) as exc:
                    raise WorldApiUnavailable(
                        self._url(kind, chunk[:1]), f"an answer is not a {kind} record: {str(record)[:200]}"
                    ) from exc
                key = info.movie_id if kind == "movie" else info.user_id
                known[key] = info
                if keep:
                    cache[key] = info
                negative.pop(key, None)
            for raw in absent:
                key = raw if kind == "movie" else int(raw)
                unknown.add(key)
                if self.negative_ttl > 0:
                    negative[key] = now + self.negative_ttl
        unknown.update(i for i in missing if i not in known)  # an answer that left an id out does not vouch for it
        return known, unknown

    def _fetch(self, kind: str, ids: list[str]) -> tuple[list[dict], list[str]]:
        """Records of `ids` and the ids the API does not know; a bulk 404 is retried without the unknown ids."""
        status, body = self._get(kind, ids)
        if status == 200:
            records = body if isinstance(body, list) else [body]
            return records, []
        if status == 404:
            listed = body.get("ids") if isinstance(body, dict) else None
            if not isinstance(listed, list):  # not the world API's "unknown ids" answer: a wrong URL, say
                raise WorldApiUnavailable(
                    self._url(kind, ids[:1]), f"HTTP 404 without a list of unknown ids: {str(body)[:200]}"
                )
            shown = set(listed)
            absent = [i for i in ids if i in shown or f"{i[:100]}…" in shown]  # the API shortens long ids
            if absent and len(absent) < len(ids):  # ask again for the rest, in bulk
                rest = [i for i in ids if i not in set(absent)]
                found, more = self._fetch(kind, rest)
                return found, absent + more
            if absent:
                return [], absent
            # A list naming none of them: find out one by one.
        if status in (400, 404) and len(ids) > 1:  # one refused id must not sink the others
            found, absent = [], []
            for i in ids:
                f, a = self._fetch(kind, [i])
                found += f
                absent += a
            return found, absent
        if status == 400:
            logger.warning("world API refused %s id %r as malformed: %s", kind, ids[0], body)
            return [], ids
        raise WorldApiUnavailable(self._url(kind, ids[:1]), f"HTTP {status}: {str(body)[:200]}")

    def _get(self, kind: str, ids: list[str]) -> tuple[int, Any]:
        """GET /<kind>/<ids> with retries on 429 (Retry-After) and 5xx; network errors raise."""
        url = self._url(kind, ids)
        waited = 0.0
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http().get(url)
                self.requests += 1
            except httpx.HTTPError as exc:
                raise WorldApiUnavailable(url, f"{type(exc).__name__}: {exc}") from exc
            status = response.status_code
            if status == 429 or status >= 500:
                if status == 429:
                    self.rate_limited += 1
                delay = _retry_after(response, default=min(2.0**attempt * 0.1, 5.0))
                if attempt == self.max_retries or waited + delay > self.max_wait:
                    raise WorldApiUnavailable(url, f"HTTP {status} after {attempt + 1} attempt(s), {waited:.1f} s")
                logger.info("world API answered %d to %s; retrying in %.1f s", status, url[:120], delay)
                self._sleep(delay)
                waited += delay
                continue
            try:
                return status, response.json()
            except ValueError as exc:
                raise WorldApiUnavailable(url, f"HTTP {status} with a body that is not JSON") from exc
        raise AssertionError("unreachable")

    def _url(self, kind: str, ids: list[str]) -> str:
        return f"{self.base_url}/{kind}/" + ",".join(quote(i, safe="+") for i in ids)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout, transport=self._transport)
        return self._client


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return default


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    """Runs of at most MAX_IDS ids whose joined length stays under MAX_PATH_CHARS."""
    chunk: list[str] = []
    length = 0
    for i in ids:
        if chunk and (len(chunk) == MAX_IDS or length + len(i) + 1 > MAX_PATH_CHARS):
            yield chunk
            chunk, length = [], 0
        chunk.append(i)
        length += len(i) + 1
    if chunk:
        yield chunk
