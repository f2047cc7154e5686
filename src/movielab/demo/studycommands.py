"""`movielab experiments run|report`: the course's two experiments (see `movielab.demo.study`, `recommender.release.study`).

`run` starts a live 2026 world against the recommender and writes the report; `report` analyses a store again
from the designs a run saved (`results.json`) or a JSON list of designs (`StudyDesign.as_dict`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_run(args: argparse.Namespace) -> int:
    """Run both experiments in a live world; print where the report is and each decision."""
    from movielab.demo.study import LiveStudyConfig, run_live_study

    given = {k: v for k, v in vars(args).items() if k in LiveStudyConfig.__dataclass_fields__ and v is not None}
    study = run_live_study(LiveStudyConfig(**given), args.out)
    for res in study.results:
        print(f"{res.design.name}: {res.decision} — {res.reason}")
    print(f"report: {study.report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Analyse the store again for the designs in `--designs` and write the report into `--out`."""
    from movielab.recommender.release.study import StudyDesign, StudyError, analyze, write_report
    from movielab.recommender.store.events import EventStore

    try:
        raw = json.loads(Path(args.designs).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StudyError(f"designs file {args.designs} cannot be read: {exc}") from exc
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise StudyError(f"designs file {args.designs}: expected a JSON list of designs (or a results.json)")
    designs = [StudyDesign.from_dict(d.get("design", d)) for d in raw]
    if not Path(args.store).is_file():
        raise StudyError(f"store {args.store} does not exist")
    with EventStore(args.store) as store:
        results = [analyze(store, d) for d in designs]
    path = write_report(results, args.out)
    for res in results:
        print(f"{res.design.name}: {res.decision} — {res.reason}")
    print(f"report: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `experiments run|report` to the main parser."""
    ex = sub.add_parser("experiments", help="the course's two experiments: cold start and cost-aware ranking")
    what = ex.add_subparsers(dest="what", required=True)
    p = what.add_parser("run", help="run both in a live 2026 world against the recommender; write the report")
    p.add_argument("--users", type=int)
    p.add_argument("--movies", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--history-days", dest="history_days", type=float)
    p.add_argument("--pre-days", dest="pre_days", type=float)
    p.add_argument("--days", type=float)
    p.add_argument("--arrivals", type=float, help="new accounts per user per day during the experiment")
    p.add_argument("--base", help="base model of both arms (default ease)")
    p.add_argument("--trade-off", dest="trade_off", type=float, help="cost-aware trade-off λ (default 1)")
    p.add_argument("--out", type=Path, default=Path("experiments"), help="report folder (default ./experiments)")
    p.set_defaults(func=cmd_run)
    p = what.add_parser("report", help="analyse a recommender store again and write the report")
    p.add_argument("--store", type=Path, required=True, help="the recommender's DuckDB store")
    p.add_argument("--designs", type=Path, required=True, help="results.json of a run, or a JSON list of designs")
    p.add_argument("--out", type=Path, default=Path("experiments-report"), help="report folder")
    p.set_defaults(func=cmd_report)
