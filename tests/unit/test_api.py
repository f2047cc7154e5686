"""The world HTTP API in process: answers, bulk order, every error as JSON, rate limiting, live population."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movielab.contract import edition
from movielab.contract.slug import MAX_MOVIE_ID_LENGTH, MOVIE_ID_PATTERN
from movielab.world.api import MAX_IDS, Error, Movie, User, create_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.data.catalog import SIMULATED_ALWAYS
from movielab.world.data.types import GENDERS, OCCUPATIONS
from movielab.world.ratelimit import RateLimit, TokenBuckets

with warnings.catch_warnings():
    # starlette asks for `httpx2` instead of `httpx`; the client works the same with either.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

USERS = 500
MOVIE_FIELDS = {
    "id",
    "tmdb_id",
    "imdb_id",
    "title",
    "original_title",
    "adult",
    "belongs_to_collection",
    "budget",
    "genres",
    "homepage",
    "original_language",
    "overview",
    "popularity",
    "poster_path",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
    "vote_average",
    "vote_count",
    "license_cost",
}
COURSE = Path(__file__).parent.parent / "data" / "course"


@pytest.fixture(scope="module")
def world_universe():
    return build_world(WorldConfig(users=USERS, allow_download=False, arrivals_per_day=2.0))


@pytest.fixture(scope="module")
def world(world_universe):
    return world_universe[0]


@pytest.fixture(scope="module")
def catalog(world_universe):
    return world_universe[1].catalog


@pytest.fixture(scope="module")
def client(world, catalog):
    with TestClient(create_app(world.pop, catalog, taste=world.taste, rate_limit=None)) as c:
        yield c


def _json(response) -> object:
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = _json(response)
    Error.model_validate(body)
    return body


# --- users -------------------------------------------------------------------------------------
def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("likes", "dislikes")}


def test_one_user_has_exactly_the_contract_fields(client, world) -> None:
    body = _json(client.get("/user/42"))
    assert list(body) == ["user_id", "age", "occupation", "gender", "likes", "dislikes"]  # the 2026 edition
    assert _public(body) == world.pop.describe(42)
    assert body["occupation"] in OCCUPATIONS and body["gender"] in GENDERS
    assert isinstance(body["likes"], str) and isinstance(body["dislikes"], str)
    assert _json(client.get("/user/42")) == body  # an answer is drawn once
    User.model_validate(body)


def test_bulk_users_answer_a_list_in_the_order_given(client, world) -> None:
    body = _json(client.get("/user/7,3,500,3,1"))
    assert [u["user_id"] for u in body] == [7, 3, 500, 3, 1]
    assert [_public(u) for u in body] == [world.pop.describe(i) for i in (7, 3, 500, 3, 1)]
    assert body[1] == body[3]


@pytest.mark.parametrize("name", ["2019", "2024"])
def test_editions_before_2026_serve_the_2019_shapes(world, catalog, name) -> None:
    with TestClient(create_app(world.pop, catalog, rate_limit=None, edition=edition(name))) as c:
        user = _json(c.get("/user/42"))
        movie = _json(c.get(f"/movie/{quote(catalog.slug[0])}"))
    real_user = json.loads((COURSE / "users_2019.jsonl").read_text("utf-8").splitlines()[0])
    real_movie = json.loads((COURSE / "movies_2019.jsonl").read_text("utf-8").splitlines()[0])
    assert list(user) == list(real_user)
    assert set(movie) - {"simulated"} == set(real_movie)  # no license cost before 2026


def test_json_types_match_the_real_course_records_field_by_field(client, catalog) -> None:
    real_users = [json.loads(line) for line in (COURSE / "users_2019.jsonl").read_text("utf-8").splitlines()]
    real_movies = [json.loads(line) for line in (COURSE / "movies_2019.jsonl").read_text("utf-8").splitlines()]
    ours_user = _json(client.get("/user/42"))
    ours_movies = [_json(client.get(f"/movie/{quote(catalog.slug[i])}")) for i in range(50)]
    for real in real_users:
        for field, value in real.items():
            assert type(ours_user[field]) is type(value), field
    for real in real_movies:
        for field, value in real.items():
            # "null" strings stand where the course has no value; ours must have the same JSON type then too
            kinds = {type(m[field]) for m in ours_movies}
            assert kinds == {type(value)}, (field, kinds, type(value))
    assert {type(m["license_cost"]) for m in ours_movies} == {float}


def test_bulk_of_max_ids_is_served_and_one_more_is_refused(client) -> None:
    ids = [str(1 + i % USERS) for i in range(MAX_IDS)]
    assert len(_json(client.get("/user/" + ",".join(ids)))) == MAX_IDS
    body = _error(client.get("/user/" + ",".join(ids + ["9"])), 400)
    assert body["error"] == "too many user ids in one request: 201 given, at most 200" and body["id"] == "9"
    body = _error(client.get("/movie/" + ",".join(["a" * 199] * 202)), 400)
    assert body["error"] == "too many movie ids in one request: 40399 characters, at most 40200"


def test_user_created_after_the_app_was_built_is_served(world, catalog) -> None:
    with TestClient(create_app(world.pop, catalog, taste=world.taste, rate_limit=None)) as c:
        first_new = world.pop.size + 1
        assert c.get(f"/user/{first_new}").status_code == 404
        for _ in range(5000):  # about one arrival a simulated minute
            world.step()
            if world.pop.size >= first_new + 1:
                break
        assert world.pop.size >= first_new + 1
        assert _public(_json(c.get(f"/user/{first_new}"))) == world.pop.describe(first_new)
        bulk = _json(c.get(f"/user/1,{first_new},{first_new + 1}"))
        assert [u["user_id"] for u in bulk] == [1, first_new, first_new + 1]
        assert _json(c.get("/healthz"))["users"] == world.pop.size


# --- movies ------------------------------------------------------------------------------------
def test_one_movie_has_every_design_field_and_names_the_simulated_ones(client, catalog) -> None:
    slug = catalog.slug[0]
    body = _json(client.get(f"/movie/{quote(slug)}"))
    assert MOVIE_FIELDS <= set(body) and set(body) - MOVIE_FIELDS == {"simulated"}
    assert body["id"] == slug and body == catalog.tmdb_record(0, license_cost=True)
    assert isinstance(body["runtime"], int) and "license_cost" in body["simulated"]
    assert set(SIMULATED_ALWAYS) <= set(body["simulated"]) and "title" not in body["simulated"]
    Movie.model_validate(body)
    assert _json(client.get(f"/movie/{slug}")) == body  # the cached answer is the same


def test_bulk_movies_answer_a_list_in_the_order_given(client, catalog) -> None:
    slugs = [catalog.slug[i] for i in (5, 0, 99, 5)]
    body = _json(client.get("/movie/" + ",".join(slugs)))
    assert [m["id"] for m in body] == slugs
    assert body == [catalog.tmdb_record(i, license_cost=True) for i in (5, 0, 99, 5)]


# --- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("/user/0", "0"),
        ("/user/007", "007"),
        ("/user/-1", "-1"),
        ("/user/+1", "+1"),
        ("/user/1.0", "1.0"),
        ("/user/abc", "abc"),
        ("/user/%201", " 1"),
        ("/user/1%0A", "1\n"),
        ("/user/%D9%A1", "\u0661"),
        ("/user/1_000", "1_000"),
        ("/user/1e3", "1e3"),
        ("/user/" + "9" * 19, "9" * 19),
        ("/user/1,,2", ""),
        ("/user/,1", ""),
        ("/user/1,", ""),
        ("/user/1,x,2,y", "x"),
        ("/movie/toy%20story", "toy story"),
        ("/movie/t%C3%B6y", "t\u00f6y"),
        ("/movie/" + "a" * 201, "a" * 100 + "…"),
        ("/movie/toy+story+1995,", ""),
        ("/movie/%FF", "\ufffd"),
    ],
)
def test_malformed_ids_are_400_naming_the_id_and_the_reason(client, path, bad) -> None:
    body = _error(client.get(path), 400)
    assert body["id"] == bad
    assert body["error"].startswith(("malformed user id", "malformed movie id"))
    assert ": " in body["error"]  # the reason follows the id


@pytest.mark.parametrize(
    "movie",
    ["Toy+Story+1995", "toy++story", "+toy", "ben-hur+1901", "monsters_+inc.+1900", "dr.+no+1900", "carcasses+"],
)
def test_ids_of_the_course_alphabet_are_looked_up_not_refused(client, movie) -> None:
    body = _error(client.get(f"/movie/{quote(movie)}"), 404)
    assert body["ids"] == [movie]


def test_unknown_user_is_404_naming_it(client) -> None:
    body = _error(client.get("/user/123456789"), 404)
    assert body == {
        "error": "unknown user id '123456789': not in the population",
        "id": "123456789",
        "ids": ["123456789"],
    }


def test_bulk_with_unknown_ids_is_404_listing_each_once(client) -> None:
    body = _error(client.get("/user/1,900001,2,900002,900001"), 404)
    assert body["ids"] == ["900001", "900002"] and body["id"] == "900001"
    assert "'900001', '900002'" in body["error"]
    body = _error(client.get("/movie/toy+story+1995,no+such+movie+1901"), 404)
    assert body["ids"] == ["no+such+movie+1901"] and "not in the catalog" in body["error"]


@pytest.mark.parametrize("path", ["/user/", "/user", "/movie/", "/user/1/extra", "/user/1/", "/nope", "/"])
def test_unmatched_paths_are_404_json(client, path) -> None:
    body = _error(client.get(path), 404)
    assert "no such resource" in body["error"] and body["id"] is None


def test_other_methods_are_405_json(client) -> None:
    response = client.post("/user/1")
    body = _error(response, 405)
    assert "POST" in body["error"] and response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path", ["/user/1", "/user/1,2", "/movie/toy+story+1995", "/healthz", "/user/0", "/user/99999"]
)
def test_head_answers_like_get_without_the_body(client, path) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code and head.status_code != 405
    assert head.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.content == b""


def test_unexpected_errors_are_json_too(catalog) -> None:
    class BrokenPopulation:
        size = 10

        def describe(self, user_id: int) -> dict:
            raise RuntimeError("boom")

    app = create_app(BrokenPopulation(), catalog, rate_limit=None, edition=edition("2019"))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as c:
        body = _error(c.get("/user/1"), 500)
    assert body["error"] == "internal error serving GET /user/1: RuntimeError"


def test_healthz(client, world, catalog) -> None:
    assert _json(client.get("/healthz")) == {"status": "ok", "users": world.pop.size, "movies": len(catalog)}


def test_openapi_documents_the_answers(client) -> None:
    doc = _json(client.get("/openapi.json"))
    assert {"/user/{ids}", "/movie/{ids}", "/healthz"} <= set(doc["paths"])
    user_op = doc["paths"]["/user/{ids}"]["get"]
    assert [p["name"] for p in user_op["parameters"]] == ["ids"]
    assert set(user_op["responses"]) == {"200", "400", "404", "429"}
    error_ref = {"$ref": "#/components/schemas/Error"}
    assert all(
        user_op["responses"][s]["content"]["application/json"]["schema"] == error_ref for s in ("400", "404", "429")
    )
    schemas = doc["components"]["schemas"]
    assert set(schemas["User"]["properties"]) == {"user_id", "age", "occupation", "gender", "likes", "dislikes"}
    assert MOVIE_FIELDS | {"simulated"} == set(schemas["Movie"]["properties"])
    assert "simulated" in schemas["Movie"]["description"]
    assert "head" in doc["paths"]["/user/{ids}"] and "head" in doc["paths"]["/movie/{ids}"]


def _documented(doc: dict, path: str) -> re.Pattern:
    (param,) = doc["paths"][path]["get"]["parameters"]
    assert param["schema"]["maxLength"] >= len(param["schema"]["pattern"]) // 100  # a real bound is given
    return re.compile(param["schema"]["pattern"])


@pytest.fixture(scope="module")
def doc(client) -> dict:
    return _json(client.get("/openapi.json"))


def test_openapi_id_patterns_come_from_the_contract(doc) -> None:
    movie = doc["paths"]["/movie/{ids}"]["get"]["parameters"][0]["schema"]["pattern"]
    assert MOVIE_ID_PATTERN in movie and str(MAX_MOVIE_ID_LENGTH) in movie and str(MAX_IDS - 1) in movie


_STRATEGIES: dict[str, st.SearchStrategy[str]] = {}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["user", "movie"]))
def test_every_id_the_document_allows_is_served_or_unknown_never_refused(client, doc, data, kind) -> None:
    if kind not in _STRATEGIES:
        pattern = _documented(doc, f"/{kind}/{{ids}}")
        # from_regex treats the per-id look-ahead loosely: keep what the documented pattern really allows
        _STRATEGIES[kind] = st.from_regex(pattern, fullmatch=True).filter(
            lambda t, p=pattern: "\n" not in t and re.fullmatch(p, t) is not None
        )
    ids = data.draw(_STRATEGIES[kind], label="ids")
    response = client.get(f"/{kind}/" + quote(ids, safe=",+"))
    assert response.status_code in (200, 404), (ids, response.text)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["user", "movie"]),
    raw=st.one_of(
        st.text(max_size=30),
        st.text(alphabet="az09+,", max_size=30),
        st.integers(0, 10**20).map(str),
        st.integers(1, 300).map(lambda n: "a" * n),
        st.integers(1, 210).map(lambda n: ",".join(["1"] * n)),
    ),
)
def test_the_document_allows_exactly_what_the_routes_accept(client, doc, kind, raw) -> None:
    if raw == "" or "/" in raw:
        return  # another path (/user/, /user/a/b), not this parameter
    allowed = _documented(doc, f"/{kind}/{{ids}}").search(raw) is not None and "\n" not in raw
    response = client.get(f"/{kind}/" + quote(raw, safe=",+"))
    assert (response.status_code != 400) == allowed, (raw, response.status_code, response.text)


@settings(max_examples=300, deadline=None)
@given(
    route=st.sampled_from(["/user/", "/movie/"]),
    segment=st.one_of(
        st.text(max_size=60),
        st.lists(st.one_of(st.integers(-5, 2000).map(str), st.text(max_size=8)), max_size=8).map(",".join),
        st.text(alphabet="abz019+,", max_size=40),
    ),
)
def test_any_path_segment_gets_a_json_answer_never_5xx(client, route, segment) -> None:
    response = client.get(route + quote(segment, safe=",+"))
    assert response.status_code < 500, response.text
    body = _json(response)
    if response.status_code >= 400:
        Error.model_validate(body)


# --- rate limiting -----------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_answers_429_with_retry_after_then_recovers(world, catalog) -> None:
    clock = FakeClock()
    app = create_app(world.pop, catalog, taste=world.taste, rate_limit=RateLimit(rate_per_s=0.5, burst=3), clock=clock)
    with TestClient(app) as c:
        assert [c.get("/user/1").status_code for _ in range(3)] == [200, 200, 200]
        refused = c.get(f"/movie/{catalog.slug[0]}")
        body = _error(refused, 429)
        assert refused.headers["retry-after"] == "2"
        assert "rate limit exceeded for client testclient" in body["error"]
        assert c.get("/healthz").status_code == 200  # not limited
        clock.now += 1.0
        assert c.get("/user/1").headers["retry-after"] == "1"
        clock.now += 1.0
        assert c.get("/user/1").status_code == 200


def test_token_buckets_refill_and_wait_in_whole_seconds() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate_per_s=10.0, burst=2), clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 1]
    assert buckets.take("b") == 0  # clients are separate
    clock.now += 0.1
    assert buckets.take("a") == 0
    assert buckets.take("a") == 1  # a fraction of a second still says 1


def test_token_buckets_forget_idle_clients_and_stay_bounded() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(RateLimit(rate_per_s=1.0, burst=2, max_clients=100), clock)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100
    clock.now += 2.0  # every bucket is full again, so none needs keeping
    buckets.take("new")
    assert len(buckets) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_s": 0, "burst": 1}, "rate_per_s"),
        ({"rate_per_s": float("nan"), "burst": 1}, "rate_per_s"),
        ({"rate_per_s": 1, "burst": 0}, "burst"),
        ({"rate_per_s": 1, "burst": 1, "max_clients": 0}, "max_clients"),
    ],
)
def test_rate_limit_config_is_checked(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimit(**kwargs)


def test_errors_are_valid_json_with_the_documented_keys(client) -> None:
    raw = client.get("/user/x").content
    assert set(json.loads(raw)) == {"error", "id"}


class _CountingSink:
    def __init__(self, topic: str, delivered: int, failed: int) -> None:
        self.topic, self.delivered, self.failed = topic, delivered, failed


def test_metrics_page_counts_lines_produced_per_topic_and_is_absent_without_a_registry(world, catalog) -> None:
    from prometheus_client import CollectorRegistry

    from movielab.kafka.metrics import ProducedLinesCollector

    sinks = [_CountingSink("movielog1", 5, 0), _CountingSink("movielog2", 7, 1)]
    registry = CollectorRegistry()
    registry.register(ProducedLinesCollector(sinks))
    with TestClient(create_app(world.pop, catalog, taste=world.taste, rate_limit=None, metrics=registry)) as c:
        first = c.get("/metrics")
        sinks[0].delivered = 9  # read at scrape time, not copied when the app was built
        text = c.get("/metrics").text
    assert first.status_code == 200 and 'world_lines_produced_total{topic="movielog1"} 5.0' in first.text
    assert 'world_lines_produced_total{topic="movielog1"} 9.0' in text
    assert 'world_lines_failed_total{topic="movielog2"} 1.0' in text
    with TestClient(create_app(world.pop, catalog, taste=world.taste, rate_limit=None)) as c:
        assert c.get("/metrics").status_code == 404


def test_announcements_are_an_empty_list_in_a_world_without_a_scenario(client) -> None:
    response = client.get("/announcements")
    assert response.status_code == 200 and _json(response) == []
