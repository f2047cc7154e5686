"""The incident drill's times per scenario, next to their baseline measured in the same run.

Runs `movielab.demo.drill` (deploy/INCIDENTS.md: a small operated system with Prometheus, Alertmanager and the local
pager on loopback; a killed replica, stalled ingest, a garbage version) with the drill profile of the alerting
(every rule duration divided by `--scale`). For each scenario, in seconds after the break:
- the baseline: the raw signal in Prometheus (the replica's `up` at 0, lag over 1,000 lines, an error answer
  counted): how soon the metrics show the break at all;
- the alert firing in Prometheus, the page received through Alertmanager (= time to detect; minus the baseline:
  what the rule's window and `for:` plus Alertmanager's grouping add);
- how long the mitigation command took, and the time to recover (mitigation began → recovered and resolved page).

    .venv/bin/python benchmarks/drill.py [--scale 60] [--users 3000] [--out DIR]

Needs the Debian packages prometheus, prometheus-alertmanager and nginx.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from movielab.demo.drill import DrillConfig, run_drill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=DrillConfig.scale)
    parser.add_argument("--users", type=int, default=DrillConfig.users)
    parser.add_argument("--out", type=Path, help="folder of the drill log (default: a new temp dir)")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="movielab-drill-bench-"))
    results = run_drill(folder, DrillConfig(users=args.users, scale=args.scale))
    steps = [json.loads(line) for line in (folder / "drill.jsonl").read_text().splitlines()]
    print(f"\ndrill profile: rule durations / {args.scale:g}; {args.users:,} users; log {folder / 'drill.jsonl'}")
    print(
        f"{'scenario':10}{'alert':30}{'signal (baseline)':>18}{'firing':>8}{'paged':>8}{'paged - signal':>16}"
        f"{'mitigation took':>17}{'time to recover':>17}"
    )
    for r in results:
        done = next(s for s in steps if s["scenario"] == r["scenario"] and s["step"] == "mitigation done")
        print(
            f"{r['scenario']:10}{r['alert']:30}{r['signal_s']:>17.1f}s{r['fired_s']:>7.1f}s{r['paged_s']:>7.1f}s"
            f"{r['paged_s'] - r['signal_s']:>15.1f}s{done['seconds'] - r['mitigated_s']:>16.1f}s"
            f"{r['time_to_recover_s']:>16.1f}s"
        )


if __name__ == "__main__":
    main()
