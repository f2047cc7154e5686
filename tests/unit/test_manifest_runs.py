"""The manifest across runs: each run writes a run record, injections pair per run chain (fresh runs apart, a run
resumed from a checkpoint with the run it continues), in the world's reader and the scoring's; an injection dated
before the run is recorded as skipped, one that ended before a checkpoint does not run again after the restore."""

from __future__ import annotations

import json

import numpy as np

from movielab.world import checkpoint
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.manifest import Manifest, injections, read_manifest
from movielab.world.recs import FixedService
from movielab.world.scoring.board import read_manifest as scoring_events
from movielab.world.sinks import MemorySink

SCENARIO = """
name = "short"
[[injections]]
kind = "corrupt_lines"
start = "+10m"
duration = "20m"
mode = "duplicated"
share = 0.05
[[injections]]
kind = "stream_pause"
start = "+40m"
duration = "10m"
"""
FIELDS = {"seed": 1, "users": 1000, "scenario": "short"}


def _world(universe, tmp_path, manifest, start="2026-03-20T00:00:00", scenario=SCENARIO, population=None):
    (tmp_path / "short.toml").write_text(scenario)
    config = WorldConfig(
        users=1000,
        seed=1,
        days=None,
        start=start,
        arrivals_per_day=0.0,
        allow_download=False,
        scenario=str(tmp_path / "short.toml"),
        manifest=manifest,
    )
    sink = MemorySink()
    service = FixedService(np.arange(20), universe.catalog.slug)
    world, _ = build_world(config, universe=universe, sink=sink, service=service, population=population)
    return world, sink


def _resumed(universe, tmp_path, manifest, first):
    """A second world restored from a checkpoint of `first` (whose manifest is closed), appending to `manifest`."""
    checkpoint.save(first, tmp_path / "cp", fingerprint_fields=FIELDS)
    first.scenario.manifest.close()
    cp = checkpoint.load(tmp_path / "cp", fingerprint_fields=FIELDS)
    second, sink = _world(universe, tmp_path, manifest, population=cp.population(room=100))
    checkpoint.restore(second, cp)
    return second, sink


def test_runs_appended_to_one_manifest_are_told_apart(universe, tmp_path) -> None:
    path = tmp_path / "manifest.jsonl"
    for day in ("2026-03-20", "2026-03-21"):  # two `world run`s with the same manifest file
        world, _ = _world(universe, tmp_path, path, start=f"{day}T00:00:00")
        world.run(until=world.now + 3600)
    records = read_manifest(path)
    runs = [r for r in records if r["event"] == "run"]
    assert [(r["run"], r["start"], r["seed"], r["scenario"], r["resumed_from"]) for r in runs] == [
        (1, "2026-03-20T00:00:00", 1, "short", None),
        (2, "2026-03-21T00:00:00", 1, "short", None),
    ]
    assert all(r["source"].endswith("short.toml") for r in runs)
    pairs = injections(records)
    assert [p["key"] for p in pairs] == [
        "1/0:corrupt_lines",
        "1/1:stream_pause",
        "2/0:corrupt_lines",
        "2/1:stream_pause",
    ]
    for p in pairs:  # each end is paired with the start of its own run
        assert p["start"]["run"] == p["end"]["run"] and p["start"]["start"] == p["end"]["start"]
        assert p["start"]["start"][:10] == ("2026-03-20" if p["key"][0] == "1" else "2026-03-21")
    events = scoring_events(path)
    assert [e["id"] for e in events] == [p["key"] for p in pairs]
    day = 86400
    assert events[2]["start"] - events[0]["start"] == day and events[3]["end"] - events[1]["end"] == day


def test_a_manifest_without_run_records_pairs_by_id(tmp_path) -> None:
    path = tmp_path / "old.jsonl"
    old = [
        {"event": "start", "id": "0:x", "kind": "stream_pause", "start": "2026-03-20T01:00:00", "end": None},
        {
            "event": "end",
            "id": "0:x",
            "kind": "stream_pause",
            "start": "2026-03-20T01:00:00",
            "end": "2026-03-20T02:00:00",
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert [(p["key"], p["end"]["end"]) for p in injections(read_manifest(path))] == [("0:x", "2026-03-20T02:00:00")]
    assert [e["id"] for e in scoring_events(path)] == ["0:x"]
    m = Manifest(path)  # a run appended to it is run 1
    assert m.next_run() == 1
    m.close()


def test_a_resumed_run_continues_the_injections_of_the_run_it_resumed(universe, tmp_path) -> None:
    path = tmp_path / "manifest.jsonl"
    first, _ = _world(universe, tmp_path, path)
    start = first.now
    first.run(until=start + 1500, end_scenario=False)  # inside the first window
    second, _ = _resumed(universe, tmp_path, path, first)
    second.run(until=start + 3600)
    records = read_manifest(path)
    assert [(r["run"], r["resumed_from"]) for r in records if r["event"] == "run"] == [(1, None), (2, 1)]
    pairs = injections(records)
    assert [(p["key"], p["start"]["run"], p["end"]["run"]) for p in pairs] == [
        ("1/0:corrupt_lines", 1, 2),  # began in run 1, ended in run 2: one injection
        ("1/1:stream_pause", 2, 2),
    ]
    assert [e["id"] for e in scoring_events(path)] == ["0:corrupt_lines", "1:stream_pause"]  # one chain: plain ids


def test_an_injection_that_ended_before_a_checkpoint_does_not_run_again(universe, tmp_path) -> None:
    path = tmp_path / "manifest.jsonl"
    first, _ = _world(universe, tmp_path, path)
    start = first.now
    first.run(until=start + 45 * 60, end_scenario=False)  # the corrupt lines ended, the pause is on
    second, sink = _resumed(universe, tmp_path, path, first)
    second.run(until=start + 3600)
    records = read_manifest(path)
    assert [(r["event"], r.get("id")) for r in records if r["run"] == 2] == [
        ("run", None),
        ("end", "1:stream_pause"),
    ]
    assert (
        second.scenario.effects[0].finished and second.scenario.effects[0].touched == first.scenario.effects[0].touched
    )
    lines = sink.lines
    assert len(lines) > 100 and len(set(lines)) == len(lines)  # no duplicated lines any more: it did not re-run


def test_an_injection_dated_before_the_run_is_recorded_as_skipped_and_logged(universe, tmp_path, caplog) -> None:
    scenario = """
name = "late"
[[injections]]
name = "over before the run"
kind = "stream_pause"
start = "2026-03-19T10:00:00"
end = "2026-03-19T11:00:00"
[[injections]]
name = "still on at the run's start"
kind = "corrupt_lines"
start = "2026-03-19T23:00:00"
end = "2026-03-20T00:30:00"
mode = "duplicated"
share = 0.05
"""
    world, sink = _world(universe, tmp_path, tmp_path / "m.jsonl", scenario=scenario)
    with caplog.at_level("WARNING", logger="movielab.world.scenarios.runtime"):
        world.run(until=world.now + 3600)
    records = read_manifest(tmp_path / "m.jsonl")
    skipped = [r for r in records if r["event"] == "skipped"]
    assert [(r["id"], r["start"], r["end"]) for r in skipped] == [
        ("0:over before the run", "2026-03-19T10:00:00", "2026-03-19T11:00:00")
    ]
    assert "ended before the run reached it" in skipped[0]["reason"] and "2026-03-20T00:00:00" in skipped[0]["reason"]
    start = next(r for r in records if r["event"] == "start")
    assert (start["id"], start["start"], start["declared_start"]) == (
        "1:still on at the run's start",
        "2026-03-20T00:00:00",
        "2026-03-19T23:00:00",
    )
    assert "0:over before the run skipped" in caplog.text and "starts with the run" in caplog.text
    assert [p["key"] for p in injections(records)] == ["1/0:over before the run", "1/1:still on at the run's start"]
    assert [e["id"] for e in scoring_events(tmp_path / "m.jsonl")] == ["1:still on at the run's start"]
    assert world.scenario.state()["effects"]["0:over before the run"]["skipped"] is True
