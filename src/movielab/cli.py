"""The `movielab` command line: parse arguments, then call one function."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence


def _world_config(args: argparse.Namespace):
    from movielab.world.config import WorldConfig

    given = {k: v for k, v in {
        "users": args.users, "movies": args.movies, "seed": args.seed, "start": args.start, "speed": args.speed,
        "days": args.days, "data_dir": args.data_dir, "dataset": args.dataset,
    }.items() if v is not None}  # fmt: skip
    if args.forever:
        given["days"] = None
    return WorldConfig(**given)


def _cmd_world_run(args: argparse.Namespace) -> int:
    from movielab.world.bootstrap import build_world, run_until
    from movielab.world.report import summarize
    from movielab.world.service import run_world
    from movielab.world.sinks import FileSink, KindCounter, TeeSink

    config = _world_config(args)
    sinks = [KindCounter()]
    if args.out:
        sinks.append(FileSink(args.out))
    world, universe = build_world(config, sink=TeeSink(*sinks))
    t = time.perf_counter()
    stats = run_world(world, run_until(config))
    print(summarize(world, universe, stats, time.perf_counter() - t))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from movielab.world.demo import run_demo

    return run_demo(users=args.users or 20_000, hours=args.hours, seed=args.seed or 0)


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from movielab.world.data.sources import ensure_ml100k_cached

    folder = ensure_ml100k_cached(allow_download=not args.no_download)
    print(f"ml-100k is ready in {folder}")
    return 0


def _world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, help="initial population (default 10,000)")
    p.add_argument("--movies", type=int, help="catalog size; synthetic movies fill up the real catalog")
    p.add_argument("--dataset", choices=["ml-100k", "ml-1m", "ml-latest-small", "ml-25m"])
    p.add_argument("--data-dir", help="folder holding the data set in its native format")
    p.add_argument("--seed", type=int)
    p.add_argument("--start", help="simulated start, ISO-8601 UTC (default 2026-03-20T00:00:00)")
    p.add_argument("--speed", type=float, help="simulated seconds per second (1 = real time); default: as fast as possible")
    p.add_argument("--days", type=float, help="simulated days to run (default 1)")
    p.add_argument("--forever", action="store_true", help="run until interrupted")


def parser() -> argparse.ArgumentParser:
    """The argument parser of `movielab`."""
    p = argparse.ArgumentParser(prog="movielab", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    world = sub.add_parser("world", help="the simulated streaming service").add_subparsers(dest="what", required=True)
    run = world.add_parser("run", help="simulate users and write their event lines")
    _world_args(run)
    run.add_argument("--out", help="append event lines to this file")
    run.set_defaults(func=_cmd_world_run)
    demo = sub.add_parser("demo", help="simulate a few hours and print what happened")
    demo.add_argument("--users", type=int)
    demo.add_argument("--hours", type=float, default=6.0)
    demo.add_argument("--seed", type=int)
    demo.set_defaults(func=_cmd_demo)
    data = sub.add_parser("data", help="MovieLens data").add_subparsers(dest="what", required=True)
    fetch = data.add_parser("fetch", help="fetch and verify ml-100k into the local cache")
    fetch.add_argument("--no-download", action="store_true", help="skip GroupLens, use the recbole wheel")
    fetch.set_defaults(func=_cmd_data_fetch)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `movielab` command."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the service boundary: one clear line, the traceback in the log
        from pydantic import ValidationError

        if isinstance(exc, ValidationError | ValueError | OSError) or type(exc).__module__.startswith("movielab"):
            logging.getLogger("movielab").debug("command failed", exc_info=True)
            print(f"movielab: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
