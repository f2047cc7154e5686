"""Scoring a live world from the hidden truth, and the scores staying hidden from teams.

Two real team services over HTTP on loopback (the oracle, reading the world's hidden state, and the
random placeholder) are called by a small live world (embedded broker, topics, API) that records its
session log; the day is then scored, and the course's checks read from the topics agree with the log.
The score routes run behind the instructor token; the world's public API does not serve them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from movielab.auth import RequireToken, ensure_tokens
from movielab.kafka.consumer import read_topic
from movielab.webserver import ServerThread
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig
from movielab.world.live import run_live
from movielab.world.recs import OracleService, RandomService
from movielab.world.scoring.board import DailyScorer, Scoreboard
from movielab.world.scoring.coursechecks import course_checks
from movielab.world.scoring_routes import score_routes
from movielab.world.sessionlog import SessionLog, read_days

pytestmark = pytest.mark.integration


def _team_app(answer) -> Starlette:
    """A team service answering `answer(user_id)` (catalog slugs) on /recommend/<user>."""

    async def recommend(request) -> PlainTextResponse:
        return PlainTextResponse(",".join(answer(int(request.path_params["user"]))))

    return Starlette(routes=[Route("/recommend/{user}", recommend)])


class _Late:
    """The world the oracle team reads, known only once built (the team servers start first)."""

    world = None


def test_oracle_team_scores_better_than_random_from_the_hidden_truth(universe, tmp_path) -> None:
    slugs = universe.catalog.slug
    late = _Late()
    random_service = RandomService(slugs, seed=1)
    oracle_of: dict[str, OracleService] = {}

    def oracle(user: int) -> list[str]:
        if "o" not in oracle_of:
            oracle_of["o"] = OracleService(late.world)
        return oracle_of["o"].recommend(np.array([user]), np.zeros(1)).result[0].split(", ")

    def rand(user: int) -> list[str]:
        return random_service.recommend(np.array([user]), np.zeros(1)).result[0].split(", ")

    servers = [ServerThread(_team_app(oracle)).start(), ServerThread(_team_app(rand)).start()]
    log = SessionLog(n_teams=2, state_dir=tmp_path)
    board = Scoreboard(tmp_path)
    got: dict[str, object] = {}

    def on_ready(live) -> None:
        late.world = live.world
        got["scorer"] = DailyScorer(log, board, live.universe.catalog)

    def after(live, stats) -> None:
        got["scorer"].close(live.world)
        got["topics"] = {
            t: [v.decode() for _, v, _, _ in read_topic(live.bootstrap, t, group_id=f"score-{t}")] for t in live.topics
        }

    try:
        config = WorldConfig(
            users=3000,
            days=0.5,
            allow_download=False,
            arrivals_per_day=0,
            pacing="together",
            teams=[s.url for s in servers],
            api_port=0,
            partitions=1,
        )
        _, live = run_live(
            config,
            universe=universe,
            journal=[],
            sessionlog=log,
            on_ready=on_ready,
            after=after,
            on_tick=lambda w: got["scorer"].on_tick(w),
        )
        world = live.world
    finally:
        for s in servers:
            s.stop()
    (day,) = read_days(tmp_path)
    assert len(day) == world.stats.sessions  # one record per request, none lost
    assert day.sessions["from_list"].sum() + world.stats.resumed >= world.stats.picked_recommended
    oracle_row, random_row = Scoreboard(tmp_path).latest()  # read back from scores/<day>.json
    assert oracle_row["requests"] > 300 and random_row["requests"] > 300
    assert oracle_row["availability"] > 0.95 and random_row["availability"] > 0.95
    assert oracle_row["conversion"] > 2 * random_row["conversion"]
    assert oracle_row["regret"] < 0.5 * random_row["regret"]
    assert oracle_row["true_rating"] > random_row["true_rating"]
    assert random_row["coverage"] > oracle_row["coverage"] * 0.5  # random spreads over the catalog
    assert (tmp_path / "scores.csv").read_text().count("\n") == 3  # header + one row per team
    # The course's checks, from each team's Kafka topic alone, agree with the hidden log.
    end = datetime.fromtimestamp(day.sessions["time"].max() + 1, UTC).replace(tzinfo=None)
    for team, topic in enumerate(("movielog1", "movielog2")):
        mine = day.sessions["team"] == team
        checks = course_checks(got["topics"][topic], end)
        assert checks["unparsable"] == 0 and checks["recommendation_lines"] == mine.sum()
        assert checks["answered_24h"] == day.sessions["ok"][mine].sum()
        assert checks["availability"] == pytest.approx(day.sessions["ok"][mine].mean())
        row = (oracle_row, random_row)[team]
        assert checks["answered_24h"] == row["answered"]
        assert checks["personalized_share"] == pytest.approx(row["personalized_share"])
    assert course_checks(got["topics"]["movielog2"], end)["personalized_share"] > 0.95  # random lists differ
    for hidden in (tmp_path / "scores.csv", tmp_path / "scores" / f"{day.day}.json", tmp_path / "sessions"):
        assert hidden.stat().st_mode & 0o077 == 0, hidden  # instructor-only files: nobody else reads them


def test_scores_and_manifest_are_hidden_from_teams(universe, tmp_path) -> None:
    board = Scoreboard(tmp_path)
    board.add("2026-03-20", [{"team": 1, "day": "2026-03-20", "conversion": 0.25}])
    tokens = ensure_tokens(tmp_path / "instructor.token", "instructor")
    instructor = Starlette(routes=score_routes(board), middleware=[Middleware(RequireToken, tokens=tokens)])
    world, _ = build_world(WorldConfig(users=50, allow_download=False), universe=universe)
    public = create_app(world.pop, universe.catalog, taste=universe.taste)
    servers = [ServerThread(instructor).start(), ServerThread(public).start()]

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            inst, pub = servers[0].url, servers[1].url
            for path in ("/scores", "/scores/1", "/metrics"):  # as a team: no token, a wrong token
                assert (await http.get(inst + path)).status_code == 401
                bad = {"authorization": "Bearer " + "x" * 40}
                assert (await http.get(inst + path, headers=bad)).status_code == 401
            for path in ("/scores", "/scores/1", "/manifest", "/instructor/scores"):  # the world's public API
                r = await http.get(pub + path)
                assert r.status_code == 404, path
                assert b"conversion" not in r.content
            ok = await http.get(inst + "/scores", headers=tokens.headers())
            assert ok.status_code == 200 and ok.json()["scores"][0]["conversion"] == 0.25
            one = await http.get(inst + "/scores/1", headers=tokens.headers())
            assert one.json()["scores"][0]["team"] == 1
            assert (await http.get(inst + "/scores/9", headers=tokens.headers())).status_code == 404
            assert (await http.get(inst + "/scores/x%20y", headers=tokens.headers())).status_code == 400
            assert (await http.get(inst + "/scores?day=1999-01-01", headers=tokens.headers())).status_code == 404
            m = await http.get(inst + "/metrics", headers=tokens.headers())
            assert 'movielab_score{metric="conversion",team="1"} 0.25' in m.text

    try:
        asyncio.run(probe())
    finally:
        for s in servers:
            s.stop()
