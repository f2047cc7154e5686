"""A scenario against the live world (embedded broker, world API, a team service) and the recommender's ingest:
each injection is visible in the stream where it should be, and the hidden manifest is only on the instructor port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

import pytest

from movielab.auth import read_tokens
from movielab.contract import ContractError, RateEvent, parse_line
from movielab.kafka.consumer import read_topic
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore
from movielab.world.config import WorldConfig
from movielab.world.live import run_live
from movielab.world.manifest import read_manifest

pytestmark = pytest.mark.integration

MODES = {
    "truncated": "malformed",
    "garbled": "malformed",
    "swapped_fields": "malformed",
    "duplicated": "duplicate",
    "future_time": "bad_time",
    "past_time": "bad_time",
    "unknown_movie": "unknown_movie",
    "out_of_order": None,
    "unknown_user": None,
}

SCENARIO = "\n".join(
    ['name = "live"', 'description = "every corrupt mode in turn, a shilling attack, a takedown, invalid requests"']
    + [
        f'[[injections]]\nkind = "corrupt_lines"\nstart = "+{10 + 8 * i}m"\nduration = "8m"\nmode = "{m}"\nshare = 0.03'
        for i, m in enumerate(MODES)
    ]
    + [
        '[[injections]]\nkind = "shilling"\nstart = "+30m"\nduration = "40m"\nbots = 25\ncompetitors = 2',
        '[[injections]]\nkind = "takedown"\nstart = "+40m"\nmovie = "MOVIE"',
        '[[injections]]\nkind = "invalid_requests"\nstart = "+20m"\nduration = "5m"\nper_minute = 3',
    ]
)


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_scenario_is_seen_in_the_stream_and_recorded_only_for_the_instructor(stub_teams, universe, tmp_path) -> None:
    slug = universe.catalog.slug[2]  # the good stub team recommends rows 0..19: it keeps recommending the takedown
    scenario = tmp_path / "live.toml"
    scenario.write_text(SCENARIO.replace("MOVIE", slug))
    config = WorldConfig(
        users=1500,
        days=100 / 60 / 24,
        teams=stub_teams[:1],
        api_port=0,
        partitions=2,
        arrivals_per_day=0.5,
        allow_download=False,
        scenario=str(scenario),
        manifest=tmp_path / "manifest.jsonl",
        instructor_port=0,
        instructor_tokens=tmp_path / "instructor.tokens",
    )
    seen: dict = {}

    def after(live, stats) -> None:
        seen["lines"] = [
            v.decode("utf-8", "replace") for _, v, _, _ in read_topic(live.bootstrap, "movielog1", group_id="truth")
        ]
        seen["announcements"] = _get(f"{live.api_url}/announcements")
        seen["public_manifest"] = _get(f"{live.api_url}/manifest")[0]
        seen["instructor_no_token"] = _get(f"{live.instructor_url}/manifest")[0]
        token = read_tokens(config.instructor_tokens).headers()
        seen["instructor"] = _get(f"{live.instructor_url}/manifest", token)
        with EventStore(tmp_path / "events.duckdb") as store, WorldApi(live.api_url) as api:
            ingest = Ingestor(
                live.bootstrap, ["movielog1"], store, api, group_id="scen", batch_size=5000, fetch_users=False
            )
            ingest.run_until_idle(idle_seconds=2.0, timeout=60.0)
            seen["quarantined"] = Counter(ingest.quarantined)

    run_live(config, universe=universe, after=after)
    records = read_manifest(tmp_path / "manifest.jsonl")
    ends = {r["id"]: r for r in records if r["event"] == "end"}
    starts = {r["id"]: r for r in records if r["event"] == "start"}
    assert set(ends) == set(starts) and len(ends) == len(MODES) + 3

    # Corrupt lines: the recommender quarantined exactly what the manifest counts, under the matching reason.
    expected: Counter = Counter()
    for r in ends.values():
        if r["kind"] == "corrupt_lines":
            mode = starts[r["id"]]["params"]["mode"]
            assert r["touched"] > 0, mode
            if MODES[mode]:
                expected[MODES[mode]] += r["touched"]
    assert seen["quarantined"] == expected

    # Shilling: the target's top ratings jump during the window; none before; the bots' accounts were created.
    shill = next(r for r in starts.values() if r["kind"] == "shilling")
    target, bots = shill["params"]["target"], set(shill["ids"])
    ratings = [e for e in map(_parse, seen["lines"]) if isinstance(e, RateEvent) and e.movie_id == target]
    before = [e for e in ratings if e.time.strftime("%H:%M") < "00:30"]
    during = [e for e in ratings if "00:30" <= e.time.strftime("%H:%M") < "01:10"]
    assert len(during) >= len(bots) == 25 and not any(e.user_id in bots for e in before)
    accounts = {int(x.split(",")[1]) for x in seen["lines"] if x.endswith("/create_account")}
    assert bots <= accounts

    # Takedown: announced on the public channel; the team kept recommending it, and the manifest counted that.
    status, body = seen["announcements"]
    assert status == 200 and {"kind": "takedown", "movie": slug}.items() <= json.loads(body)[0].items()
    takedown = next(r for r in ends.values() if r["kind"] == "takedown")
    listed = [x for x in seen["lines"] if "recommendation request" in x and x[11:16] >= "00:40"]
    assert takedown["touched"] == len(listed) > 0

    # Invalid requests reached the team's service; every answer is counted.
    invalid = next(r for r in ends.values() if r["kind"] == "invalid_requests")
    assert invalid["touched"] == 15 == sum(invalid["answers"].values())

    # The manifest: never on the public API, on the instructor port only with the token.
    assert seen["public_manifest"] == 404 and seen["instructor_no_token"] == 401
    status, body = seen["instructor"]
    assert status == 200 and [json.loads(x) for x in body.decode().splitlines()] == records


def _parse(line: str):
    try:
        return parse_line(line)
    except ContractError:  # corrupt lines are the point here
        return None
