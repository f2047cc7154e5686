"""Incremental checkpoints: a chain of a full base and deltas restores exactly the live world, link after link.

A delta holds only the user rows the world marked dirty: a write to a per-user array or population field that
is not marked leaves the restored world different from the live one, which the comparison below catches (every
saved array and field of `checkpoint.capture`, not a sample).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from movielab.world import checkpoint
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.recs import FixedService
from movielab.world.sinks import MemorySink

FIELDS = {"seed": 5, "users": 2000, "scenario": "semester"}
HOUR = 3600.0
# The semester's 14 weeks in 7 simulated hours (a week in half an hour): drift, bias, waves, bots, outages.
SCALE = 336.0
# Kinds that write per-user rows (population fields or the engine's per-user arrays) besides the engine itself.
ROW_WRITERS = {"taste_shift", "misreported_age", "user_wave", "shilling", "sybil_push", "activity_change"}
# What the semester does not: ages misreported from inside the chain (and told truly again at its window's end),
# users staying away (their busy_until set), a taste shift ending between links.
MARKS = """
name = "marks"
[[injections]]
kind = "misreported_age"
start = "+70m"
duration = "3h"
group = { age = [18, 40] }
share = 0.3
[[injections]]
kind = "activity_change"
start = "+90m"
duration = "2h"
factor = 0.4
[[injections]]
kind = "taste_shift"
start = "+50m"
duration = "2h"
genres = ["Comedy"]
stars = 2.0
group = { gender = "F" }
[[injections]]
kind = "user_wave"
start = "+2h"
duration = "1h"
per_hour = 120
"""


def _config(scenario: str = "semester", **over) -> WorldConfig:
    return WorldConfig(
        users=2000,
        seed=5,
        days=None,
        arrivals_per_day=0.2,
        allow_download=False,
        teams=["http://127.0.0.1:9001", "http://127.0.0.1:9002"],
        scenario=scenario,
        scenario_time_scale=SCALE if scenario == "semester" else 1.0,
        **over,
    )


def _world(universe, population=None, scenario: str = "semester"):
    service = FixedService(list(range(0, 200, 10)), universe.catalog.slug)
    config = _config(scenario)
    world, _ = build_world(config, universe=universe, sink=MemorySink(), service=service, population=population)
    return world


def _snapshot(world) -> tuple[str, dict[str, np.ndarray]]:
    meta, arrays = checkpoint.capture(world)
    return json.dumps(meta, sort_keys=True), {k: np.array(v, copy=True) for k, v in arrays.items()}


def _restored(universe, state_dir, scenario: str = "semester"):
    cp = checkpoint.load(state_dir, fingerprint_fields=FIELDS)
    assert cp is not None
    world = _world(universe, population=cp.population(room=500), scenario=scenario)
    checkpoint.restore(world, cp)
    return world, cp


def _assert_same(snapshot, world) -> None:
    meta, arrays = snapshot
    meta2, arrays2 = _snapshot(world)
    if meta2 != meta:  # a readable diff of the two manifests
        a = json.dumps(json.loads(meta), indent=1, sort_keys=True).splitlines()
        b = json.dumps(json.loads(meta2), indent=1, sort_keys=True).splitlines()
        raise AssertionError("\n".join(difflib.unified_diff(a, b, lineterm="", n=2)))
    assert arrays2.keys() == arrays.keys()
    for name, a in arrays.items():
        assert arrays2[name].dtype == a.dtype, name
        np.testing.assert_array_equal(arrays2[name], a, err_msg=name)


def test_a_chain_of_fulls_and_deltas_restores_every_array_of_a_busy_scenario_world(universe, tmp_path) -> None:
    world = _world(universe)
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS, max_deltas=6, compact_ratio=100)
    checked = []

    def on_checkpoint(w) -> None:
        saver.save(w, info={"at": w.now})
        saver.wait()
        if len(saver.kinds) % 4 == 0 or saver.kinds[-1] == "full":  # the restores are the slow part
            restored, cp = _restored(universe, tmp_path)
            assert cp.info == {"at": w.now} and cp.meta["kind"] == saver.kinds[-1]
            _assert_same(_snapshot(w), restored)
            checked.append((saver.kinds[-1], cp.meta["links"]))

    start = world.now
    world.run(until=start + 7 * HOUR, checkpoint_every=600, on_checkpoint=on_checkpoint, end_scenario=False)
    begun = {e.spec.kind for e in world.scenario.effects if e.begun_at is not None}
    assert ROW_WRITERS <= begun and len(begun) >= 15, sorted(begun)
    assert world.pop.size > 2000 + 100  # arrivals, a wave and bots added rows between links
    # Fulls every 7th link (compaction after 6 deltas), deltas between; restored from chains of every length.
    assert saver.kinds[:8] == ["full"] + ["delta"] * 6 + ["full"] and len(saver.kinds) == 41
    assert {links for _, links in checked} >= {1, 4, 5} and any(k == "delta" for k, _ in checked)
    deltas = [w for w in saver.written if w["kind"] == "delta"]
    full = [w for w in saver.written if w["kind"] == "full"]
    assert max(w["rows"] for w in deltas) < world.pop.size / 2  # a delta holds the changed rows only
    assert np.median([w["bytes"] for w in deltas]) < np.median([w["bytes"] for w in full]) / 4


def test_rows_written_by_scenarios_inside_a_chain_are_in_its_deltas(universe, tmp_path) -> None:
    """Every link is a delta from 10 minutes on: each scenario write after the base must reach the restored world."""
    (tmp_path / "marks.toml").write_text(MARKS)
    scenario = str(tmp_path / "marks.toml")
    world = _world(universe, scenario=scenario)
    # Deltas whatever the share of users changed (the age misreporting touches many at once).
    saver = checkpoint.BackgroundSaver(tmp_path / "state", FIELDS, compact_ratio=100, full_share=1.0)

    def on_checkpoint(w) -> None:
        saver.save(w)
        saver.wait()
        restored, cp = _restored(universe, tmp_path / "state", scenario)
        assert cp.meta["links"] == len(saver.kinds)
        _assert_same(_snapshot(w), restored)

    world.run(until=world.now + 5 * HOUR, checkpoint_every=600, on_checkpoint=on_checkpoint, end_scenario=False)
    assert saver.kinds == ["full"] + ["delta"] * 28
    effects = world.scenario.effects
    assert all(e.begun_at is not None for e in effects) and all(e.finished for e in effects)
    assert effects[1].touched["users_away"] > 100 and sum(effects[3].touched.values()) > 50


def test_the_chain_survives_the_world_running_on_and_a_restored_world_continues_line_for_line(
    universe, tmp_path
) -> None:
    whole = _world(universe)
    start = whole.now
    whole.run(until=start + 4 * HOUR, end_scenario=False)

    first = _world(universe)
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS, compact_ratio=100)
    first.run(until=start + 2.5 * HOUR, checkpoint_every=600, on_checkpoint=saver.save, end_scenario=False)
    saver.save(first)
    saver.wait()
    assert saver.kinds == ["full"] + ["delta"] * 14
    second, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 15 and second.now == first.now
    second.run(until=start + 4 * HOUR, end_scenario=False)
    assert first.sink.lines + second.sink.lines == whole.sink.lines
    _assert_same(_snapshot(whole), second)


def _chain(universe, tmp_path, links: int):
    """A world checkpointed `links` times 10 minutes apart (a base and deltas); the live state at each link."""
    world = _world(universe)
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS, compact_ratio=100)
    states = []

    def on_checkpoint(w) -> None:
        saver.save(w)
        saver.wait()
        states.append(_snapshot(w))

    world.run(until=world.now + 60 * (10 * links + 5), checkpoint_every=600, on_checkpoint=on_checkpoint)
    assert saver.kinds == ["full"] + ["delta"] * (links - 1)
    return states


def test_a_missing_delta_ends_the_chain_at_the_link_before_with_a_warning(universe, tmp_path, caplog) -> None:
    states = _chain(universe, tmp_path, 4)
    deltas = tmp_path / "checkpoint" / "deltas"
    assert sorted(p.name for p in deltas.iterdir()) == ["000001", "000002", "000003"]
    (deltas / "000002").rename(tmp_path / "gone")
    with caplog.at_level(logging.WARNING, logger="movielab.world.checkpoint"):
        world, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 2 and "delta 000002 of" in cp.meta["fallback"] and "is missing" in cp.meta["fallback"]
    assert "ends early" in caplog.text
    _assert_same(states[1], world)
    assert checkpoint.read_meta(tmp_path / "checkpoint")["seq"] == 1


def test_a_torn_delta_ends_the_chain_before_it_and_a_leftover_temporary_folder_is_ignored(universe, tmp_path) -> None:
    states = _chain(universe, tmp_path, 4)
    deltas = tmp_path / "checkpoint" / "deltas"
    victim = deltas / "000003" / "arrays.npys"
    victim.write_bytes(victim.read_bytes()[:-8])  # a short write the manifest does not match
    (deltas / ".tmp-1-2").mkdir()  # a process killed while writing the next delta
    world, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 3 and "000003/arrays.npys" in cp.meta["fallback"] and "damaged" in cp.meta["fallback"]
    _assert_same(states[2], world)
    # A manifest that is not JSON counts as torn too.
    (deltas / "000002" / "manifest.json").write_text("{")
    world, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 2 and "cannot be read" in cp.meta["fallback"]
    _assert_same(states[1], world)


def test_a_record_of_a_delta_that_does_not_match_its_manifest_ends_the_chain(universe, tmp_path) -> None:
    states = _chain(universe, tmp_path, 3)
    folder = tmp_path / "checkpoint" / "deltas" / "000002"
    meta = json.loads((folder / "manifest.json").read_text())
    first, second = list(meta["arrays"])[:2]
    meta["arrays"][first] += 8  # the same total, records cut elsewhere
    meta["arrays"][second] -= 8
    (folder / "manifest.json").write_text(json.dumps(meta))
    world, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 2 and f"the record of {first}" in cp.meta["fallback"]
    _assert_same(states[1], world)
    # A manifest without the file's size: the chain ends before that delta too (a CheckpointError, not a KeyError).
    folder = tmp_path / "checkpoint" / "deltas" / "000001"
    meta = json.loads((folder / "manifest.json").read_text())
    del meta["arrays_bytes"]
    (folder / "manifest.json").write_text(json.dumps(meta))
    world, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 1 and "cannot be read" in cp.meta["fallback"] and "arrays_bytes" in cp.meta["fallback"]
    _assert_same(states[0], world)


def test_a_delta_packed_as_npz_by_an_earlier_movielab_is_still_read(universe, tmp_path) -> None:
    states = _chain(universe, tmp_path, 3)
    folder = tmp_path / "checkpoint" / "deltas" / "000002"
    meta = json.loads((folder / "manifest.json").read_text())
    arrays = checkpoint._read_arrays(folder, meta)
    np.savez(folder / "arrays.npz", allow_pickle=False, **arrays)  # the layout deltas had before
    (folder / "arrays.npys").unlink()
    meta.update(packed="arrays.npz", arrays={k: int(v.nbytes) for k, v in arrays.items()})
    meta["arrays_bytes"] = (folder / "arrays.npz").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(meta))
    world, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 3 and "fallback" not in cp.meta
    _assert_same(states[2], world)


def test_a_delta_of_another_format_version_is_refused(universe, tmp_path) -> None:
    _chain(universe, tmp_path, 2)
    path = tmp_path / "checkpoint" / "deltas" / "000001" / "manifest.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "format": 2}))
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"format version 2; this movielab reads version 3 only"):
        checkpoint.load(tmp_path, fingerprint_fields=FIELDS)


def test_compaction_starts_a_new_chain_and_keeps_the_old_one_as_prev(universe, tmp_path) -> None:
    world = _world(universe)
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS, max_deltas=2, compact_ratio=100)
    states = []

    def on_checkpoint(w) -> None:
        saver.save(w)
        saver.wait()
        states.append(_snapshot(w))

    world.run(until=world.now + 60 * 45, checkpoint_every=600, on_checkpoint=on_checkpoint)
    assert saver.kinds == ["full", "delta", "delta", "full"]
    current, prev = tmp_path / "checkpoint", tmp_path / "checkpoint.prev"
    assert not (current / "deltas").exists() and sorted(p.name for p in (prev / "deltas").iterdir()) == [
        "000001",
        "000002",
    ]
    assert checkpoint.read_meta(prev)["seq"] == 2 and checkpoint.read_meta(current)["kind"] == "full"
    for folder in (tmp_path, current, prev, prev / "deltas", prev / "deltas" / "000001"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for f in (prev / "deltas" / "000002").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    restored, _ = _restored(universe, tmp_path)
    _assert_same(states[-1], restored)
    # Without a base in `checkpoint` (a crash between the renames), the old chain restores its last delta.
    os.rename(current, tmp_path / "elsewhere")
    restored, cp = _restored(universe, tmp_path)
    assert cp.path == prev and cp.meta["links"] == 3
    _assert_same(states[2], restored)


def test_a_new_chain_is_started_when_deltas_would_be_large_or_another_save_intervened(universe, tmp_path) -> None:
    world = _world(universe)
    everyone = checkpoint.BackgroundSaver(tmp_path / "a", FIELDS, full_share=0.0)  # any change is too much
    by_bytes = checkpoint.BackgroundSaver(tmp_path / "b", FIELDS, compact_ratio=0.0)
    normal = checkpoint.BackgroundSaver(tmp_path / "c", FIELDS)
    for _ in range(3):
        world.run(until=world.now + 600, end_scenario=False)
        for saver in (everyone, by_bytes, normal):
            saver.save(world)
            saver.wait()
    assert everyone.kinds == by_bytes.kinds == ["full"] * 3
    # Each saver above captured (and cleared the dirty rows) after the others: `normal` wrote fulls too.
    assert normal.kinds == ["full"] * 3
    world.run(until=world.now + 600, end_scenario=False)
    normal.save(world)
    normal.wait()
    assert normal.kinds[-1] == "delta"
    checkpoint.save(world, tmp_path / "c", fingerprint_fields=FIELDS)  # e.g. the course's final save
    world.run(until=world.now + 600, end_scenario=False)
    normal.save(world)
    normal.wait()
    assert normal.kinds[-1] == "full"


def test_a_failed_delta_write_is_raised_and_the_next_checkpoint_is_full(universe, tmp_path) -> None:
    world = _world(universe)
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS)
    saver.save(world)
    saver.wait()
    world.run(until=world.now + 600, end_scenario=False)
    (tmp_path / "checkpoint" / "manifest.json").write_text("{")  # the chain's base is unreadable
    saver.save(world)
    with pytest.raises(checkpoint.CheckpointError, match=r"manifest .* cannot be read"):
        saver.wait()
    world.run(until=world.now + 600, end_scenario=False)
    saver.save(world)
    saver.wait()
    assert saver.kinds == ["full", "delta", "full"]
    state = _snapshot(world)
    restored, cp = _restored(universe, tmp_path)
    assert cp.meta["links"] == 1
    _assert_same(state, restored)


def _inodes(folder) -> set[int]:
    return {f.stat().st_ino for f in folder.rglob("*") if f.is_file() and f.name != "manifest.json"}


def test_a_new_chain_is_written_over_the_files_of_the_chain_retired_before_it(universe, tmp_path) -> None:
    world = _world(universe)
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS, max_deltas=2, compact_ratio=100)
    pool = tmp_path / "checkpoint.recycle"
    base: list[set[int]] = []  # per chain: the inodes of its base's array files
    deltas: list[set[int]] = []  # per chain: of its deltas' files
    for _ in range(12):  # f d d f d d f d d f d d: four chains
        world.run(until=world.now + 600, end_scenario=False)
        saver.save(world)
        saver.wait()
        current = tmp_path / "checkpoint"
        if saver.kinds[-1] == "full":
            base.append({f.stat().st_ino for f in (current / "arrays").iterdir()})
            deltas.append(set())
        else:
            deltas[-1] |= {f.stat().st_ino for f in (current / "deltas").rglob("arrays.npys")}
        restored, cp = _restored(universe, tmp_path)  # written over longer files: cut to length, read back exactly
        _assert_same(_snapshot(world), restored)
    assert saver.kinds == ["full", "delta", "delta"] * 4
    # A new chain retires the one before the previous one and is written over its files: the third chain's base
    # and deltas over the first's, the fourth's over the second's (the second found nothing retired yet).
    assert base[2] == base[0] and base[3] == base[1] and not base[1] & base[0]
    assert deltas[2] == deltas[0] and deltas[3] == deltas[1] and len(deltas[0] | deltas[1]) == 4
    assert stat.S_IMODE(pool.stat().st_mode) == 0o700 and list(pool.iterdir()) == []  # all written over


def test_a_link_or_a_shared_file_in_the_recycling_folder_is_not_written_through(universe, tmp_path) -> None:
    world = _world(universe)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    state = tmp_path / "state"
    for _ in range(2):  # two chains: the next one retires the first, in checkpoint.prev
        checkpoint.save(world, state, fingerprint_fields=FIELDS)
        world.run(until=world.now + 600, end_scenario=False)
    arrays = state / "checkpoint.prev" / "arrays"
    (arrays / "user.seen.npy").unlink()
    (arrays / "user.seen.npy").symlink_to(outside)
    backup = tmp_path / "backup.npy"  # a file hard-linked elsewhere (a backup) is not written over either
    os.link(arrays / "pop.taste.npy", backup)
    kept = backup.read_bytes()
    checkpoint.save(world, state, fingerprint_fields=FIELDS)
    assert outside.read_text() == "keep me" and backup.read_bytes() == kept and backup.stat().st_nlink == 1
    new = state / "checkpoint" / "arrays"
    assert (new / "user.seen.npy").is_file() and not (new / "user.seen.npy").is_symlink()
    assert checkpoint.read_meta(state / "checkpoint")["recycled_files"] > 0  # the other files were written over
    restored, _ = _restored(universe, state)
    _assert_same(_snapshot(world), restored)


def _tree(folder) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("linked", ["checkpoint.prev", "checkpoint.prev/arrays", "checkpoint.recycle"])
def test_nothing_behind_a_symbolic_link_in_the_state_folder_is_moved_or_written_over(
    universe, tmp_path, linked
) -> None:
    world = _world(universe)
    state = tmp_path / "state"
    saver = checkpoint.BackgroundSaver(state, FIELDS, max_deltas=1, compact_ratio=100)
    for _ in range(4):  # f d f d: a chain in checkpoint.prev, one in checkpoint
        world.run(until=world.now + 600, end_scenario=False)
        saver.save(world)
        saver.wait()
    outside = tmp_path / "outside"
    target = state / linked
    if linked == "checkpoint.recycle":  # retired files someone moved elsewhere and linked back
        outside.mkdir()
        for i in (1, 2):
            (outside / f"delta.00000{i}").write_bytes(b"x" * 5000)
        target.symlink_to(outside, target_is_directory=True)
    else:
        shutil.copytree(target, outside)
        shutil.rmtree(target)
        target.symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    for _ in range(4):  # f d f d: chains retired and written again
        world.run(until=world.now + 600, end_scenario=False)
        saver.save(world)
        saver.wait()
    assert _tree(outside) == before
    assert saver.kinds == ["full", "delta"] * 4
    restored, _ = _restored(universe, state)
    _assert_same(_snapshot(world), restored)


def test_a_recycling_folder_that_cannot_be_used_costs_new_files_not_checkpoints(
    universe, tmp_path, caplog, monkeypatch
) -> None:
    world = _world(universe)
    state = tmp_path / "state"
    for _ in range(2):
        checkpoint.save(world, state, fingerprint_fields=FIELDS)
        world.run(until=world.now + 600, end_scenario=False)
    # A file where the recycling folder goes (e.g. left by hand) is replaced; retired files copied with `cp -r`
    # (mode 0644) are made 0600 again when written over.
    (state / "checkpoint.recycle").write_text("not a folder")
    for f in (state / "checkpoint.prev" / "arrays").iterdir():
        os.chmod(f, 0o644)
    checkpoint.save(world, state, fingerprint_fields=FIELDS)
    assert checkpoint.read_meta(state / "checkpoint")["recycled_files"] > 0
    for f in (state / "checkpoint" / "arrays").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # A recycling folder that cannot be made: logged, and the checkpoint written into new files.
    made = checkpoint.ensure_private_dir

    def refuse(path):
        if Path(path).name == "checkpoint.recycle":
            raise PermissionError(13, "Permission denied", str(path))
        return made(path)

    monkeypatch.setattr(checkpoint, "ensure_private_dir", refuse)
    world.run(until=world.now + 600, end_scenario=False)
    with caplog.at_level(logging.WARNING, logger="movielab.world.checkpoint"):
        checkpoint.save(world, state, fingerprint_fields=FIELDS)
    assert "are not recycled" in caplog.text and "checkpoint.recycle" in caplog.text
    assert checkpoint.read_meta(state / "checkpoint")["recycled_files"] == 0
    restored, _ = _restored(universe, state)
    _assert_same(_snapshot(world), restored)
