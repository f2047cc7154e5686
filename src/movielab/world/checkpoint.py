"""Checkpoint and restore of a world's whole state: one `.npy` file per array plus a JSON manifest, no pickles.

What is saved: the population (demographics, activity, creation times, the *evolved* hidden taste and
biases), the hidden truth of the movies (item factors and biases, which scenarios may change), per-user
dynamic state (busy, paused movies, movies watched), each lane's clock, random stream
(`Generator.bit_generator.state`, a JSON-able dict), session queue, viewings in progress and pending
ratings, the arrivals stream and the accounts drawn ahead for lanes behind, the run's counters, the
named `World.extra_state` components (e.g. a scenario runtime), and what the caller adds in `info`
(e.g. the Kafka end offsets of every topic/partition at the checkpoint, the teams).

Full and delta checkpoints. A *chain* is a full checkpoint (the base) followed by deltas. A delta holds only
the user rows whose state changed since the chain's previous link (`World.dirty`, marked by the engine and the
scenarios wherever they write a per-user array or population field; rows of accounts created since are always
in) of the per-user and population arrays (`rows.idx` + the rows), and everything else whole (queues, viewings,
pending ratings, lanes' clocks and random streams, the movies' truth, counters, extra state, info); a whole
array equal to the one the previous link holds is not written again (the manifest lists it in `unchanged`).
`BackgroundSaver` writes a full checkpoint first, then deltas; it starts a new chain (compaction: a full
checkpoint of the live state, after which the old chain becomes `checkpoint.prev` and the one before is
deleted) after `max_deltas` deltas, when the chain's deltas reach `compact_ratio` of its base's bytes (so a
restore reads at most 1 + `compact_ratio` times a full checkpoint), when a capture finds more than
`full_share` of the users changed, after a failed write, or when the folder does not hold its chain.
`save` always writes a full checkpoint. Restore = base + deltas in order.

Layout of a state folder (created mode 0700, files 0600):

    <state>/checkpoint/                     the newest chain: its base (manifest.json + arrays/<name>.npy)
    <state>/checkpoint/deltas/000001/ ...   its deltas, numbered from 1 (manifest.json + arrays.npys)
    <state>/checkpoint.prev/                the chain before (kept until the next chain's base is complete)
    <state>/checkpoint.recycle/             the files of the chain before that, to be written over (not read)

Files are recycled, as a database recycles its write-ahead log segments: when a new chain is started, the chain in
`checkpoint.prev` is retired into `checkpoint.recycle` (emptied first; `checkpoint` is the complete chain a restore
reads meanwhile), and the new base and its deltas are written over its files (renamed into the new link's folder,
overwritten from the start, cut to length, synced) instead of new ones. Rewriting a file whose blocks and cached pages exist costs a fraction of growing the filesystem and the
page cache by as much, which on the project's 2-core VM is most of what a checkpoint costs the process
(`benchmarks/checkpoint.py` prints the writer's CPU for bases written into new and into recycled files). The folder
holds at most one retired chain (the state folder up to three chains' bytes); nothing in it is ever read.
A retired file that is not a plain file with a single link (e.g. hard-linked by a backup) is left alone.

Every link is written into a temporary folder, synced, then renamed into place: a crash while writing leaves
the previous link loadable (`load` falls back to `checkpoint.prev` when `checkpoint` has no base, and stops a
chain, with a warning, before a delta that is missing from the sequence, unreadable or damaged). A checkpoint of
another format version, or of a world built differently (seed, population, catalog, edition, ...: the
`fingerprint` fields), is refused with `CheckpointMismatch` naming what differs.

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
import stat
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from movielab.world.engine import Stats, World, _Viewings
from movielab.world.errors import WorldError
from movielab.world.population import Population

logger = logging.getLogger(__name__)

#: Bumped whenever the layout or meaning of a saved field changes; other versions are refused.
FORMAT_VERSION = 3
CURRENT, PREVIOUS, RECYCLE = "checkpoint", "checkpoint.prev", "checkpoint.recycle"
MANIFEST, ARRAYS, DELTAS = "manifest.json", "arrays", "deltas"
#: A delta's arrays in one file: `.npy` records (the NPY format, NEP 1) one after another, in the manifest's order.
#: Deltas written before (format 3 too) packed them into `arrays.npz` (a zip of `.npy` files): still read.
PACKED, PACKED_NPZ = "arrays.npys", "arrays.npz"
_DELTA_NAME = re.compile(r"[0-9]{6}")
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
DIR_MODE, FILE_MODE = 0o700, 0o600

POPULATION_ARRAYS = tuple(f.name for f in dataclasses.fields(Population) if f.name not in ("size", "_arrays"))
_USER_ARRAYS = ("busy_until", "paused_minute", "paused_movie", "seen", "active")
#: The arrays with one row per user: a delta holds only their changed rows.
ROW_ARRAYS = tuple(f"pop.{name}" for name in POPULATION_ARRAYS) + tuple(f"user.{name}" for name in _USER_ARRAYS)
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


def _immutable(name: str) -> bool:
    """Arrays the world replaces but never writes in place (a lane's day plan, the scorer's start-of-day taste
    `extra.<component>.taste_start`): the same object, the same content, so kept by reference, not copied."""
    return name.endswith((".plan_t", ".plan_u", ".taste_start"))


def capture(world: World) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The world's state as (JSON-able meta, arrays); call it between ticks (in `on_checkpoint` or after `run`).

    The arrays are views of the live ones (copy them before the world runs on).
    """
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
        arrays[p + "plan_t"], arrays[p + "plan_u"] = q._plan_t, q._plan_u  # the whole day plan: `plan_pos` in meta
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
            {
                "index": lane.index,
                "now": lane.now,
                "planned_until": lane.planned_until,
                "plan_pos": int(q._pos),
                "rng": _rng_state(lane.rng),
            }
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


@dataclass
class _Chain:
    """What a saver knows of the chain it writes to: its id, its last link, its bytes, its last whole arrays."""

    id: str
    seq: int  # deltas written after the base
    population_size: int  # at the last link
    epoch: int  # `World.dirty_epoch` right after the last link's capture
    base_bytes: int = 0
    delta_bytes: int = 0
    whole: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # the last link's whole arrays


def _prepare(
    world: World, fingerprint_fields: dict[str, Any], info: dict[str, Any] | None, delta_of: _Chain | None = None
):
    """Capture the world as a full checkpoint (`delta_of` None) or as the next delta of `delta_of`; clear `dirty`."""
    meta, arrays = capture(world)
    for name in arrays:
        if not _ARRAY_NAME.fullmatch(name):
            raise CheckpointError(f"array name {name!r} cannot be a file name (letters, digits, _ . - only)")
    n = meta["population_size"]
    if delta_of is None:
        link = {"kind": "full", "chain": uuid.uuid4().hex, "seq": 0}
    else:
        n0 = delta_of.population_size
        idx = np.concatenate([np.flatnonzero(world.dirty[:n0]), np.arange(n0, n)]).astype(np.int64)
        for name in ROW_ARRAYS:
            arrays[name] = arrays[name][idx]  # a copy of the changed rows
        arrays["rows.idx"] = idx
        link = {"kind": "delta", "chain": delta_of.id, "seq": delta_of.seq + 1, "rows": len(idx)}
    world.dirty[:] = False
    world.dirty_epoch += 1
    meta = {
        "format": FORMAT_VERSION,
        **link,
        "fingerprint": fingerprint(fingerprint_fields),
        "fingerprint_fields": fingerprint_fields,
        "written_at": time.time(),
        **meta,
        "info": info or {},
    }
    return meta, arrays


# --- write --------------------------------------------------------------------------------------------
def _real_dir(path: Path) -> bool:
    """`path` is a folder itself, not a symbolic link to one."""
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    """Delete `path`: a file or a symbolic link itself (never what the link points to), or a folder and its content."""
    if _real_dir(path):
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write_private(path: Path, write, recycled: Path | None = None) -> bool:
    """Write `path` (mode 0600) with `write(f)` and sync it: a new file, or `recycled` (a retired file, moved to
    `path`, set to mode 0600, written over from the start, then cut to length). A recycled file that is not a plain
    file with one link (a symbolic link, a hard link kept by a backup, ...) is not written through: a new file is
    made. Returns whether a recycled file was written over."""
    fd = None
    if recycled is not None:
        try:
            os.rename(recycled, path)
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise OSError(f"{path} is not a plain file of its own")
            os.fchmod(fd, FILE_MODE)
        except OSError:  # gone, or not a plain file of its own: a new one then
            if fd is not None:
                os.close(fd)
                fd = None
            if os.path.lexists(path):
                _remove(path)
    written_over = fd is not None
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        f.truncate()  # a recycled file may have been longer
        os.fsync(f.fileno())
    return written_over


class _Pool:
    """The retired files in `<state>/checkpoint.recycle` a writer may write over: base arrays by name, deltas' files."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / RECYCLE
        names = []  # none to take from a recycling folder that is not a folder of its own, or cannot be read
        if _real_dir(self.folder):
            try:
                names = sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.is_symlink())
            except OSError:
                pass
        self.deltas = [n for n in names if n.startswith("delta.")]
        self.base = {n[len("base.") :] for n in names if n.startswith("base.")}

    def take(self, name: str | None = None) -> Path | None:
        """A retired file to write `arrays/<name>` over (`name` None: a delta's packed file), or None."""
        if name is None:
            return self.folder / self.deltas.pop() if self.deltas else None
        if name in self.base:
            self.base.discard(name)
            return self.folder / f"base.{name}"
        return None


def _retire(state_dir: Path, folder: Path) -> None:
    """Move the array files of the chain in `folder` into the recycling folder (emptied first), delete the rest.

    Only plain files in the chain's own folders are moved: nothing behind a symbolic link (a link is deleted, not
    what it points to). Recycling is a saving, not a need: when the recycling folder cannot be made or filled (a
    file in its place, no permission, ...), that is logged and the chain is deleted as it would be without it.
    """
    pool = state_dir / RECYCLE
    try:
        if os.path.lexists(pool):
            _remove(pool)
        ensure_private_dir(pool)
        if _real_dir(folder):
            if _real_dir(folder / ARRAYS):
                for f in (folder / ARRAYS).glob("*.npy"):
                    if f.is_file() and not f.is_symlink():
                        os.rename(f, pool / f"base.{f.name}")
            if _real_dir(folder / DELTAS):
                for d in _delta_folders(folder):
                    f = d / PACKED
                    if _real_dir(d) and f.is_file() and not f.is_symlink():
                        os.rename(f, pool / f"delta.{d.name}")  # (an older delta's arrays.npz is not recycled)
    except OSError as exc:
        logger.warning("checkpoint files of %s are not recycled (%s): the next ones are new files", folder, exc)
    _remove(folder)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    world: World, state_dir: str | Path, *, fingerprint_fields: dict[str, Any], info: dict[str, Any] | None = None
) -> Path:
    """Write a full checkpoint of the world atomically into `state_dir/checkpoint` (a new chain); return that folder.

    `fingerprint_fields` are the settings the world was built from (checked by `load`); `info` is saved as is
    (JSON-able: e.g. Kafka end offsets per topic and partition, teams). Raises `CheckpointError` on I/O failure.
    """
    t0 = time.perf_counter()
    meta, arrays = _prepare(world, fingerprint_fields, info)
    return _write(Path(state_dir), meta, arrays, t0)


def _write_link(
    folder: Path,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray],
    t0: float,
    cpu0: float,
    packed: bool = False,
    pool: _Pool | None = None,
) -> None:
    """Write one link (arrays, then its manifest) into the fresh private folder `folder`, synced.

    `packed`: every array in one file of `.npy` records (one file to write and sync: a delta's many small arrays; no
    zip container, no copy of each array into bytes), else one `arrays/<name>.npy` each. `pool`: retired files to
    write over instead of creating new ones.
    """
    ensure_private_dir(folder)
    sizes = {}
    recycled = []

    def take(name: str | None = None) -> Path | None:
        return pool.take(name) if pool is not None else None

    if packed:
        path = folder / PACKED

        def records(f) -> None:
            for name, a in arrays.items():
                start = f.tell()
                np.save(f, np.ascontiguousarray(a), allow_pickle=False)
                sizes[name] = f.tell() - start  # the record's bytes: header and data

        recycled.append(_write_private(path, records, take()))
        meta["packed"], meta["arrays_bytes"] = PACKED, path.stat().st_size
    else:
        ensure_private_dir(folder / ARRAYS)
        for name, array in arrays.items():
            path = folder / ARRAYS / f"{name}.npy"
            recycled.append(
                _write_private(
                    path, lambda f, a=array: np.save(f, np.ascontiguousarray(a), allow_pickle=False), take(path.name)
                )
            )
            sizes[name] = path.stat().st_size
        _fsync_dir(folder / ARRAYS)
        meta["arrays_bytes"] = sum(sizes.values())
    meta["arrays"] = sizes
    meta["recycled_files"] = sum(recycled)  # retired files written over (the rest are new)
    meta["write_seconds"] = time.perf_counter() - t0
    meta["write_cpu_seconds"] = time.thread_time() - cpu0  # of the writing thread: the rest is waiting on the disk
    body = json.dumps(meta, indent=1, allow_nan=True).encode()
    _write_private(folder / MANIFEST, lambda f: f.write(body))
    _fsync_dir(folder)


def _write(state_dir: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], t0: float) -> Path:
    """Write a full checkpoint: a new chain in `checkpoint`, the old one moved to `checkpoint.prev`.

    The chain in `checkpoint.prev` is retired into `checkpoint.recycle` first, when `checkpoint` holds a complete
    base (it is then the chain a restore reads), and the new base is written over its files."""
    cpu0 = time.thread_time()
    state = state_dir
    tmp = state / f".checkpoint-{os.getpid()}-{time.monotonic_ns()}"
    current, previous = state / CURRENT, state / PREVIOUS
    try:
        ensure_private_dir(state)
        for stale in state.glob(".checkpoint-*"):  # left by a process killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        if os.path.lexists(previous) and (current / MANIFEST).is_file():
            _retire(state, previous)
        _write_link(tmp, meta, arrays, t0, cpu0, pool=_Pool(state))
        if os.path.lexists(current):
            if os.path.lexists(previous):
                _remove(previous)
            os.rename(current, previous)
        os.rename(tmp, current)
        _fsync_dir(state)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"checkpoint in {state} could not be written: {exc}") from exc
    logger.info(
        "full checkpoint at %s written to %s in %.2f s (%d bytes)",
        meta["sim_time"],
        current,
        time.perf_counter() - t0,
        meta["arrays_bytes"],
    )
    return current


def _write_delta(
    state_dir: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], before: dict[str, np.ndarray], t0: float
) -> Path:
    """Write a delta as link `meta["seq"]` of the chain in `state_dir/checkpoint`; whole arrays equal to `before`'s
    are listed in `unchanged` instead of written. Raises `CheckpointError` when the folder does not hold that chain.
    """
    cpu0 = time.thread_time()
    current = state_dir / CURRENT
    deltas = current / DELTAS
    seq = int(meta["seq"])
    base = read_meta(current, newest=False)
    if base.get("chain") != meta["chain"]:
        raise CheckpointError(f"{current} holds chain {base.get('chain')!r}, not {meta['chain']!r}: cannot add a delta")
    if (seq > 1 and not (deltas / f"{seq - 1:06d}" / MANIFEST).is_file()) or (deltas / f"{seq:06d}").exists():
        raise CheckpointError(f"{current} does not end with delta {seq - 1}: cannot add delta {seq}")
    unchanged = []
    for name in list(arrays):
        if name in ROW_ARRAYS or name == "rows.idx" or name not in before:
            continue
        a, b = arrays[name], before[name]
        if a is b or (not _immutable(name) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)):
            unchanged.append(name)
            del arrays[name]
    meta["unchanged"] = sorted(unchanged)
    tmp = deltas / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    final = deltas / f"{seq:06d}"
    try:
        ensure_private_dir(deltas)
        for stale in deltas.glob(".tmp-*"):  # left by a process killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        _write_link(tmp, meta, arrays, t0, cpu0, packed=True, pool=_Pool(state_dir))
        os.rename(tmp, final)
        _fsync_dir(deltas)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"delta checkpoint {final} could not be written: {exc}") from exc
    logger.info(
        "delta checkpoint at %s (%d user rows) written to %s in %.2f s (%d bytes)",
        meta["sim_time"],
        meta["rows"],
        final,
        time.perf_counter() - t0,
        meta["arrays_bytes"],
    )
    return final


class BackgroundSaver:
    """Checkpoints written by a thread while the world runs on: the world pauses only to copy what it saves.

    The first `save` writes a full checkpoint, the next ones deltas (the changed user rows, the rest whole), until
    a new chain is due (see the module: `max_deltas` deltas, deltas worth `compact_ratio` of the base's bytes, more
    than `full_share` of the users changed, a failed write, or a folder not holding the saver's chain).
    `save` captures the state and copies it (the world changes its arrays in place as it runs), then writes,
    syncs and renames in a thread; the next `save` (or `wait`) first waits for the previous one and raises its
    error (`pause_seconds` counts that wait too). A process killed while a checkpoint is being written keeps the
    previous link.
    """

    def __init__(
        self,
        state_dir: str | Path,
        fingerprint_fields: dict[str, Any],
        *,
        max_deltas: int = 144,
        compact_ratio: float = 2.0,
        full_share: float = 0.25,
    ) -> None:
        if max_deltas < 0 or compact_ratio < 0 or not 0 <= full_share <= 1:
            raise ValueError(
                f"BackgroundSaver needs max_deltas ≥ 0, compact_ratio ≥ 0 and 0 ≤ full_share ≤ 1, got "
                f"{max_deltas!r}, {compact_ratio!r}, {full_share!r}"
            )
        self.state_dir = Path(state_dir)
        self.fingerprint_fields = fingerprint_fields
        self.max_deltas, self.compact_ratio, self.full_share = max_deltas, compact_ratio, full_share
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None
        self._buffers: dict[str, np.ndarray] = {}  # reused between full saves: no fresh pages to fault in each time
        self._chain: _Chain | None = None
        self.pause_seconds: list[float] = []  # how long each save held the world
        self.kinds: list[str] = []  # "full" or "delta", per save
        #: Per link written: kind, seconds, cpu_seconds (of the writer thread), bytes, rows (user rows saved),
        #: full_reason (why a full one).
        self.written: list[dict[str, Any]] = []

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

    def _full_reason(self, world: World) -> str | None:
        """Why the next checkpoint must be full (None: a delta will do)."""
        chain = self._chain
        if chain is None:
            return "no chain yet"
        if world.dirty_epoch != chain.epoch:
            return "the world was captured by another checkpoint since"
        if chain.seq >= self.max_deltas:
            return f"{chain.seq} deltas in the chain"
        if chain.delta_bytes >= self.compact_ratio * chain.base_bytes:
            return f"the chain's deltas hold {chain.delta_bytes} bytes, its base {chain.base_bytes}"
        n0, n = chain.population_size, world.pop.size
        changed = int(np.count_nonzero(world.dirty[:n0])) + n - n0
        if changed > self.full_share * n:
            return f"{changed} of {n} users changed"
        return None

    def save(self, world: World, info: dict[str, Any] | None = None) -> None:
        """Capture now (full or delta), write in the background (first waiting for the previous write, if any)."""
        t0 = time.perf_counter()
        self.wait()  # the previous write is done: its buffers can be reused
        reason = self._full_reason(world)
        chain = None if reason is not None else self._chain
        meta, arrays = _prepare(world, self.fingerprint_fields, info, delta_of=chain)
        n = int(meta["population_size"])
        rows = set(ROW_ARRAYS) | {"rows.idx"}
        if chain is None:
            meta["full_reason"] = reason
            before: dict[str, np.ndarray] = {}
            chain = self._chain = _Chain(meta["chain"], 0, n, world.dirty_epoch)
        else:
            before = chain.whole
            chain.seq, chain.population_size, chain.epoch = int(meta["seq"]), n, world.dirty_epoch
        copied = {}
        for k, v in arrays.items():
            if k in rows:  # full: into reused buffers; delta: already a copy of the changed rows
                copied[k] = self._copy(k, v) if meta["kind"] == "full" else v
            else:  # the day plan is never written in place: kept as is (and recognised as unchanged)
                copied[k] = v if _immutable(k) else np.array(v, copy=True)
        chain.whole = {k: v for k, v in copied.items() if k not in rows}
        self.pause_seconds.append(time.perf_counter() - t0)
        self.kinds.append(meta["kind"])

        def write() -> None:
            try:
                if meta["kind"] == "full":
                    _write(self.state_dir, meta, copied, t0)
                    chain.base_bytes = meta["arrays_bytes"]
                else:
                    _write_delta(self.state_dir, meta, copied, before, t0)
                    chain.delta_bytes += meta["arrays_bytes"]
                self.written.append(
                    {
                        "kind": meta["kind"],
                        "seconds": meta["write_seconds"],
                        "cpu_seconds": meta["write_cpu_seconds"],
                        "bytes": meta["arrays_bytes"],
                        "rows": meta.get("rows", n),
                        "full_reason": meta.get("full_reason"),
                        "recycled_files": meta["recycled_files"],
                    }
                )
            except Exception as exc:  # noqa: BLE001 -- handed to the world's thread by wait()
                self._error = exc

        self._thread = threading.Thread(target=write, name="movielab-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the checkpoint being written; raise `CheckpointError` if it failed (the next save is then full)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            self._chain = None
            raise error


# --- read ---------------------------------------------------------------------------------------------
def latest(state_dir: str | Path) -> Path | None:
    """The folder of the newest chain with a complete base in `state_dir`, or None when there is none."""
    for name in (CURRENT, PREVIOUS):
        folder = Path(state_dir) / name
        if (folder / MANIFEST).is_file():
            return folder
    return None


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint manifest {path} cannot be read: {exc}") from None


def _delta_folders(folder: Path) -> list[Path]:
    deltas = folder / DELTAS
    if not deltas.is_dir():
        return []
    return sorted(p for p in deltas.iterdir() if _DELTA_NAME.fullmatch(p.name))


def read_meta(folder: str | Path, *, newest: bool = True) -> dict[str, Any]:
    """The manifest of a chain folder's newest readable link in sequence (`newest=False`: of its base).

    Raises `CheckpointError` when the base's manifest is missing or not JSON.
    """
    folder = Path(folder)
    meta = _read_manifest(folder)
    if newest:
        for seq, d in enumerate(_delta_folders(folder), start=1):
            if d.name != f"{seq:06d}":
                break
            try:
                link = _read_manifest(d)
            except CheckpointError:
                break
            if link.get("chain") != meta.get("chain") or link.get("seq") != seq:
                break
            meta = link
    return meta


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


def _read_arrays(folder: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    if meta.get("packed") == PACKED:
        path = folder / PACKED
        try:
            size = path.stat().st_size
            if size != meta["arrays_bytes"] or sum(meta["arrays"].values()) != size:
                raise CheckpointError(
                    f"checkpoint arrays {path} have {size} bytes, the manifest says {meta['arrays_bytes']} "
                    f"in records of {sum(meta['arrays'].values())}: the file is damaged"
                )
            with path.open("rb") as f:
                for name, record in meta["arrays"].items():
                    start = f.tell()
                    arrays[name] = np.load(f, allow_pickle=False)
                    if f.tell() - start != record:
                        raise CheckpointError(
                            f"checkpoint arrays {path}: the record of {name} has {f.tell() - start} bytes, the "
                            f"manifest says {record}: the file is damaged"
                        )
            return arrays
        except (OSError, ValueError, KeyError, EOFError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"checkpoint arrays {path} cannot be read: {exc}") from None
    if meta.get("packed"):
        path = folder / PACKED_NPZ
        try:
            if path.stat().st_size != meta["arrays_bytes"]:
                raise CheckpointError(
                    f"checkpoint arrays {path} have {path.stat().st_size} bytes, the manifest says "
                    f"{meta['arrays_bytes']}: the file is damaged"
                )
            with np.load(path, allow_pickle=False) as z:
                return {name: z[name] for name in meta.get("arrays", {})}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"checkpoint arrays {path} cannot be read: {exc}") from None
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
    return arrays


def _apply_delta(arrays: dict[str, np.ndarray], n0: int, meta: dict[str, Any], delta: dict[str, np.ndarray], where):
    """The state of the link after `arrays` (of `n0` users): its changed rows put in, its whole arrays replaced.

    The per-user arrays may come back longer than the link's users (room for more): `load` trims them.
    """
    n = int(meta["population_size"])
    idx = delta.get("rows.idx")
    if idx is None or idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= n)) or (np.diff(idx) <= 0).any():
        raise CheckpointError(f"delta {where} has no valid rows.idx (sorted user rows below {n})")
    if n < n0 or int(np.count_nonzero(idx >= n0)) != n - n0:
        raise CheckpointError(f"delta {where} does not hold every row of the {n - n0} users created since its parent")
    out = {}
    for name in ROW_ARRAYS:
        a, rows = arrays[name], delta.get(name)
        if rows is None or len(rows) != len(idx) or rows.dtype != a.dtype or rows.shape[1:] != a.shape[1:]:
            raise CheckpointError(f"delta {where} has no rows of {name} matching rows.idx and the base")
        if len(a) < n:  # room for the next links' new users too: one copy per many links, not one per link
            grown = np.zeros((n + n // 4 + 1024, *a.shape[1:]), a.dtype)
            grown[: len(a)] = a
            a = grown
        a[idx] = rows
        out[name] = a
    for name in meta.get("unchanged", []):
        if name not in arrays:
            raise CheckpointError(f"delta {where} keeps {name} unchanged, but the link before has no such array")
        out[name] = arrays[name]
    out.update({k: v for k, v in delta.items() if k not in out and k != "rows.idx"})
    return out


def load(state_dir: str | Path, *, fingerprint_fields: dict[str, Any]) -> Checkpoint | None:
    """The newest checkpoint in `state_dir` (None when there is none): a chain's base plus its deltas in order.

    A delta missing from the sequence, unreadable, damaged or of another chain ends the chain at the link before
    it (logged as a warning; `meta["fallback"]` says why, `meta["links"]` counts the links read).
    Raises `CheckpointMismatch` for a base or delta of another version or configuration, `CheckpointError` for a
    damaged base.
    """
    folder = latest(state_dir)
    if folder is None:
        return None
    meta = _read_manifest(folder)
    check(meta, fingerprint_fields, folder)
    if meta.get("kind") != "full":
        raise CheckpointError(f"checkpoint {folder} is not the base of a chain (kind {meta.get('kind')!r})")
    arrays = _read_arrays(folder, meta)
    links, fallback = 1, None
    for seq, d in enumerate(_delta_folders(folder), start=1):
        try:
            if d.name != f"{seq:06d}":
                raise CheckpointError(f"delta {seq:06d} of {folder} is missing (next is {d.name})")
            link = _read_manifest(d)
            check(link, fingerprint_fields, d)
            if link.get("kind") != "delta" or link.get("chain") != meta["chain"] or link.get("seq") != seq:
                raise CheckpointError(f"{d} is not delta {seq} of chain {meta['chain']}")
            arrays = _apply_delta(arrays, int(meta["population_size"]), link, _read_arrays(d, link), d)
        except CheckpointMismatch:
            raise  # another version or configuration: refused, as a base would be
        except CheckpointError as exc:
            fallback = f"{exc}; restoring the chain up to link {links - 1} (sim time {meta['sim_time']})"
            logger.warning("checkpoint chain %s ends early: %s", folder, fallback)
            break
        meta, links = link, links + 1
    n = int(meta["population_size"])
    arrays.update({name: arrays[name][:n] for name in ROW_ARRAYS})
    meta = {**meta, "links": links, **({"fallback": fallback} if fallback else {})}
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
    world.dirty[:] = False  # the world is its checkpoint: nothing changed since
    world.dirty_epoch += 1
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
        q._plan_t, q._plan_u, q._pos = a[p + "plan_t"], a[p + "plan_u"].astype(np.int32), int(saved["plan_pos"])
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
