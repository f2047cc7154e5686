"""A world checkpointed in the middle of its scenario's windows continues exactly like an uninterrupted one.

What an injection computed when it began and a checkpoint does not hold (a taste-shift direction, boosted or
thinned browse CDFs, API effects, true ages, a bot script's competitors) is redone by `ScenarioRuntime.resume`;
the session log (`World.extra_state["sessionlog"]`) comes back from the checkpoint's arrays and its day files.
"""

from __future__ import annotations

import numpy as np

from movielab.world import checkpoint
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.manifest import injections, read_manifest
from movielab.world.recs import FixedService
from movielab.world.sessionlog import SessionLog, read_days
from movielab.world.sinks import MemorySink

FIELDS = {"seed": 4, "users": 2000, "scenario": "windows"}
HOUR = 3600.0
# Every window is open at 2.5 h, where the run is cut: each kind must carry on from its checkpointed state.
SCENARIO = """
name = "windows"
[[injections]]
kind = "taste_shift"
start = "+1h"
duration = "4h"
genres = ["Comedy"]
stars = 2.0
[[injections]]
kind = "popularity_shock"
start = "+1h"
duration = "3h"
share = 0.2
boost = 2.0
[[injections]]
kind = "movie_removed"
start = "+2h"
duration = "3h"
[[injections]]
kind = "misreported_age"
start = "+1h"
duration = "4h"
group = { age = [18, 40] }
share = 0.3
[[injections]]
kind = "stream_pause"
start = "+2h"
duration = "1h"
teams = [1]
[[injections]]
kind = "shilling"
start = "+2h"
duration = "2h"
bots = 5
[[injections]]
kind = "user_wave"
start = "+2h"
duration = "1h"
per_hour = 120
[[injections]]
kind = "rating_bias"
start = "+1h"
duration = "4h"
group = { gender = "F" }
stars = 1
[[injections]]
kind = "takedown"
start = "+2h"
[[injections]]
kind = "truth_refit"
start = "+1h"
duration = "3h"
stars = 0.5
[[injections]]
kind = "corrupt_lines"
start = "+1h"
duration = "4h"
mode = "out_of_order"
share = 0.01
[[injections]]
kind = "format_change"
start = "+2h"
duration = "2h"
change = "rate_extra_field"
[[injections]]
kind = "movie_added"
start = "+2h"
share = 0.2
[[injections]]
kind = "movie_renamed"
start = "+1h"
duration = "4h"
[[injections]]
name = "added after the cut"
kind = "movie_added"
start = "+3h"
share = 0.2
"""


def _world(universe, tmp_path, name: str, population=None):
    (tmp_path / "windows.toml").write_text(SCENARIO)
    config = WorldConfig(
        users=2000,
        seed=4,
        days=None,
        arrivals_per_day=0.05,
        allow_download=False,
        teams=["http://127.0.0.1:9001", "http://127.0.0.1:9002"],
        scenario=str(tmp_path / "windows.toml"),
        manifest=tmp_path / name / "manifest.jsonl",
    )
    sink = MemorySink()
    log = SessionLog(2, tmp_path / name)
    world, _ = build_world(
        config,
        universe=universe,
        sink=sink,
        sessionlog=log,
        population=population,
        service=FixedService(list(range(0, 200, 10)), universe.catalog.slug),
    )
    return world, sink, log


def _sessions(folder) -> dict[str, np.ndarray]:
    days = read_days(folder)
    cols = {k: np.concatenate([d.sessions[k] for d in days]) for k in days[0].sessions}
    order = np.argsort(cols["sid"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def test_a_world_restored_inside_scenario_windows_continues_line_for_line(universe, tmp_path) -> None:
    whole, whole_sink, whole_log = _world(universe, tmp_path, "whole")
    start = whole.now
    whole.run(until=start + 6 * HOUR)
    whole_log.flush(np.inf)

    first, first_sink, _ = _world(universe, tmp_path, "split")
    first.run(until=start + 2.5 * HOUR, end_scenario=False)
    live = [e.id for e in first.scenario.effects if e.begun_at is not None and not e.finished]
    assert len(live) == 14  # all but the last are in the middle of their window (the takedown is open-ended)
    checkpoint.save(first, tmp_path / "cp", fingerprint_fields=FIELDS)
    first.scenario.manifest.close()

    cp = checkpoint.load(tmp_path / "cp", fingerprint_fields=FIELDS)
    second, second_sink, second_log = _world(universe, tmp_path, "split", population=cp.population(room=1000))
    checkpoint.restore(second, cp)
    assert second.scenario.announcements == first.scenario.announcements != []
    second.run(until=start + 6 * HOUR)
    second_log.flush(np.inf)

    assert len(first_sink.lines) > 3000 and len(second_sink.lines) > 3000
    assert first_sink.lines + second_sink.lines == whole_sink.lines
    assert first_sink.keys + second_sink.keys == whole_sink.keys
    np.testing.assert_array_equal(second.pop.taste[: second.pop.size], whole.pop.taste[: whole.pop.size])
    np.testing.assert_array_equal(second.pop.age[: second.pop.size], whole.pop.age[: whole.pop.size])
    np.testing.assert_array_equal(second.taste.item_bias, whole.taste.item_bias)
    np.testing.assert_array_equal(second.browse_cdf, whole.browse_cdf)
    # The manifest: the cut run and the run resumed from its checkpoint; one start and one end per injection, as in
    # the uninterrupted run (no start written twice), paired across the two runs.
    split = read_manifest(tmp_path / "split" / "manifest.jsonl")
    runs = [r for r in split if r["event"] == "run"]
    assert [(r["run"], r["resumed_from"], r["start"]) for r in runs] == [
        (1, None, "2026-03-20T00:00:00"),
        (2, 1, "2026-03-20T02:30:00"),
    ]
    whole_records = whole.scenario.manifest.records
    assert [(r["event"], r["id"]) for r in split if r["event"] != "run"] == [
        (r["event"], r["id"]) for r in whole_records if r["event"] != "run"
    ]
    pairs = injections(split)
    assert len(pairs) == len(whole.scenario.effects) == 15 and all(p["end"] is not None for p in pairs)
    assert {p["key"].split("/")[0] for p in pairs} == {"1"}  # run 2 continues run 1's injections
    ends = {p["id"]: p["end"]["touched"] for p in pairs}
    assert ends == {p["id"]: p["end"]["touched"] for p in injections(whole_records)}
    assert min(ends.values()) >= 0 and sum(ends.values()) > 100
    assert ends["12:movie_added"] > 0 and ends["13:movie_renamed"] == 0  # no API calls here
    late = whole.scenario.effects[14].slug  # held back across the cut: the restored world held it back again
    assert not [x for x in second_sink.lines if f"/m/{late}/" in x and x[:16] < "2026-03-20T03:00"]
    assert np.all(np.diff(whole.browse_cdf) >= 0)
    # The session log: the same sessions, ids and answers whether the run was cut or not.
    a, b = _sessions(tmp_path / "whole"), _sessions(tmp_path / "split")
    assert len(a["sid"]) > 500 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_without_resume_a_restored_taste_shift_would_lack_its_direction(universe, tmp_path) -> None:
    """The check above can fail: a restored runtime that skipped `resume` has no direction to shift along."""
    first, _, _ = _world(universe, tmp_path, "a")
    first.run(until=first.now + 2.5 * HOUR, end_scenario=False)
    checkpoint.save(first, tmp_path / "cp", fingerprint_fields=FIELDS)
    cp = checkpoint.load(tmp_path / "cp", fingerprint_fields=FIELDS)
    second, _, _ = _world(universe, tmp_path, "b", population=cp.population(room=1000))
    checkpoint.restore(second, cp)
    shift = second.scenario.effects[0]
    assert shift.begun_at is not None and not hasattr(shift, "direction")
    second.scenario.resume(second)
    np.testing.assert_array_equal(shift.direction, first.scenario.effects[0].direction)
    first.scenario.manifest.close()
    second.scenario.manifest.close()
