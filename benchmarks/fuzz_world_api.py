"""Fuzz the world API with schemathesis from its own OpenAPI document; count the 5xx answers (target 0).

Starts the world API as `movielab world run` serves it (uvicorn with `server_options()`, on a free
loopback port, the rate limit raised so the fuzzer is never refused), runs the schemathesis command
line against `/openapi.json` (every check, valid and invalid data), and counts on the server side
every status it answered. Prints the status counts, the 5xx count and schemathesis's own verdict.
Needs schemathesis in the venv (`.venv/bin/pip install schemathesis`; not a project dependency).

    .venv/bin/python benchmarks/fuzz_world_api.py [--examples 300] [--seed 1] [--users 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from movielab.webserver import ServerThread
from movielab.world.api import create_app, server_options
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.ratelimit import RateLimit


class StatusCounter:
    """ASGI wrapper: counts the status of every HTTP answer the app starts (method, route kind, status)."""

    def __init__(self, app) -> None:
        self.app = app
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.examples: dict[int, str] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = "/" + scope["path"].lstrip("/").split("/", 1)[0]

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                with self._lock:
                    self.counts[(scope["method"], kind, status)] += 1
                    if status >= 500:
                        self.examples.setdefault(status, f"{scope['method']} {scope['path'][:200]}")
            await send(message)

        await self.app(scope, receive, counting_send)


def main(argv: list[str] | None = None) -> int:
    """Serve, fuzz, count; exit 1 when any answer was a 5xx."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300, help="schemathesis examples per operation")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args(argv)
    st = Path(sys.executable).with_name("schemathesis")
    if not st.exists():
        print(
            f"schemathesis is not installed next to {sys.executable}: {sys.executable} -m pip install schemathesis",
            file=sys.stderr,
        )
        return 2
    world, universe = build_world(WorldConfig(users=args.users, allow_download=False))
    app = StatusCounter(
        create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=RateLimit(rate_per_s=1e9, burst=10**9))
    )
    with ServerThread(app, **server_options()) as server, tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(st),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            "all",
            "--max-examples",
            str(args.examples),
            "--seed",
            str(args.seed),
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            tmp,
            "--no-color",
        ]
        print("$", " ".join(cmd), flush=True)
        # In the temporary folder: schemathesis keeps a cache (.schemathesis/) in its working directory.
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False, cwd=tmp)  # judged below
    summary = [line for line in run.stdout.splitlines() if line.strip()][-25:]
    total = sum(app.counts.values())
    fives = sum(n for (_, _, status), n in app.counts.items() if status >= 500)
    print("schemathesis (last lines):")
    print("\n".join("  " + line for line in summary))
    print(f"\nanswers counted by the server: {total:,}")
    for (method, kind, status), n in sorted(app.counts.items()):
        print(f"  {method:6} {kind:10} {status}  {n:7,}")
    examples = "".join(f"; e.g. {s}: {e}" for s, e in app.examples.items())
    print(f"5xx answers: {fives} of {total:,} (target 0){examples}")
    print(f"schemathesis exit status: {run.returncode} (0: no check failed)")
    return 1 if fives else 0


if __name__ == "__main__":
    sys.exit(main())
