"""The world API under a real uvicorn server on loopback, fuzzed over HTTP from its own OpenAPI document."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from movielab.webserver import ServerThread
from movielab.world.api import (
    UNPARSABLE_REQUEST,
    Error,
    Movie,
    User,
    create_app,
    server_options,
)
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.ratelimit import RateLimit

pytestmark = pytest.mark.integration

USERS = 500
# h11 refuses request heads over 16 KiB itself (a text/plain 400 before the app sees anything): stay below.
MAX_SEGMENT = 12_000
ANSWERS = {"/user/{ids}": TypeAdapter(User | list[User]), "/movie/{ids}": TypeAdapter(Movie | list[Movie])}


@pytest.fixture(scope="module")
def world_universe():
    return build_world(WorldConfig(users=USERS, allow_download=False))


@pytest.fixture(scope="module")
def base_url(world_universe) -> Iterator[str]:
    world, universe = world_universe
    # Generous enough that the fuzzing below is never refused.
    app = create_app(
        world.pop, universe.catalog, taste=universe.taste, rate_limit=RateLimit(rate_per_s=10_000, burst=10_000)
    )
    server = ServerThread(app, **server_options()).start()
    try:
        yield server.url
    finally:
        server.stop()
        assert not server.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def http(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def openapi(http) -> dict:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _check(response: httpx.Response, template: str | None = None) -> None:
    """Every answer: no 5xx, JSON content type, a JSON body of the documented shape."""
    assert response.status_code < 500, f"{response.request.url}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"] == "application/json", response.request.url
    if response.request.method == "HEAD":
        return
    body = response.json()
    if response.status_code >= 400:
        Error.model_validate(body)
    elif template in ANSWERS:
        ANSWERS[template].validate_python(body)


def _ids(openapi: dict, template: str, catalog) -> st.SearchStrategy[str]:
    """Values for a path's `ids`: from its documented schema, real ids, garbage, bulk lists and overlong."""
    (param,) = openapi["paths"][template]["get"]["parameters"]
    schema = param["schema"]
    real = (
        st.integers(1, USERS + 5).map(str)
        if template.startswith("/user")
        else st.sampled_from(catalog.slug[:300] + ["no+such+movie+1901"])
    )
    documented = st.from_regex(schema["pattern"], fullmatch=True) if "pattern" in schema else st.text(max_size=60)
    one = st.one_of(real, real, documented, st.text(max_size=20), st.integers().map(str))
    return st.one_of(
        one,
        st.lists(one, min_size=2, max_size=210).map(",".join),
        st.integers(1, MAX_SEGMENT).map(lambda n: "9" * n),
        st.integers(190, 2_000).map(lambda n: "a" * n),
    )


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_fuzzed_requests_from_the_openapi_document_get_json_never_5xx(http, openapi, world_universe, data) -> None:
    catalog = world_universe[1].catalog
    templates = sorted(openapi["paths"])
    template = data.draw(st.sampled_from(templates + ["/{garbage}"]), label="template")
    method = data.draw(st.sampled_from(["GET"] * 6 + ["POST", "HEAD", "DELETE"]), label="method")
    if template == "/{garbage}":
        path = "/" + data.draw(st.text(max_size=80), label="garbage")
        if path in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # the HTML documentation pages
            return
        url = quote(path, safe="/,+")
    elif "{ids}" in template:
        ids = data.draw(_ids(openapi, template, catalog), label="ids")
        quoted = quote(ids, safe=",+")
        if len(quoted) > MAX_SEGMENT:  # a character quotes to at most 12 (4 UTF-8 bytes as %XX)
            quoted = quote(ids[: MAX_SEGMENT // 12], safe=",+")
        url = template.replace("{ids}", quoted)
    else:
        url = template
    response = http.request(method, url)
    event(f"{method} {template} {response.status_code}")
    _check(response, template if method == "GET" else None)


def test_documented_answers_over_http(http, world_universe) -> None:
    world, universe = world_universe
    response = http.get("/user/2,1")
    _check(response, "/user/{ids}")
    public = [{k: v for k, v in u.items() if k not in ("likes", "dislikes")} for u in response.json()]
    assert public == [world.pop.describe(2), world.pop.describe(1)]
    assert all(isinstance(u["likes"], str) and isinstance(u["dislikes"], str) for u in response.json())  # 2026
    slug = universe.catalog.slug[10]
    response = http.get(f"/movie/{slug}")
    _check(response, "/movie/{ids}")
    assert response.json()["id"] == slug
    for path, status in [("/user/0", 400), ("/user/99999", 404), ("/user/1/extra", 404), ("/user/", 404)]:
        response = http.get(path)
        _check(response)
        assert response.status_code == status


def test_hammering_a_small_limit_gets_429_with_retry_after_and_waiting_helps(world_universe) -> None:
    world, universe = world_universe
    app = create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=RateLimit(rate_per_s=5, burst=10))
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        answers = [c.get(f"/user/{1 + i % USERS}") for i in range(60)]
        for r in answers:
            _check(r, "/user/{ids}")
        refused = [r for r in answers if r.status_code == 429]
        assert len(refused) >= 40 and all(r.status_code in (200, 429) for r in answers)
        waits = {int(r.headers["retry-after"]) for r in refused}
        assert waits and min(waits) >= 1
        assert all(re.fullmatch(r"[1-9][0-9]*", r.headers["retry-after"]) for r in refused)
        assert c.get("/healthz").status_code == 200  # health checks are never limited
        time.sleep(max(waits))
        _check(ok := c.get("/user/1"), "/user/{ids}")
        assert ok.status_code == 200
    assert not server.thread.is_alive(), "uvicorn did not stop"


def _raw(base_url: str, request: bytes) -> tuple[bytes, bytes]:
    """Send raw bytes, read the answer until the server closes or 5 s pass: (head, body)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
        except TimeoutError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /user/" + b"1" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line over 64 KiB
        b"GET /movie/" + b"a+" * 40_000 + b"b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BLAH\r\n\r\n",
        b"GET /user/1 HTTP/1.1\r\nHost x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    ids=["long-user-line", "long-movie-line", "not-http", "bad-header", "tls-hello"],
)
def test_requests_the_server_cannot_parse_get_a_json_400(base_url, request_bytes: bytes) -> None:
    head, body = _raw(base_url, request_bytes)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"content-type: application/json" in head.lower()
    assert body == UNPARSABLE_REQUEST
    Error.model_validate_json(body)


def test_the_longest_documented_request_is_served(base_url, openapi, world_universe) -> None:
    slug = world_universe[1].catalog.slug[0]
    schema = openapi["paths"]["/movie/{ids}"]["get"]["parameters"][0]["schema"]
    ids = ",".join([slug] * 200)
    assert len(ids) <= schema["maxLength"] and re.fullmatch(schema["pattern"], ids)
    head, body = _raw(base_url, f"GET /movie/{ids} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200 "), head + body[:300]
    assert len(TypeAdapter(list[Movie]).validate_json(body)) == 200
    longest = ",".join(f"{i:03d}" + "+z" * 97 + "+12" for i in range(200))  # 200 ids of 200 characters
    assert len(longest) == schema["maxLength"] - 1 and re.fullmatch(schema["pattern"], longest)
    head, body = _raw(base_url, f"GET /movie/{longest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 404 "), head + body[:300]  # well-formed, just not in the catalog
    assert len(Error.model_validate_json(body).ids) == 200


def test_head_over_http_is_get_without_the_body(http) -> None:
    for path in ("/user/1", "/movie/no+such+movie+1901", "/healthz"):
        get, head = http.get(path), http.head(path)
        assert (head.status_code, head.headers["content-length"]) == (get.status_code, get.headers["content-length"])
        assert head.content == b"" and head.headers["content-type"] == "application/json"
