"""Quick mitigations for an incident, on the operator's control port (token required; `deploy/INCIDENTS.md`).

Each one acts on what is served now and is recorded as an update (`updates.jsonl`, `/status`) with the identity
of the token that asked for it:

- `POST /serving/pin {"version": N}`: serve registered version N as champion on every replica (a running canary
  is rolled back first), make it the registry's champion and freeze scheduled retraining, so no automatic
  release replaces it until `POST /schedule/resume`.
- `POST /serving/rollback`: serve the champion that served before the current one (the fleet remembers it);
  a second rollback goes forward again. The registry's champion alias follows when that version is registered.
- `POST /serving/fallback`: train popularity on the store now (seconds), register and serve it, freeze the
  schedule: the answer of last resort when no model version can be trusted.
- `POST /serving/restart`: start again the replicas whose process exited, on their old ports (no nginx change).
- `POST /ingest/pause`, `POST /ingest/resume`: stop and restart consuming the stream (offsets stay committed;
  nothing is lost): for a poisoned stream or a store that must be repaired.

The CLI is `movielab recommender control …` (`movielab.recommender.controlcommands`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from movielab.auth import identity_of
from movielab.recommender.errors import ExperimentError, RegistryError

logger = logging.getLogger(__name__)


class PinBody(BaseModel):
    """`POST /serving/pin`: the registered version to serve, and why."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    version: int = Field(ge=1, le=10**12)
    reason: str = Field("pinned by hand", min_length=1, max_length=500)


class ReasonBody(BaseModel):
    """A mitigation that takes only a reason."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    reason: str = Field("incident mitigation", min_length=1, max_length=500)


def _operator_error():
    from movielab.recommender.errors import OperatorError

    return OperatorError


def _label_of(folder: Path) -> str:
    """`model/version` of a version folder, from its manifest."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    return f"{manifest['model']}/{manifest['version']}"


def _end_canary(operator, by: str, reason: str) -> str | None:
    """Roll back a running canary (all users to the champion); its name, or None when none runs."""
    exp = operator.experiment
    if exp is None or exp.finished:
        return None
    operator.override("rollback", by, reason)
    return exp.name


def _serving(operator):
    if operator.serving is None:
        raise _operator_error()("nothing is served yet: there is no champion to replace")
    return operator.serving


def pin(operator, version: int | str, by: str, reason: str = "pinned by hand") -> dict[str, Any]:
    """Serve registered `version` as champion everywhere, make it the registry's champion, freeze the schedule."""
    with operator._lock:
        serving = _serving(operator)
        registered = operator.registry.get(str(version))  # RegistryError when unknown
        folder = operator._prepare(operator.registry.folder(registered))
        ended = _end_canary(operator, by, f"pin of version {registered.version}: {reason}")
        serving.rollout(folder)
        operator.registry.promote(registered.version)
        operator.schedule_paused = True
        label = _label_of(folder)
        detail = f"pinned registry version {registered.version} by {by}: {reason}; scheduled retraining frozen"
        operator._updated("pin", label, _now(operator), detail + (f"; canary {ended} rolled back" if ended else ""))
        return {
            "serving": label,
            "registry_version": registered.version,
            "schedule_paused": True,
            "canary_rolled_back": ended,
        }


def rollback(operator, by: str, reason: str = "incident mitigation") -> dict[str, Any]:
    """Serve the champion that served before the current one; the registry's alias follows when it is registered."""
    with operator._lock:
        serving = _serving(operator)
        previous = getattr(serving, "previous", None)
        if previous is None:
            raise _operator_error()(
                "no earlier champion is known to serving (this process has served one "
                "version only): pin a registered version or fall back to popularity"
            )
        ended = _end_canary(operator, by, f"rollback of the champion: {reason}")
        current = _label_of(serving.champion)
        serving.rollout(Path(previous))
        label = _label_of(previous)
        registered = next(
            (
                v
                for v in operator.registry.versions()
                if f"{v.model}/{v.tags.get('artifact_version', v.version)}" == label
            ),
            None,
        )
        if registered is not None:
            operator.registry.promote(registered.version)
        else:
            logger.warning("rolled back to %s, which the registry does not hold: its champion alias stays", label)
        operator._updated(
            "rollback",
            label,
            _now(operator),
            f"champion {current} rolled back to {label} by {by}: "
            f"{reason}" + (f"; canary {ended} rolled back" if ended else ""),
        )
        return {
            "serving": label,
            "replaced": current,
            "canary_rolled_back": ended,
            "registry_version": registered.version if registered else None,
        }


def fallback(operator, by: str, reason: str = "incident mitigation") -> dict[str, Any]:
    """Train popularity on the store now, register it, serve it as champion and freeze the schedule."""
    from movielab.recommender.training import pipeline

    with operator._lock:
        serving = _serving(operator)
        trained = pipeline.train(operator.store, "popularity", operator.retrainer.artifacts)
        registered = operator.registry.register(trained, tags={"fallback": f"by {by}: {reason}"[:500]})
        folder = operator._prepare(trained.folder)
        ended = _end_canary(operator, by, f"fallback to popularity: {reason}")
        serving.rollout(folder)
        operator.registry.promote(registered.version)
        operator.schedule_paused = True
        label = _label_of(folder)
        operator._updated(
            "fallback",
            label,
            _now(operator),
            f"popularity fallback (registry version "
            f"{registered.version}) by {by}: {reason}; scheduled retraining frozen"
            + (f"; canary {ended} rolled back" if ended else ""),
        )
        return {
            "serving": label,
            "registry_version": registered.version,
            "schedule_paused": True,
            "canary_rolled_back": ended,
        }


def restart_replicas(operator, by: str) -> dict[str, Any]:
    """Start again the serving replicas whose process exited (a fleet only); the ports restarted."""
    with operator._lock:
        serving = _serving(operator)
        restart = getattr(serving, "restart_exited", None)
        if restart is None:
            raise _operator_error()("serving is one in-process server, not a fleet: there are no replicas to restart")
        ports = restart()
        if ports:
            operator._updated(
                "restart", _label_of(serving.champion), _now(operator), f"replicas on ports {ports} restarted by {by}"
            )
        return {"restarted": ports}


def set_ingest(operator, paused: bool, by: str) -> dict[str, Any]:
    """Pause or resume consuming the stream (the operator's ingestor); the new state."""
    ingestor = operator.ingestor
    if ingestor is None or not hasattr(ingestor, "paused"):
        raise _operator_error()("this operator has no ingestor to pause or resume")
    if paused:
        ingestor.paused.set()
    else:
        ingestor.paused.clear()
    logger.warning("ingest %s by %s", "paused" if paused else "resumed", by)
    return {"ingest_paused": paused}


def _now(operator) -> str | None:
    from movielab.recommender.training.retrain import stream_time

    t = stream_time(operator.store)
    return t.isoformat() if t else None


def mitigation_routes(operator) -> list[Route]:
    """The control-port routes above (the control app's token middleware guards them)."""
    from movielab.recommender.errors import FleetError
    from movielab.recommender.release.control import EmptyBody, _control_body

    operator_error = _operator_error()

    async def call(fn, *args) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(fn, *args))
        except (operator_error, ExperimentError) as exc:
            return JSONResponse({"error": str(exc)}, 409)
        except RegistryError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except FleetError as exc:  # a replica refused or died mid-operation: the answer says which
            return JSONResponse({"error": f"serving could not apply it: {exc}"}, 502)

    async def serving_action(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action not in ("pin", "rollback", "fallback", "restart"):
            return JSONResponse({"error": "unknown serving action: choose pin, rollback, fallback or restart"}, 404)
        body = await _control_body(
            request, PinBody if action == "pin" else EmptyBody if action == "restart" else ReasonBody
        )
        if isinstance(body, JSONResponse):
            return body
        by = identity_of(request)
        logger.warning("control: serving %s by %s", action, by)
        if action == "pin":
            return await call(pin, operator, body.version, by, body.reason)
        if action == "restart":
            return await call(restart_replicas, operator, by)
        return await call(rollback if action == "rollback" else fallback, operator, by, body.reason)

    async def ingest_action(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action not in ("pause", "resume"):
            return JSONResponse({"error": "unknown ingest action: choose pause or resume"}, 404)
        body = await _control_body(request, EmptyBody)
        if isinstance(body, JSONResponse):
            return body
        return await call(set_ingest, operator, action == "pause", identity_of(request))

    return [
        Route("/serving/{action:str}", serving_action, methods=["POST"]),
        Route("/ingest/{action:str}", ingest_action, methods=["POST"]),
    ]
