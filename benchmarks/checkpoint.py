"""Checkpoint size and time at course scale, and what checkpointing every 10 simulated minutes costs.

Builds two identical worlds of 1,000,000 users × 27,000 movies (same configuration, seed and universe; 3 teams'
lanes; a sink that counts), warms both up so viewings, pauses and queues are in steady state, checks that they
emitted the same lines, then runs them in turns of 10 simulated minutes (one checkpoint interval): world A without
checkpoints, world B checkpointing at the start of each of its turns (`BackgroundSaver`; the write overlaps the
turn's simulation, as in a continuous run, and a boundary is skipped while the previous write is still going, as
`movielab course run` does). The order alternates (ABBA). Checkpointing does not change what a world simulates,
so both emit exactly the same lines in every turn (checked): the two worlds' CPU and wall-clock seconds for the
same work are compared directly, turn by turn, so a slower stretch of a shared machine (another VM, the CPU's
clock) hits both alike and the figure does not mix different hours of the simulated day.

Printed:
- the start: B's first checkpoint, a full one captured from the world (its pause and write), before the turns;
- per link kind (full, delta): size, user rows, write time, the writer thread's CPU, the world's pause (a new
  chain's full one copies into the buffers the first one allocated: no fresh pages to fault in);
- the cost of checkpointing over all turns: process CPU seconds (the world's thread and the writer) of B over A's
  for the same lines, and wall-clock events/s (a turn of B ends by waiting for its write, if still going: that wait
  counts in its CPU seconds, not its wall time, since a continuous run goes on beside the write); per simulated
  hour (6 turns each) the median and spread of both;
- the chain the periodic checkpoints left: links, bytes, time to read and merge it; a synchronous full write
  (the one on SIGTERM) and its size; a restore from it: read, build the world around the saved population, put
  the state back.

Run it for more than two days of simulated time (the default, 50 h) so the turns hold a new chain's base written
into new files (the second chain: nothing retired yet) and one written over the first chain's files (the third:
the steady state of a running course, whose deltas are written over retired files too).

    .venv/bin/python benchmarks/checkpoint.py [--users 1000000] [--movies 27000] [--hours 50] [--aa]

`--aa` runs the same comparison with neither world checkpointing: what it prints when there is nothing to find
(the noise floor of the cost figures on this machine).

Targets: write ≤ 5 s, restore ≤ 10 s, files ≤ 1 GB, events/s cost ≤ 5%.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from movielab.world import checkpoint
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.sinks import KindCounter

TURN = 600.0  # simulated seconds: one checkpoint interval


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def _spread(xs: list[float]) -> str:
    """min, quartiles and max of `xs`, as percentages."""
    if not xs:
        return "-"
    q = np.percentile(xs, [0, 25, 75, 100])
    return f"min {q[0]:+.1%}, quartiles {q[1]:+.1%} / {q[2]:+.1%}, max {q[3]:+.1%}"


class _Skipping:
    """A saver that skips a boundary while the previous checkpoint is still being written (as `course run` does)."""

    def __init__(self, saver: checkpoint.BackgroundSaver) -> None:
        self.saver, self.skipped = saver, 0

    def wait(self) -> None:
        self.saver.wait()

    def save(self, world) -> None:
        if self.saver.busy:
            self.skipped += 1
            return
        self.saver.save(world)


def _turn(world, saver: _Skipping | None = None) -> np.ndarray:
    """Ten simulated minutes of `world` (checkpointed at their start with `saver`): lines emitted, wall seconds,
    process CPU seconds, world-thread CPU seconds."""
    before = sum(world.stats.lines.values())
    t0, c0, w0 = time.perf_counter(), time.process_time(), time.thread_time()
    if saver is not None:
        saver.save(world)
    world.run(until=world.now + TURN)
    wall = time.perf_counter() - t0
    if saver is not None:
        saver.wait()  # its write's CPU is part of the cost (its wall time overlaps the next minutes)
    n = sum(world.stats.lines.values()) - before
    return np.array([n, wall, time.process_time() - c0, time.thread_time() - w0])


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--movies", type=int, default=27_000)
    ap.add_argument("--teams", type=int, default=3)
    ap.add_argument("--warmup-hours", type=float, default=2.0)
    ap.add_argument("--hours", type=float, default=50.0, help="simulated hours measured (per world)")
    ap.add_argument(
        "--aa",
        action="store_true",
        help="A/A run: B does not checkpoint either (what the comparison prints when there is nothing to find)",
    )
    args = ap.parse_args()
    teams = [f"http://127.0.0.1:{9000 + i}" for i in range(args.teams)]
    config = WorldConfig(users=args.users, movies=args.movies, days=None, teams=teams)
    fields = {"users": args.users, "movies": args.movies}
    state = Path(tempfile.mkdtemp(prefix="movielab-checkpoint-bench-"))
    try:
        t = time.perf_counter()
        plain, universe = build_world(config, sink=KindCounter())
        world, _ = build_world(config, universe=universe, sink=KindCounter())
        print(
            f"two worlds built in {time.perf_counter() - t:.1f} s ({args.users:,} users, {args.movies:,} movies, "
            f"{len(world.lanes)} lanes each)"
        )
        for w in (plain, world):
            w.run(until=w.now + args.warmup_hours * 3600)
        if dict(plain.stats.lines) != dict(world.stats.lines):
            raise SystemExit(f"the two worlds differ after the warm-up: {plain.stats.lines} vs {world.stats.lines}")
        viewing = sum(len(lane.viewings) for lane in world.lanes)
        print(
            f"warmed up {args.warmup_hours:g} h: {sum(world.stats.lines.values()):,} lines each, {viewing:,} "
            f"viewings in progress, {int((world.paused_movie[: world.pop.size] >= 0).sum()):,} paused movies"
        )

        saver = checkpoint.BackgroundSaver(state, fields)
        t0 = time.perf_counter()
        saver.save(world)
        saver.wait()
        first = saver.written[0]
        print(
            f"start: a full checkpoint captured from the world: the world paused {saver.pause_seconds[0]:.2f} s, "
            f"written in {time.perf_counter() - t0:.2f} s ({first['cpu_seconds']:.2f} s CPU of the writer), "
            f"{first['bytes'] / 1e6:,.0f} MB"
        )
        skipping = _Skipping(saver)
        turns = max(1, round(args.hours * 3600 / TURN))
        tot = {"A": np.zeros(4), "B": np.zeros(4)}
        hour = {"A": np.zeros(4), "B": np.zeros(4)}
        cpu_ratios, wall_ratios = [], []
        for i in range(turns):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                got = _turn(plain) if name == "A" else _turn(world, None if args.aa else skipping)
                tot[name] += got
                hour[name] += got
            if dict(plain.stats.lines) != dict(world.stats.lines):
                raise SystemExit(f"turn {i + 1}: the worlds emitted different lines")
            if (i + 1) % 6 and i + 1 < turns:
                continue
            (na, wa, ca, oa), (nb, wb, cb, ob) = hour["A"], hour["B"]
            cpu_ratios.append(cb / ca - 1)
            wall_ratios.append(1 - wa / wb)
            print(
                f"  hour {(i + 5) // 6:2d}: {na:,.0f} lines; CPU {cb:.2f} vs {ca:.2f} s ({cpu_ratios[-1]:+.1%}; world "
                f"thread {ob / oa - 1:+.1%}); wall {wb:.2f} vs {wa:.2f} s (events/s {wall_ratios[-1]:+.1%} cost); "
                f"links {''.join(k[0] for k in saver.kinds[-6:])}",
                flush=True,
            )
            hour = {"A": np.zeros(4), "B": np.zeros(4)}
        saver.wait()
        for kind in ("full", "delta"):
            ws = [w for w in saver.written[1:] if w["kind"] == kind]
            ps = [p for p, k in zip(saver.pause_seconds[1:], saver.kinds[1:], strict=True) if k == kind]
            if not ws:
                print(f"periodic {kind} checkpoints: none")
                continue
            over = sum(w["recycled_files"] > 0 for w in ws)
            print(
                f"periodic {kind} checkpoints: {len(ws)} ({over} written over retired files); size median {_median([w['bytes'] for w in ws]) / 1e6:,.1f} MB "
                f"(max {max(w['bytes'] for w in ws) / 1e6:,.1f}), user rows median {_median([w['rows'] for w in ws]):,.0f}; "
                f"written in median {_median([w['seconds'] for w in ws]):.2f} s "
                f"({_median([w['cpu_seconds'] for w in ws]):.3f} s CPU of the writer); the world paused median "
                f"{_median(ps):.4f} s, max {max(ps):.4f} s"
            )
        for w, pause in zip(saver.written[1:], saver.pause_seconds[1:], strict=True):
            if w["kind"] == "full":
                print(
                    f"  a new chain ({w['full_reason']}): the world paused {pause:.4f} s to copy it into the saver's "
                    f"buffers; written in {w['seconds']:.2f} s ({w['cpu_seconds']:.3f} s CPU of the writer), "
                    f"{w['recycled_files']} files written over"
                )
        print(
            f"periodic checkpoints: {len(saver.kinds) - 1}, {sum(saver.pause_seconds[1:]):.2f} s of pauses in all; "
            f"{skipping.skipped} boundaries skipped while the previous one was still being written"
        )
        (na, wa, ca, oa), (nb, wb, cb, ob) = tot["A"], tot["B"]
        print(
            f"without checkpoints (A): {na:,.0f} lines in {wa:.1f} s, {na / wa:,.0f} events/s, {ca / na * 1e6:.3f} µs "
            f"CPU each"
        )
        print(
            f"{'B, not checkpointing either (--aa)' if args.aa else 'with one every 10 min (B)'}: {nb:,.0f} lines in {wb:.1f} s, {nb / wb:,.0f} events/s, {cb / nb * 1e6:.3f} µs "
            f"CPU each"
        )
        print(
            f"cost of checkpointing over all {turns} turns ({turns / 6:g} simulated hours each world): "
            f"CPU seconds {cb / ca - 1:+.2%} (world thread {ob / oa - 1:+.2%}), events/s cost {1 - wa / wb:+.2%} "
            f"(B's events/s below A's) "
            f"(target ≤ 5%)"
        )
        print(
            f"  per simulated hour: CPU median {_median(cpu_ratios):+.1%} ({_spread(cpu_ratios)}); events/s cost median "
            f"{_median(wall_ratios):+.1%} ({_spread(wall_ratios)})"
        )
        del plain
        gc.collect()

        chain_bytes = _size(state / "checkpoint")
        saved_now, saved_lines = world.now, dict(world.stats.lines)
        t0 = time.perf_counter()
        cp = checkpoint.load(state, fingerprint_fields=fields)
        t_read_chain = time.perf_counter() - t0
        since_full = saver.kinds[::-1].index("full")  # deltas after the newest full one
        assert cp.meta["links"] == since_full + 1 and "fallback" not in cp.meta, (cp.meta["links"], saver.kinds)
        print(
            f"the chain left by the periodic checkpoints: {cp.meta['links']} links, {chain_bytes / 1e6:,.0f} MB; "
            f"read and merged in {t_read_chain:.2f} s"
        )
        del cp
        t0 = time.perf_counter()
        checkpoint.save(world, state, fingerprint_fields=fields)
        sync_write = time.perf_counter() - t0
        size = _size(state / "checkpoint")
        print(f"a full checkpoint written synchronously (`checkpoint.save`): {sync_write:.2f} s (target ≤ 5 s)")
        print(f"full checkpoint size:  {size / 1e6:,.0f} MB (target ≤ 1,000 MB)")
        del world
        gc.collect()

        t0 = time.perf_counter()
        cp = checkpoint.load(state, fingerprint_fields=fields)
        t_read = time.perf_counter() - t0
        t1 = time.perf_counter()
        again, _ = build_world(config, universe=universe, sink=KindCounter(), population=cp.population(room=100_000))
        t_build = time.perf_counter() - t1
        t2 = time.perf_counter()
        checkpoint.restore(again, cp)
        t_restore = time.perf_counter() - t2
        assert again.now == saved_now and dict(again.stats.lines) == saved_lines
        total = time.perf_counter() - t0
        print(
            f"restore: {total:.2f} s (target ≤ 10 s) = read {t_read:.2f} s + world around the saved population "
            f"{t_build:.2f} s + state back {t_restore:.2f} s; the universe (data, fit, catalog) is built as for a "
            f"fresh start: {sum(universe.timings.get(k, 0) for k in ('load', 'catalog', 'fit')):.1f} s"
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
