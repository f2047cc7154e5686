"""The demo of the foundation: a population simulated for a few hours with no recommendation service."""

from __future__ import annotations

import time

from movielab.world.audit import audit
from movielab.world.bootstrap import build_world, run_until
from movielab.world.config import WorldConfig
from movielab.world.report import summarize
from movielab.world.service import run_world
from movielab.world.sinks import MemorySink


def run_demo(users: int = 20_000, hours: float = 6.0, seed: int = 0) -> int:
    """Simulate, print what happened and audit the stream; exit status 1 if the audit fails."""
    config = WorldConfig(users=users, days=hours / 24, seed=seed)
    sink, journal = MemorySink(), []
    t = time.perf_counter()
    world, universe = build_world(config, sink=sink, journal=journal)
    print(f"built the world in {time.perf_counter() - t:.1f} s from {universe.data.name} "
          f"({universe.data.source}); taste model noise {universe.taste.noise_std:.2f} stars")  # fmt: skip
    t = time.perf_counter()
    stats = run_world(world, run_until(config))
    print(summarize(world, universe, stats, time.perf_counter() - t))
    print("sample lines:")
    for line in sink.lines[:3] + sink.lines[len(sink.lines) // 2 : len(sink.lines) // 2 + 3]:
        print("  " + line)
    t = time.perf_counter()
    problems = audit(sink.lines, journal, world.pop.size, set(universe.catalog.slug))
    verdict = "consistent" if not problems else f"{len(problems)} violations, first: {problems[0]}"
    print(f"audit of {len(sink.lines):,} lines against the hidden journal ({time.perf_counter() - t:.1f} s): {verdict}")
    return 0 if not problems else 1
