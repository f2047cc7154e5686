"""The `movielab` command line: parse arguments, then call one function."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence


def _world_config(args: argparse.Namespace):
    from movielab.world.config import WorldConfig

    given = {
        k: v
        for k, v in {
            "users": args.users,
            "movies": args.movies,
            "seed": args.seed,
            "start": args.start,
            "speed": args.speed,
            "days": args.days,
            "data_dir": args.data_dir,
            "dataset": args.dataset,
            "kafka": args.kafka,
            "partitions": args.partitions,
            "api_port": args.api_port,
            "timeout_ms": args.timeout_ms,
            "pacing": args.pacing,
            "teams": args.teams.split(",") if args.teams else None,
            "edition": args.edition,
            "scenario": getattr(args, "scenario", None),
            "manifest": getattr(args, "manifest", None),
            "instructor_port": getattr(args, "instructor_port", None),
        }.items()
        if v is not None
    }
    if given.get("scenario") and "manifest" not in given:
        given["manifest"] = ".movielab/world/manifest.jsonl"
    if args.forever:
        given["days"] = None
    if args.course_size:
        from movielab.contract import edition

        course = edition(given.get("edition", "current"))
        given.setdefault("users", course.users)
        given.setdefault("movies", course.movies)
    return WorldConfig(**given)


def _cmd_world_run(args: argparse.Namespace) -> int:
    from movielab.world.live import run_live
    from movielab.world.report import summarize

    config = _world_config(args)
    t = {}

    def ready(live) -> None:
        print(
            f"world running: Kafka {live.bootstrap} topics {', '.join(live.topics)}, API {live.api_url}, "
            f"teams {', '.join(team.url for team in live.teams)}",
            flush=True,
        )
        if live.instructor_url:
            print(f"instructor app (manifest, token in {config.instructor_tokens}): {live.instructor_url}", flush=True)
        t["start"] = time.perf_counter()

    def done(live, stats) -> None:
        print(summarize(live.world, live.universe, stats, time.perf_counter() - t["start"]))

    run_live(config, out=args.out, on_ready=ready, after=done)
    return 0


def _cmd_world_scenarios(args: argparse.Namespace) -> int:
    from movielab.world.scenarios import presets

    for name, description in presets():
        print(f"{name:10} {description}")
    return 0


def _cmd_world_fidelity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from movielab.fidelity import fidelity_report, write_plots
    from movielab.world.config import WorldConfig

    given = {"dataset": args.dataset, "data_dir": args.data_dir, "seed": args.seed}
    config = WorldConfig(arrivals_per_day=0.0, **{k: v for k, v in given.items() if v is not None})
    report = fidelity_report(config, seeds=range(args.seeds))
    print(report.table())
    files = write_plots(report, Path(args.out))
    print("plots and figures: " + ", ".join(str(f) for f in files))
    return 0


def _cmd_course_init(args: argparse.Namespace) -> int:
    from movielab.course.config import write_example

    print(f"wrote {write_example(args.path, force=args.force)}: edit the teams, then `movielab course run {args.path}`")
    return 0


def _cmd_course_run(args: argparse.Namespace) -> int:
    from movielab.course.config import load
    from movielab.course.run import run_course

    def ready(run) -> None:
        print(
            f"course running: Kafka {run.bootstrap} topics {', '.join(run.topics)}, API {run.api_url}, state in "
            f"{run.config.state_dir}"
            + (f", instructor {run.instructor_url}" if run.instructor_url else "")
            + (f", resumed from {run.re_emitted}" if run.restored_from else ""),
            flush=True,
        )

    run = run_course(load(args.file), on_ready=ready)
    print(f"course {'finished' if run.finished else 'stopped at checkpoint'}; lines per topic: {run.lines()}")
    return 0


def _cmd_course_status(args: argparse.Namespace) -> int:
    import json

    from movielab.course.config import load
    from movielab.course.status import course_status, format_status

    status = course_status(load(args.file), live=not args.offline)
    print(json.dumps(status, indent=1) if args.json else format_status(status))
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from movielab.kafka.broker import run_broker

    run_broker(
        args.port, on_ready=lambda bootstrap: print(f"Kafka broker (movielab, in-memory) on {bootstrap}", flush=True)
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from movielab.demo.run import run_demo

    return run_demo(
        users=args.users or 20_000, hours=args.hours, seed=args.seed or 0, model=args.model, linger=args.linger
    )


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from movielab.world.data.sources import ensure_ml100k_cached

    folder = ensure_ml100k_cached(allow_download=not args.no_download)
    print(f"ml-100k is ready in {folder}")
    return 0


def _stream_summary(config, full: bool) -> str:
    from movielab.course.streamchecks import StreamReadError, score_stream

    try:
        got = score_stream(config, full=full)
    except StreamReadError as exc:  # the scoreboard from the hidden log is still worth printing
        return f"course checks from the stream: skipped ({exc})"
    if got is None:
        return "course checks from the stream: skipped (the course's broker was embedded: its topics ended with it)"
    downs = ", ".join(f"{m} from {t:%Y-%m-%dT%H:%M}" for m, t in got.takedowns) or "none"
    return (
        f"course checks from the stream: {sum(got.lines.values()):,} lines of {len(got.lines)} topic(s) read in "
        f"{got.seconds:.1f} s ({sum(got.other_lines.values()):,} not requests, {sum(got.unparsable.values()):,} "
        f"unparsable, {sum(got.undated.values()):,} of them without a date)"
        + (f" (from the day before {got.since}; {got.kept} earlier day(s) final, kept)" if got.since else "")
        + f"; takedowns: {downs}; written to {config.reports_dir / 'stream.csv'}"
    )


def _cmd_course_score(args: argparse.Namespace) -> int:
    from movielab.course.scoreargs import check_request
    from movielab.world.scoring.board import report

    if args.file is not None:  # the course file says where its scores, sessions and manifest are
        from movielab.course.config import load

        config = load(args.file)
        manifest = check_request(args.team, args.day, args.manifest, config)  # before the (long) stream read
        if not args.no_stream:
            print(_stream_summary(config, args.full_stream), flush=True)
        print(report(config.reports_dir, team=args.team, day=args.day, manifest=manifest, sessions=config.state_dir))
        return 0
    manifest = check_request(args.team, args.day, args.manifest)
    print(report(args.state, team=args.team, day=args.day, manifest=manifest))
    return 0


def _world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--edition",
        help="course edition: a year 2019..2026 or 'current' (default); fixes the rating "
        "scale, time-stamp precision and API fields",
    )
    p.add_argument(
        "--course-size",
        action="store_true",
        help="the edition's population and catalog size (2026: 1,000,000 users, 20,000 movies)",
    )
    p.add_argument("--users", type=int, help="initial population (default 10,000)")
    p.add_argument("--movies", type=int, help="catalog size; synthetic movies fill up the real catalog")
    p.add_argument("--dataset", choices=["ml-100k", "ml-1m", "ml-latest-small", "ml-25m"])
    p.add_argument("--data-dir", help="folder holding the data set in its native format")
    p.add_argument("--seed", type=int)
    p.add_argument("--start", help="simulated start, ISO-8601 UTC (default 2026-03-20T00:00:00)")
    p.add_argument(
        "--speed", type=float, help="simulated seconds per second (1 = real time); default: as fast as possible"
    )
    p.add_argument("--days", type=float, help="simulated days to run (default 1)")
    p.add_argument("--forever", action="store_true", help="run until interrupted")
    p.add_argument(
        "--teams", help="comma-separated recommendation service URLs, one per team (default http://127.0.0.1:8082)"
    )
    p.add_argument("--kafka", help="bootstrap host:port of a Kafka cluster (default: start the embedded broker)")
    p.add_argument("--partitions", type=int, help="partitions per team topic (default 4)")
    p.add_argument("--api-port", type=int, help="port of the world's user/movie API (default 8080, 0 = any)")
    p.add_argument("--timeout-ms", type=int, help="recommendation time-out in ms (default 600)")
    p.add_argument(
        "--pacing",
        choices=["team", "together"],
        help="as fast as possible with several teams: each team at its own pace (default) or together",
    )


def parser() -> argparse.ArgumentParser:
    """The argument parser of `movielab`."""
    p = argparse.ArgumentParser(prog="movielab", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    world = sub.add_parser("world", help="the simulated streaming service").add_subparsers(dest="what", required=True)
    run = world.add_parser("run", help="run the live world: Kafka topics, user/movie API, team services")
    _world_args(run)
    run.add_argument("--out", help="also append every event line to this file, once Kafka confirmed it")
    run.add_argument("--scenario", help="scenario preset (see 'movielab world scenarios') or TOML file")
    run.add_argument(
        "--manifest", help="hidden manifest file (JSONL; default with --scenario: .movielab/world/manifest.jsonl)"
    )
    run.add_argument(
        "--instructor-port",
        type=int,
        help="loopback port of the instructor app serving the manifest "
        "behind a token (default: off; 0 = any free port)",
    )
    run.set_defaults(func=_cmd_world_run)
    scen = world.add_parser("scenarios", help="list the scenario presets that ship")
    scen.set_defaults(func=_cmd_world_scenarios)
    fid = world.add_parser("fidelity", help="the world next to ml-100k: same users, same protocol, same figures")
    fid.add_argument("--dataset", help="ml-100k (default) or ml-1m (with --data-dir)")
    fid.add_argument("--data-dir", help="folder with the data set in its native format")
    fid.add_argument("--seed", type=int, help="world seed (default 0)")
    fid.add_argument("--seeds", type=int, default=5, help="split seeds 0..N-1 of the published protocol")
    fid.add_argument("--out", default="fidelity", help="folder for the SVG plots and fidelity.json")
    fid.set_defaults(func=_cmd_world_fidelity)
    demo = sub.add_parser("demo", help="the live world against the recommender and the random placeholder")
    demo.add_argument("--users", type=int)
    demo.add_argument("--hours", type=float, default=36.0)
    demo.add_argument("--model", default="als", help="model team 1 retrains (popularity, itemknn, als, ease)")
    demo.add_argument("--linger", type=float, default=0.0, help="keep Prometheus up this many seconds at the end")
    demo.add_argument("--seed", type=int)
    demo.set_defaults(func=_cmd_demo)
    course = sub.add_parser("course", help="a course: one world for many teams, surviving restarts")
    course_sub = course.add_subparsers(dest="what", required=True)
    c_init = course_sub.add_parser("init", help="write a commented example course file")
    c_init.add_argument("path", nargs="?", default="course.toml")
    c_init.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    c_init.set_defaults(func=_cmd_course_init)
    c_run = course_sub.add_parser("run", help="run (or resume) the course file's world until stopped")
    c_run.add_argument("file")
    c_run.set_defaults(func=_cmd_course_run)
    c_status = course_sub.add_parser("status", help="where the course stands: clock, checkpoint, teams, lines")
    c_status.add_argument("file")
    c_status.add_argument("--offline", action="store_true", help="do not ask Kafka for the topics' end offsets")
    c_status.add_argument("--json", action="store_true", help="print the status as JSON (for scripts)")
    c_status.set_defaults(func=_cmd_course_status)
    score = course_sub.add_parser("score", help="the scoreboard from the hidden truth (instructor only)")
    score.add_argument(
        "file",
        nargs="?",
        help="the course file (its reports hold scores/, its state sessions/ and the manifest); without it, --state",
    )
    score.add_argument(
        "--state", default=".movielab/course", help="without FILE: the state dir holding scores/ and sessions/"
    )
    score.add_argument("--team", type=int, help="one team in detail: day by day, fairness groups, injected events")
    score.add_argument("--day", help="YYYY-MM-DD (default: the newest scored day)")
    score.add_argument("--manifest", help="the hidden manifest (JSONL) for per-event effects with --team")
    score.add_argument(
        "--no-stream",
        action="store_true",
        help="with FILE: do not read the teams' topics for the course's checks (answered, personalized, "
        "availability window, takedowns)",
    )
    score.add_argument(
        "--full-stream",
        action="store_true",
        help="read the topics from their first line (default: from the day before the newest graded days)",
    )
    score.set_defaults(func=_cmd_course_score)
    broker = sub.add_parser("broker", help="run the embedded in-memory Kafka broker until interrupted")
    broker.add_argument("--port", type=int, help="port on 127.0.0.1 (default: any free port)")
    broker.set_defaults(func=_cmd_broker)
    from movielab.recommender.commands import register

    register(sub)
    from movielab.demo.studycommands import register as register_experiments

    register_experiments(sub)
    data = sub.add_parser("data", help="MovieLens data").add_subparsers(dest="what", required=True)
    fetch = data.add_parser("fetch", help="fetch and verify ml-100k into the local cache")
    fetch.add_argument("--no-download", action="store_true", help="skip GroupLens, use the recbole wheel")
    fetch.set_defaults(func=_cmd_data_fetch)
    return p


def _describe(exc: Exception) -> str:
    """One line per problem; a configuration error names each field, its value and the reason."""
    from pydantic import ValidationError

    from movielab.validation import place, reason

    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = [f"{place(tuple(e['loc'])) or exc.title}={e.get('input')!r}: {reason(e)}" for e in exc.errors()]
    return f"invalid {exc.title} setting: " + "; ".join(problems)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `movielab` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the service boundary: one clear line, the traceback in the log
        from pydantic import ValidationError

        from movielab.errors import MovielabError

        if isinstance(exc, MovielabError | ValidationError | ValueError | OSError):
            logging.getLogger("movielab").debug("command failed", exc_info=True)
            print(f"movielab: error: {_describe(exc)}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
