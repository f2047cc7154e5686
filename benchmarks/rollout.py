"""Zero-downtime rollouts under load: 2 replicas behind nginx, wrk through nginx, rollouts against a baseline.

Saves a popularity model over 100,000 users x 1,682 movies as several versions (the same arrays under
different version names: a rollout's cost is loading and precomputing, not what the model says), starts a
`movielab.recommender.serving.fleet.Fleet` of 2 replica processes behind nginx, then, in the same run:

- baseline: `wrk -t2 -c32 --latency` through nginx for `--duration` seconds, no rollout;
- drained rollouts: the same wrk while `--rollouts` (>= 3) rollouts run back to back, each replica
  answering 503 while it loads (nginx passes those requests to the other one; no nginx reload), wrk
  stopped 1 s after the last;
- in-place rollouts: the same with `Fleet.rollout(drain=False)`: each replica keeps answering from its old
  table while it builds the new one.

Printed for each: requests, failed requests (socket errors and non-2xx), requests over the world's 600 ms
time-out, requests/s, p50/p99/p99.9/max; and the seconds each rollout took (per replica and overall).

    python benchmarks/rollout.py [--users 100000] [--duration 15] [--connections 32] [--rollouts 3]

Needs the `wrk` and `nginx` binaries (Debian: apt-get install wrk nginx-light).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from wrktools import parse_wrk, random_id_lua  # noqa: E402 (sibling module of the benchmarks)

from movielab.recommender.serving.fleet import Fleet
from movielab.recommender.serving.nginx import find_nginx
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import create

logger = logging.getLogger("rollout")

N_MOVIES = 1682  # ml-100k's catalog size
# Counts the requests slower than the world's time-out from wrk's latency histogram (values in us);
# `latency(i)` is the i-th distinct recorded latency and its count.
LUA_DONE = """
function done(summary, latency, requests)
  local over, seen = 0, 0
  for i = 1, #latency do
    local v, c = latency(i)
    if v == nil then break end
    seen = seen + c
    if v > 600000 then over = over + c end
  end
  io.write(string.format("OVER600 %d RECORDED %d TIMEOUTS %d REQUESTS %d\\n", over, seen, summary.errors.timeout,
                         summary.requests))
  io.write(string.format("P999 %.0f MAX %.0f\\n", latency:percentile(99.9), latency.max))
end
"""


def save_versions(folder: Path, n_users: int, count: int, seed: int = 0) -> list[Path]:
    """Fit one popularity model on random interactions (~20 per user) and save it as `count` versions."""
    rng = np.random.default_rng(seed)
    n = n_users * 20
    items = [f"movie+{i}+{1920 + i % 100}" for i in range(N_MOVIES)]
    popular = rng.zipf(1.3, n) % N_MOVIES
    data = TrainingData.from_triples(
        rng.integers(1, n_users + 1, n),
        np.asarray(items, dtype=object)[popular],
        np.ones(n),
        np.zeros(n),
        np.zeros(n),
        snapshot_id="bench",
    )
    model = create("popularity").fit(data)
    out = []
    for k in range(1, count + 1):
        v = folder / f"v{k:04d}"
        model.save(v)
        manifest = {
            "model": "popularity",
            "version": v.name,
            "snapshot_id": "bench",
            "code_version": "bench",
            "trained_at": f"2026-03-20T08:{k:02d}:00",
            "params": {},
        }
        (v / "manifest.json").write_text(json.dumps(manifest))
        out.append(v)
    return out


def wrk_command(url: str, connections: int, duration: int, script: Path) -> list[str]:
    """wrk through nginx: 2 threads, random known users, a 2 s socket time-out (600 ms is counted apart)."""
    return ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "2s", "-s", str(script), url]


def figures(output: str) -> dict[str, float]:
    """Parsed wrk figures plus requests, failures (socket errors + non-2xx) and requests over 600 ms."""
    out = parse_wrk(output)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    over = re.search(r"OVER600 (\d+) RECORDED (\d+) TIMEOUTS (\d+)", output)
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    for kind, value in zip(
        ("connect", "read", "write", "timeout"), errors.groups() if errors else (0,) * 4, strict=True
    ):
        out[f"{kind}_errors"] = float(value)
    out["requests"] = float(total.group(1)) if total else float("nan")
    out["failed"] = float(socket_errors + out["non_2xx"])
    out["over_600ms"] = float(int(over.group(1)) + int(over.group(3))) if over else float("nan")
    tail = re.search(r"P999 (\d+) MAX (\d+)", output)
    out["p999_ms"], out["max_ms"] = (int(tail.group(1)) / 1e3, int(tail.group(2)) / 1e3) if tail else (math.nan,) * 2
    return out


def under_rollouts(
    fleet: Fleet, url: str, versions: list[Path], args: argparse.Namespace, script: Path, drain: bool
) -> tuple[dict, list]:
    """wrk through nginx while `versions` are rolled out back to back; wrk's figures and the rollout reports."""
    wrk = subprocess.Popen(
        wrk_command(url, args.connections, 3600, script), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1)
        reports = [fleet.rollout(v, drain=drain) for v in versions]
        time.sleep(1)
    finally:
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its figures
        out, _ = wrk.communicate(timeout=60)
    return figures(out), reports


def run(args: argparse.Namespace) -> dict:
    """Build versions, start the fleet, measure baseline and rollouts; the figures."""
    with tempfile.TemporaryDirectory(prefix="movielab-rollout-") as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        versions = save_versions(tmp_path / "models", args.users, 2 * args.rollouts + 1)
        logger.info("saved %d versions in %.1f s", len(versions), time.perf_counter() - t)
        script = tmp_path / "random.lua"
        script.write_text(random_id_lua("/recommend/", args.users) + LUA_DONE)
        with Fleet(tmp_path / "fleet", versions[0], replicas=2) as fleet:
            url = fleet.url
            subprocess.run(wrk_command(url, args.connections, 2, script), capture_output=True, check=True)  # warm-up
            logger.info("baseline: wrk for %d s, no rollout", args.duration)
            done = subprocess.run(
                wrk_command(url, args.connections, args.duration, script),
                capture_output=True,
                text=True,
                check=True,
                timeout=args.duration + 60,
            )
            baseline = figures(done.stdout)
            out: dict = {"baseline": baseline}
            k = args.rollouts
            for name, drain, vs in (("drained", True, versions[1 : k + 1]), ("in place", False, versions[k + 1 :])):
                logger.info("%s rollouts: wrk until 1 s after the last of %d rollouts", name, k)
                during, reports = under_rollouts(fleet, url, vs, args, script, drain)
                out[name] = {
                    **during,
                    "rollout_seconds": [r.seconds for r in reports],
                    "replica_seconds": [list(r.replica_seconds.values()) for r in reports],
                }
            out["served_after"] = sorted({s["champion"]["provenance"]["model_version"] for s in fleet.state()})
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; 2 if wrk or nginx is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=15, help="seconds of the baseline wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rollouts", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rollouts < 3:
        parser.error("--rollouts must be at least 3")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    missing = [b for b, found in (("wrk", shutil.which("wrk")), ("nginx", find_nginx())) if not found]
    if missing:
        print(
            f"{' and '.join(missing)} not installed: this benchmark needs them (Debian: apt-get install wrk "
            "nginx-light)",
            file=sys.stderr,
        )
        return 2
    r = run(args)
    print(
        f"2 replicas behind nginx, {args.users:,} users x {N_MOVIES:,} movies, wrk -t2 -c{args.connections} "
        "through nginx"
    )
    print(
        f"{'phase':34} {'requests':>9} {'failed':>7} {'>600 ms':>8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99.9 ms':>8} {'max ms':>7}"
    )
    phases = (
        ("baseline (no rollout)", "baseline"),
        (f"during {args.rollouts} drained rollouts", "drained"),
        (f"during {args.rollouts} in-place rollouts", "in place"),
    )
    for label, key in phases:
        f = r[key]
        print(
            f"{label:34} {f['requests']:9.0f} {f['failed']:7.0f} {f['over_600ms']:8.0f} {f['rps']:8.0f} "
            f"{f['p50_ms']:7.2f} {f['p99_ms']:7.2f} {f['p999_ms']:8.2f} {f['max_ms']:7.2f}"
        )
    for label, key in phases[1:]:
        d = r[key]
        print(
            f"{label}: failed by kind: connect {d['connect_errors']:.0f}, read {d['read_errors']:.0f}, "
            f"write {d['write_errors']:.0f}, timeout {d['timeout_errors']:.0f}, non-2xx {d['non_2xx']:.0f}"
        )
        for k, (total, per) in enumerate(zip(d["rollout_seconds"], d["replica_seconds"], strict=True), start=1):
            print(f"  rollout {k}: {total:.2f} s (replicas: {', '.join(f'{s:.2f} s' for s in per)})")
    print(f"serving after the rollouts: {', '.join(r['served_after'])}")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
