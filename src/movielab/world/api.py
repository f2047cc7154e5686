"""The world's HTTP API: `GET /user/<ids>`, `GET /movie/<ids>` and `GET /healthz`.

The README's "Editions" section shows each edition's records.

One id answers a JSON object; ids joined by commas (at most `MAX_IDS`) answer a JSON list in the
order given, duplicates included; `HEAD` answers like `GET`, without the body. A bulk request is all
or nothing: if any id is malformed the answer is 400 naming the first malformed id, and if any id is
unknown it is 404 listing every unknown id.
Every answer but the HTML pages under /docs and /redoc is JSON, errors included (unmatched paths,
wrong methods, 429 from the rate limiter, even an unexpected 500, and, served with `server_options()`,
requests the HTTP server refuses before routing, like a request line of 64 KiB or more); error bodies are
`Error`. The id patterns in `/openapi.json` are exactly what the routes accept (movie ids: the contract's
`MOVIE_ID_PATTERN`, at most `MAX_MOVIE_ID_LENGTH` characters each, checked by `movie_id_problem`). The hot
path builds bytes with the stdlib `json` (movie bodies are cached per catalog row) and skips pydantic,
whose models here only document the answers in `/openapi.json`.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from movielab.contract.editions import CURRENT, Edition
from movielab.contract.slug import MAX_MOVIE_ID_LENGTH, MOVIE_ID_PATTERN, movie_id_problem
from movielab.world.data.catalog import Catalog
from movielab.world.data.errors import UnknownMovie
from movielab.world.errors import WorldError
from movielab.world.population import Population, UnknownUser
from movielab.world.ratelimit import DEFAULT_RATE_LIMIT, RateLimit, RateLimitMiddleware
from movielab.world.selfdesc import SelfDescriptions
from movielab.world.truth import TasteModel

MAX_IDS = 200
MAX_USER_ID_DIGITS = 18  # every id fits an int64
MAX_IDS_LENGTH = MAX_IDS * (MAX_MOVIE_ID_LENGTH + 1)  # longest well-formed movie bulk request
SHOWN_ID_LENGTH = 100  # error bodies echo at most this much of a refused id
USER_ID_PATTERN = rf"[1-9][0-9]{{0,{MAX_USER_ID_DIGITS - 1}}}"
_USER_ID = re.compile(USER_ID_PATTERN)
_JSON = "application/json"


class MalformedId(WorldError, ValueError):
    """An id (or list of ids) in a request path that cannot be a user or movie id; answered with 400."""

    def __init__(self, kind: str, id_: str, reason: str) -> None:
        self.kind = kind
        self.id = id_
        self.reason = reason
        super().__init__(f"malformed {kind} id {_shown(id_)!r}: {reason}")


class TooManyIds(MalformedId):
    """More ids (or characters) in one request than the API answers; 400, like a malformed id, but the message blames
    the request's size, not an id (`id` is still the first id past the limit)."""

    def __init__(self, kind: str, id_: str, reason: str) -> None:
        super().__init__(kind, id_, reason)
        self.args = (f"too many {kind} ids in one request: {reason}",)


class UnknownIds(WorldError, LookupError):
    """Well-formed ids that name no user or movie; answered with 404 listing all of them."""

    def __init__(self, kind: str, ids: list[str]) -> None:
        self.kind = kind
        self.ids = list(dict.fromkeys(ids))
        names = ", ".join(repr(_shown(i)) for i in self.ids[:20]) + (", …" if len(self.ids) > 20 else "")
        where = "the population" if kind == "user" else "the catalog"
        plural = "s" if len(self.ids) > 1 else ""
        super().__init__(f"unknown {kind} id{plural} {names}: not in {where}")


def _shown(id_: str) -> str:
    return id_ if len(id_) <= SHOWN_ID_LENGTH else id_[:SHOWN_ID_LENGTH] + "…"


# --- parsing ------------------------------------------------------------------------------------
def split_ids(raw: str, kind: str) -> list[str]:
    """Split a path segment into its comma-separated ids; raise `MalformedId` for an empty id, `TooManyIds` for more
    than MAX_IDS ids or MAX_IDS_LENGTH characters."""
    if len(raw) > MAX_IDS_LENGTH:
        raise TooManyIds(kind, raw, f"{len(raw)} characters, at most {MAX_IDS_LENGTH}")
    parts = raw.split(",")
    if len(parts) > MAX_IDS:
        raise TooManyIds(kind, parts[MAX_IDS], f"{len(parts)} given, at most {MAX_IDS}")
    for part in parts:
        if not part:
            raise MalformedId(kind, part, "empty id (two commas in a row, or a leading or trailing comma)")
    return parts


def parse_user_id(raw: str) -> int:
    """The user id in `raw` (a positive decimal integer, no sign or leading zero), or `MalformedId`."""
    if len(raw) > MAX_USER_ID_DIGITS:
        raise MalformedId("user", raw, f"longer than {MAX_USER_ID_DIGITS} digits")
    if _USER_ID.fullmatch(raw) is None:
        raise MalformedId("user", raw, "expected a positive integer without sign or leading zeros")
    return int(raw)


def parse_movie_id(raw: str) -> str:
    """The movie id in `raw` (a token of the contract's id alphabet, like `ben-hur+1959`), or `MalformedId`."""
    problem = movie_id_problem(raw)
    if problem is not None:
        raise MalformedId("movie", raw, problem)
    return raw


# --- answers ----------------------------------------------------------------------------------
class Lookup:
    """Answers id requests as JSON bytes from a live population and a catalog."""

    def __init__(
        self,
        population: Population,
        catalog: Catalog,
        movie_cache_size: int = 20_000,
        *,
        edition: Edition = CURRENT,
        descriptions: SelfDescriptions | None = None,
    ) -> None:
        self.population = population  # held, not copied: accounts created while the world runs are served
        self.catalog = catalog
        self.edition = edition
        if edition.self_descriptions and descriptions is None:
            raise ValueError(f"the {edition.name} edition's user records need self-descriptions (pass descriptions=)")
        self.descriptions = descriptions if edition.self_descriptions else None
        self._movie_json: Callable[[int], bytes] = functools.lru_cache(maxsize=movie_cache_size)(self._render_movie)

    def _render_movie(self, row: int) -> bytes:
        return json.dumps(self.catalog.tmdb_record(row, license_cost=self.edition.license_cost)).encode()

    def _user(self, user_id: int) -> dict[str, object]:
        record = self.population.describe(user_id)
        if self.descriptions is not None:
            record["likes"], record["dislikes"] = self.descriptions.answers(user_id)
        return record

    def users(self, raw: str) -> bytes:
        """JSON of the user (one id) or users (comma-separated ids) named by `raw`."""
        if "," not in raw:
            try:
                return json.dumps(self._user(parse_user_id(raw))).encode()
            except UnknownUser:
                raise UnknownIds("user", [raw]) from None
        ids = [parse_user_id(part) for part in split_ids(raw, "user")]
        size = self.population.size
        unknown = [str(i) for i in ids if i > size]
        if unknown:
            raise UnknownIds("user", unknown)
        return json.dumps([self._user(i) for i in ids]).encode()

    def movies(self, raw: str) -> bytes:
        """JSON of the movie (one id) or movies (comma-separated ids) named by `raw`."""
        if "," not in raw:
            try:
                return self._movie_json(self.catalog.index_of(parse_movie_id(raw)))
            except UnknownMovie:
                raise UnknownIds("movie", [raw]) from None
        slugs = [parse_movie_id(part) for part in split_ids(raw, "movie")]
        rows, unknown = [], []
        for slug in slugs:
            try:
                rows.append(self.catalog.index_of(slug))
            except UnknownMovie:
                unknown.append(slug)
        if unknown:
            raise UnknownIds("movie", unknown)
        return b"[" + b", ".join(self._movie_json(r) for r in rows) + b"]"


# --- documentation models (OpenAPI only; the hot path does not validate against them) ---------
class User(BaseModel):
    """A user as the world tells about them; occupations use the MovieLens-1M vocabulary."""

    model_config = ConfigDict(extra="forbid")
    user_id: int = Field(examples=[21303])
    age: int = Field(examples=[27])
    occupation: str = Field(examples=["self-employed"])
    gender: str = Field(examples=["F"])
    likes: str | None = Field(
        None,
        examples=["Big fan of Comedy. Favorites: Toy Story (1995)"],
        description="2026 edition: free-text answer to 'what movies do you like' "
        "(empty when not answered; generated from the hidden taste)",
    )
    dislikes: str | None = Field(
        None,
        examples=["Not into Horror."],
        description="2026 edition: free-text answer to 'what movies do you not like'",
    )


class Genre(BaseModel):
    """A TMDB genre."""

    model_config = ConfigDict(extra="forbid")
    id: int
    name: str


class Company(BaseModel):
    """A production company (simulated)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    id: int


class Country(BaseModel):
    """A production country (simulated)."""

    model_config = ConfigDict(extra="forbid")
    iso_3166_1: str
    name: str


class Language(BaseModel):
    """A spoken language (simulated)."""

    model_config = ConfigDict(extra="forbid")
    iso_639_1: str
    name: str


class Movie(BaseModel):
    """A movie, TMDB-shaped like the course's API: many numbers are strings, absent values are `"null"`.

    From MovieLens: id (the slug), title, original_title, genres, the year of release_date, and
    (derived from the ratings) popularity, vote_average and vote_count. Every field named in
    `simulated` is simulated, deterministically per movie; synthetic catalog rows are simulated in full.
    """

    model_config = ConfigDict(extra="forbid")
    id: str = Field(examples=["toy+story+1995"])
    tmdb_id: int
    imdb_id: str = Field(examples=["tt0114709"])
    title: str
    original_title: str
    adult: str = Field(examples=["False"])
    belongs_to_collection: dict[str, Any]
    budget: str = Field(examples=["30000000"])
    genres: list[Genre]
    homepage: str = Field(examples=["null"])
    original_language: str
    overview: str
    popularity: str = Field(examples=["26.6170"])
    poster_path: str
    production_companies: list[Company]
    production_countries: list[Country]
    release_date: str = Field(examples=["1995-10-30"])
    revenue: str
    runtime: int = Field(examples=[81], description="minutes (an integer, as in the course's records)")
    spoken_languages: list[Language]
    status: str
    tagline: str
    vote_average: str = Field(examples=["7.7"])
    vote_count: str = Field(examples=["452"])
    license_cost: float | None = Field(
        None, examples=[0.1834], description="2026 edition: USD paid per play (simulated)"
    )
    simulated: list[str] = Field(description="the fields of this record that are simulated, not from MovieLens")


class Error(BaseModel):
    """Every error answer: `error` names the thing refused and why; `id` the refused id, if one was."""

    model_config = ConfigDict(extra="forbid")
    error: str
    id: str | None = Field(
        None,
        description="the malformed or first unknown id (with too many ids: the first one"
        " past the limit), shortened to 100 characters; null if none",
    )
    ids: list[str] | None = Field(None, description="404 only: every unknown id of the request, once each")


class Health(BaseModel):
    """Liveness and the current sizes."""

    status: str = Field(examples=["ok"])
    users: int
    movies: int


# --- the app --------------------------------------------------------------------------------------
_READ = ["GET", "HEAD"]  # HEAD answers GET's status and headers; the server drops the body


def _where(request: Request) -> str:
    return f"{request.method} {_shown(request.scope.get('path', ''))}"


def _error(
    status: int, error: str, id_: str | None = None, headers: dict[str, str] | None = None, **extra: object
) -> Response:
    body = json.dumps({"error": error, "id": None if id_ is None else _shown(id_), **extra}).encode()
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


async def _malformed(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MalformedId)
    return _error(400, str(exc), exc.id)


async def _unknown(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnknownIds)
    return _error(404, str(exc), exc.ids[0], ids=[_shown(i) for i in exc.ids])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    where = _where(request)
    if exc.status_code == 404:
        message = f"no such resource {where}: the API serves /user/<ids>, /movie/<ids> and /healthz"
    elif exc.status_code == 405:
        message = f"method not allowed: {where}; use GET (or HEAD)"
        # Every route reads; GET and HEAD are separate routes, so Starlette's Allow names only the first.
        return _error(405, message, headers={**(exc.headers or {}), "Allow": ", ".join(_READ)})
    else:
        message = f"{where}: {exc.detail}"
    return _error(exc.status_code, message, headers=exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    reasons = "; ".join(str(e.get("msg", e)) for e in exc.errors()[:5])
    return _error(400, f"invalid request {_where(request)}: {reasons}")


async def _internal(request: Request, exc: Exception) -> Response:
    # After this answer is sent Starlette re-raises the exception, and the server logs it with its traceback.
    return _error(500, f"internal error serving {_where(request)}: {type(exc).__name__}")


_ID_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "a malformed id, an empty id, or more than 200 ids"},
    404: {"model": Error, "description": "unknown ids; `ids` lists every one of them"},
    429: {
        "model": Error,
        "description": "rate limit exceeded; wait `Retry-After` seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    },
}


def ids_pattern(kind: str) -> str:
    """The JSON-Schema pattern of a path's ids: one id, or up to `MAX_IDS` joined by commas, as the routes accept.

    User ids: `USER_ID_PATTERN`. Movie ids: the contract's `MOVIE_ID_PATTERN`, each at most `MAX_MOVIE_ID_LENGTH`
    characters (a look-ahead per id, since the pattern alone does not bound the length).
    """
    if kind == "user":
        one = f"(?:{USER_ID_PATTERN})"
    else:
        one = rf"(?=[^,]{{1,{MAX_MOVIE_ID_LENGTH}}}(?:,|$))(?:{MOVIE_ID_PATTERN})"
    return rf"^{one}(?:,{one}){{0,{MAX_IDS - 1}}}$"


def _ids_parameter(kind: str) -> dict[str, Any]:
    example = "21303" if kind == "user" else "toy+story+1995"
    schema: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDS_LENGTH,
        "pattern": ids_pattern(kind),
    }
    return {
        "parameters": [
            {
                "name": "ids",
                "in": "path",
                "required": True,
                "schema": schema,
                "example": example,
                "description": f"a {kind} id, or up to {MAX_IDS} {kind} ids joined by commas",
            }
        ]
    }


_DESCRIPTION = """The world's user and movie API (movielab). Ids: user ids are positive integers, movie ids are
tokens of printable ASCII without spaces, `,` or `/`, like `ben-hur+1959` or `monsters_+inc.+2001`.
Up to 200 comma-separated ids give a JSON list in the order given; one
unknown id makes the whole request 404. Movie records are TMDB-shaped; only id, title, genres, the year
and the rating-derived numbers come from MovieLens — every field listed in a record's `simulated` is
simulated. Requests are rate-limited per client host (429 with `Retry-After`)."""


def create_app(
    population: Population,
    catalog: Catalog,
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
    *,
    clock: Callable[[], float] = time.monotonic,
    movie_cache_size: int = 20_000,
    metrics: CollectorRegistry | None = None,
    edition: Edition = CURRENT,
    taste: TasteModel | None = None,
    seed: int = 0,
) -> FastAPI:
    """Build the world API over a live `population` and a `catalog`; `rate_limit=None` disables limiting.

    With a `metrics` registry (e.g. holding `movielab.kafka.metrics.ProducedLinesCollector`), `GET /metrics`
    serves it in the Prometheus text format (not rate-limited).
    """
    descriptions = None
    if edition.self_descriptions:
        if taste is None:
            raise ValueError(f"the {edition.name} edition's user records are drawn from the hidden taste: pass taste=")
        descriptions = SelfDescriptions(population, taste, catalog, seed)
    lookup = Lookup(population, catalog, movie_cache_size, edition=edition, descriptions=descriptions)
    if len(catalog):
        catalog.index_of(catalog.slug[0])  # build the slug index now, not during the first request
    app = FastAPI(title="movielab world API", version="1", description=_DESCRIPTION, redirect_slashes=False)

    # Routes read the raw path parameter: FastAPI's validation of a `str` parameter costs ~8% throughput.
    async def get_users(request: Request) -> Response:
        return Response(lookup.users(request.path_params["ids"]), media_type=_JSON)

    async def get_movies(request: Request) -> Response:
        return Response(lookup.movies(request.path_params["ids"]), media_type=_JSON)

    async def healthz() -> Response:
        body = {"status": "ok", "users": population.size, "movies": len(catalog)}
        return Response(json.dumps(body).encode(), media_type=_JSON)

    async def announcements() -> Response:
        # A world with a scenario answers this path in `ScenarioApi` (its announcements so far); without one, none.
        return Response(b"[]", media_type=_JSON)

    # One route per method, so each documented operation has its own id (HEAD: same answer, no body).
    for method in _READ:
        verb = method.lower()
        app.add_api_route(
            "/user/{ids}",
            get_users,
            methods=[method],
            operation_id=f"{verb}_users",
            response_model=None,
            summary="One user, or up to 200 users",
            openapi_extra=_ids_parameter("user"),
            responses={200: {"model": User | list[User]}, **_ID_ERRORS},
        )
        app.add_api_route(
            "/movie/{ids}",
            get_movies,
            methods=[method],
            operation_id=f"{verb}_movies",
            response_model=None,
            summary="One movie, or up to 200 movies",
            openapi_extra=_ids_parameter("movie"),
            responses={200: {"model": Movie | list[Movie]}, **_ID_ERRORS},
        )
        app.add_api_route(
            "/healthz",
            healthz,
            methods=[method],
            operation_id=f"{verb}_healthz",
            response_model=Health,
            summary="Liveness",
        )
        app.add_api_route(
            "/announcements",
            announcements,
            methods=[method],
            operation_id=f"{verb}_announcements",
            response_model=None,
            summary="What the course's staff told the teams (takedowns, announced changes); [] when nothing was",
        )

    if metrics is not None:

        @app.api_route("/metrics", methods=_READ, include_in_schema=False)
        async def metrics_page() -> Response:
            return Response(generate_latest(metrics), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_exception_handler(MalformedId, _malformed)
    app.add_exception_handler(UnknownIds, _unknown)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _internal)
    if rate_limit is not None:
        app.add_middleware(RateLimitMiddleware, limit=rate_limit, prefixes=("/user/", "/movie/"), clock=clock)
    return app


# --- the server -------------------------------------------------------------------------------------
#: Body of the 400 the HTTP server itself sends for a request it cannot parse (before any route sees it).
UNPARSABLE_REQUEST = json.dumps(
    {
        "error": "invalid HTTP request: it could not be parsed (a request line of 64 KiB or more, a malformed request"
        " line or header, or not HTTP/1.x); the API serves GET /user/<ids>, /movie/<ids> and /healthz",
        "id": None,
    }
).encode()


def _json_400_head(date_and_server: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 400 Bad Request"] + [name + b": " + value for name, value in date_and_server]
    lines += [b"content-type: application/json", b"content-length: %d" % len(UNPARSABLE_REQUEST), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def server_options() -> dict[str, Any]:
    """uvicorn settings that make the server's own 400 (unparsable request) JSON like every other answer.

    Returns `{"http": <protocol class>}` for `uvicorn.Config` (httptools when installed, else h11): uvicorn's
    protocol with `send_400_response` answering `UNPARSABLE_REQUEST` (an `Error`) instead of plain text.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools missing: uvicorn's pure-Python h11 protocol
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class JsonErrorsProtocol(Base):  # type: ignore[misc,valid-type]
        """uvicorn's HTTP protocol; a request it cannot parse gets a JSON 400."""

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_json_400_head(self.server_state.default_headers) + UNPARSABLE_REQUEST)
            self.transport.close()

    return {"http": JsonErrorsProtocol}
