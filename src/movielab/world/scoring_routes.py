"""The instructor's score routes: `GET /scores`, `GET /scores/{team}` and the scores' `/metrics`.

For the instructor listener only (its own port, every route behind `movielab.auth.RequireToken`,
`/metrics` included: Prometheus scrapes it with `authorization: {credentials_file: <token file>}`).
The world's public API (`world.api`) never serves them: teams never see the truth.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from movielab.world.scoring.board import Scoreboard, ScoreCollector
from movielab.world.scoring.errors import ScoringError


def score_routes(board: Scoreboard, *, metrics: bool = True) -> list[Route]:
    """Routes over `board`: /scores (newest day, all teams), /scores/{team} (every day of one team), /metrics."""
    registry = CollectorRegistry()
    registry.register(ScoreCollector(board))

    async def scores(request: Request) -> Response:
        day = request.query_params.get("day")
        if day is None:
            return JSONResponse({"days": sorted(board.days), "scores": board.latest()})
        if day not in board.days:
            return JSONResponse({"error": f"day {day!r}: no scores (scored days: {sorted(board.days)})"}, 404)
        return JSONResponse({"days": sorted(board.days), "scores": board.rows(day)})

    async def team_scores(request: Request) -> Response:
        raw = request.path_params["team"]
        if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
            return JSONResponse({"error": f"team {raw[:40]!r}: expected a team number 1..10000"}, 400)
        try:
            rows = board.team(int(raw))
        except ScoringError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        return JSONResponse({"team": int(raw), "scores": rows})

    async def metrics_page(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/scores", scores, methods=["GET"]), Route("/scores/{team}", team_scores, methods=["GET"])]
    if metrics:
        routes.append(Route("/metrics", metrics_page, methods=["GET"]))
    return routes
