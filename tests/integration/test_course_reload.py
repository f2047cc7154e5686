"""A running course re-reads its file: a changed URL is used at once, an added team gets a topic and users."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from movielab.course.config import CourseFileError, load
from movielab.course.run import end_offsets, run_course
from movielab.course.status import course_status, format_status
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.consumer import read_topic
from movielab.webserver import ServerThread
from movielab.world import checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _team(movies: list[str]) -> Starlette:
    async def recommend(request) -> PlainTextResponse:
        return PlainTextResponse(",".join(movies))

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


def _course(path: Path, bootstrap: str, urls: list[str], scenario: str = "") -> None:
    teams = "".join(f'[[teams]]\nname = "t{i}"\nurl = "{u}"\n' for i, u in enumerate(urls, start=1))
    path.write_text(f"""
name = "reload"
[world]
users = 2000
seed = 1
speed = 1200
{scenario}
[kafka]
bootstrap = "{bootstrap}"
partitions = 1
[api]
port = 0
[instructor]
port = 0
[state]
checkpoint_every_minutes = 10
reload_seconds = 0.1
{teams}""")


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_url_changes_and_added_teams_apply_while_the_course_runs(universe, tmp_path) -> None:
    slugs = universe.catalog.slug
    servers = [ServerThread(_team(slugs[i * 20 : i * 20 + 20])).start() for i in range(3)]
    try:
        with EmbeddedBroker() as broker:
            course = tmp_path / "course.toml"
            # Garbled lines for every team from +90m: after the third team joined (at about +20m of simulated time)
            (tmp_path / "garble.toml").write_text(
                'name = "garble"\n[[injections]]\nkind = "corrupt_lines"\nstart = "+90m"\nduration = "20m"\n'
                'mode = "garbled"\nshare = 0.05\n'
            )
            scenario = 'scenario = "garble.toml"'
            _course(course, broker.bootstrap, [servers[0].url, servers[0].url], scenario)
            config = load(course)
            stop, done = threading.Event(), {}

            def go() -> None:
                done["run"] = run_course(config, universe=universe, stop=stop)

            thread = threading.Thread(target=go)
            thread.start()
            manifest = config.manifest_path
            _wait(lambda: (config.state_dir / "status.json").exists(), "the course to start")
            time.sleep(1.0)
            _course(course, broker.bootstrap, [servers[0].url, servers[1].url, servers[2].url], scenario)
            _wait(lambda: {"team_changed", "team_added"} <= {r.get("kind") for r in _manifest(manifest)}, "the reload")
            _wait(lambda: any(r.get("event") == "end" for r in _manifest(manifest)), "the injection's end")
            stop.set()
            thread.join(timeout=60)
            assert not thread.is_alive() and "run" in done
            ends = end_offsets(broker.bootstrap, ["movielog2"])
            team2 = [
                r[1].decode()
                for r in read_topic(
                    broker.bootstrap, "movielog2", "check", max_messages=sum(ends["movielog2"].values())
                )
            ]
    finally:
        for s in servers:
            s.stop()

    records = {r["kind"]: r for r in _manifest(manifest) if r.get("event") == "course"}
    start, end = (next(r for r in _manifest(manifest) if r.get("event") == e) for e in ("start", "end"))
    assert start["teams"] == end["teams"] == [1, 2, 3]  # the injection for all teams covers the added one
    assert set(end["touched_by"]) == {"team1", "team2", "team3"} and end["touched_by"]["team3"] > 0
    assert records["team_changed"]["team"] == 2
    assert records["team_changed"]["changes"] == {"url": [servers[0].url, servers[1].url]}
    added = records["team_added"]
    assert added["team"] == 3 and added["topic"] == "movielog3" and added["users_reassigned"] > 1000
    meta = checkpoint.read_meta(config.state_dir / "checkpoint")
    assert len(meta["lanes"]) == 3 and [t["topic"] for t in meta["info"]["teams"]] == [
        "movielog1",
        "movielog2",
        "movielog3",
    ]
    run = done["run"]
    assert run.topics == ["movielog1", "movielog2", "movielog3"]
    assert run.lines()["movielog3"] > 0 and meta["info"]["lines"] == run.lines()
    served_by = [
        line.split("recommendation request ", 1)[1].split(",", 1)[0]
        for line in team2
        if "recommendation request" in line
    ]
    first, second = servers[0].url.removeprefix("http://"), servers[1].url.removeprefix("http://")
    switch = served_by.index(second)  # team 2 moved to its new server, and never went back
    assert switch > 0 and set(served_by[:switch]) == {first} and set(served_by[switch:]) == {second}


def test_a_team_removed_from_the_file_is_refused_at_start(universe, tmp_path) -> None:
    with EmbeddedBroker() as broker:
        course = tmp_path / "course.toml"
        _course(course, broker.bootstrap, ["http://127.0.0.1:9", "http://127.0.0.1:9"])
        text = course.read_text().replace("speed = 1200", "days = 0.01")
        course.write_text(text)
        run = run_course(load(course), universe=universe)
        status = course_status(load(course))
        assert status["process"]["state"] == "finished" and not status["process"]["alive"]  # it reached its days
        assert status["topics_now"] == run.lines() == status["checkpoint"]["lines"]  # every line on its topic
        shown = format_status(status).splitlines()
        assert shown[1].startswith("world process") and shown[1].endswith(
            f"finished; simulated time {datetime.fromtimestamp(run.world.now, UTC):%Y-%m-%dT%H:%M:%S}"
        )
        header = next(i for i, line in enumerate(shown) if line.startswith("team  name"))
        assert shown[header].split() == ["team", "name", "url", "topic", "lines", "at", "checkpoint", "lines", "now"]
        team2 = shown[header + 3].split()
        assert team2[:4] == ["2", "t2", "http://127.0.0.1:9", "movielog2"]
        assert team2[4] == team2[5] == f"{run.lines()['movielog2']:,}"
        course.write_text(text.split("[[teams]]")[0] + '[[teams]]\nname = "t1"\nurl = "http://127.0.0.1:9"\n')
        with pytest.raises(
            CourseFileError,
            match=r"teams: 1 team\(s\), but the course in .* has 2: a team cannot be "
            r"removed",
        ):
            run_course(load(course), universe=universe)
        ends = end_offsets(broker.bootstrap, ["movielog1", "movielog2"])
        assert sum(ends["movielog1"].values()) > 0
        lines = read_topic(broker.bootstrap, "movielog2", "check", max_messages=sum(ends["movielog2"].values()))
        assert lines and all(int(r[0]) % 2 == 0 for r in lines)  # team 2 has the even user ids
