"""Checkpoint and restore of a world's whole state: one `.npy` file per array plus a JSON manifest, no pickles.

What is saved: the population (demographics, activity, creation times, the *evolved* hidden taste and
biases), the hidden truth of the movies (item factors and biases, which scenarios may change), per-user
dynamic state (busy, paused movies, movies watched), each lane's clock, random stream
(`Generator.bit_generator.state`, a JSON-able dict), session queue, viewings in progress and pending
ratings, the arrivals stream and the accounts drawn ahead for lanes behind, the run's counters, the
named `World.extra_state` components (e.g. a scenario runtime), and what the caller adds in `info`
(e.g. the Kafka end offsets of every topic/partition at the checkpoint, the teams).

Layout of a state folder (created mode 0700, files 0600):

    <state>/checkpoint/        the newest complete checkpoint: manifest.json + arrays/<name>.npy
    <state>/checkpoint.prev/   the one before (kept until the next one is complete)

A checkpoint is written into a temporary folder, synced, then renamed into place: a crash while
writing leaves the previous checkpoint (`load` falls back to `checkpoint.prev` when `checkpoint` is
missing). A checkpoint of another format version, or of a world built differently (seed, population,
catalog, edition, ...: the `fingerprint` fields), is refused with `CheckpointMismatch` naming what differs.

Not saved: the journal (`World.journal`, a test/benchmark aid) and the answers of requests in flight
(a checkpoint is only taken between ticks, when none is).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from movielab.world.engine import Stats, World, _Viewings
from movielab.world.errors import WorldError
from movielab.world.population import Population

logger = logging.getLogger(__name__)

#: Bumped whenever the layout or meaning of a saved field changes; other versions are refused.
FORMAT_VERSION = 2
CURRENT, PREVIOUS = "checkpoint", "checkpoint.prev"
MANIFEST, ARRAYS = "manifest.json", "arrays"
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
DIR_MODE, FILE_MODE = 0o700, 0o600

POPULATION_ARRAYS = tuple(f.name for f in dataclasses.fields(Population) if f.name not in ("size", "_arrays"))
_USER_ARRAYS = ("busy_until", "paused_minute", "paused_movie", "seen", "active")
_STAT_SCALARS = (
    "ticks",
    "sessions",
    "skipped_busy",
    "left",
    "viewings",
    "resumed",
    "picked_recommended",
    "requests_ok",
    "accounts",
    "ratings",
    "true_score_of_recommended_picks",
)
_STAT_ARRAYS = ("rating_hist", "viewings_per_movie", "watch_lines_per_movie")


class CheckpointError(WorldError, RuntimeError):
    """A checkpoint cannot be written or read (missing, incomplete, corrupt); names the folder and the reason."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint from another format version or another world configuration; names each difference."""


@dataclass
class Checkpoint:
    """A checkpoint read from disk: the manifest (JSON) and the arrays (name → numpy array)."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def sim_time(self) -> float:
        """Simulated time of the slowest lane at the checkpoint (unix seconds)."""
        return float(self.meta["sim_time"])

    @property
    def info(self) -> dict[str, Any]:
        """What the caller saved alongside the world (offsets, teams, ...)."""
        return self.meta.get("info", {})

    def population(self, room: int = 0) -> Population:
        """The saved population with `room` extra rows for arrivals (pass it to `build_world(population=...)`)."""
        size = int(self.meta["population_size"])
        cols = {}
        for name in POPULATION_ARRAYS:
            a = self.arrays[f"pop.{name}"]
            out = np.zeros((size + room, *a.shape[1:]), a.dtype)
            out[:size] = a
            cols[name] = out
        return Population(**cols, size=size)


def fingerprint(fields: dict[str, Any]) -> str:
    """A short hash of the fields that decide how a world is built (sorted JSON, SHA-256, 16 hex digits)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_private_dir(path: str | Path) -> Path:
    """Create `path` mode 0700 (missing parents get the default mode); an existing folder is tightened to 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


# --- capture ------------------------------------------------------------------------------------------
def _rng_state(rng: np.random.Generator | None) -> dict | None:
    return None if rng is None else rng.bit_generator.state


def capture(world: World) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The world's state as (JSON-able meta, arrays); call it between ticks (in `on_checkpoint` or after `run`)."""
    n = world.pop.size
    arrays: dict[str, np.ndarray] = {f"pop.{name}": getattr(world.pop, name)[:n] for name in POPULATION_ARRAYS}
    for name in _USER_ARRAYS:
        arrays[f"user.{name}"] = getattr(world, name)[:n]
    arrays["truth.item_factors"] = world.taste.item_factors
    arrays["truth.item_bias"] = world.taste.item_bias
    lanes = []
    for lane in world.lanes:
        p = f"lane{lane.index}."
        q = lane.queue
        arrays[p + "plan_t"], arrays[p + "plan_u"] = q._plan_t[q._pos :], q._plan_u[q._pos :]
        arrays[p + "push_t"] = np.concatenate(q._push_t) if q._push_t else np.empty(0)
        arrays[p + "push_u"] = np.concatenate(q._push_u) if q._push_u else np.empty(0, np.int32)
        for name in _Viewings.FIELDS:
            arrays[p + "view." + name] = getattr(lane.viewings, name)
        pend = lane.pending_rates
        arrays[p + "rate_t"] = np.array([r[0] for r in pend], np.float64)
        arrays[p + "rate_row"] = np.array([r[1] for r in pend], np.int64)
        arrays[p + "rate_movie"] = np.array([r[2] for r in pend], np.int64)
        arrays[p + "rate_value"] = np.array([r[3] for r in pend], np.int64)
        lanes.append(
            {"index": lane.index, "now": lane.now, "planned_until": lane.planned_until, "rng": _rng_state(lane.rng)}
        )
    # Accounts drawn ahead for lanes that have not reached their minute yet.
    minutes = sorted(world._arrived)
    arrays["arrived.minute"] = np.array(minutes, np.float64)
    arrays["arrived.left"] = np.array([world._arrived[m][0] for m in minutes], np.int64)
    part_m, part_l, part_t, part_i = [], [], [], []
    for m in minutes:
        for i, (times, ids) in enumerate(world._arrived[m][1:]):
            part_m.append(np.full(len(ids), m))
            part_l.append(np.full(len(ids), i, np.int64))
            part_t.append(np.asarray(times, np.float64))
            part_i.append(np.asarray(ids, np.int64))
    for key, parts, dt in (
        ("minute_of", part_m, np.float64),
        ("lane_of", part_l, np.int64),
        ("time", part_t, np.float64),
        ("id", part_i, np.int64),
    ):
        arrays[f"arrived.{key}"] = np.concatenate(parts).astype(dt) if parts else np.empty(0, dt)
    sizes = sorted(world._size_before)
    arrays["size_before.minute"] = np.array(sizes, np.float64)
    arrays["size_before.size"] = np.array([world._size_before[m] for m in sizes], np.int64)
    for name in _STAT_ARRAYS:
        arrays[f"stats.{name}"] = getattr(world.stats, name)
    extra_meta: dict[str, Any] = {}
    for name, component in world.extra_state.items():
        state = component.state()
        extra_meta[name] = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        extra_meta[name]["__arrays__"] = sorted(k for k, v in state.items() if isinstance(v, np.ndarray))
        for k, v in state.items():
            if isinstance(v, np.ndarray):
                arrays[f"extra.{name}.{k}"] = v
    meta = {
        "sim_time": world.now,
        "population_size": n,
        "catalog_size": len(world.slugs),
        "lanes": lanes,
        "arrivals_rng": _rng_state(world._arrivals_rng),
        "arrived_until": world._arrived_until,
        "ticked_until": world._ticked_until,
        "taste": {"mu": float(world.taste.mu), "noise_std": float(world.taste.noise_std)},
        "stats": {**{k: getattr(world.stats, k) for k in _STAT_SCALARS}, "lines": dict(world.stats.lines)},
        "extra": extra_meta,
    }
    return meta, arrays


# --- write --------------------------------------------------------------------------------------------
def _write_private(path: Path, write) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    world: World, state_dir: str | Path, *, fingerprint_fields: dict[str, Any], info: dict[str, Any] | None = None
) -> Path:
    """Write the world's checkpoint atomically into `state_dir/checkpoint`; return that folder.

    `fingerprint_fields` are the settings the world was built from (checked by `load`); `info` is saved as is
    (JSON-able: e.g. Kafka end offsets per topic and partition, teams). Raises `CheckpointError` on I/O failure.
    """
    t0 = time.perf_counter()
    meta, arrays = _prepare(world, fingerprint_fields, info)
    return _write(Path(state_dir), meta, arrays, t0)


def _prepare(world: World, fingerprint_fields: dict[str, Any], info: dict[str, Any] | None):
    meta, arrays = capture(world)
    for name in arrays:
        if not _ARRAY_NAME.fullmatch(name):
            raise CheckpointError(f"array name {name!r} cannot be a file name (letters, digits, _ . - only)")
    meta = {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint(fingerprint_fields),
        "fingerprint_fields": fingerprint_fields,
        "written_at": time.time(),
        **meta,
        "info": info or {},
    }
    return meta, arrays


def _write(state_dir: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], t0: float) -> Path:
    cpu0 = time.thread_time()
    state = state_dir
    tmp = state / f".checkpoint-{os.getpid()}-{time.monotonic_ns()}"
    current, previous = state / CURRENT, state / PREVIOUS
    try:
        ensure_private_dir(state)
        for stale in state.glob(".checkpoint-*"):  # left by a process killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        ensure_private_dir(tmp)
        ensure_private_dir(tmp / ARRAYS)
        sizes = {}
        for name, array in arrays.items():
            path = tmp / ARRAYS / f"{name}.npy"
            _write_private(path, lambda f, a=array: np.save(f, np.ascontiguousarray(a), allow_pickle=False))
            sizes[name] = path.stat().st_size
        _fsync_dir(tmp / ARRAYS)
        meta["arrays"] = sizes
        meta["arrays_bytes"] = sum(sizes.values())
        meta["write_seconds"] = time.perf_counter() - t0
        meta["write_cpu_seconds"] = time.thread_time() - cpu0  # of the writing thread: the rest is waiting on the disk
        body = json.dumps(meta, indent=1, allow_nan=True).encode()
        _write_private(tmp / MANIFEST, lambda f: f.write(body))
        if current.exists():
            if previous.exists():
                shutil.rmtree(previous)
            os.rename(current, previous)
        os.rename(tmp, current)
        _fsync_dir(state)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"checkpoint in {state} could not be written: {exc}") from exc
    logger.info(
        "checkpoint at %s written to %s in %.2f s (%d bytes)",
        meta["sim_time"],
        current,
        time.perf_counter() - t0,
        meta["arrays_bytes"],
    )
    return current


class BackgroundSaver:
    """Checkpoints written by a thread while the world runs on: the world pauses only to copy its arrays.

    `save` captures the state and copies every array (the world changes them in place as it runs), then writes,
    syncs and renames in a thread; the next `save` (or `wait`) first waits for the previous one and raises its
    error (`pause_seconds` counts that wait too). A process killed while a checkpoint is being written keeps the previous one.
    """

    def __init__(self, state_dir: str | Path, fingerprint_fields: dict[str, Any]) -> None:
        self.state_dir = Path(state_dir)
        self.fingerprint_fields = fingerprint_fields
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self._buffers: dict[str, np.ndarray] = {}  # reused between saves: no fresh pages to fault in each time
        self.pause_seconds: list[float] = []  # how long each save held the world

    def _copy(self, name: str, a: np.ndarray) -> np.ndarray:
        buf = self._buffers.get(name)
        if a.ndim == 0:
            return np.array(a, copy=True)
        if buf is None or buf.dtype != a.dtype or buf.shape[1:] != a.shape[1:] or len(buf) < len(a):
            buf = self._buffers[name] = np.empty((len(a) + len(a) // 8 + 16, *a.shape[1:]), a.dtype)
        out = buf[: len(a)]
        np.copyto(out, a)
        return out

    @property
    def busy(self) -> bool:
        """True while a checkpoint is being written (a world running faster than the disk skips a boundary)."""
        return self._thread is not None and self._thread.is_alive()

    def save(self, world: World, info: dict[str, Any] | None = None) -> None:
        """Capture now, write in the background (first waiting for the previous write, if any)."""
        t0 = time.perf_counter()
        self.wait()  # the previous write is done: its buffers can be reused
        meta, arrays = _prepare(world, self.fingerprint_fields, info)
        arrays = {k: self._copy(k, v) for k, v in arrays.items()}
        self.pause_seconds.append(time.perf_counter() - t0)

        def write() -> None:
            try:
                _write(self.state_dir, meta, arrays, t0)
            except Exception as exc:  # noqa: BLE001 -- handed to the world's thread by wait()
                self._error = exc

        self._thread = threading.Thread(target=write, name="movielab-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the checkpoint being written; raise `CheckpointError` if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# --- read ---------------------------------------------------------------------------------------------
def latest(state_dir: str | Path) -> Path | None:
    """The folder of the newest complete checkpoint in `state_dir`, or None when there is none."""
    for name in (CURRENT, PREVIOUS):
        folder = Path(state_dir) / name
        if (folder / MANIFEST).is_file():
            return folder
    return None


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder; `CheckpointError` when missing or not JSON."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint manifest {path} cannot be read: {exc}") from None


def check(meta: dict[str, Any], fingerprint_fields: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint of another format version or configuration (`CheckpointMismatch` naming the difference)."""
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointMismatch(
            f"checkpoint {where} has format version {meta.get('format')!r}; this movielab "
            f"reads version {FORMAT_VERSION} only"
        )
    if meta.get("fingerprint") == fingerprint(fingerprint_fields):
        return
    saved = meta.get("fingerprint_fields", {})
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {fingerprint_fields.get(k)!r}"
        for k in sorted(set(saved) | set(fingerprint_fields))
        if saved.get(k) != fingerprint_fields.get(k)
    ]
    raise CheckpointMismatch(
        f"checkpoint {where} is of a world configured differently ("
        + ("; ".join(diffs) or "fingerprint differs")
        + "): use its course file, or another "
        "state folder for a new world"
    )


def load(state_dir: str | Path, *, fingerprint_fields: dict[str, Any]) -> Checkpoint | None:
    """The newest checkpoint in `state_dir` (None when there is none), checked against `fingerprint_fields`.

    Raises `CheckpointMismatch` for another version or configuration, `CheckpointError` for a damaged one.
    """
    folder = latest(state_dir)
    if folder is None:
        return None
    meta = read_meta(folder)
    check(meta, fingerprint_fields, folder)
    arrays = {}
    for name, size in meta.get("arrays", {}).items():
        path = folder / ARRAYS / f"{name}.npy"
        try:
            if path.stat().st_size != size:
                raise CheckpointError(
                    f"checkpoint array {path} has {path.stat().st_size} bytes, its manifest says "
                    f"{size}: the file is damaged"
                )
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint array {path} cannot be read: {exc}") from None
    return Checkpoint(folder, meta, arrays)


def restore(world: World, cp: Checkpoint) -> None:
    """Put a checkpoint's state into a world built from the same configuration (`build_world(population=...)`).

    The world must have the checkpoint's number of lanes and catalog; its population must be `cp.population()`.
    Raises `CheckpointMismatch` otherwise. A paced clock is rebased so the world resumes without a jump.
    """
    meta, a = cp.meta, cp.arrays
    if len(world.lanes) != len(meta["lanes"]):
        raise CheckpointMismatch(
            f"checkpoint {cp.path} has {len(meta['lanes'])} lane(s) (one per team), the world {len(world.lanes)}"
        )
    if len(world.slugs) != meta["catalog_size"]:
        raise CheckpointMismatch(
            f"checkpoint {cp.path} has {meta['catalog_size']} movies, the world's catalog {len(world.slugs)}"
        )
    n = int(meta["population_size"])
    if world.pop.size != n:
        raise CheckpointMismatch(f"world population has {world.pop.size} users, checkpoint {cp.path} {n}")
    world._grow_user_state()
    for name in _USER_ARRAYS:
        getattr(world, name)[:n] = a[f"user.{name}"]
    world.taste = dataclasses.replace(
        world.taste,
        item_factors=a["truth.item_factors"],
        item_bias=a["truth.item_bias"],
        mu=meta["taste"]["mu"],
        noise_std=meta["taste"]["noise_std"],
    )
    for lane, saved in zip(world.lanes, meta["lanes"], strict=True):
        p = f"lane{saved['index']}."
        lane.now, lane.planned_until = saved["now"], saved["planned_until"]
        lane.rng.bit_generator.state = saved["rng"]
        q = lane.queue
        q._plan_t, q._plan_u, q._pos = a[p + "plan_t"], a[p + "plan_u"].astype(np.int32), 0
        q._push_t, q._push_u = (
            ([a[p + "push_t"]], [a[p + "push_u"].astype(np.int32)]) if len(a[p + "push_t"]) else ([], [])
        )
        for name in _Viewings.FIELDS:
            setattr(lane.viewings, name, a[p + "view." + name])
        lane.pending_rates = list(
            zip(
                a[p + "rate_t"].tolist(),
                a[p + "rate_row"].tolist(),
                a[p + "rate_movie"].tolist(),
                a[p + "rate_value"].tolist(),
                strict=True,
            )
        )
    if (world._arrivals_rng is None) != (meta["arrivals_rng"] is None):
        raise CheckpointMismatch(f"checkpoint {cp.path} and the world disagree on a separate arrivals stream")
    if world._arrivals_rng is not None:
        world._arrivals_rng.bit_generator.state = meta["arrivals_rng"]
    world._arrived = {}
    k = len(world.lanes)
    for m, left in zip(a["arrived.minute"].tolist(), a["arrived.left"].tolist(), strict=True):
        sel = a["arrived.minute_of"] == m
        lane_of, times, ids = a["arrived.lane_of"][sel], a["arrived.time"][sel], a["arrived.id"][sel]
        world._arrived[m] = [left, *[(times[lane_of == i], ids[lane_of == i]) for i in range(k)]]
    world._arrived_until = meta["arrived_until"]
    world._size_before = dict(zip(a["size_before.minute"].tolist(), a["size_before.size"].tolist(), strict=True))
    world._ticked_until = meta["ticked_until"]
    stats = Stats(**{k: meta["stats"][k] for k in _STAT_SCALARS}, **{k: a[f"stats.{k}"].copy() for k in _STAT_ARRAYS})
    stats.lines.update(meta["stats"]["lines"])
    world.stats = stats
    for name, saved in meta["extra"].items():
        component = world.extra_state.get(name)
        if component is None:
            raise CheckpointMismatch(f"checkpoint {cp.path} holds the state of {name!r}, which this world lacks")
        state = {k: v for k, v in saved.items() if k != "__arrays__"}
        state.update({k: a[f"extra.{name}.{k}"] for k in saved["__arrays__"]})
        component.restore(state)
    if world.clock.paced:
        world.clock.rebase(world.now)
