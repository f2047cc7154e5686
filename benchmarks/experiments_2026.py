"""The course's two experiments end to end in a live 2026 world (`movielab.demo.study`): prints both results.

A: new users' cold-start list from their self-description vs the demographic fallback (conversion over their
first 3 sessions). B: the cost-aware re-ranker vs its plain base model (license cost per play; conversion and
mean rating as guards). Each arm's control is the baseline measured in the same run, in the same world, at the
same time (the two experiments overlap with independent salts). The world calls the recommender's service over
HTTP; the recommender ingests the Kafka topic into its store; the analysis reads only that store.
The report (Markdown, one SVG per experiment, results.json, the store and the models) goes to `--out`.

    .venv/bin/python benchmarks/experiments_2026.py [--users 20000] [--days 5] [--arrivals 0.03] [--trade-off 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from movielab.demo.study import LiveStudyConfig, run_live_study


def main() -> None:
    """Run both experiments and print their results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = LiveStudyConfig()
    ap.add_argument("--users", type=int, default=d.users)
    ap.add_argument("--movies", type=int, default=d.movies)
    ap.add_argument("--history-days", type=float, default=d.history_days)
    ap.add_argument("--pre-days", type=float, default=d.pre_days)
    ap.add_argument("--days", type=float, default=d.days)
    ap.add_argument("--arrivals", type=float, default=d.arrivals, help="new accounts per user per day")
    ap.add_argument("--base", default=d.base)
    ap.add_argument("--trade-off", type=float, default=d.trade_off)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--out", type=Path, default=None, help="report folder (default: a new temporary folder)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = LiveStudyConfig(
        users=args.users,
        movies=args.movies,
        seed=args.seed,
        history_days=args.history_days,
        pre_days=args.pre_days,
        days=args.days,
        arrivals=args.arrivals,
        base=args.base,
        trade_off=args.trade_off,
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="movielab-experiments-"))
    t = time.perf_counter()
    study = run_live_study(config, out)
    print(
        f"{config.users:,} users, {config.movies:,} movies, 2026 edition, seed {config.seed}: "
        f"{config.history_days:g} days history, {config.pre_days:g} pre-period, {config.days:g} experiment; "
        f"{study.lines_produced:,} lines, {study.events_stored:,} stored, {study.quarantined:,} quarantined"
    )
    for res in study.results:
        d = res.design
        c, tr = d.arms
        print(f"\n{d.name} ({tr} vs {c}, baseline {c} in the same run)")
        for arm in d.arms:
            k = res.counts[arm]
            print(
                f"  {arm:12} users {k.users:6,}  sessions/requests {k.requests:7,}  conversions {k.conversions:6,}"
                f"  plays {k.plays:6,}  cost USD {k.license_cost:9,.2f}  ratings {k.ratings:6,}"
            )
        print(f"  SRM: {res.srm.champion:,} vs {res.srm.challenger:,}, p = {res.srm.p_value:.3g}")
        for m in res.metrics.values():
            x = m.test
            if x is None:
                print(f"  {m.metric:14} {m.role:9} {c} {m.control:.4f}  {tr} {m.treatment:.4f}  (not tested)")
                continue
            vr = "" if x.variance_reduction is None else f", CUPED variance −{x.variance_reduction:.0%}"
            print(
                f"  {m.metric:14} {m.role:9} {c} {m.control:.4f}  {tr} {m.treatment:.4f}  difference "
                f"{x.difference:+.4f} (95% CI {x.ci_low:+.4f} .. {x.ci_high:+.4f}), p = {x.p_value:.3g}{vr}"
            )
        print(f"  decision: {res.decision} — {res.reason}")
    print(f"\nreport: {study.report}")
    print(
        "wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in study.seconds.items())
        + f"; total {time.perf_counter() - t:.0f} s"
    )


if __name__ == "__main__":
    main()
