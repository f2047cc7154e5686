"""`movielab course score FILE` reads every team's topic back from the broker and grades the course's checks
(answered in 24 h, personalized share, availability over 72 h before / 96 h after, a taken-down movie still
recommended), with the takedown time from the hidden manifest; they agree with the scores from the hidden
session log, land in `stream/<day>.json` and `stream.csv`, and a running instructor app exports them.

Real parts: the embedded broker, two team services over HTTP, the course's world, the CLI, the instructor app.
"""

from __future__ import annotations

import csv
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from movielab.auth import ensure_tokens
from movielab.cli import main
from movielab.course.config import load
from movielab.course.errors import CourseError
from movielab.course.run import run_course
from movielab.course.streamchecks import StreamReadError, read_to_end, takedowns
from movielab.kafka.broker import EmbeddedBroker
from movielab.webserver import ServerThread
from movielab.world.instructor import create_instructor_app
from movielab.world.manifest import Manifest
from movielab.world.scoring.board import Scoreboard
from movielab.world.scoring_routes import score_routes

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _fixed(movies: list[str]) -> Starlette:
    """The same list for everyone; every seventh user gets a 500 (so availability is not 1)."""

    async def recommend(request) -> PlainTextResponse:
        user = request.path_params["user"]
        if user.isdigit() and int(user) % 7 == 0:
            return PlainTextResponse("down", status_code=500)
        return PlainTextResponse(",".join(movies))

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


def _personal(first: str, movies: list[str]) -> Starlette:
    """`first`, then a list of its own for each user (rotated by the user id)."""

    async def recommend(request) -> PlainTextResponse:
        k = int(request.path_params["user"]) % len(movies)
        return PlainTextResponse(",".join([first, *(movies[k:] + movies[:k])[:19]]))

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


def test_course_score_grades_the_course_checks_from_the_topics(universe, tmp_path, capsys) -> None:
    slugs = list(universe.catalog.slug)
    down = slugs[3]  # both teams list it: the takedown at +5h is violated by both
    teams = [ServerThread(_fixed(slugs[:20])).start(), ServerThread(_personal(down, slugs[4:1004])).start()]
    (tmp_path / "takedown.toml").write_text(f"""
name = "one takedown"
[[injections]]
kind = "takedown"
start = "+5h"
movie = "{down}"
""")
    try:
        with EmbeddedBroker() as broker:
            course = tmp_path / "course.toml"
            course.write_text(f"""
name = "checks"
[world]
users = 700
seed = 4
days = 3.5
start = "2026-03-20T00:00:00"
scenario = "takedown.toml"
[kafka]
bootstrap = "{broker.bootstrap}"
partitions = 2
[api]
port = 0
[instructor]
enabled = false
[state]
checkpoint_every_minutes = 120
[[teams]]
name = "fixed"
url = "{teams[0].url}"
[[teams]]
name = "personal"
url = "{teams[1].url}"
""")
            config = load(course)
            run = run_course(config, universe=universe)
            # An instructor app over the scoreboard, started before the stream was graded: it picks the checks up.
            board = Scoreboard(config.reports_dir)
            tokens = ensure_tokens(tmp_path / "i.tokens", identity="instructor")
            app = create_instructor_app(Manifest(), tokens, extra_routes=score_routes(board))
            with ServerThread(app) as instructor:
                auth = {"authorization": f"Bearer {tokens.token('instructor')}"}
                before = httpx.get(instructor.url + "/metrics", headers=auth).text
                assert main(["course", "score", str(course)]) == 0
                out = capsys.readouterr().out
                full = {p.stem: json.loads(p.read_text()) for p in (config.reports_dir / "stream").glob("*.json")}
                # Again: the days before the newest but one are final and kept; only the last days are read.
                assert main(["course", "score", str(course)]) == 0
                again = capsys.readouterr().out
                metrics = httpx.get(instructor.url + "/metrics", headers=auth).text
                served = httpx.get(instructor.url + "/scores/1", headers=auth).json()["scores"]
                assert httpx.get(instructor.url + "/metrics").status_code == 401
            assert main(["course", "score", str(course), "--team", "2"]) == 0
            team2 = capsys.readouterr().out
            on_topics = {t: sum(1 for _ in read_to_end(broker.bootstrap, t)) for t in config.topics()}
            gone = broker.bootstrap
        with pytest.raises(StreamReadError, match="movielog1"):  # the broker is gone: a clear error, not a hang
            list(read_to_end(gone, "movielog1", timeout=5))
    finally:
        for t in teams:
            t.stop()

    assert run.lines() == on_topics  # every line the world produced is on its topic, and was read back
    assert takedowns(config.manifest_path)[0][0] == down
    assert f"{sum(on_topics.values()):,} lines of 2 topic(s)" in out and f"takedowns: {down} from " in out
    assert "(from the day before 2026-03-22; 2 earlier day(s) final, kept)" in again
    read_again = int(again.split("stream: ", 1)[1].split(" lines", 1)[0].replace(",", ""))
    assert 0 < read_again < 0.8 * sum(on_topics.values())
    assert "course checks from the teams' topics" in out
    assert "team 2: course checks from its topic, day by day" in team2

    stream = {p.stem: json.loads(p.read_text()) for p in (config.reports_dir / "stream").glob("*.json")}
    scores = Scoreboard(config.reports_dir)
    assert sorted(stream) == sorted(scores.days) and len(stream) == 4  # three whole days and half of the next
    for day, rows in full.items():  # the second, shorter read graded every day the same, its line counts too
        assert rows == stream[day]
    for team, topic in enumerate(config.topics(), start=1):  # each line of the full read counted on its one day
        counted = sum(
            r["stream_requests"] + r["stream_unparsable"] + r["stream_other_lines"]
            for rows in full.values()
            for r in rows
            if r["team"] == team
        )
        assert counted == on_topics[topic]
    others = sum(r["stream_other_lines"] for rows in full.values() for r in rows)
    assert others > 0 and f"({others:,} not requests, 0 unparsable, 0 of them without a date)" in out
    requests = {1: 0, 2: 0}
    ok = {1: 0, 2: 0}
    for day, rows in stream.items():
        hidden = {r["team"]: r for r in scores.days[day]}
        for r in rows:
            h = hidden[r["team"]]
            assert r["stream_requests"] == h["requests"] > 100  # every request line, none lost or miscounted
            assert r["stream_answered_24h"] == h["answered"]
            assert r["stream_personalized_share"] == pytest.approx(h["personalized_share"])
            assert r["stream_takedown_violations"] == h["takedown_violations"]
            assert r["stream_unparsable"] == 0
            requests[r["team"]] += r["stream_requests"]
            ok[r["team"]] += r["stream_answered_24h"]
    first = stream["2026-03-20"]
    assert first[0]["stream_personalized_share"] == 0 and first[1]["stream_personalized_share"] > 0.9
    assert all(r["stream_takedown_violations"] > 0 for r in first)  # after +5h, both still list the movie
    for r in first:  # the window (72 h before to 96 h after the day's end) holds the whole run
        assert r["stream_window_requests"] == requests[r["team"]]
        assert r["stream_availability"] == pytest.approx(ok[r["team"]] / requests[r["team"]])
        assert r["stream_window_complete"] is False  # the run ended before the window's last day
    assert 0.8 < first[0]["stream_availability"] < 0.9 and first[1]["stream_availability"] == 1.0  # 1 in 7 fail
    with (config.reports_dir / "stream.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8  # four days, two teams
    for hidden in (config.reports_dir / "stream.csv", config.reports_dir / "stream" / "2026-03-20.json"):
        assert hidden.stat().st_mode & 0o077 == 0, hidden
    # The merged rows on the instructor's routes, and the gauges, appeared without restarting the app.
    assert "stream_answered_24h" not in before
    assert 'movielab_score{metric="stream_availability",team="1"}' in metrics
    assert served[-1]["stream_answered_24h"] == stream[max(stream)][0]["stream_answered_24h"]


def test_takedowns_come_from_the_manifest_and_a_bad_record_is_named(tmp_path) -> None:
    path = tmp_path / "manifest.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {
                    "event": "start",
                    "id": "0:takedown",
                    "kind": "takedown",
                    "start": "2026-03-20T05:00:00",
                    "ids": ["a+1"],
                    "params": {"movie": "a+1"},
                },
                {
                    "event": "start",
                    "id": "0:takedown",
                    "kind": "takedown",
                    "start": "2026-03-20T04:00:00",
                    "ids": ["a+1"],
                    "params": {"movie": "a+1"},
                },  # re-simulated after a restore: the earliest counts
                {"event": "course", "kind": "restored", "at": "2026-03-20T04:00:00"},
                {"event": "start", "id": "1:x", "kind": "api_outage", "start": "2026-03-20T01:00:00"},
            )
        )
    )
    (got,) = takedowns(path)
    assert got[0] == "a+1" and got[1].isoformat() == "2026-03-20T04:00:00"
    assert takedowns(tmp_path / "absent.jsonl") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"event": "start", "kind": "takedown", "start": "soon", "ids": ["a+1"]}) + "\n")
    with pytest.raises(CourseError, match=r"bad.jsonl line 1: a takedown needs"):
        takedowns(bad)
