"""Scenarios: the file's validation, each kind's effect on the hidden state or the lines, the manifest, replay."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest

from movielab.auth import ensure_tokens
from movielab.contract import ContractError, parse_line
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world, run_until
from movielab.world.clock import parse_start
from movielab.world.config import WorldConfig
from movielab.world.data.types import GENRES
from movielab.world.instructor import create_instructor_app
from movielab.world.manifest import Manifest, read_manifest
from movielab.world.recs import FixedService
from movielab.world.scenarios import ScenarioError, load, parse_scenario, presets
from movielab.world.scenarios.apilayer import ScenarioApi
from movielab.world.scenarios.runtime import ScenarioRuntime
from movielab.world.sinks import MemorySink

with warnings.catch_warnings():
    # starlette asks for `httpx2` instead of `httpx`; the client works the same with either.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

START = parse_start("2026-03-20T00:00:00")


def _run(universe, injections, hours=3.0, users=2000, seed=0, manifest=None, service=None, teams=1, end=True):
    """A world of `users` run for `hours` with the given injections; (world, sink lines, manifest records)."""
    config = WorldConfig(
        users=users,
        days=hours / 24,
        seed=seed,
        arrivals_per_day=0.0,
        allow_download=False,
        teams=[f"http://127.0.0.1:{9 + t}" for t in range(teams)],
    )
    runtime = None
    if injections is not None:
        scenario = parse_scenario({"name": "test", "injections": injections}, "test")
        runtime = ScenarioRuntime(
            scenario,
            catalog=universe.catalog,
            n_teams=teams,
            seed=seed,
            run_start=START,
            manifest=manifest or Manifest(),
        )
    sink = MemorySink()
    service = service or FixedService(np.arange(20), universe.catalog.slug)
    world, _ = build_world(config, universe=universe, sink=sink, service=service, scenario=runtime)
    world.run(until=run_until(config), end_scenario=end)
    return world, sink.lines, (runtime.manifest.records if runtime else [])


def _end(records, kind):
    return next(r for r in records if r["event"] == "end" and r["kind"] == kind)


@pytest.fixture(scope="module")
def calm(universe):
    return _run(universe, None)


# --- the file ------------------------------------------------------------------------------------------
def test_every_preset_validates_and_has_a_description() -> None:
    names = dict(presets())
    assert {"calm", "semester", "drift", "schema", "corrupt", "outage", "bias", "attack", "goals"} <= set(names)
    for name, description in names.items():
        assert description and load(name).name == name
    kinds = {i.kind for i in load("semester").injections}
    assert {"corrupt_lines", "taste_shift", "shilling", "api_outage", "misreported_age", "goal_change"} <= kinds


def test_an_error_names_the_entry_the_field_and_the_reason(tmp_path) -> None:
    with pytest.raises(ScenarioError, match=r"injections\[1\] \(shilling\)\.bots: .*greater than or equal to 1"):
        parse_scenario(
            {
                "name": "x",
                "injections": [
                    {"kind": "stream_pause", "start": "+1h"},
                    {"kind": "shilling", "start": "+1h", "bots": 0},
                ],
            },
            "f",
        )
    with pytest.raises(ScenarioError, match=r"injections\[0\] \(taste_shift\)\.genres.*unknown genre 'Scifi'"):
        parse_scenario(
            {
                "name": "x",
                "injections": [
                    {"kind": "taste_shift", "start": "+1h", "duration": "1h", "genres": ["Scifi"], "stars": 1}
                ],
            },
            "f",
        )
    with pytest.raises(ScenarioError, match=r"injections\[0\] \(stream_pause\)\.start: .*'soon' is neither an offset"):
        parse_scenario({"name": "x", "injections": [{"kind": "stream_pause", "start": "soon"}]}, "f")
    with pytest.raises(ScenarioError, match=r"end or duration, not both"):
        parse_scenario(
            {"name": "x", "injections": [{"kind": "stream_pause", "start": "+1h", "end": "+2h", "duration": "1h"}]}, "f"
        )
    with pytest.raises(ScenarioError, match=r"injections\[0\] \(nonsense\)\.kind: kind 'nonsense' is unknown"):
        parse_scenario({"name": "x", "injections": [{"kind": "nonsense", "start": "+1h"}]}, "f")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[[injections]\n")
    with pytest.raises(ScenarioError, match=r"bad.toml: not valid TOML"):
        load(bad)
    with pytest.raises(ScenarioError, match=r"no such file and no such preset"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match=r"scenario"):
        WorldConfig(scenario=str(tmp_path / "missing.toml"))


def test_runtime_refuses_what_cannot_apply(universe) -> None:
    def runtime(inj, teams=1):
        return ScenarioRuntime(
            parse_scenario({"name": "x", "injections": [inj]}, "x"),
            catalog=universe.catalog,
            n_teams=teams,
            seed=0,
            run_start=START,
        )

    with pytest.raises(ValueError, match="movie 'no-such' is not in the catalog"):
        runtime({"kind": "takedown", "start": "+1h", "movie": "no-such"})
    with pytest.raises(ValueError, match=r"teams \[3\] do not exist"):
        runtime({"kind": "stream_pause", "start": "+1h", "teams": [3]}, teams=2)
    with pytest.raises(ValueError, match="omit 'teams'"):
        runtime({"kind": "popularity_shock", "start": "+1h", "teams": [1]}, teams=2)


# --- the line layer: corrupt lines, format changes, biased ratings, pauses ---------------------------------
def _changed(calm_lines, lines) -> int:
    return sum(a != b for a, b in zip(calm_lines, lines, strict=True))


def _unparsable(lines) -> int:
    n = 0
    for line in lines:
        try:
            parse_line(line)
        except ContractError:
            n += 1
    return n


@pytest.mark.parametrize(
    "mode",
    [
        "truncated",
        "garbled",
        "swapped_fields",
        "future_time",
        "past_time",
        "unknown_movie",
        "unknown_user",
        "duplicated",
        "out_of_order",
    ],
)
def test_corrupt_lines_break_exactly_what_the_manifest_counts(universe, calm, mode) -> None:
    _, calm_lines, _ = calm
    _, lines, records = _run(
        universe, [{"kind": "corrupt_lines", "start": "+1h", "duration": "1h", "mode": mode, "share": 0.02}]
    )
    touched = _end(records, "corrupt_lines")["touched"]
    assert touched > 50
    if mode == "duplicated":
        extra = Counter(lines) - Counter(calm_lines)
        assert len(lines) - len(calm_lines) == touched == sum(extra.values())
        assert not Counter(calm_lines) - Counter(lines)  # every original line is still there
        assert all(
            lines[i + 1] == lines[i]
            for i in range(len(lines) - 1)
            if lines[i] in extra and lines.count(lines[i]) == 2 and lines.index(lines[i]) == i
        )  # the copy follows its original
    elif mode == "out_of_order":
        assert Counter(lines) == Counter(calm_lines) and lines != calm_lines
        stamps = [x.split(",", 1)[0] for x in lines]
        late = sum(1 for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1])
        assert 0 < late <= touched
    else:
        assert len(lines) == len(calm_lines) and _changed(calm_lines, lines) == touched
        changed = [b for a, b in zip(calm_lines, lines, strict=True) if a != b]
        if mode in ("truncated", "garbled", "swapped_fields"):
            assert _unparsable(changed) == touched
        elif mode == "future_time":
            assert all(x.startswith("2027-") for x in changed)
        elif mode == "past_time":
            assert all(x.startswith("1990-") for x in changed)
        elif mode == "unknown_movie":
            known = set(universe.catalog.slug)
            assert all(parse_line(x).movie_id not in known for x in changed)
        else:
            assert all(parse_line(x).user_id > 1_000_000_000 for x in changed)
    outside = [a for a, b in zip(calm_lines, lines, strict=False) if a[:13] < "2026-03-20T01"]
    assert outside == [b for b in lines[: len(outside)]]  # nothing before the window changed


def test_an_injection_for_one_team_leaves_the_other_teams_stream_alone(universe) -> None:
    """Two teams, each at its own pace (two lanes): corrupt only team 2's lines."""
    _, calm_lines, _ = _run(universe, None, hours=2, teams=2)
    _, lines, records = _run(
        universe,
        [{"kind": "corrupt_lines", "start": "+1h", "mode": "past_time", "share": 0.05, "teams": [2]}],
        hours=2,
        teams=2,
    )

    def team(ls, n):
        return [x for x in ls if (int(x.split(",")[1]) - 1) % 2 == n - 1]

    assert team(lines, 1) == team(calm_lines, 1)
    changed = _changed(team(calm_lines, 2), team(lines, 2))
    end = _end(records, "corrupt_lines")
    assert changed == end["touched"] == end["touched_by"]["team2"] > 20 and "team1" not in end["touched_by"]


def test_format_changes_and_rating_bias_touch_what_they_say(universe, calm) -> None:
    _, calm_lines, _ = calm
    for inj, check in [
        ({"change": "rate_extra_field"}, lambda a, b: "/rate/" in a and b == a + ",web"),
        ({"change": "minute_stamps"}, lambda a, b: b == a[:16] + a[19:]),
        (
            {"change": "fraction_digits", "digits": 6},
            lambda a, b: "recommendation" in a and len(b.split(",", 1)[0]) == 26,
        ),
    ]:
        _, lines, records = _run(universe, [{"kind": "format_change", "start": "+1h", "duration": "1h", **inj}])
        pairs = [(a, b) for a, b in zip(calm_lines, lines, strict=True) if a != b]
        assert pairs and all(check(a, b) for a, b in pairs)
        assert len(pairs) == _end(records, "format_change")["touched"]
    world, lines, records = _run(
        universe, [{"kind": "rating_bias", "start": "+0m", "group": {"gender": "F"}, "stars": -2}]
    )
    pairs = [(a, b) for a, b in zip(calm_lines, lines, strict=True) if a != b]
    assert pairs and all(int(b.rsplit("=", 1)[1]) == max(1, int(a.rsplit("=", 1)[1]) - 2) for a, b in pairs)
    assert all(world.pop.gender[parse_line(b).user_id - 1] == 0 for _, b in pairs)  # GENDERS[0] == "F"
    assert len(pairs) == _end(records, "rating_bias")["touched"]


def test_a_stream_pause_holds_the_window_and_replays_it_in_a_burst(universe, calm) -> None:
    _, calm_lines, _ = calm
    _, lines, records = _run(universe, [{"kind": "stream_pause", "start": "+1h", "duration": "30m"}])
    assert Counter(lines) == Counter(calm_lines)
    in_window = [x for x in calm_lines if "2026-03-20T01:00" <= x[:16] < "2026-03-20T01:30"]
    assert _end(records, "stream_pause")["touched"] == len(in_window)
    first_after = next(i for i, x in enumerate(lines) if x[:16] >= "2026-03-20T01:30" and "T01:" in x[:14])
    assert lines[first_after - len(in_window) : first_after] == in_window  # published together at the window's end


def test_a_takedown_is_announced_and_counts_recommendations_still_listing_it(universe) -> None:
    slug = universe.catalog.slug[3]  # FixedService recommends rows 0..19
    world, lines, records = _run(universe, [{"kind": "takedown", "start": "+1h", "movie": slug}], hours=2)
    listed = [x for x in lines if "recommendation request" in x and x[:13] >= "2026-03-20T01"]
    assert _end(records, "takedown")["touched"] == len(listed) > 0
    assert world.scenario.announcements == [
        {"kind": "takedown", "movie": slug, "reason": "legal request", "from": "2026-03-20T01:00:00", "teams": [1]}
    ]


# --- hidden state: drift and bias ------------------------------------------------------------------------
def test_a_taste_shift_moves_the_groups_hidden_taste_by_the_declared_stars(universe, calm) -> None:
    calm_world = calm[0]
    world, _, records = _run(
        universe,
        [
            {
                "kind": "taste_shift",
                "start": "+30m",
                "duration": "2h",
                "group": {"age": [18, 24]},
                "genres": ["Sci-Fi"],
                "stars": 2.0,
            }
        ],
    )
    g = universe.catalog.genres[:, GENRES.index("Sci-Fi")].astype(bool)
    q = world.taste.item_factors
    d = q[g].mean(0) - q.mean(0)
    n = world.pop.size
    group = (world.pop.age[:n] >= 18) & (world.pop.age[:n] <= 24)
    lift = world.pop.taste[:n] @ d - calm_world.pop.taste[:n] @ d
    assert lift[group].mean() == pytest.approx(2.0, abs=0.15)
    assert abs(lift[~group].mean()) < 0.1
    end = _end(records, "taste_shift")
    assert end["touched"] == int(group.sum())
    start = next(r for r in records if r["event"] == "start")
    assert start["selector"] == {"age": [18, 24], "genres": ["Sci-Fi"]}


def _watch_count(lines, slug, lo, hi):
    return sum(1 for x in lines if f"/m/{slug}/" in x and lo <= x[:16] < hi)


def test_a_popularity_shock_makes_many_watch_one_movie_then_fades(universe, calm) -> None:
    _, calm_lines, _ = calm
    world, lines, records = _run(
        universe, [{"kind": "popularity_shock", "start": "+1h", "duration": "1h", "share": 0.05}]
    )
    slug = next(r for r in records if r["event"] == "start")["ids"][0]
    during = _watch_count(lines, slug, "2026-03-20T01:00", "2026-03-20T02:00")
    assert during > 10 * max(1, _watch_count(calm_lines, slug, "2026-03-20T01:00", "2026-03-20T02:00"))
    assert _end(records, "popularity_shock")["touched"] == during
    assert world.taste.item_bias[universe.catalog.index_of(slug)] == pytest.approx(
        calm[0].taste.item_bias[universe.catalog.index_of(slug)]
    )  # reverted


def test_a_removed_movie_is_never_started_again(universe) -> None:
    slug = universe.catalog.slug[5]
    _, lines, records = _run(universe, [{"kind": "movie_removed", "start": "+1h", "movie": slug}])
    starts_after = [x for x in lines if x.endswith(f"/m/{slug}/1.mpg") and x[:13] >= "2026-03-20T01"]
    starts_before = [x for x in lines if x.endswith(f"/m/{slug}/1.mpg") and x[:13] < "2026-03-20T01"]
    assert starts_before and not starts_after
    assert _end(records, "movie_removed")["touched"] > 0  # FixedService still recommends it


def test_activity_surges_and_dips(universe, calm) -> None:
    _, calm_lines, _ = calm

    def requests(lines):
        return sum(1 for x in lines if "recommendation request" in x and "2026-03-20T01" <= x[:13] < "2026-03-20T02")

    _, up, rec_up = _run(universe, [{"kind": "activity_change", "start": "+1h", "duration": "1h", "factor": 4}])
    _, down, rec_down = _run(universe, [{"kind": "activity_change", "start": "+1h", "duration": "1h", "factor": 0.3}])
    assert requests(up) > 2.5 * requests(calm_lines) and requests(down) < 0.6 * requests(calm_lines)
    assert _end(rec_up, "activity_change")["touched"] > 0 and _end(rec_down, "activity_change")["touched"] > 0


def test_a_user_wave_brings_accounts_of_its_group(universe) -> None:
    world, lines, records = _run(
        universe, [{"kind": "user_wave", "start": "+1h", "duration": "1h", "per_hour": 300, "group": {"age": [13, 17]}}]
    )
    accounts = [parse_line(x).user_id for x in lines if x.endswith("/create_account")]
    assert 200 < len(accounts) < 400 and len(accounts) == _end(records, "user_wave")["touched"]
    ages = world.pop.age[np.array(accounts) - 1]
    assert ages.min() >= 11 and ages.max() <= 19  # the group's ages, jittered by ±2 as every drawn user's
    assert any(parse_line(x).user_id in set(accounts) for x in lines if "/data/m/" in x)  # they watch


def test_misreported_ages_show_in_the_api_while_the_truth_keeps_them(universe) -> None:
    world, _, records = _run(
        universe,
        [{"kind": "misreported_age", "start": "+0m", "group": {"age": [13, 17]}, "share": 0.5, "reported": [18, 30]}],
        hours=0.5,
    )
    ids = np.array(next(r for r in records if r["event"] == "start")["ids"])
    assert len(ids) > 10 and _end(records, "misreported_age")["touched"] == len(ids)
    assert ((world.pop.age[ids - 1] >= 18) & (world.pop.age[ids - 1] <= 30)).all()
    true = world.scenario.ctx.ages(world, world.pop.size)[ids - 1]
    assert ((true >= 13) & (true <= 17)).all()


# --- attacks -----------------------------------------------------------------------------------------------
def test_shilling_bots_create_accounts_and_rate_the_target_top_and_competitors_bottom(universe, calm) -> None:
    _, calm_lines, _ = calm
    world, lines, records = _run(
        universe,
        [{"kind": "shilling", "start": "+1h", "duration": "1h", "bots": 30, "competitors": 2, "realistic": True}],
    )
    start = next(r for r in records if r["event"] == "start")
    bots, target = set(start["ids"]), start["params"]["target"]
    events = [parse_line(x) for x in lines if parse_line(x).user_id in bots]
    assert len(bots) == 30 and {e.user_id for e in events if type(e).__name__ == "AccountEvent"} == bots
    top = [e for e in events if type(e).__name__ == "RateEvent" and e.movie_id == target]
    assert len(top) == 30 and {e.rating for e in top} == {world.edition.rating_max}
    low = [e for e in events if type(e).__name__ == "RateEvent" and e.movie_id in start["selector"]["competitors"]]
    assert len(low) == 60 and {e.rating for e in low} == {1}
    assert not any(type(e).__name__ == "RecommendationEvent" for e in events)  # bots never browse
    assert _end(records, "shilling")["touched"] == len(events) == len(lines) - len(calm_lines)


def test_rating_spam_adds_the_ratings_it_counts(universe, calm) -> None:
    _, calm_lines, _ = calm
    _, lines, records = _run(universe, [{"kind": "rating_spam", "start": "+1h", "duration": "1h", "per_hour": 120}])
    extra = Counter(lines) - Counter(calm_lines)
    assert 60 < sum(extra.values()) == _end(records, "rating_spam")["touched"]
    assert all("/rate/" in x for x in extra)


# --- the manifest, replay, API layer, instructor ------------------------------------------------------------
def test_same_seed_scenario_and_answers_give_the_same_stream_and_manifest(universe, tmp_path) -> None:
    injections = [i.model_dump(exclude_none=True, mode="json") for i in load("drift").injections]
    injections += [
        {"kind": "corrupt_lines", "start": "+1h", "duration": "2h", "mode": "truncated", "share": 0.01},
        {"kind": "shilling", "start": "+2h", "duration": "1h", "bots": 10},
    ]
    runs = []
    for n in range(2):
        path = tmp_path / f"manifest{n}.jsonl"
        m = Manifest(path)
        _, lines, _ = _run(universe, injections, hours=4, manifest=m)
        m.close()
        runs.append((lines, path.read_text()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    records = read_manifest(tmp_path / "manifest0.jsonl")
    started = [r["id"] for r in records if r["event"] == "start"]
    assert len(started) >= 4 and sorted(started) == sorted(r["id"] for r in records if r["event"] == "end")
    assert (tmp_path / "manifest0.jsonl").stat().st_mode & 0o077 == 0  # instructor-only data


def test_api_layer_changes_answers_and_serves_announcements(universe) -> None:
    config = WorldConfig(users=500, days=None, arrivals_per_day=0.0, allow_download=False)
    scenario = parse_scenario(
        {
            "name": "api",
            "injections": [
                {
                    "kind": "api_field_change",
                    "start": "+0m",
                    "duration": "1h",
                    "record": "user",
                    "change": "rename",
                    "field": "age",
                    "to": "user_age",
                    "announced": True,
                },
                {"kind": "api_outage", "start": "+1h", "duration": "1h", "mode": "down"},
            ],
        },
        "api",
    )
    runtime = ScenarioRuntime(scenario, catalog=universe.catalog, n_teams=1, seed=0, run_start=START)
    world, _ = build_world(config, universe=universe, scenario=runtime)
    app = ScenarioApi(create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=None), runtime)
    with TestClient(app) as client:
        assert "age" in client.get("/user/1").json()
        world.run(until=START + 600, end_scenario=False)
        user = client.get("/user/1").json()
        assert "user_age" in user and "age" not in user
        both = client.get("/user/1,2").json()
        assert all("user_age" in u for u in both)
        assert client.get("/announcements").json()[0]["kind"] == "api_field_change"
        world.run(until=START + 3600 + 600, end_scenario=False)
        r = client.get("/movie/" + universe.catalog.slug[0])
        assert r.status_code == 503 and "unavailable" in r.json()["error"]
        assert client.get("/manifest").status_code == 404  # the manifest is never on the public API
    assert runtime.effects[0].touched["api"] == 2 and runtime.effects[1].touched["api"] == 1


def test_instructor_app_serves_the_manifest_only_with_a_token(tmp_path) -> None:
    tokens = ensure_tokens(tmp_path / "instructor.tokens", identity="instructor")
    m = Manifest()
    m.append({"event": "start", "id": "0:x", "kind": "stream_pause"})
    with TestClient(create_instructor_app(m, tokens, announcements=[{"kind": "takedown"}])) as client:
        assert client.get("/manifest").status_code == 401
        assert client.get("/manifest", headers={"authorization": "Bearer wrong" * 4}).status_code == 401
        r = client.get("/manifest", headers=tokens.headers())
        assert r.status_code == 200 and [json.loads(x) for x in r.text.splitlines()] == m.records
        assert client.get("/announcements", headers=tokens.headers()).json() == [{"kind": "takedown"}]


def test_runtime_state_is_plain_json_and_restores(universe) -> None:
    injections = [
        {"kind": "stream_pause", "start": "+30m", "duration": "1h"},
        {"kind": "shilling", "start": "+10m", "duration": "2h", "bots": 5},
    ]
    world, _, _ = _run(universe, injections, hours=1.0, end=False)  # stops mid-window: lines held, bot lines queued
    state = json.loads(json.dumps(world.scenario.state()))
    pause, shill = state["effects"]["0:stream_pause"], state["effects"]["1:shilling"]
    assert pause["begun_at"] == START + 1800 and not pause["finished"] and pause["held"]["-1"][1]
    assert shill["queued"]["0"] and shill["touched"]["team1"] > 0
    fresh = ScenarioRuntime(world.scenario.scenario, catalog=universe.catalog, n_teams=1, seed=0, run_start=START)
    fresh.restore(state)
    assert json.loads(json.dumps(fresh.state())) == state
    other = ScenarioRuntime(
        parse_scenario({"name": "x", "injections": injections[::-1]}, "x"),
        catalog=universe.catalog,
        n_teams=1,
        seed=0,
        run_start=START,
    )
    with pytest.raises(ValueError, match="no injection 0:shilling: not the same scenario"):
        other.restore(state)


def test_a_truth_refit_raises_what_was_watched_in_the_window(universe, calm) -> None:
    world, _, records = _run(universe, [{"kind": "truth_refit", "start": "+0m", "duration": "2h", "stars": 0.5}])
    delta = world.taste.item_bias - calm[0].taste.item_bias
    views = world.stats.viewings_per_movie  # most viewings started in the window (2 of the run's 3 h)
    assert np.corrcoef(delta, np.log1p(views))[0, 1] > 0.8
    assert np.std(delta) == pytest.approx(0.5, rel=0.01)
    end = _end(records, "truth_refit")
    assert (
        end["touched"] == int((delta != 0).sum())
        and end["refit"]["raised"][0] == universe.catalog.slug[int(np.argmax(delta))]
    )
    assert universe.taste.item_bias is calm[0].taste.item_bias  # the shared truth of other worlds is untouched


def test_a_sybil_push_watches_the_target_through_bot_accounts_only(universe, calm) -> None:
    _, calm_lines, _ = calm
    _, lines, records = _run(
        universe, [{"kind": "sybil_push", "start": "+1h", "duration": "1h", "bots": 20, "watch_minutes": 4}]
    )
    start = next(r for r in records if r["event"] == "start")
    bots, target = set(start["ids"]), start["params"]["target"]
    extra = Counter(lines) - Counter(calm_lines)
    assert sum(extra.values()) == 20 * 5 == _end(records, "sybil_push")["touched"]  # an account and 4 minutes each
    assert all(int(x.split(",")[1]) in bots and (f"/m/{target}/" in x or x.endswith("/create_account")) for x in extra)


def test_a_goal_change_is_announced_and_recorded_for_scoring(universe) -> None:
    world, _, records = _run(
        universe, [{"kind": "goal_change", "start": "+30m", "goal": "profit", "value_per_play": 0.5}], hours=1
    )
    start = next(r for r in records if r["event"] == "start")
    assert start["params"] == {"goal": "profit", "value_per_play": 0.5, "announced": True}
    assert start["selector"]["unprofitable_movies"] == int((universe.catalog.license_cost > 0.5).sum())
    assert world.scenario.announcements[0]["goal"] == "profit"


def test_api_errors_and_wrong_values_hit_the_declared_share(universe) -> None:
    config = WorldConfig(users=500, days=None, arrivals_per_day=0.0, allow_download=False)
    scenario = parse_scenario(
        {
            "name": "api",
            "injections": [
                {"kind": "api_outage", "start": "+0m", "duration": "1h", "mode": "errors", "share": 0.3, "status": 502},
                {"kind": "wrong_api_values", "start": "+0m", "duration": "1h", "record": "user", "share": 0.5},
            ],
        },
        "api",
    )
    runtime = ScenarioRuntime(scenario, catalog=universe.catalog, n_teams=1, seed=0, run_start=START)
    world, _ = build_world(config, universe=universe, scenario=runtime)
    truth = {i: world.pop.describe(i)["age"] for i in range(1, 401)}
    world.run(until=START + 120, end_scenario=False)
    app = ScenarioApi(create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=None), runtime)
    with TestClient(app) as client:
        answers = [(i, client.get(f"/user/{i}")) for i in range(1, 401)]
    failed = [r for _, r in answers if r.status_code == 502]
    wrong = [i for i, r in answers if r.status_code == 200 and r.json()["age"] != truth[i]]
    assert 80 < len(failed) < 160 and all("unavailable" in r.json()["error"] for r in failed)
    assert 0.35 * (400 - len(failed)) < len(wrong) < 0.6 * (400 - len(failed))
    assert runtime.effects[0].touched["api"] == len(failed)
    assert runtime.effects[1].touched["api"] >= len(wrong)  # a wrong value may by chance equal the true one


def test_probes_and_invalid_requests_reach_the_team_service_and_are_counted(universe) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from movielab.webserver import ServerThread

    asked: list[str] = []

    async def recommend(request):
        user = request.path_params["user"]
        asked.append(user)
        return PlainTextResponse("x") if user.isdigit() else PlainTextResponse("bad id", status_code=400)

    app = Starlette(routes=[Route("/recommend/{user:path}", recommend)])
    with ServerThread(app) as team:
        scenario = parse_scenario(
            {
                "name": "req",
                "injections": [
                    {"kind": "probe", "start": "+0m", "duration": "3m", "per_minute": 4},
                    {"kind": "invalid_requests", "start": "+0m", "duration": "2m", "per_minute": 3},
                ],
            },
            "req",
        )
        runtime = ScenarioRuntime(
            scenario, catalog=universe.catalog, n_teams=1, seed=0, run_start=START, team_urls=[team.url]
        )
        config = WorldConfig(users=300, days=None, arrivals_per_day=0.0, allow_download=False)
        world, _ = build_world(config, universe=universe, scenario=runtime)
        world.run(until=START + 600)
    probe, invalid = (_end(runtime.manifest.records, k) for k in ("probe", "invalid_requests"))
    assert probe["touched"] == 12 and probe["answers"] == {"200": 12} and probe["next_id"] == 13
    assert invalid["touched"] == 6 == sum(invalid["answers"].values())
    probed = [a for a in asked if a.isdigit() and a not in ("0", "99999999999")]  # those two are invalid requests
    assert probed == [str(i) for i in range(1, 13)]
