"""Checkpoint size and time at course scale, and what checkpointing every 10 simulated minutes costs.

Builds a world of 1,000,000 users × 27,000 movies (3 teams' lanes, a sink that counts), warms it up so
viewings, pauses and queues are in steady state, then prints:
- the size and write time of full and of delta checkpoints (`BackgroundSaver`: a full one, then deltas of the
  changed user rows until a new chain is due), and how long a periodic (background) checkpoint holds the world;
- the time to restore the chain the periodic checkpoints left (base + deltas), and a single full one: read the
  arrays, build the world around the saved population (the universe — data, fit, catalog — is what a fresh start
  builds too, and is timed apart) and put the state back;
- the cost of a checkpoint every 10 simulated minutes, as process CPU seconds per event (every thread of the
  process: the world and the background writer) and as wall-clock events/s, in pairs of segments of one run
  (without, with; the order alternates so neither mode always sees the later hour of the day). Each pair
  gives one ratio; the median and the spread (min, quartiles, max) over the pairs are printed. CPU time per
  event is the robust figure on a shared machine: another process's load stretches the wall clock, not the CPU
  seconds this process spends per event. A segment with checkpoints waits for its last write to finish: inside
  its CPU seconds (the writer's work is part of the cost), outside its wall-clock time (in a continuous run the
  write overlaps the world's next minutes, as it does within the segment), so no write spills into the next one.
  The pairs' median hides the rare full checkpoint of a new chain: the cost over all segments together (total
  CPU seconds per event with / without) is printed too, and includes it.

    .venv/bin/python benchmarks/checkpoint.py [--users 1000000] [--movies 27000] [--segments 8]

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


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--movies", type=int, default=27_000)
    ap.add_argument("--teams", type=int, default=3)
    ap.add_argument("--warmup-hours", type=float, default=2.0)
    ap.add_argument("--segment-minutes", type=int, default=30)
    ap.add_argument("--segments", type=int, default=8, help="pairs of (without, with) segments")
    args = ap.parse_args()
    teams = [f"http://127.0.0.1:{9000 + i}" for i in range(args.teams)]
    config = WorldConfig(users=args.users, movies=args.movies, days=None, teams=teams)
    fields = {"users": args.users, "movies": args.movies}
    state = Path(tempfile.mkdtemp(prefix="movielab-checkpoint-bench-"))
    try:
        counter = KindCounter()
        t = time.perf_counter()
        world, universe = build_world(config, sink=counter)
        print(
            f"world built in {time.perf_counter() - t:.1f} s ({args.users:,} users, {args.movies:,} movies, "
            f"{len(world.lanes)} lanes)"
        )
        world.run(until=world.now + args.warmup_hours * 3600)
        viewing = sum(len(lane.viewings) for lane in world.lanes)
        print(
            f"warmed up {args.warmup_hours:g} h: {viewing:,} viewings in progress, "
            f"{int((world.paused_movie[: world.pop.size] >= 0).sum()):,} paused movies"
        )

        saver = checkpoint.BackgroundSaver(state, fields)
        skipped = [0]

        def save(w) -> None:
            if saver.busy:  # as `movielab course run` does: the previous one is still being written
                skipped[0] += 1
                return
            saver.save(w)

        seg = args.segment_minutes * 60
        plain_t = plain_n = with_t = with_n = plain_cpu = with_cpu = 0.0
        cpu_ratios: list[float] = []  # per pair: CPU seconds per event with / without checkpoints
        world_ratios: list[float] = []  # per pair: the same, of the world's thread alone (without the writer)
        wall_ratios: list[float] = []  # per pair: events/s with / without
        for pair in range(args.segments):
            # ABBA order: the hour of the day changes the mix of sessions and watch lines, so neither mode goes first
            got = {}
            for with_checkpoints in (False, True) if pair % 2 == 0 else (True, False):
                before, t0, c0 = sum(world.stats.lines.values()), time.perf_counter(), time.process_time()
                w0 = time.thread_time()
                if with_checkpoints:
                    world.run(until=world.now + seg, checkpoint_every=600, on_checkpoint=save)
                    dt = time.perf_counter() - t0
                    saver.wait()  # its last write's CPU is part of its cost
                else:
                    world.run(until=world.now + seg)
                    dt = time.perf_counter() - t0
                cpu, own = time.process_time() - c0, time.thread_time() - w0
                n = sum(world.stats.lines.values()) - before
                got[with_checkpoints] = (n, dt, cpu, own)
                if with_checkpoints:
                    with_t, with_n, with_cpu = with_t + dt, with_n + n, with_cpu + cpu
                else:
                    plain_t, plain_n, plain_cpu = plain_t + dt, plain_n + n, plain_cpu + cpu
            (n0, t_0, c_0, o_0), (n1, t_1, c_1, o_1) = got[False], got[True]
            cpu_ratios.append((c_1 / n1) / (c_0 / n0))
            world_ratios.append((o_1 / n1) / (o_0 / n0))
            wall_ratios.append((n1 / t_1) / (n0 / t_0))
            print(
                f"  pair {pair + 1}: CPU/event {c_1 / n1 * 1e6:.2f} vs {c_0 / n0 * 1e6:.2f} µs "
                f"({cpu_ratios[-1] - 1:+.1%}; world thread {world_ratios[-1] - 1:+.1%}); events/s {n1 / t_1:,.0f} vs {n0 / t_0:,.0f} "
                f"({1 - wall_ratios[-1]:+.1%} cost)",
                flush=True,
            )
        saver.wait()
        plain, with_cp = plain_n / plain_t, with_n / with_t
        pauses = sorted(saver.pause_seconds)
        for kind in ("full", "delta"):
            ws = [w for w in saver.written if w["kind"] == kind]
            ps = [p for p, k in zip(saver.pause_seconds, saver.kinds, strict=True) if k == kind]
            if not ws:
                print(f"periodic {kind} checkpoints: none")
                continue
            print(
                f"periodic {kind} checkpoints: {len(ws)}; size median {_median([w['bytes'] for w in ws]) / 1e6:,.1f} MB "
                f"(max {max(w['bytes'] for w in ws) / 1e6:,.1f}), user rows median {_median([w['rows'] for w in ws]):,.0f}; "
                f"written in median {_median([w['seconds'] for w in ws]):.2f} s "
                f"({_median([w['cpu_seconds'] for w in ws]):.2f} s CPU of the writer); the world paused median "
                f"{_median(ps):.3f} s, max {max(ps):.3f} s"
            )
        reasons = [w["full_reason"] for w in saver.written if w["kind"] == "full"]
        print(f"why full: {reasons}")
        # Derived from the figures above: what each link costs this process in CPU (the world's pause to capture and
        # copy, the writer thread's CPU), against the CPU of 10 simulated minutes without checkpoints.
        cost = {
            kind: _median(
                [
                    p + w["cpu_seconds"]
                    for p, w, k in zip(saver.pause_seconds, saver.written, saver.kinds, strict=True)
                    if k == kind
                ]
            )
            for kind in ("full", "delta")
        }
        per_interval = plain_cpu / (args.segments * args.segment_minutes / 10)
        deltas = [w["bytes"] for w in saver.written if w["kind"] == "delta"]
        full_bytes = _median([w["bytes"] for w in saver.written if w["kind"] == "full"])
        every = min(saver.max_deltas, int(saver.compact_ratio * full_bytes // max(_median(deltas), 1))) + 1
        print(
            f"derived: CPU per link (pause + writer): full {cost['full']:.3f} s, delta {cost['delta']:.3f} s; "
            f"10 simulated minutes without checkpoints: {per_interval:.3f} s CPU; deltas alone "
            f"{cost['delta'] / per_interval:+.1%}; with a full one every {every} links (max_deltas "
            f"{saver.max_deltas}, compact_ratio {saver.compact_ratio:g}) "
            f"{((every - 1) * cost['delta'] + cost['full']) / every / per_interval:+.1%}"
        )
        print(
            f"periodic checkpoints: {len(pauses)} ({' '.join(k[0] for k in saver.kinds)}: f full, d delta), "
            f"{sum(pauses):.1f} s of pauses in all; {skipped[0]} boundaries skipped while the previous one was still "
            f"being written"
        )
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
        print(f"full checkpoint write, synchronous (SIGTERM, start): {sync_write:.2f} s (target ≤ 5 s)")
        print(f"full checkpoint size:  {size / 1e6:,.0f} MB (target ≤ 1,000 MB)")
        print(
            f"events/s without checkpoints: {plain:12,.0f}  ({plain_n:,.0f} events in {plain_t:.1f} s, "
            f"{plain_cpu / plain_n * 1e6:.2f} µs CPU each)"
        )
        print(
            f"events/s, one every 10 min:   {with_cp:12,.0f}  ({with_n:,.0f} events in {with_t:.1f} s, "
            f"{with_cpu / with_n * 1e6:.2f} µs CPU each)"
        )
        cpu_cost = sorted(r - 1 for r in cpu_ratios)
        print(
            f"cost of checkpointing, CPU seconds per event over all segments together (full checkpoints included): "
            f"{(with_cpu / with_n) / (plain_cpu / plain_n) - 1:+.1%}; events/s {1 - with_cp / plain:+.1%}"
        )
        wall_cost = sorted(1 - r for r in wall_ratios)
        world_cost = sorted(r - 1 for r in world_ratios)
        print(
            f"cost of checkpointing, CPU seconds per event, {len(cpu_cost)} pairs: median {_median(cpu_cost):+.1%} "
            f"(spread {_spread(cpu_cost)}) (target ≤ 5%)"
        )
        print(
            f"  of which the world's thread alone (its pauses to copy, and running slower beside the writer): "
            f"median {_median(world_cost):+.1%} (spread {_spread(world_cost)})"
        )
        print(
            f"cost of checkpointing, wall-clock events/s, {len(wall_cost)} pairs: median {_median(wall_cost):+.1%} "
            f"(spread {_spread(wall_cost)})"
        )
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
