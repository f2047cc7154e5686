"""Catalog changes: a movie added (held back until its start, then served and picked) and a movie renamed (the API's
title changes, the id stays); each recorded in the manifest, announced when the file says so."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from movielab.world.api import create_app
from movielab.world.bootstrap import build_world, run_until
from movielab.world.clock import parse_start
from movielab.world.config import WorldConfig
from movielab.world.manifest import Manifest
from movielab.world.recs import FixedService
from movielab.world.scenarios import ScenarioError, load, parse_scenario
from movielab.world.scenarios.apilayer import ScenarioApi
from movielab.world.scenarios.drift import MovieRemoved
from movielab.world.scenarios.runtime import ScenarioRuntime
from movielab.world.sinks import MemorySink

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

START = parse_start("2026-03-20T00:00:00")


def _world(universe, injections, hours=3.0, users=2000, seed=0):
    """A world of `users` with the given injections, built but not run; (world, sink)."""
    config = WorldConfig(
        users=users,
        days=hours / 24,
        seed=seed,
        arrivals_per_day=0.0,
        allow_download=False,
        teams=["http://127.0.0.1:9"],
    )
    scenario = parse_scenario({"name": "catalog", "injections": injections}, "catalog.toml")
    runtime = ScenarioRuntime(
        scenario, catalog=universe.catalog, n_teams=1, seed=seed, run_start=START, manifest=Manifest()
    )
    sink = MemorySink()
    service = FixedService(np.arange(20), universe.catalog.slug)
    world, _ = build_world(config, universe=universe, sink=sink, service=service, scenario=runtime)
    return world, sink, config


def _movie_lines(lines, slug, lo="", hi="9"):
    return [x for x in lines if (f"/m/{slug}/" in x or f"/rate/{slug}=" in x) and lo <= x[:16] < hi]


def test_an_added_movie_is_unknown_before_its_start_then_served_and_picked(universe) -> None:
    slug = universe.catalog.slug[int(np.argmax(universe.catalog.vote_count))]  # the most watched movie of the catalog
    world, sink, config = _world(
        universe, [{"kind": "movie_added", "start": "+1h", "movie": slug, "share": 0.05, "announced": True}]
    )
    row = universe.catalog.index_of(slug)
    true_bias = float(world.taste.item_bias[row])
    api = TestClient(
        ScenarioApi(create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=None), world.scenario)
    )
    other = universe.catalog.slug[0]
    assert api.get(f"/movie/{slug}").status_code == 404  # not in the catalog before +1h, run or not
    world.run(until=START + 1800, end_scenario=False)
    # Held back: the hidden bias says no one chooses it, no browse weight, the API answers as for an unknown id.
    assert world.taste.item_bias[row] == MovieRemoved.GONE and world.browse_cdf[row] == world.browse_cdf[row - 1]
    r = api.get(f"/movie/{slug}")
    assert r.status_code == 404 and r.json() == {
        "error": f"unknown movie id '{slug}': not in the catalog",
        "id": slug,
        "ids": [slug],
    }
    bulk = api.get(f"/movie/{other},{slug},no-such+1999")
    assert bulk.status_code == 404 and bulk.json()["ids"] == [slug, "no-such+1999"]
    assert api.get(f"/movie/{other}").status_code == 200
    assert api.get("/announcements").json() == []
    world.run(until=run_until(config))
    # Added at +1h: its true bias is back, the API serves it, users pick it; the manifest counts its lines.
    assert world.taste.item_bias[row] == pytest.approx(true_bias)
    assert api.get(f"/movie/{slug}").json()["id"] == slug
    assert api.get("/announcements").json() == [{"kind": "movie_added", "movie": slug, "from": "2026-03-20T01:00:00"}]
    lines = sink.lines
    assert not _movie_lines(lines, slug, hi="2026-03-20T01:00")
    after = _movie_lines(lines, slug, lo="2026-03-20T01:00")
    assert len(after) > 20
    records = world.scenario.manifest.records
    start = next(r for r in records if r["event"] == "start")
    end = next(r for r in records if r["event"] == "end")
    assert start["ids"] == [slug] and start["params"]["movie"] == slug and start["start"] == "2026-03-20T01:00:00"
    assert end["touched_by"] == {"team1": len(after), "api": 3}  # its lines, and the three 404 answers


def test_an_added_movie_without_a_campaign_is_found_by_its_hidden_truth(universe) -> None:
    slug = universe.catalog.slug[int(np.argmax(universe.catalog.vote_count))]
    world, sink, config = _world(universe, [{"kind": "movie_added", "start": "+1h", "movie": slug, "share": 0}])
    world.run(until=run_until(config))
    assert not _movie_lines(sink.lines, slug, hi="2026-03-20T01:00")
    assert world.scenario.manifest.records[-1]["touched"] == len(_movie_lines(sink.lines, slug)) > 10


def test_an_auto_added_movie_is_a_well_liked_movielens_movie_and_shows_in_the_stream(universe) -> None:
    world, sink, config = _world(universe, [{"kind": "movie_added", "start": "+1h"}], users=3000)
    e = world.scenario.effects[0]
    cat = universe.catalog
    assert not cat.synthetic[e.movie] and cat.vote_average[e.movie] >= np.percentile(cat.vote_average, 50)
    world.run(until=run_until(config))
    assert world.scenario.manifest.records[-1]["touched"] == len(_movie_lines(sink.lines, e.slug)) > 0


def test_a_renamed_movie_keeps_its_id_and_changes_its_title_on_the_api(universe) -> None:
    slug = universe.catalog.slug[7]
    old = universe.catalog.title[7]
    world, _, config = _world(
        universe,
        [{"kind": "movie_renamed", "start": "+1h", "duration": "1h", "movie": slug, "title": "New Name"}],
    )
    api = TestClient(
        ScenarioApi(create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=None), world.scenario)
    )
    world.run(until=START + 1800, end_scenario=False)
    assert api.get(f"/movie/{slug}").json()["title"] == old
    world.run(until=START + 5400, end_scenario=False)
    during = api.get(f"/movie/{slug}").json()
    assert (during["id"], during["title"], during["original_title"]) == (slug, "New Name", old)
    bulk = api.get(f"/movie/{universe.catalog.slug[0]},{slug}").json()
    assert [m["title"] for m in bulk] == [universe.catalog.title[0], "New Name"]
    assert api.get(f"/movie/{universe.catalog.slug[0]}").json()["title"] == universe.catalog.title[0]
    assert api.get("/announcements").json() == []  # silent unless announced
    world.run(until=run_until(config))
    assert api.get(f"/movie/{slug}").json()["title"] == old  # back after the window
    records = world.scenario.manifest.records
    start = next(r for r in records if r["event"] == "start")
    assert start["params"] | {"movie": slug, "title": "New Name", "old_title": old} == start["params"]
    assert next(r for r in records if r["event"] == "end")["touched_by"] == {"api": 2}


def test_a_renamed_movie_is_announced_when_the_file_says_so(universe) -> None:
    world, _, _ = _world(universe, [{"kind": "movie_renamed", "start": "+0m", "announced": True}])
    world.run(until=START + 600, end_scenario=False)
    e = world.scenario.effects[0]
    assert world.scenario.announcements == [
        {
            "kind": "movie_renamed",
            "movie": e.slug,
            "title": f"{e.old_title} (Remastered)",
            "from": "2026-03-20T00:00:00",
        }
    ]
    world.scenario.close(world)


def test_catalog_entries_that_contradict_each_other_are_refused(universe) -> None:
    slug = universe.catalog.slug[3]

    def runtime(injections):
        scenario = parse_scenario({"name": "x", "injections": injections}, "cat.toml")
        return ScenarioRuntime(scenario, catalog=universe.catalog, n_teams=1, seed=0, run_start=START)

    with pytest.raises(ScenarioError, match=r"cat.toml: injections\[1\] \(movie_added\)\.movie: .* added by another"):
        runtime([{"kind": "movie_added", "start": "+1h", "movie": slug}] * 2)
    with pytest.raises(
        ScenarioError,
        match=r"cat.toml: injections\[0\] \(movie_renamed\)\.movie: '.*' is added by injections\[1\] \(movie_added\) "
        r"only from 2026-03-20T02:00:00, after this starts \(2026-03-20T01:00:00\)",
    ):
        runtime(
            [
                {"kind": "movie_renamed", "start": "+1h", "movie": slug},
                {"kind": "movie_added", "start": "+2h", "movie": slug},
            ]
        )
    # An 'auto' pick never lands on a movie added later (it would act on a movie that does not exist yet).
    rt = runtime(
        [{"kind": "movie_added", "start": "+2h", "movie": slug}]
        + [{"kind": "takedown", "start": "+1h", "name": f"t{i}"} for i in range(30)]
    )
    assert slug not in {e.slug for e in rt.effects[1:]}


def test_the_semester_mixes_catalog_changes_in() -> None:
    kinds = [i.kind for i in load("semester").injections]
    assert {"movie_added", "movie_renamed", "movie_removed"} <= set(kinds)
    assert {"movie_added", "movie_renamed"} <= {i.kind for i in load("drift").injections}
