"""Checkpoint and restore: the state survives array for array, and a restored world continues exactly."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from movielab.world import checkpoint
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.recs import FixedService
from movielab.world.sinks import MemorySink

FIELDS = {"seed": 3, "users": 2000}
HOUR = 3600.0


def _config(teams: int = 2, **over) -> WorldConfig:
    urls = [f"http://127.0.0.1:{9000 + i}" for i in range(teams)]
    return WorldConfig(users=2000, seed=3, days=None, arrivals_per_day=0.05, allow_download=False, teams=urls, **over)


def _world(universe, config, population=None):
    sink = MemorySink()
    service = FixedService(list(range(0, 200, 10)), universe.catalog.slug)
    world, _ = build_world(config, universe=universe, sink=sink, service=service, population=population)
    return world, sink


def _restored(universe, config, state_dir):
    cp = checkpoint.load(state_dir, fingerprint_fields=FIELDS)
    assert cp is not None
    world, sink = _world(universe, config, population=cp.population(room=1000))
    checkpoint.restore(world, cp)
    return world, sink, cp


@pytest.mark.parametrize("teams", [1, 3])
def test_restored_world_continues_with_the_same_lines_as_an_uninterrupted_one(universe, tmp_path, teams) -> None:
    config = _config(teams)
    whole, whole_sink = _world(universe, config)
    start = whole.now
    whole.run(until=start + 6 * HOUR)

    first, first_sink = _world(universe, config)
    first.run(until=start + 2.5 * HOUR)
    checkpoint.save(first, tmp_path, fingerprint_fields=FIELDS, info={"note": "unit"})
    second, second_sink, cp = _restored(universe, config, tmp_path)
    assert cp.info == {"note": "unit"} and second.now == first.now
    second.run(until=start + 6 * HOUR)

    assert len(first_sink.lines) > 5000 and len(second_sink.lines) > 5000
    assert first_sink.lines + second_sink.lines == whole_sink.lines
    assert first_sink.keys + second_sink.keys == whole_sink.keys
    assert second.pop.size == whole.pop.size > config.users  # accounts arrived before and after, none re-created
    np.testing.assert_array_equal(second.pop.taste[: second.pop.size], whole.pop.taste[: whole.pop.size])
    assert second.stats.lines == whole.stats.lines


def test_state_after_restore_equals_the_saved_state_array_for_array(universe, tmp_path) -> None:
    config = _config(2)
    world, _ = _world(universe, config)
    world.run(until=world.now + 3 * HOUR)
    meta, arrays = checkpoint.capture(world)
    checkpoint.save(world, tmp_path, fingerprint_fields=FIELDS)
    again, _, _ = _restored(universe, config, tmp_path)
    meta2, arrays2 = checkpoint.capture(again)
    assert json.dumps(meta2, sort_keys=True) == json.dumps(meta, sort_keys=True)
    assert arrays2.keys() == arrays.keys()
    for name, a in arrays.items():
        assert arrays2[name].dtype == a.dtype, name
        np.testing.assert_array_equal(arrays2[name], a, err_msg=name)
    assert any(len(arrays[f"lane{i}.view.user"]) for i in range(2))  # viewings in progress were saved
    assert (arrays["user.paused_movie"] >= 0).any()  # and paused movies
    # and the movies each user watched: the restored world still refuses them to their users
    assert arrays["user.seen"].any()
    rows, words = np.nonzero(arrays["user.seen"][:, :3])
    bit = np.array([int(arrays["user.seen"][r, w]).bit_length() - 1 for r, w in zip(rows, words, strict=True)])
    assert again.has_seen(rows, words * 64 + bit).all() and world.has_seen(rows, words * 64 + bit).all()


def test_periodic_checkpoints_land_on_every_boundary_and_files_are_private(universe, tmp_path) -> None:
    config = _config(2)
    world, _ = _world(universe, config)
    seen = []

    def on_checkpoint(w) -> None:
        assert len({lane.now for lane in w.lanes}) == 1  # every lane at the boundary, none ahead
        seen.append(w.now)
        checkpoint.save(w, tmp_path / "state", fingerprint_fields=FIELDS)

    start = world.now
    world.run(until=start + 35 * 60, checkpoint_every=600, on_checkpoint=on_checkpoint)
    first = (np.floor(start / 600) + 1) * 600
    assert seen == [first + 600 * i for i in range(len(seen))] and len(seen) == 3
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for folder in (state / "checkpoint", state / "checkpoint.prev"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "arrays").stat().st_mode) == 0o700
        files = [folder / "manifest.json", *(folder / "arrays").iterdir()]
        assert len(files) > 40
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert checkpoint.read_meta(state / "checkpoint")["sim_time"] == seen[-1]
    assert checkpoint.read_meta(state / "checkpoint.prev")["sim_time"] == seen[-2]
    assert not [p for p in os.listdir(state) if p.startswith(".checkpoint-")]


def test_checkpoint_of_another_configuration_is_refused_naming_the_difference(universe, tmp_path) -> None:
    world, _ = _world(universe, _config(2))
    world.run(until=world.now + 600)
    checkpoint.save(world, tmp_path, fingerprint_fields=FIELDS)
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"users: checkpoint 2000, now 5000"):
        checkpoint.load(tmp_path, fingerprint_fields={**FIELDS, "users": 5000})


def test_checkpoint_of_another_format_version_is_refused(universe, tmp_path) -> None:
    world, _ = _world(universe, _config(1))
    world.run(until=world.now + 600)
    folder = checkpoint.save(world, tmp_path, fingerprint_fields=FIELDS)
    meta = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**meta, "format": 0}))
    with pytest.raises(
        checkpoint.CheckpointMismatch,
        match=rf"format version 0; this movielab reads version {checkpoint.FORMAT_VERSION}",
    ):
        checkpoint.load(tmp_path, fingerprint_fields=FIELDS)


def test_a_damaged_checkpoint_is_an_error_and_a_missing_one_falls_back_to_the_previous(universe, tmp_path) -> None:
    world, _ = _world(universe, _config(1))
    world.run(until=world.now + 600)
    checkpoint.save(world, tmp_path, fingerprint_fields=FIELDS)
    world2, _ = _world(universe, _config(1))
    world2.run(until=world2.now + 1200)
    folder = checkpoint.save(world2, tmp_path, fingerprint_fields=FIELDS)
    with open(folder / "arrays" / "pop.taste.npy", "ab") as f:
        f.write(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="the file is damaged"):
        checkpoint.load(tmp_path, fingerprint_fields=FIELDS)
    # A crash between the two renames leaves only the previous checkpoint: it is used.
    os.rename(folder, tmp_path / "gone")
    cp = checkpoint.load(tmp_path, fingerprint_fields=FIELDS)
    assert cp.sim_time == world.now


def test_lane_count_mismatch_is_refused(universe, tmp_path) -> None:
    world, _ = _world(universe, _config(2))
    world.run(until=world.now + 600)
    checkpoint.save(world, tmp_path, fingerprint_fields=FIELDS)
    cp = checkpoint.load(tmp_path, fingerprint_fields=FIELDS)
    other, _ = _world(universe, _config(3), population=cp.population())
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"2 lane\(s\) \(one per team\), the world 3"):
        checkpoint.restore(other, cp)


class Counter:
    """A named component with its own state (a stand-in shape for a scenario runtime's `state`/`restore`)."""

    def __init__(self) -> None:
        self.fired, self.marks = 0, np.zeros(3)

    def state(self) -> dict:
        return {"fired": self.fired, "marks": self.marks.copy()}

    def restore(self, state: dict) -> None:
        self.fired, self.marks = state["fired"], state["marks"]


def test_extra_state_components_are_saved_and_restored(universe, tmp_path) -> None:
    world, _ = _world(universe, _config(1))
    world.extra_state["scenario"] = c = Counter()
    c.fired, c.marks = 4, np.array([1.0, 2.0, 3.0])
    world.run(until=world.now + 600)
    checkpoint.save(world, tmp_path, fingerprint_fields=FIELDS)
    cp = checkpoint.load(tmp_path, fingerprint_fields=FIELDS)
    again, _ = _world(universe, _config(1), population=cp.population())
    again.extra_state["scenario"] = c2 = Counter()
    checkpoint.restore(again, cp)
    assert c2.fired == 4 and c2.marks.tolist() == [1.0, 2.0, 3.0]
    bare, _ = _world(universe, _config(1), population=cp.population())
    with pytest.raises(checkpoint.CheckpointMismatch, match="'scenario', which this world lacks"):
        checkpoint.restore(bare, cp)


def test_background_saver_writes_the_state_of_the_moment_it_was_called(universe, tmp_path) -> None:
    config = _config(2)
    world, _ = _world(universe, config)
    world.run(until=world.now + 3600)
    meta, arrays = checkpoint.capture(world)
    arrays = {k: v.copy() for k, v in arrays.items()}  # capture gives views of the live arrays
    saver = checkpoint.BackgroundSaver(tmp_path, FIELDS)
    saver.save(world, info={"n": 1})
    world.run(until=world.now + 3600)  # the world moves on (arrays change in place) while the thread writes
    saver.wait()
    cp = checkpoint.load(tmp_path, fingerprint_fields=FIELDS)
    assert cp.sim_time == meta["sim_time"] < world.now and cp.info == {"n": 1}
    for name, a in arrays.items():
        np.testing.assert_array_equal(cp.arrays[name], a, err_msg=name)
    # A second save reuses the copy buffers; what it writes is again the state of its own moment.
    meta2, arrays2 = checkpoint.capture(world)
    arrays2 = {k: v.copy() for k, v in arrays2.items()}
    saver.save(world)
    world.run(until=world.now + 3600)
    saver.wait()
    cp2 = checkpoint.load(tmp_path, fingerprint_fields=FIELDS)
    assert cp2.sim_time == meta2["sim_time"] > cp.sim_time
    for name, a in arrays2.items():
        np.testing.assert_array_equal(cp2.arrays[name], a, err_msg=name)
    assert len(saver.pause_seconds) == 2


def test_background_saver_hands_a_failed_write_to_the_next_call(universe, tmp_path) -> None:
    world, _ = _world(universe, _config(1))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    saver = checkpoint.BackgroundSaver(blocker / "state", FIELDS)
    saver.save(world)
    with pytest.raises(checkpoint.CheckpointError, match=r"could not be written: .*Not a directory"):
        saver.wait()
    saver.wait()  # reported once
