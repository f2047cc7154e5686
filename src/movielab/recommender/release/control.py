"""The operator's control app: `/metrics` open for Prometheus, and behind a token `/status`, the canary overrides,
on-demand retraining and the schedule freeze. Bad input is a 4xx naming the field and the reason, never a 500.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from movielab.auth import RequireToken, Tokens, identity_of
from movielab.recommender.errors import ExperimentError, OperatorError, RegistryError
from movielab.recommender.monitoring.exporter import create_metrics_app
from movielab.recommender.release.mitigate import mitigation_routes
from movielab.recommender.release.operator import Operator

logger = logging.getLogger(__name__)


class OverrideBody(BaseModel):
    """`POST /canary/{promote,rollback,pause,resume}`: why (who is the token's identity, not a field)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    reason: str = Field("manual override", min_length=1, max_length=500)


class StartBody(BaseModel):
    """`POST /canary/start`: the registered version to canary."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    version: int | str = Field(union_mode="left_to_right")

    @field_validator("version")
    @classmethod
    def _registered(cls, v: int | str) -> str:
        text = str(v).strip()
        if isinstance(v, bool) or not text.isascii() or not text.isdigit() or len(text) > 12 or int(text) < 1:
            raise ValueError("must be a registered version number (1, 2, ...)")
        return text


class EmptyBody(BaseModel):
    """A POST that takes no fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


MAX_BODY = 16_384  # bytes of a control request body


async def _control_body(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    """The body checked against `model` (empty means `{}`), or a 400/413 answer naming fields, not values."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return JSONResponse({"error": f"request body has {len(raw)} bytes, at most {MAX_BODY}"}, 413)
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)[:5]
        )
        return JSONResponse({"error": f"bad request body: {problems}"}, 400)


def create_control_app(operator: Operator, tokens: Tokens) -> Starlette:
    """The operator's HTTP face, for a loopback listener: `/metrics` (Prometheus, no token) and, with a token of
    `tokens` (401 otherwise), `/status`, the manual overrides `POST /canary/{promote,rollback,pause,resume}`
    with JSON `{"reason": ...}` (recorded `by` the token's identity), a hand-started canary `POST /canary/start`
    with `{"version": <registered version>}`, `POST /retrain`, a freeze of the schedule:
    `POST /schedule/pause` / `POST /schedule/resume`, and the incident mitigations of
    `movielab.recommender.release.mitigate` (pin, rollback, fallback, replicas restart, ingest pause/resume)."""

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(operator.status))  # waits for a tick, not the event loop

    async def override(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action not in ("start", "promote", "rollback", "pause", "resume"):
            return JSONResponse(
                {"error": "unknown canary action: choose start, promote, rollback, pause or resume"}, 404
            )
        body = await _control_body(request, StartBody if action == "start" else OverrideBody)
        if isinstance(body, JSONResponse):
            return body
        by = identity_of(request)
        logger.info("control: canary %s by %s", action, by)
        try:
            if action == "start":
                return JSONResponse(await run_in_threadpool(_start, body.version))
            return JSONResponse(await run_in_threadpool(operator.override, action, by, body.reason))
        except (OperatorError, ExperimentError) as exc:
            return JSONResponse({"error": str(exc)}, 409)
        except RegistryError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    def _start(version: str) -> dict:
        exp = operator.start_canary(operator.registry.get(version))
        return {"experiment": exp.name, "challenger": exp.challenger, "share": exp.share, "salt": exp.salt}

    async def schedule(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            return JSONResponse({"error": "unknown schedule action: choose pause or resume"}, 404)
        body = await _control_body(request, EmptyBody)
        if isinstance(body, JSONResponse):
            return body
        operator.schedule_paused = action == "pause"
        logger.info(
            "control: scheduled retraining %s by %s",
            "paused" if operator.schedule_paused else "resumed",
            identity_of(request),
        )
        return JSONResponse({"schedule_paused": operator.schedule_paused})

    async def retrain(request: Request) -> JSONResponse:
        body = await _control_body(request, EmptyBody)
        if isinstance(body, JSONResponse):
            return body
        by = identity_of(request)
        logger.info("control: retraining on demand by %s", by)
        try:  # seconds of training: off the event loop, so /metrics and /status keep answering
            record = await run_in_threadpool(operator.retrain, f"on demand by {by}")
        except OperatorError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse(record.as_dict())

    app = create_metrics_app(operator.metrics)
    app.router.routes.extend(
        [
            Route("/status", status, methods=["GET"]),
            Route("/canary/{action}", override, methods=["POST"]),
            Route("/retrain", retrain, methods=["POST"]),
            Route("/schedule/{action:str}", schedule, methods=["POST"]),
            *mitigation_routes(operator),
        ]
    )
    app.add_middleware(RequireToken, tokens=tokens, open_paths=("/metrics",))
    return app
