"""A course run with a scenario and two teams: the manifest holds the injections, every team is scored per day,
and only the instructor's port (with its token) serves them; the teams' API does not.

Real parts: the embedded broker, two team services over HTTP (a fixed list, a random one), the world's API
and the instructor app on free loopback ports, `movielab course score FILE` through the CLI.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from movielab.auth import read_tokens
from movielab.cli import main
from movielab.course.config import load
from movielab.course.run import run_course
from movielab.kafka.broker import EmbeddedBroker
from movielab.webserver import ServerThread

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _fixed(movies: list[str]) -> Starlette:
    async def recommend(request) -> PlainTextResponse:
        return PlainTextResponse(",".join(movies))

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


def _random(movies: list[str], seed: int = 0) -> Starlette:
    rng = random.Random(seed)

    async def recommend(request) -> PlainTextResponse:
        return PlainTextResponse(",".join(rng.sample(movies, 20)))

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


def _wait(predicate, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_scored_course_serves_scores_and_manifest_only_on_the_instructor_port(universe, tmp_path, capsys) -> None:
    slugs = list(universe.catalog.slug)
    teams = [ServerThread(_fixed(slugs[:20])).start(), ServerThread(_random(slugs[:500])).start()]
    try:
        with EmbeddedBroker() as broker:
            course = tmp_path / "course.toml"
            course.write_text(f"""
name = "scored"
[world]
users = 1500
seed = 2
scenario = "outage"          # a preset: outages, a stream pause, a takedown, invalid requests, 10x load, a wave
scenario_time_scale = 2      # its 8 hours in 4
[kafka]
bootstrap = "{broker.bootstrap}"
partitions = 1
[api]
port = 0
[instructor]
port = 0
tokens = "secret/instructor.tokens"
[state]
checkpoint_every_minutes = 60
[[teams]]
name = "fixed"
url = "{teams[0].url}"
[[teams]]
name = "random"
url = "{teams[1].url}"
""")
            config = load(course)
            stop, ready, done = threading.Event(), {}, {}

            def go() -> None:
                done["run"] = run_course(config, universe=universe, stop=stop, on_ready=lambda r: ready.update(run=r))

            thread = threading.Thread(target=go)
            thread.start()
            try:
                _wait(lambda: "run" in ready or "run" in done, "the course to start")
                run = ready["run"]
                scores = config.reports_dir / "scores"
                _wait(lambda: scores.is_dir() and any(scores.glob("*.json")), "the first scored day")
                token = read_tokens(config.resolve(Path("secret/instructor.tokens"))).token("instructor")
                with httpx.Client(timeout=10) as http:
                    for path in ("/manifest", "/scores", "/scores/1", "/metrics"):
                        assert http.get(run.instructor_url + path).status_code == 401, path
                        bad = http.get(run.instructor_url + path, headers={"authorization": "Bearer team-guess"})
                        assert bad.status_code == 401, path
                        ok = http.get(run.instructor_url + path, headers={"authorization": f"Bearer {token}"})
                        assert ok.status_code == 200, (path, ok.text[:200])
                        assert http.get(run.api_url + path).status_code == 404, path  # the teams' API: no such page
                    auth = {"authorization": f"Bearer {token}"}
                    board = http.get(run.instructor_url + "/scores", headers=auth).json()
                    manifest = [
                        json.loads(x)
                        for x in http.get(run.instructor_url + "/manifest", headers=auth).text.splitlines()
                    ]
                    metrics = http.get(run.instructor_url + "/metrics", headers=auth).text
                    told = http.get(run.api_url + "/announcements").json()
            finally:
                stop.set()
                thread.join(timeout=120)
            assert not thread.is_alive() and "run" in done
    finally:
        for t in teams:
            t.stop()

    assert [r["team"] for r in board["scores"]] == [1, 2] and len(board["days"]) >= 1
    assert all(r["requests"] > 100 for r in board["scores"])
    fixed, rand = board["scores"]
    assert fixed["coverage"] < rand["coverage"]  # 20 movies for everyone against 20 of 500 at random
    assert 'movielab_score{metric="conversion",team="1"}' in metrics
    starts = {r["kind"] for r in manifest if r.get("event") == "start"}
    assert {"api_outage", "stream_pause", "takedown", "invalid_requests"} <= starts
    assert any(r.get("event") == "course" and r["kind"] == "course_started" for r in manifest)
    assert [a["kind"] for a in told] == ["takedown"]  # teams are told of the takedown, never of the rest
    on_disk = [json.loads(x) for x in config.manifest_path.read_text().splitlines()]
    assert on_disk[: len(manifest)] == manifest  # one writer: the file and what was served agree
    assert (config.manifest_path.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in (config.state_dir / "sessions").glob("*.npz"))  # the hidden session log
    csv = (config.reports_dir / "scores.csv").read_text().splitlines()
    assert csv[0].startswith("day,team,") and len(csv) >= 3
    # The instructor's command line reads it all from the course file.
    assert main(["course", "score", str(course)]) == 0
    stream, out = capsys.readouterr().out.split("\n", 1)
    assert stream.startswith("course checks from the stream: skipped (topic 'movielog1' on 127.0.0.1:")  # gone
    assert out.startswith("scores of ") and out.splitlines()[1].split()[:2] == ["team", "requests"]
    assert main(["course", "score", str(course), "--team", "2"]) == 0
    out = capsys.readouterr().out
    assert "team 2, day by day" in out and "injected events" in out
    rows = [line.split() for line in out.splitlines() if " api_outage " in f" {line} "]
    assert len(rows) == 3  # slow, errors, down: each with conversion and availability before/during/after
    down = next(r for r in rows if r[0] == "2:api_outage")  # the third injection: the API down (ids count from 0)
    during = [float(down[5]), float(down[8])]  # conversion and availability while the world's API was down
    assert all(0 <= v <= 1 for v in during)  # the team's own service stayed up: figures, not '-'
