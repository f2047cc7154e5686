"""A course's world as its own process, answering every request with the same list (deterministic).

    python tests/course_world.py COURSE_FILE

Used by the restart tests and benchmarks/course_restart.py: with a fixed answer, a world's lines depend on
the seed alone, so a run killed and resumed can be compared line for line with an uninterrupted one.
"""

from __future__ import annotations

import logging
import sys

from movielab.course.config import load
from movielab.course.run import run_course
from movielab.world.recs import FixedService


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load(sys.argv[1])

    def ready(run) -> None:
        print(f"ready {run.api_url}", flush=True)

    run_course(
        config,
        service=lambda teams, universe: FixedService(list(range(0, 200, 10)), universe.catalog.slug),
        on_ready=ready,
    )


if __name__ == "__main__":
    main()
