"""One hanging team vs per-team pacing: how long a good team waits for its simulated minutes.

Two teams over real HTTP on loopback: team 1 a Starlette service answering 20 ids in ~1 ms
(separate process), team 2 a server that accepts and never answers (every request times out
after 600 ms). The world (as fast as possible, no Kafka) runs `--minutes` simulated minutes
three ways in the same run: both teams good with one clock (the baseline), team 2 hanging
with one clock (`--pacing together`, every tick waits for the time-out), and team 2 hanging
with per-team pacing (`--pacing team`, the default). Prints the wall seconds until each team's
last line and each team's lines, which must not depend on how the other team behaves.

    .venv/bin/python benchmarks/slow_team.py [--users 20000] [--minutes 60]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import threading
import time

import numpy as np
from live_world import fixed_list_service  # a sibling module of the benchmarks

from movielab.webserver import free_port
from movielab.world.bootstrap import build_universe, build_world
from movielab.world.client import HttpRecommender, Team
from movielab.world.config import WorldConfig


class Hanging:
    """A loopback server that reads each request and never answers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        async def serve(reader, writer) -> None:
            await reader.read(65536)
            await asyncio.sleep(3600)

        async def start() -> None:
            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        started.wait(10)


class LastLine:
    """Sink: lines per team and the wall time of each team's last line."""

    def __init__(self, teams: int) -> None:
        self.teams = teams
        self.t0 = time.perf_counter()
        self.last = [0.0] * teams
        self.lines: list[list[str]] = [[] for _ in range(teams)]

    def write(self, keys, lines) -> None:
        now = time.perf_counter() - self.t0
        for k, line in zip(keys, lines, strict=True):
            team = (k - 1) % self.teams
            self.lines[team].append(line)
            self.last[team] = now

    def close(self) -> None:
        """Nothing to release."""


def _run(config: WorldConfig, universe, urls: list[str]) -> LastLine:
    sink = LastLine(len(urls))
    index = {s: i for i, s in enumerate(universe.catalog.slug)}
    with HttpRecommender([Team.parse(i, u) for i, u in enumerate(urls, start=1)], index) as client:
        world, _ = build_world(config, universe=universe, service=client, sink=sink)
        sink.t0 = time.perf_counter()
        world.run(until=world.now + config.days * 86400)
    return sink


def main() -> None:
    """Run the three ways and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--minutes", type=float, default=60)
    args = ap.parse_args()
    base = WorldConfig(
        users=args.users, days=args.minutes / 1440, teams=["http://127.0.0.1:1"] * 2, allow_download=False
    )
    universe = build_universe(base)
    port = free_port()
    service = mp.get_context("spawn").Process(
        target=fixed_list_service, args=(port, universe.catalog.slug[:20]), daemon=True
    )
    service.start()
    good = f"http://127.0.0.1:{port}"
    for _ in range(200):  # wait until the service listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    hanging = f"http://127.0.0.1:{Hanging().port}"
    runs = {
        "both good, one clock (baseline)": _run(base.model_copy(update={"pacing": "together"}), universe, [good, good]),
        "team 2 hangs, one clock (--pacing together)": _run(
            base.model_copy(update={"pacing": "together"}), universe, [good, hanging]
        ),
        "team 2 hangs, per-team pacing (--pacing team)": _run(
            base.model_copy(update={"pacing": "team"}), universe, [good, hanging]
        ),
    }
    service.terminate()
    print(f"{args.users:,} users, 2 teams, {args.minutes:g} simulated minutes as fast as possible, time-out 600 ms")
    print(f"{'run':48} {'team 1 done s':>13} {'team 2 done s':>13} {'team 1 lines':>12} {'team 2 lines':>12}")
    for name, r in runs.items():
        print(f"{name:48} {r.last[0]:13.2f} {r.last[1]:13.2f} {len(r.lines[0]):12,} {len(r.lines[1]):12,}")
    team_paced = runs["team 2 hangs, per-team pacing (--pacing team)"]
    together = runs["team 2 hangs, one clock (--pacing together)"]
    timeouts = sum("Request timeout" in line for line in team_paced.lines[1])
    print(
        f"team 1 waits {together.last[0] / max(team_paced.last[0], 1e-9):.1f}x less for its minutes with per-team"
        f" pacing; team 2's {timeouts:,} requests all timed out: "
        f"{timeouts == sum('recommendation request' in line for line in team_paced.lines[1])}"
    )
    ok = np.mean([("status 200" in line) for line in team_paced.lines[0] if "recommendation request" in line])
    print(f"team 1's requests answered with 200 in the per-team run: {ok:.1%}")


if __name__ == "__main__":
    main()
