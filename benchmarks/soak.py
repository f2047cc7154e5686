"""Soak: the accelerated world against the whole recommender for several simulated days, from the stream.

Processes, as in production: the embedded Kafka broker (this process), the world
(`movielab world run`, as fast as possible), and the recommender (`movielab recommender operate`:
ingest, scheduled retraining every 6 stream hours with the offline gate and MLflow registry, a canary
for every accepted version, monitoring), which serves from replica processes behind nginx.
Part-way, when a retrained model has been promoted and no canary runs, this script plays the careless
engineer: it registers a deliberately bad version (popularity upside down: the least popular movies
first) and starts a canary of it by hand, past the gate; the statistics must roll it back.

At the end the report reads the team topic back from Kafka and gives availability (share of
recommendation requests answered 200 within 600 ms, from the first served model on), the failures
around every update, the updates with their retrain-to-serving times, and each experiment's decisions.

    .venv/bin/python benchmarks/soak.py [--users 100000] [--days 3] [--replicas 2] [--speed 600]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from movielab.auth import AuthError, read_tokens
from movielab.contract import MalformedEvent, RecommendationEvent, parse_line
from movielab.kafka.admin import ensure_topics
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.consumer import read_topic
from movielab.recommender.training.models.base import COMMON_ARRAYS, Model
from movielab.recommender.training.models.popularity import Popularity
from movielab.recommender.training.pipeline import load
from movielab.recommender.training.registry import Registry, default_tracking_uri, registered_name
from movielab.webserver import free_port

BUDGET_MS = 600


def bad_version(champion_folder: Path, folder: Path) -> Path:
    """A popularity version over the champion's users and movies, counts turned upside down."""
    champ = Model.load(champion_folder)
    bad = Popularity()
    for name in (*COMMON_ARRAYS, "snapshot_id"):
        setattr(bad, name, getattr(champ, name))
    counts = np.bincount(champ.seen_indices, minlength=len(champ.items)).astype(np.float32)
    bad.counts = (counts.max() - counts + 1).astype(np.float32)
    bad._fitted = True  # its arrays are set by hand, as Model.load would set them
    bad.save(folder)
    manifest = json.loads((champion_folder / "manifest.json").read_text())
    manifest.update(
        model="popularity",
        version="v0001",
        params={},
        train_seconds=0.0,
        trained_at=datetime.now().strftime("%Y-%m-%dT%H:%M:%S"),
    )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


TOKENS: list[Path] = []  # the operator's token file (created by it at start, next to its store)


def auth() -> dict[str, str]:
    """The operator's control token as headers ({} until the operator has written its token file)."""
    try:
        return read_tokens(TOKENS[0]).headers()
    except (AuthError, IndexError):
        return {}


def status(ctrl: str) -> dict | None:
    try:
        r = httpx.get(f"{ctrl}/status", headers=auth(), timeout=30)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def main() -> None:
    """Run the soak and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed", type=float, default=600.0, help="simulated seconds per second (600: a day in 144 s)")
    ap.add_argument("--bad-after-hours", type=float, default=24.0, help="earliest stream hour for the bad canary")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument(
        "--kill-operator-after-hours",
        dest="kill_operator_after_hours",
        type=float,
        help="once a champion serves and this many stream hours passed: kill -9 the operator, restart it",
    )
    ap.add_argument(
        "--down-seconds",
        dest="down_seconds",
        type=float,
        default=10.0,
        help="seconds the killed operator stays down before its restart",
    )
    # On a few simulated days the offline gate's time split favours popularity over EASE (users have watched
    # 2-3 movies each; EASE passes it after about a week): ALS with a popularity prior passes it sooner.
    ap.add_argument("--model", default="als", help="model the operator retrains")
    ap.add_argument("--params", default='{"popularity_weight": 8}', help="its hyper-parameters (JSON)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="movielab-soak-"))
    rec = work / "rec"
    TOKENS.append(rec / "access.tokens")
    serve_port, ctrl_port, api_port = free_port(), free_port(), free_port()
    ctrl = f"http://127.0.0.1:{ctrl_port}"
    t0 = time.perf_counter()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1"], partitions=4)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        op_log, world_log = open(work / "operator.log", "wb"), open(work / "world.log", "wb")  # noqa: SIM115
        op_cmd = [
            sys.executable,
            "-m",
            "movielab",
            "recommender",
            "operate",
            "--kafka",
            broker.bootstrap,
            "--world-api",
            f"http://127.0.0.1:{api_port}",
            "--store",
            str(rec / "store.duckdb"),
            "--artifacts",
            str(rec / "models"),
            "--port",
            str(serve_port),
            "--control-port",
            str(ctrl_port),
            "--replicas",
            str(args.replicas),
            "--steps",
            "0.25,0.5,1.0",
            "--min-requests",
            "1000",
            "--margin",
            "0.05",
            "--tau",
            "0.05",
            "--tick",
            "1",
            "--model",
            args.model,
            "--params",
            args.params,
        ]
        operator = subprocess.Popen(op_cmd, stdout=op_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        world = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "movielab",
                "world",
                "run",
                "--users",
                str(args.users),
                "--days",
                str(args.days),
                "--kafka",
                broker.bootstrap,
                "--teams",
                f"http://127.0.0.1:{serve_port}",
                "--api-port",
                str(api_port),
                "--seed",
                str(args.seed),
                "--speed",
                str(args.speed),
            ],
            stdout=world_log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        print(f"soak: {args.users:,} users, {args.days:g} simulated days; work folder {work}", flush=True)
        injected = None
        killed: dict = {}
        start_stream = None
        last = None
        try:
            while world.poll() is None:
                time.sleep(5)
                s = status(ctrl)
                if s is None or s["stream_time"] is None:
                    continue
                now = datetime.fromisoformat(s["stream_time"])
                start_stream = start_stream or now
                exp = s["experiment"]
                what = (
                    f"champion {(s['champion'] or {}).get('tags', {}).get('model')} "
                    f"v{(s['champion'] or {}).get('version')}, experiment "
                    f"{exp and (exp['name'], exp['status'], exp['share'])}"
                )
                if what != last:
                    print(f"  {time.perf_counter() - t0:6.0f} s  stream {now:%m-%d %H:%M}  {what}", flush=True)
                    last = what
                if killed.get("restarted") and "back" not in killed:
                    killed["back"] = now  # the restarted operator answers again
                if (
                    args.kill_operator_after_hours is not None
                    and not killed
                    and s["champion"]
                    and now - start_stream >= timedelta(hours=args.kill_operator_after_hours)
                ):
                    killed["at"] = now
                    os.killpg(operator.pid, signal.SIGKILL)  # the operator's session only: serving has its own
                    operator.wait()
                    print(
                        f"  kill -9 of the operator at stream time {now}; restarting it in {args.down_seconds} s",
                        flush=True,
                    )
                    time.sleep(args.down_seconds)
                    operator = subprocess.Popen(
                        op_cmd, stdout=op_log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                    )
                    killed["restarted"] = True
                    continue
                promoted = any(u["kind"] == "promote" for u in s["updates"])
                idle = exp is None or exp["status"] in ("promoted", "rolled_back")
                due = now - start_stream >= timedelta(hours=args.bad_after_hours)
                ready = due and (promoted or now - start_stream >= timedelta(days=2))
                if ready and injected is None and not s["schedule_paused"]:
                    # A freeze, as an engineer would before a manual canary: no scheduled canary starts meanwhile.
                    httpx.post(f"{ctrl}/schedule/pause", headers=auth(), timeout=30)
                    print(f"  paused the retraining schedule at stream time {s['stream_time']}", flush=True)
                elif injected and "answer" in injected and idle and s["schedule_paused"]:
                    httpx.post(f"{ctrl}/schedule/resume", headers=auth(), timeout=30)
                    print(f"  resumed the retraining schedule at stream time {s['stream_time']}", flush=True)
                if (injected is None or "answer" not in injected) and ready and idle and s["schedule_paused"]:
                    try:
                        injected = inject_bad(rec, s, ctrl, injected)
                    except Exception as exc:  # report what happened; the soak's other figures still count
                        injected = {"error": repr(exc)}
                        print(f"  injecting the bad version failed: {exc!r}", flush=True)
            world.wait()
            print(
                f"world finished after {time.perf_counter() - t0:.0f} s; waiting for the ingest to catch up", flush=True
            )
            settle(ctrl)
        finally:
            final = status(ctrl)
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
            if world.poll() is None:
                os.killpg(world.pid, signal.SIGKILL)
        records = read_topic(broker.bootstrap, "movielog1", group_id="soak-report", timeout=600)
    report(args, work, records, final, injected, time.perf_counter() - t0, killed)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def inject_bad(rec: Path, s: dict, ctrl: str, done: dict | None) -> dict:
    """Register the bad version (once) and start its canary through the operator; what was done. A scheduled
    canary may start between the check and the request (409): then it is tried again when that one ends."""
    if done is None:
        registry = Registry(
            default_tracking_uri(rec / "models"), registered_name(1), rec / "registry-cache", rec / "mlruns"
        )
        folder = bad_version(registry.folder(registry.champion_version()), rec / "bad" / "popularity" / "v0001")
        registered = registry.register(load(folder), tags={"note": "deliberately bad: least popular movies first"})
        done = {"version": registered.version}
    r = httpx.post(f"{ctrl}/canary/start", json={"version": done["version"]}, headers=auth(), timeout=600)
    print(
        f"  canary of the deliberately bad version (registry v{done['version']}) at stream time "
        f"{s['stream_time']}: {r.status_code} {r.text[:200]}",
        flush=True,
    )
    if r.status_code == 200:
        done.update(stream_time=s["stream_time"], answer=r.json())
    return done


def settle(ctrl: str, quiet: float = 20.0, timeout: float = 900.0) -> None:
    """Wait until the operator's stream time stops moving (the ingest has caught up)."""
    deadline = time.monotonic() + timeout
    seen, since = None, time.monotonic()
    while time.monotonic() < deadline:
        s = status(ctrl)
        t = s and s["stream_time"]
        if t != seen:
            seen, since = t, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(2)


def report(
    args, work: Path, records, final: dict | None, injected: dict | None, wall: float, killed: dict | None = None
) -> None:
    """Availability and failures from the stream, updates and experiments from the operator's records."""
    updates = [json.loads(x) for x in (work / "rec" / "operator" / "updates.jsonl").read_text().splitlines()]
    first = None  # the first request answered 200: serving is up (the first update's stream time lags the world)
    for _, value, _, _ in records:
        if b"recommendation request" in value and b", status 200," in value:
            t = datetime.fromisoformat(value.split(b",", 1)[0].decode())
            first = t if first is None else min(first, t)
    total = ok = late = failed = 0
    before = 0
    failures: list[tuple[datetime, str]] = []
    lines = 0
    for _, value, _, _ in records:
        lines += 1
        if b"recommendation request" not in value:
            continue
        try:
            ev = parse_line(value)
        except MalformedEvent:
            continue
        if not isinstance(ev, RecommendationEvent):
            continue
        if first is None or ev.time < first:
            before += 1
            continue
        total += 1
        if ev.ok and ev.response_ms <= BUDGET_MS:
            ok += 1
        else:
            late += ev.ok
            failed += not ev.ok
            failures.append((ev.time, f"status {ev.status} {ev.response_ms} ms {(ev.error or '')[:60]}"))
    print(
        f"\nsoak report: {args.users:,} users, {args.days:g} simulated days, {args.replicas} replicas behind nginx; "
        f"{lines:,} lines on the topic; wall {wall:.0f} s"
    )
    print(f"requests before the first answer (no model served yet): {before:,}; first answer at {first}")
    if total:
        print(
            f"from the first served model on: {total:,} requests, availability {ok / total:.4%} "
            f"(200 within {BUDGET_MS} ms); failed {failed:,}, answered too late {late:,}"
        )
    print("\nupdates (stream time, kind, version, retrain start → serving, failures within 10 min after):")
    for u in updates:
        at = datetime.fromisoformat(u["stream_time"])
        near = sum(1 for t, _ in failures if at <= t < at + timedelta(minutes=10))
        secs = f"{u['seconds_to_serving']:.1f} s" if u["seconds_to_serving"] is not None else "-"
        print(f"  {u['stream_time']}  {u['kind']:9} {u['version']:22} {secs:>8}  failures {near}  {u['detail'][:90]}")
    for t, what in failures[:10]:
        print(f"  failure at {t}: {what}")
    print("\nexperiments:")
    for path in sorted((work / "rec" / "operator" / "experiments").glob("*.json")):
        e = json.loads(path.read_text())
        d = e["decisions"][-1]
        srm = d.get("srm") or {}
        print(
            f"  {e['name']}: {e['challenger']} vs {e['champion']} → {e['status']} at {d['time']} "
            f"(step share {d['share']}); {d['reason']}"
        )
        print(
            f"    test {d.get('test')}, p {d.get('p_value')}, effect {d.get('effect')}, "
            f"SRM p {srm.get('p_value')}; {len(e['decisions'])} evaluations"
        )
    if final and final.get("experiment") and final["experiment"]["status"] not in ("promoted", "rolled_back"):
        print(f"  still running at the end: {final['experiment']['name']} at share {final['experiment']['share']}")
    runs = [json.loads(x) for x in (work / "rec" / "retrain.jsonl").read_text().splitlines()]
    print(f"\nretraining runs: {len(runs)}")
    for r in runs:
        print(
            f"  {r['stream_time']} {r['trigger']:9} {r['status']:9} {r.get('decision') or '':10} "
            f"total {r['seconds'].get('total', 0):6.1f} s  {r['reason'][:100]}"
        )
    if injected:
        print(f"\nbad version injected: {injected}")
    if killed and "at" in killed:
        # Stream time of the operator's status lags the world's by the ingest; the window is generous on both ends.
        lo, hi = killed["at"] - timedelta(minutes=30), killed.get("back", killed["at"]) + timedelta(minutes=30)
        window = [
            1
            for _, value, _, _ in records
            if b"recommendation request" in value
            and lo <= datetime.fromisoformat(value.split(b",", 1)[0].decode()[:19]) < hi
        ]
        near = sum(1 for t, _ in failures if lo <= t < hi)
        print(
            f"\nkill -9 of the operator at stream {killed['at']}, back at {killed.get('back')}: {near} failed of "
            f"{len(window):,} requests in [{lo}, {hi}) (30 min either side)"
        )


if __name__ == "__main__":
    main()
