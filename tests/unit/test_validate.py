"""Validation: the columnar parser agrees with the contract's, quarantine reasons, the world API client."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movielab.contract import (
    MalformedEvent,
    RateEvent,
    RecommendationEvent,
    WatchEvent,
    edition,
    parse_line,
    rate_line,
    watch_line,
)
from movielab.recommender.errors import WorldApiUnavailable
from movielab.recommender.ingest.validation import Validator, parse_values
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore

T0 = datetime(2026, 3, 20, 8, 0, 0)
MOVIES = {"a+2000": "100", "b+2001": "90", "c+2002": "null"}


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


class FakeWorld:
    """The world API's answers as an httpx transport: bulk lists, 404 listing unknown ids, 429 on demand."""

    def __init__(self, users: int = 100) -> None:
        self.users = users
        self.paths: list[str] = []
        self.rate_limited = 0  # answer this many requests with 429 first
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.paths.append(request.url.path)
        if self.rate_limited:
            self.rate_limited -= 1
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "slow down", "id": None})
        kind, raw = request.url.path.strip("/").split("/", 1)
        ids = raw.split(",")
        if kind == "movie":
            unknown = [i for i in ids if i not in MOVIES]
            records = [
                {"id": i, "runtime": MOVIES.get(i), "title": i.upper(), "genres": [{"id": 18, "name": "Drama"}]}
                for i in ids
            ]
        else:
            unknown = [i for i in ids if int(i) > self.users]
            records = [{"user_id": int(i), "age": 30, "occupation": "writer", "gender": "F"} for i in ids]
        if unknown:
            return httpx.Response(404, json={"error": f"unknown {kind} ids", "id": unknown[0], "ids": unknown})
        return httpx.Response(200, content=json.dumps(records if len(ids) > 1 else records[0]).encode())


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


@pytest.fixture
def api(world: FakeWorld):
    sleeps: list[float] = []
    with WorldApi("http://world.test", transport=httpx.MockTransport(world.handle), sleep=sleeps.append) as client:
        client.sleeps = sleeps  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def store():
    with EventStore(None) as s:
        yield s


def records(lines: list[str | bytes], first: int = 0, partition: int = 0) -> list[tuple[str, int, int, bytes]]:
    return [
        ("movielog1", partition, first + i, line.encode() if isinstance(line, str) else line)
        for i, line in enumerate(lines)
    ]


def watches(user: int, movie: str, n: int, start: datetime = T0) -> list[str]:
    return [watch_line(stamp(start + timedelta(minutes=m)), user, movie, m + 1) for m in range(n)]


# --- the columnar parser agrees with the contract's ------------------------------------------------------
def event_row(ev) -> dict:
    """The PARSED_SCHEMA row a typed event should give."""
    rec = isinstance(ev, RecommendationEvent)
    kind = {WatchEvent: "watch", RateEvent: "rate", RecommendationEvent: "recommendation"}.get(type(ev), "account")
    return {
        "time": ev.time,
        "user_id": ev.user_id,
        "kind": kind,
        "movie_id": getattr(ev, "movie_id", None),
        "minute": getattr(ev, "minute", None),
        "rating": getattr(ev, "rating", None),
        "server": ev.server if rec else None,
        "status": ev.status if rec else None,
        "recommendations": list(ev.recommendations) if rec else None,
        "error": ev.error if rec else None,
        "response_ms": ev.response_ms if rec else None,
        "nanosecond": ev.nanosecond or None,
    }


def assert_agrees(lines: list[str | bytes]) -> None:
    parsed, malformed = parse_values(lines)
    rows = {r.pop("idx"): r for r in parsed.to_pylist()}
    reasons = dict(malformed)
    assert len(rows) + len(reasons) == len(lines)
    for i, line in enumerate(lines):
        try:
            ev = parse_line(line)
        except MalformedEvent as exc:
            assert reasons.get(i) == exc.reason, line
        else:
            assert rows.get(i) == event_row(ev), line


TRICKY = [
    "2026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg",
    "2026-03-20T08:12:41,118106,GET /rate/grumpier+old+men+1995=3",
    "2026-03-20T08:13:02,17,GET /create_account",
    "2026-03-20T08:12:38.176557,128017,recommendation request team1.local:8082, status 200, result: "
    "the+green+mile+1999, the+sound+of+music+1965, 131 ms",
    "2026-03-20T08:13:02.001200,17,recommendation request t:8082, status 0, result: Request timeout, 601 ms",
    "2026-02-30T08:12:38,614,GET /data/m/brides+2004/20.mpg",  # no such day
    "2024-02-29T23:59:59,614,GET /data/m/brides+2004/20.mpg",  # leap day
    "2025-02-29T00:00:00,614,GET /data/m/brides+2004/20.mpg",
    "2026-03-20T23:59:60,614,GET /data/m/brides+2004/20.mpg",  # leap second
    "2026-03-20T24:00:00,614,GET /data/m/brides+2004/20.mpg",
    "2026-13-01T00:00:00,614,GET /data/m/brides+2004/20.mpg",
    "0000-01-01T00:00:00,1,GET /create_account",
    "0999-01-01T00:00:00,1,GET /create_account",
    "１９９９-01-01T00:00:00,1,GET /create_account",  # full-width digits
    "2026-03-20T08:12:38,０１,GET /create_account",
    "2026-03-20T08:12:38,614,GET /data/m/brides+2004/0.mpg",
    "2026-03-20T08:12:38,614,GET /data/m/brides+2004/123456.mpg",
    "2026-03-20T08:12:38,614,GET /rate/brides+2004=7",
    "2026-03-20T08:12:38,614,GET /rate/brides+2004=0",
    "2026-03-20T08:12:38,0614,GET /create_account",
    "2026-03-20T08:12:38,614,GET /data/m/" + "a" * 201 + "/1.mpg",  # slug too long
    "2026-03-20T08:12:38,614,GET /data/m/" + "a" * 200 + "/1.mpg",
    "2026-03-20T08:12:38,614,GET /data/m/Brides+2004/20.mpg",
    "2026-03-20T08:12:38,614,GET /data/m/brides++2004/20.mpg",
    "2026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg\n",
    "2026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg,extra",
    "2026-03-20T08:12:38,614,GET /data/m/brid",
    "2026-03-20T08:12:38,614",
    "2026-03-20T08:12:38.000001,614,GET /create_account",
    "",
    b"\xff\xfe\x00garbage",
    b"2026-03-20T08:12:38,614,GET /data/m/br\xc3\xa9des+2004/20.mpg",
    "2026-03-20T08:12:38,614,GET /data/m/monsters_+inc.+2001/20.mpg",  # the course's alphabet
    "2026-03-20T08:12:38,614,GET /rate/ben-hur+1959=10",
    "2026-03-20T08:12:38,614,GET /rate/a=b=10",
    "2026-03-20T08:12:38,614,GET /rate/carcasses+=4",
    "2026-03-20T08:12,614,GET /rate/dr.+no+1962=5",  # minutes only
    "2026-02-14T00:09:20.426,614,GET /data/m/escape+to+athena+1979/73.mpg",
    "2025-10-17T01:33:45.122692921,6,recommendation request t:80, status 200, result: big+hero+6+2014, "
    "the+hunger+games+mockingjay+-+part+1+2014, 25 ms",
    "2024-10-14T15 :42:39,100015,GET /rate/robots+2005=3",  # broken lines of the real stream
    "2024-10-14T16G:55:12,100016,GET /rate/el+dorado+1988=4",
]


def test_columnar_parser_agrees_on_tricky_lines() -> None:
    assert_agrees(TRICKY)


_digits = st.text("0123456789", min_size=1, max_size=3)
_time = st.builds(
    lambda y, mo, d, h, mi, s, short: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}" + ("" if short else f":{s:02d}"),
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.booleans(),
)
_user = st.one_of(st.integers(1, 10**11).map(str), st.sampled_from(["0", "007", "-3", "１２", ""]))
_ID_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",/")  # the course's id alphabet
_slug = st.one_of(
    st.from_regex(r"[a-z0-9]{1,6}(\+[a-z0-9]{1,6}){0,3}", fullmatch=True),
    st.text(_ID_ALPHABET + " ,/é", min_size=1, max_size=12),
    st.sampled_from(
        [
            "Toy+Story",
            "a++b",
            "+a",
            "é+1995",
            "a" * 201,
            "a" * 200,
            "monsters_+inc.+2001",
            "ben-hur+1959",
            "x=1",
            "carcasses+",
        ]
    ),
)
_fraction = st.one_of(st.just(""), st.text("0123456789", min_size=0, max_size=10).map(lambda d: "." + d))
_tail = st.sampled_from(["", "", "", "\n", " ", ",x", "\r"])


@st.composite
def near_lines(draw) -> str:
    """Lines of every shape, mostly well-formed, often off by a little."""
    t, u, slug = draw(_time), draw(_user), draw(_slug)
    if draw(st.integers(0, 4)) == 0:
        t += draw(_fraction)
    shape = draw(st.sampled_from(["watch", "rate", "account", "rec"]))
    if shape == "watch":
        body = f"GET /data/m/{slug}/{draw(st.one_of(st.integers(0, 100_001).map(str), _digits))}.mpg"
    elif shape == "rate":
        body = f"GET /rate/{slug}={draw(st.integers(0, 12))}"
    elif shape == "account":
        body = "GET /create_account"
    else:
        t += draw(st.sampled_from([".123456", ".122692921", ".426", ""]))
        body = f"recommendation request t:80, status {draw(st.sampled_from(['200', '0', '500']))}, result: {slug}, 5 ms"
    return f"{t},{u},{body}{draw(_tail)}"


@settings(max_examples=300, deadline=None)
@given(st.lists(near_lines(), min_size=1, max_size=30))
def test_columnar_parser_agrees_with_the_contract(lines: list[str]) -> None:
    assert_agrees(lines)


# --- quarantine reasons --------------------------------------------------------------------------------
def quarantined(store: EventStore) -> dict[int, tuple[str, str]]:
    return {o: (kind, reason) for _, _, o, _, kind, reason in store.quarantined(limit=10_000)}


def test_every_reason_kind(api: WorldApi, store: EventStore) -> None:
    good = watches(1, "a+2000", 30)
    bad = {
        30: ("2026-03-20T08:12:38,614,GET /rate/a+2000=11", "malformed"),
        31: (b"\xff\xfe\x00garbage", "malformed"),
        32: ("2026-02-30T08:12:38,614,GET /data/m/a+2000/1.mpg", "malformed"),
        33: (watch_line(stamp(T0), 2, "no+such+movie+1899", 1), "unknown_movie"),
        34: (rate_line("1970-01-01T00:00:00", 2, "a+2000", 4), "bad_time"),
        35: (rate_line(stamp(T0 + timedelta(days=2)), 2, "a+2000", 4), "bad_time"),
        36: (good[3], "duplicate"),
        37: (rate_line(stamp(T0), 2, "a+2000", 7), "bad_rating"),
    }
    lines = good + [line for line, _ in bad.values()] + [watch_line(stamp(T0), 99_999, "b+2001", 1)]
    store.append(Validator(api, store, edition=edition("2019")).check(records(lines)))
    found = quarantined(store)
    assert {o: kind for o, (kind, _) in found.items()} == {o: kind for o, (_, kind) in bad.items()}
    assert found[37][1] == "rating 7 is outside 1..5 of the 2019-2023 edition"
    with pytest.raises(MalformedEvent) as exc:
        parse_line(bad[30][0])
    assert found[30][1] == exc.value.reason  # the parser's reason, verbatim
    assert "no+such+movie+1899" in found[33][1] and "http://world.test" in found[33][1]
    assert "before 1995-01-01" in found[34][1] and "more than 1 day" in found[35][1]
    assert found[36][1] == "identical to the line at movielog1/0@3 earlier in the batch"
    # Every other line is stored, the unknown user's too (the API may lag behind a new account).
    assert {o for _, _, o in store.event_keys()} == set(range(30)) | {38}


def test_duplicate_of_a_stored_line_but_not_a_replay(api: WorldApi, store: EventStore) -> None:
    validator = Validator(api, store)
    first = records(watches(1, "a+2000", 5))
    store.append(validator.check(first))
    again = validator.check(first)  # a replay: same offsets, nothing new and nothing quarantined
    assert again.quarantine.num_rows == 0 and store.append(again).events == 0
    copy = records([watches(1, "a+2000", 5)[2], watch_line(stamp(T0), 1, "b+2001", 1)], first=5, partition=1)
    store.append(validator.check(copy))
    assert quarantined(store) == {5: ("duplicate", "identical to the stored line at movielog1/0@2")}


def test_times_are_compared_with_the_stream_not_the_wall_clock(api: WorldApi, store: EventStore, caplog) -> None:
    validator = Validator(api, store)
    past = datetime(2001, 5, 1)  # far from today: fine, it is the stream's own time
    store.append(validator.check(records(watches(1, "a+2000", 10, past))))
    # A new partition is compared with the latest time of the others.
    late = records([rate_line(stamp(past + timedelta(days=3)), 2, "a+2000", 4)], first=0, partition=1)
    store.append(validator.check(late))
    assert [kind for kind, _ in quarantined(store).values()] == ["bad_time"]
    # Most of a batch days ahead: the world's clock jumped, follow it.
    jump = past + timedelta(days=30)
    with caplog.at_level(logging.WARNING):
        batch = validator.check(records(watches(3, "b+2001", 25, jump), first=10))
    assert batch.quarantine.num_rows == 0 and batch.events.num_rows == 25
    assert "jump" in caplog.text
    store.append(batch)
    ahead = records([watch_line(stamp(jump + timedelta(hours=30)), 3, "b+2001", 26)], first=35)
    assert validator.check(ahead).quarantine.column("reason_kind").to_pylist() == ["bad_time"]


def test_a_world_api_outage_quarantines_nothing(world: FakeWorld, api: WorldApi, store: EventStore) -> None:
    validator = Validator(api, store)
    world.down = True
    lines = records(watches(1, "a+2000", 3) + [watch_line(stamp(T0), 1, "no+such+movie+1899", 1)])
    with pytest.raises(WorldApiUnavailable, match="http://world.test/movie/"):
        validator.check(lines)
    world.down = False
    batch = validator.check(lines)  # the same lines, once the API is back
    assert batch.events.num_rows == 3
    assert batch.quarantine.column("reason_kind").to_pylist() == ["unknown_movie"]


def test_new_movie_records_go_into_the_batch_once(api: WorldApi, store: EventStore) -> None:
    validator = Validator(api, store)
    batch = validator.check(records(watches(1, "a+2000", 2) + watches(2, "c+2002", 2, T0 + timedelta(hours=1))))
    assert sorted((m.movie_id, m.runtime) for m in batch.movies) == [("a+2000", 100), ("c+2002", None)]
    store.append(batch)
    validator.stored(batch)
    assert validator.check(records(watches(3, "a+2000", 2), first=10)).movies == []


# --- the world API client ------------------------------------------------------------------------------
def test_bulk_lookups_are_chunked_and_cached(world: FakeWorld, api: WorldApi) -> None:
    known, unknown = api.users(range(1, 451))
    assert len(known) == 100 and unknown == set(range(101, 451))
    assert all(len(p.split("/")[-1].split(",")) <= 200 for p in world.paths)
    asked = len(world.paths)
    assert api.users(range(1, 451)) == (known, unknown)  # from the cache (unknown ids for a while)
    assert len(world.paths) == asked
    assert known[7].age == 30 and known[7].gender == "F"


def test_fresh_lookups_ask_the_api_again_past_the_cache(world: FakeWorld, api: WorldApi) -> None:
    known, unknown = api.movies(["a+2000", "nope+1999"])
    asked = len(world.paths)
    assert api.movies(["a+2000", "nope+1999"]) == (known, unknown) and len(world.paths) == asked  # cached
    assert api.movies(["a+2000", "nope+1999"], fresh=True) == (known, unknown)
    assert len(world.paths) > asked and world.paths[asked].startswith("/movie/a+2000,nope+1999")


def test_bulk_404_asks_again_without_the_unknown_ids(world: FakeWorld, api: WorldApi) -> None:
    known, unknown = api.movies(["a+2000", "nope+1999", "c+2002"])
    assert sorted(known) == ["a+2000", "c+2002"] and unknown == {"nope+1999"}
    assert world.paths == ["/movie/a+2000,nope+1999,c+2002", "/movie/a+2000,c+2002"]
    assert known["a+2000"].runtime == 100 and known["c+2002"].runtime is None
    assert known["a+2000"].genres == ("Drama",)


def test_rate_limit_is_waited_out(world: FakeWorld, api: WorldApi) -> None:
    world.rate_limited = 2
    known, _ = api.movies(["b+2001"])
    assert "b+2001" in known and api.sleeps == [2.0, 2.0]  # type: ignore[attr-defined]
    world.rate_limited = 100
    with pytest.raises(WorldApiUnavailable, match="HTTP 429"):
        api.movies(["a+2000"])


def test_unknown_ids_are_asked_again_after_a_while(world: FakeWorld) -> None:
    now = [0.0]
    api = WorldApi(
        "http://world.test", transport=httpx.MockTransport(world.handle), negative_ttl=60, clock=lambda: now[0]
    )
    assert api.users([150]) == ({}, {150})
    world.users = 200  # the account now exists
    assert api.users([150]) == ({}, {150})
    now[0] = 61.0
    known, unknown = api.users([150])
    assert 150 in known and not unknown
    api.close()


def test_a_404_that_is_not_an_unknown_id_answer_is_an_outage() -> None:
    def wrong_service(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    with WorldApi("http://elsewhere.test", transport=httpx.MockTransport(wrong_service)) as api:
        with pytest.raises(WorldApiUnavailable, match="http://elsewhere.test/movie/a\\+2000.*without a list"):
            api.movies(["a+2000", "b+2001"])
