"""Human-readable summaries of a run."""

from __future__ import annotations

import numpy as np

from movielab.world.bootstrap import Universe
from movielab.world.engine import Stats, World


def summarize(world: World, universe: Universe, stats: Stats, wall_seconds: float) -> str:
    """What happened: users active, sessions, events by kind, ratings, top movies, speed."""
    catalog = universe.catalog
    total = sum(stats.lines.values())
    hours = stats.ticks / 60
    active = int(world.active[: world.pop.size].sum())
    lines = [
        f"simulated {hours:.1f} h of {world.pop.size:,} users and {len(catalog):,} movies "
        f"in {wall_seconds:.1f} s ({total / max(wall_seconds, 1e-9):,.0f} events/s)",
        f"users active: {active:,} ({active / max(world.pop.size, 1):.1%}); new accounts: {stats.accounts:,}",
        f"sessions: {stats.sessions:,} (left without watching: {stats.left:,}, "
        f"skipped while busy: {stats.skipped_busy:,}); viewings: {stats.viewings:,} (resumed: {stats.resumed:,})",
        f"recommendation requests answered 200: {stats.requests_ok:,} of {stats.sessions:,}; "
        f"picks from the recommended list: {stats.picked_recommended:,}",
        "events by kind: " + ", ".join(f"{k} {v:,} ({v / max(total, 1):.1%})" for k, v in stats.lines.most_common()),
    ]
    hist = stats.rating_hist[1:]
    if hist.sum():
        shares = " ".join(f"{s}★ {c / hist.sum():.0%}" for s, c in enumerate(hist, start=1))
        pending = sum(len(lane.pending_rates) for lane in world.lanes)
        lines.append(
            f"ratings: {stats.ratings:,}, mean {stats.mean_rating:.2f} ({shares}); "
            f"published as rate lines: {stats.lines['rate']:,}, still pending at the end: {pending:,} "
            "(a rating is sent 3–45 minutes after its viewing; a checkpoint keeps pending ones)"
        )
    top = np.argsort(-stats.viewings_per_movie, kind="stable")[:10]
    lines.append("top movies by viewings started:")
    lines += [f"  {stats.viewings_per_movie[i]:6,}  {catalog.slug[i]}" for i in top if stats.viewings_per_movie[i]]
    return "\n".join(lines)
