"""A course file with 3 teams run for 3 simulated days, the world killed half-way and restarted: lines lost or doubled.

Teams: 1 = movielab's recommender (`movielab recommender operate`, its own process), 2 = the random placeholder,
3 = popularity (both in this process, following their topics). The broker runs apart (`EmbeddedBroker`), so
the topics outlive the world; the world is the real `movielab course run FILE` process. Half-way through
the simulated days it gets SIGKILL (or SIGTERM), and is started again with the same course file.

Counted from the topics, per team (T = lines on the topic, read back whole; E = lines of the world's final
timeline, from its last checkpoint; R = lines the killed run had put on the topic after the checkpoint it was
restored from, from the broker's end offsets at the restart):
- doubled = R: lines of simulated minutes the restarted world produced again;
- lost = E + R - T: lines of the final timeline that never reached the topic;
- per-user time reversals: lines stamped before the same user's previous line on the topic (what a
  consumer sees of the doubling).

    .venv/bin/python benchmarks/course_restart.py [--users 5000] [--days 3] [--signal kill|term|both]
        [--scenario semester|FILE] [--scenario-time-scale X] [--scoreboard]

`--scenario` runs a preset or a scenario file (its timeline compressed so that its injections fall inside the
run's days unless `--scenario-time-scale` says otherwise); the scoreboard is always kept by the course, and
`--scoreboard` prints it, day by day, with the injections the manifest holds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from movielab.course.run import end_offsets
from movielab.kafka.admin import ensure_topics
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.consumer import read_topic
from movielab.recommender.serving.placeholder import SeenMovies, StreamFollower
from movielab.recommender.serving.placeholder import create_app as placeholder_app
from movielab.webserver import ServerThread, free_port
from movielab.world import checkpoint

DAY = 86_400


class Popular:
    """Watch and rate counts per movie id (fed by a `StreamFollower`); the 20 most counted are the answer."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, movie_id: str) -> None:
        """Count one line of the movie."""
        with self._lock:
            self.counts[movie_id] += 1

    def top(self, n: int = 20) -> list[str]:
        """The n most counted ids."""
        with self._lock:
            return [m for m, _ in self.counts.most_common(n)]


def popularity_app(popular: Popular):
    """`GET /recommend/<user>` → the 20 most watched movies so far (503 before the first)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def recommend(request) -> PlainTextResponse:
        top = popular.top()
        return PlainTextResponse(",".join(top)) if top else PlainTextResponse("nothing seen yet", status_code=503)

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


def course_file(folder: Path, args: argparse.Namespace, bootstrap: str, api_port: int, urls: list[str]) -> Path:
    """Write the course file of the run."""
    scenario = ""
    if args.scenario:
        ref = str(Path(args.scenario).resolve()) if Path(args.scenario).is_file() else args.scenario
        scenario = f'scenario = "{ref}"\nscenario_time_scale = {time_scale(args)}'

    teams = "".join(
        f'[[teams]]\nname = "{name}"\nurl = "{url}"\n'
        for name, url in zip(("movielab", "placeholder", "popularity"), urls, strict=True)
    )
    path = folder / "course.toml"
    path.write_text(f"""name = "restart-bench"
[world]
users = {args.users}
movies = {args.movies}
seed = {args.seed}
days = {args.days}
{scenario}
[kafka]
bootstrap = "{bootstrap}"
partitions = 4
[api]
port = {api_port}
[instructor]
port = {free_port()}
[state]
dir = "state"
reports = "reports"
checkpoint_every_minutes = {args.every}
{teams}""")
    return path


def time_scale(args: argparse.Namespace) -> float:
    """The scenario's time scale: given, or so that its last declared start or end is at 90% of the run's days."""
    if args.scenario_time_scale is not None:
        return args.scenario_time_scale
    from movielab.world.clock import parse_start
    from movielab.world.scenarios import load

    t0 = parse_start("2026-03-20T00:00:00")  # the course's default start; windows are relative to it
    span = max(
        max(x for x in spec.window(t0) if x is not None and x != float("inf")) - t0
        for spec in load(args.scenario).injections
    )
    return max(1.0, span / (0.9 * args.days * DAY))


def world_process(course: Path, log) -> subprocess.Popen:
    """`movielab course run FILE` as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "movielab", "course", "run", str(course)], stdout=log, stderr=subprocess.STDOUT
    )


def sim_time(state: Path) -> float:
    """The running world's simulated time from its status file (0 before it exists)."""
    try:
        return json.loads((state / "status.json").read_text())["sim_time"]
    except (OSError, ValueError, KeyError):
        return 0.0


def reversals(records) -> int:
    """Lines stamped before the same user's previous line on the same partition."""
    last: dict[bytes, str] = {}
    n = 0
    for key, value, _partition, _ in sorted(records, key=lambda r: (r[2], r[3])):
        stamp = value.split(b",", 1)[0].decode()[:19]
        if key in last and stamp < last[key]:
            n += 1
        last[key] = max(stamp, last.get(key, stamp))
    return n


def one_run(args: argparse.Namespace, sig: signal.Signals, folder: Path) -> dict:
    """Run the course once with one kill and restart; return the figures per topic."""
    folder.mkdir(parents=True)
    log = (folder / "world.log").open("w")
    procs, servers, followers = [], [], []
    with EmbeddedBroker() as broker:
        ports = [free_port() for _ in range(3)]
        api_port = free_port()
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        course = course_file(folder, args, broker.bootstrap, api_port, urls)
        state = folder / "state"
        try:
            ensure_topics(broker.bootstrap, ["movielog1", "movielog2", "movielog3"], partitions=4)
            seen, popular = SeenMovies(), Popular()
            for topic, sink in (("movielog2", seen), ("movielog3", popular)):
                f = StreamFollower(broker.bootstrap, [topic], sink, group_id=f"team-{topic}")
                f.start()
                followers.append(f)
            servers.append(ServerThread(placeholder_app(seen, seed=args.seed), port=ports[1]).start())
            servers.append(ServerThread(popularity_app(popular), port=ports[2]).start())
            if args.recommender == "operate":
                rec_dir = folder / "team1"
                rec_dir.mkdir()
                env = {
                    **os.environ,
                    "MOVIELAB_REC_KAFKA": broker.bootstrap,
                    "MOVIELAB_REC_TEAM": "1",
                    "MOVIELAB_REC_WORLD_API": f"http://127.0.0.1:{api_port}",
                    "MOVIELAB_REC_PORT": str(ports[0]),
                }
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "movielab",
                            "recommender",
                            "operate",
                            "--replicas",
                            "0",
                            "--control-port",
                            str(free_port()),
                        ],
                        cwd=rec_dir,
                        env=env,
                        stdout=(rec_dir / "operate.log").open("w"),
                        stderr=subprocess.STDOUT,
                    )
                )
            t0 = time.perf_counter()
            world = world_process(course, log)
            start, seen_at = None, []  # wall times at which a new checkpoint showed in the status file
            while world.poll() is None:
                now = sim_time(state)
                start = start or (now or None)
                if now and (not seen_at or now != seen_at[-1][1]):
                    seen_at.append((time.monotonic(), now))
                if start and now >= start + args.days * DAY / 2:
                    break
                time.sleep(0.01)
            killed_at = sim_time(state)
            # Half-way between two checkpoints, the typical case (just after one, almost nothing is doubled).
            gap = seen_at[-1][0] - seen_at[-2][0] if len(seen_at) > 1 else 0.0
            time.sleep(gap / 2)
            world.send_signal(sig)
            world.wait(timeout=300)
            restart = subprocess.Popen(
                [sys.executable, "-m", "movielab", "course", "run", str(course)], stdout=log, stderr=subprocess.STDOUT
            )
            if restart.wait(timeout=args.timeout) != 0:
                raise SystemExit(f"the restarted world failed: see {folder / 'world.log'}")
            wall = time.perf_counter() - t0
            meta = checkpoint.read_meta(state / "checkpoint")
            topics = [t["topic"] for t in meta["info"]["teams"]]
            manifest = [json.loads(x) for x in (state / "manifest.jsonl").read_text().splitlines()]
            restored = [r for r in manifest if r.get("event") == "course" and r["kind"] == "restored"]
            ends = end_offsets(broker.bootstrap, topics)
            out = {"signal": sig.name, "killed_at": killed_at, "wall": wall, "topics": {}}
            for topic in topics:
                n = sum(ends[topic].values())
                records = read_topic(broker.bootstrap, topic, f"count-{topic}", max_messages=n, timeout=600)
                e = meta["info"]["lines"][topic]
                r = restored[-1]["re_emitted"][topic] if restored else 0
                out["topics"][topic] = {
                    "on_topic": len(records),
                    "world": e,
                    "re_emitted": r,
                    "lost": e + r - len(records),
                    "reversals": reversals(records),
                }
            out["restored_from"] = restored[-1]["at"] if restored else None
            out["per_interval"] = sum(f["world"] for f in out["topics"].values()) / (args.days * 1440 / args.every)
            out["gap"] = gap
            return out
        finally:
            for f in followers:
                f.stop()
            for s in servers:
                s.stop()
            for p in procs:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()


def scoreboard(folder: Path) -> None:
    """Print the course's scoreboard day by day and the injections its manifest holds."""
    from movielab.world.scoring.board import Scoreboard, read_manifest

    board = Scoreboard(folder / "reports")
    for day in sorted(board.days):
        print(board.table(day))
    records = [json.loads(x) for x in (folder / "state" / "manifest.jsonl").read_text().splitlines()]
    starts = Counter(r["id"] for r in records if r.get("event") == "start")
    ends = {r["id"] for r in records if r.get("event") == "end"}
    print(
        f"manifest: {len(starts)} injections began ({sum(starts.values()) - len(starts)} start records written "
        f"again after the restart), {len(ends)} ended; {len(read_manifest(folder / 'state' / 'manifest.jsonl'))} "
        f"paired events"
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--movies", type=int, default=5000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--every", type=int, default=10, help="simulated minutes between checkpoints")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signal", choices=["kill", "term", "both"], default="both")
    ap.add_argument(
        "--recommender",
        choices=["operate", "none"],
        default="operate",
        help="team 1: movielab's operated recommender, or nothing listening (failed requests)",
    )
    ap.add_argument("--scenario", help="a scenario preset (e.g. semester) or file")
    ap.add_argument(
        "--scenario-time-scale",
        type=float,
        help="compress the scenario's timeline by this factor (default: its injections fall inside the run's days)",
    )
    ap.add_argument("--scoreboard", action="store_true", help="print the scoreboard and the manifest's injections")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds the restarted world may take")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="movielab-course-restart-"))
    sigs = {"kill": [signal.SIGKILL], "term": [signal.SIGTERM], "both": [signal.SIGKILL, signal.SIGTERM]}[args.signal]
    print(
        f"{args.users:,} users, {args.movies:,} movies, {args.days:g} simulated days, checkpoints every "
        f"{args.every} simulated minutes; teams: movielab ({args.recommender}), placeholder, popularity; "
        f"scenario {args.scenario or 'none'}"
        f"{f' (time scale {time_scale(args):.1f})' if args.scenario else ''}; work folder {root}"
    )
    for sig in sigs:
        r = one_run(args, sig, root / sig.name.lower())
        print(
            f"\n{sig.name} half-way after the checkpoint of simulated {time.strftime('%Y-%m-%dT%H:%M', time.gmtime(r['killed_at']))}, "
            f"restored from the checkpoint of {r['restored_from']}; {r['wall']:.0f} s wall"
        )
        print(f"{'topic':<10} {'on topic':>10} {'world':>10} {'doubled':>8} {'lost':>5} {'reversals':>9}")
        for topic, f in r["topics"].items():
            print(
                f"{topic:<10} {f['on_topic']:>10,} {f['world']:>10,} {f['re_emitted']:>8,} {f['lost']:>5,} "
                f"{f['reversals']:>9,}"
            )
        total = sum(f["on_topic"] for f in r["topics"].values())
        doubled = sum(f["re_emitted"] for f in r["topics"].values())
        print(
            f"doubled {doubled:,} of {total:,} lines ({doubled / max(total, 1):.3%}); lost "
            f"{sum(f['lost'] for f in r['topics'].values()):,}; the signal came {r['gap'] / 2:.2f} s (wall) after "
            f"the checkpoint; one checkpoint interval holds {r['per_interval']:,.0f} lines on average "
            f"(the bound on doubles)"
        )
        if args.scoreboard:
            scoreboard(root / sig.name.lower())


if __name__ == "__main__":
    main()
