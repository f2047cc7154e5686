"""The operator: the long-running process that runs the recommender without a person.

One process owns the event store (DuckDB allows one) and does everything that needs it:
- ingest: the Kafka consumer thread (`Ingestor`) fills the store;
- retrain: on a schedule of stream time, `Retrainer` snapshots, checks, trains, gates and registers;
- release: the first accepted version is rolled out to the serving fleet as champion; every later one
  starts a canary (`Experiment`): sticky traffic split, per-arm metrics from the stream, SRM check and
  sequential test at every tick, automatic promotion or rollback;
- monitor: `MonitorLoop` sets the Prometheus gauges (ingest, availability, drift, feedback loop) that
  the operator's `/metrics` serves next to its control endpoints.

Serving is separate processes (`Fleet`: replicas behind nginx, or any object with the same operations),
so a failed retraining run never touches what is served: it is a record with a reason, and the champion
keeps answering. Every update is kept in `updates.jsonl` (what changed, when, how long from the start of
the retraining run to the new version answering traffic), every experiment in `experiments/`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from movielab.auth import RequireToken, Tokens, ensure_tokens, identity_of
from movielab.contract.editions import edition
from movielab.recommender import pipeline, serve
from movielab.recommender.experiments import CanaryPlan, Experiment, ExperimentError, salt_of
from movielab.recommender.monitor import IngestorCollector, MonitorLoop, OperatorMetrics, create_metrics_app
from movielab.recommender.online import arm_metrics, by_arm
from movielab.recommender.registry import RegistryError
from movielab.recommender.retrain import Reference, Retrainer, RunRecord, stream_time
from movielab.recommender.store import EventStore
from movielab.webserver import ServerThread

logger = logging.getLogger(__name__)

TOKEN_FILE = "access.tokens"  # next to the store: control and admin tokens (mode 0600)


class Serving(Protocol):
    """What the operator asks of the serving side (`movielab.recommender.fleet.Fleet` has it)."""

    champion: Path  # the version folder served as champion: the reference a candidate is canaried against

    def rollout(self, version: Path) -> Any: ...

    def load_challenger(self, version: Path, share: float = 0.0, salt: int = 0) -> None: ...

    def set_share(self, share: float, salt: int | None = None) -> Any: ...

    def promote(self) -> Any: ...

    def rollback(self) -> Any: ...


class OneServer:
    """Serving by one in-process server (demo, tests): the same operations as a `Fleet`, on one app."""

    def __init__(self, version: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        loaded = serve.load_version(version)
        self.app = serve.create_app(loaded.table, folder=loaded.folder, manifest=loaded.manifest)
        self.server = ServerThread(self.app, host, port).start()
        self.url = self.server.url
        self.previous: Path | None = None  # the champion before the last rollout or promotion

    @property
    def champion(self) -> Path:
        """The version folder served as champion."""
        return Path(self.app.state.serving.champion.folder)

    def rollout(self, version: Path) -> None:
        """Serve `version` as champion (built first, then swapped in with one assignment)."""
        loaded = serve.load_version(version)
        self.previous = self.champion
        serve.swap(self.app, loaded.table, loaded.folder, loaded.manifest)
        serve.prune_coldstart(self.app)  # users the new version knows no longer need their first list

    def load_challenger(self, version: Path, share: float = 0.0, salt: int = 0) -> None:
        """Serve `version` to `share` of the users, bucketed by `salt`."""
        loaded = serve.load_version(version)
        serve.set_challenger(self.app, loaded.table, share, salt, loaded.folder, loaded.manifest)

    def set_share(self, share: float, salt: int | None = None) -> None:
        """Route `share` of the users to the challenger."""
        serve.set_share(self.app, share, salt)

    def promote(self) -> None:
        """The challenger becomes the champion."""
        self.previous = self.champion
        serve.promote(self.app)

    def rollback(self) -> None:
        """Every user back to the champion."""
        serve.drop_challenger(self.app)

    def set_coldstart(self, lists: list) -> None:
        """Serve new users' cold-start lists (`serve.set_coldstart`)."""
        serve.set_coldstart(self.app, lists)

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()


class OperatorError(RuntimeError):
    """An operation the operator's state does not allow; names the operation and why."""


@dataclass
class Update:
    """One change of what is served: kind, versions, and the time from the run's start to serving."""

    kind: str  # champion | canary | promote | rollback; by hand (mitigate.py): pin | fallback | restart
    version: str  # model/version now served (or dropped, for a rollback)
    stream_time: str
    wall_time: str
    seconds_to_serving: float | None = None  # retraining run start → the version answers traffic
    detail: str = ""


class Operator:
    """Ingest, retrain, release by canary, monitor; call `tick()` from a loop (or run `start()`'s thread)."""

    def __init__(self, store: EventStore, retrainer: Retrainer, start_serving: Callable[[Path], Serving],
                 folder: Path, plan: CanaryPlan | None = None, ingestor=None,
                 metrics: OperatorMetrics | None = None, monitor_every: int = 5) -> None:  # fmt: skip
        self.store = store
        self.retrainer = retrainer
        self.registry = retrainer.registry
        self.retrainer.rollout = self._release
        self.start_serving = start_serving
        self.serving: Serving | None = None
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.plan = plan or CanaryPlan()
        self.ingestor = ingestor
        self.metrics = metrics or OperatorMetrics()
        if ingestor is not None:
            self.metrics.registry.register(IngestorCollector(ingestor))
        self.monitor = MonitorLoop(self.metrics)
        self.monitor_every = monitor_every
        self.experiment: Experiment | None = None
        self.experiment_versions: dict[str, str] = {}  # arm -> registry version of the running experiment
        self.updates: list[Update] = []
        self.runs: list[RunRecord] = []
        self.ticks = 0
        self.schedule_paused = False  # a freeze: no scheduled retraining (on-demand runs and canaries go on)
        self._lock = threading.RLock()  # ticks, manual overrides and the HTTP control take turns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_started: float | None = None

    # --- the loop --------------------------------------------------------------------------------
    def tick(self) -> None:
        """One step: monitor, judge a running canary, or retrain when the schedule says so."""
        with self._lock:
            self.ticks += 1
            now = stream_time(self.store)
            if now is None:
                return
            if self.ticks % self.monitor_every == 1 or self.monitor_every == 1:
                try:
                    self.monitor.update(self.store, now)
                except Exception:  # monitoring must never stop releases
                    logger.exception("monitor update failed at stream time %s", now)
            self._push_coldstart()
            if self.experiment is not None and not self.experiment.finished:
                self._judge(now)
            elif self.retrainer.due(now) and not self.schedule_paused:
                self.retrain("schedule")

    def _push_coldstart(self) -> None:
        """Hand new users' cold-start lists from ingestion to serving (they wait until something serves)."""
        worker = getattr(self.ingestor, "coldstart", None)
        push = getattr(self.serving, "set_coldstart", None)
        if worker is not None and push is not None:
            lists = worker.take()
            if lists:
                push(lists)

    def retrain(self, trigger: str = "on demand") -> RunRecord:
        """One retraining run now (rolled out or canaried when accepted); the record says what happened."""
        with self._lock:
            if self.experiment is not None and not self.experiment.finished:
                raise OperatorError(f"retraining now would replace the running canary {self.experiment.name!r}; "
                                    "promote or roll it back first")  # fmt: skip
            self._run_started = time.perf_counter()
            # What serves is the reference, whatever the registry says (its champion may have been deleted)
            record = self.retrainer.run(trigger, self._reference())
            self.runs.append(record)
            if (record.status == "rejected" and record.snapshot and self.serving is None
                    and self.registry.champion_version() is None):  # fmt: skip
                self._bootstrap(record)
            return record

    def _bootstrap(self, record: RunRecord) -> None:
        """Nothing serves and no model beat popularity yet: popularity itself becomes the first champion,
        so the world gets answers (a team without a model answers nothing) until a model beats it."""
        try:
            trained = pipeline.train(self.store, "popularity", self.retrainer.artifacts, snapshot=record.snapshot["id"])
            registered = self.registry.register(trained, tags={"bootstrap": f"run {record.id}: {record.reason}"[:500]})
            self.registry.promote(registered.version)
            folder = self._prepare(trained.folder)
            if self.serving is None:
                self.serving = self.start_serving(folder)
            else:
                self.serving.rollout(folder)
        except Exception:  # the next scheduled run tries again
            logger.exception("bootstrapping popularity as the first champion failed")
            return
        self._updated("champion", f"popularity/{trained.manifest['version']}", record.stream_time,
                      f"bootstrap: registry version {registered.version}; {record.reason}")  # fmt: skip

    def start(self, tick_seconds: float = 2.0) -> Operator:
        """Tick in a background thread every `tick_seconds` until `stop()`."""
        self.resume()

        def loop() -> None:
            while not self._stop.wait(tick_seconds):
                try:
                    self.tick()
                except Exception:  # the service boundary: log, keep operating
                    logger.exception("operator tick failed")

        self._thread = threading.Thread(target=loop, name="operator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop ticking (serving and ingest belong to whoever started them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def resume(self) -> None:
        """After a restart: serve the registry's champion and continue an unfinished experiment."""
        with self._lock:
            champ = self.registry.champion_version()
            if champ is None or self.serving is not None:
                return
            self.serving = self.start_serving(self._prepare(self.registry.folder(champ)))
            path = self.folder / "experiment.json"
            if path.is_file():
                exp = Experiment.load(path)
                challenger = self.registry.challenger_version()
                if not exp.finished and challenger is not None:
                    self.experiment = exp
                    self.experiment_versions = {"champion": champ.version, "challenger": challenger.version}
                    self.serving.load_challenger(self._prepare(self.registry.folder(challenger)), exp.share, exp.salt)
                    logger.info("continuing experiment %s at share %g", exp.name, exp.share)

    # --- releases --------------------------------------------------------------------------------
    def _release(self, registered, record: RunRecord) -> None:
        """The retrainer's rollout step: the first champion starts serving, a challenger starts a canary."""
        folder = self._prepare(Path(record.folder))
        label = f"{record.model}/{record.artifact_version}"
        if record.champion_alias_missing:
            logger.warning("the registry's champion alias is missing (version deleted?); %s is canaried against "
                           "the serving %s", label, record.reference)  # fmt: skip
        if record.decision == "champion":
            if self.serving is None:
                self.serving = self.start_serving(folder)
            else:
                self.serving.rollout(folder)
            self._updated("champion", label, record.stream_time, f"registry version {registered.version}")
        else:
            self._start_canary(folder, registered, label, record.stream_time)

    def start_canary(self, registered) -> Experiment:
        """Canary a registered version by hand (e.g. one the gate never saw): it becomes the challenger."""
        with self._lock:
            if self.serving is None:
                raise OperatorError("nothing is served yet: a canary needs a champion to compare with")
            if self.experiment is not None and not self.experiment.finished:
                raise OperatorError(f"experiment {self.experiment.name!r} is still running")
            registered = self.registry.set_challenger(registered.version)
            folder = self._prepare(self.registry.folder(registered))
            label = _label(registered)
            self._run_started = time.perf_counter()
            now = stream_time(self.store)
            return self._start_canary(folder, registered, label, now.isoformat() if now else None)

    def _start_canary(self, folder: Path, registered, label: str, at: str | None) -> Experiment:
        champ = self.registry.champion_version()
        ref = None if champ else self._reference()
        champion_label = _label(champ) if champ else (ref.label if ref else "none")
        stamp = datetime.fromisoformat(at) if at else datetime.now(UTC).replace(tzinfo=None)
        name = f"canary-v{registered.version}-{stamp:%Y%m%dT%H%M%S}"
        self.serving.load_challenger(folder, self.plan.steps[0], salt_of(name))
        # The step starts once the challenger answers: stream time after the load (events still in flight
        # from before it count for the champion's answers; the ingest lag bounds that share).
        now = max(stamp, stream_time(self.store) or stamp)
        exp = Experiment.start(name, champion_label, label, self.plan, now)
        self.experiment = exp
        self.experiment_versions = {"champion": champ.version if champ else "", "challenger": registered.version}
        self._save_experiment()
        self._updated("canary", label, now.isoformat(), f"{name}: {exp.share:.0%} of users, salt {exp.salt}")
        return exp

    def _judge(self, now: datetime) -> None:
        exp = self.experiment
        if now <= exp.step_started_at:
            return
        metrics = arm_metrics(self.store, exp.step_started_at, now, exp.salt, exp.share, pre_end=exp.started_at)
        self.metrics.set_conversion(by_arm(metrics, "conversion"), self._arm_labels())
        self.metrics.set_cost(by_arm(metrics, "cost_per_play"), by_arm(metrics, "cost_per_1000_requests"),
                              self._arm_labels())  # fmt: skip
        decision = exp.evaluate(now, metrics["champion"], metrics["challenger"])
        self._apply(decision.action, now)

    def _apply(self, action: str, now: datetime) -> None:
        exp = self.experiment
        if action == "advance":
            self.serving.set_share(exp.share, exp.salt)
            logger.info("experiment %s: challenger share now %g", exp.name, exp.share)
        elif action == "promote":
            self.serving.promote()
            self.registry.promote(self.experiment_versions["challenger"])
            self._run_started = None
            self._updated("promote", exp.challenger, now.isoformat(), exp.decisions[-1]["reason"])
        elif action == "rollback":
            self.serving.rollback()
            self.registry.clear_challenger()
            self._run_started = None
            self._updated("rollback", exp.challenger, now.isoformat(), exp.decisions[-1]["reason"])
        self._save_experiment()  # every verdict, waits included: `status` and a restart see the latest

    def override(self, action: str, by: str, reason: str) -> dict:
        """Manual promote / rollback / pause / resume of the running canary; the decision it recorded."""
        with self._lock:
            exp = self.experiment
            if exp is None or exp.finished:
                raise OperatorError(f"no running experiment to {action}")
            if action not in ("promote", "rollback", "pause", "resume"):
                raise OperatorError(f"unknown override {action!r}: choose promote, rollback, pause or resume")
            now = stream_time(self.store) or exp.last_time
            now = max(now, exp.last_time)
            decision = getattr(exp, action)(now, by, reason)
            self._apply(action, now)
            return decision.as_dict()

    def _reference(self) -> Reference | None:
        """The champion actually serving (from its folder's manifest), None when nothing serves."""
        return None if self.serving is None else Reference.of(self.serving.champion)

    def _prepare(self, folder: Path) -> Path:
        """Write the store's user segments next to a version, for replicas (they have no store)."""
        serve.write_segments(Path(folder) / "segments.json", self.store.user_segments())
        return Path(folder)

    def _arm_labels(self) -> dict[str, str]:
        exp = self.experiment
        return {"champion": exp.champion, "challenger": exp.challenger} if exp else {}

    def _save_experiment(self) -> None:
        exp = self.experiment
        exp.save(self.folder / "experiment.json")
        if exp.finished:
            done = self.folder / "experiments"
            done.mkdir(exist_ok=True)
            exp.save(done / f"{exp.name}.json")

    def _updated(self, kind: str, version: str, at: str | None, detail: str) -> None:
        seconds = None
        if kind in ("champion", "canary") and self._run_started is not None:
            seconds = round(time.perf_counter() - self._run_started, 2)
        update = Update(kind, version, at or "", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), seconds, detail)
        self.updates.append(update)
        with (self.folder / "updates.jsonl").open("a") as f:
            f.write(json.dumps(update.__dict__) + "\n")
        logger.info("update: %s %s at stream time %s (%s s from retraining start) %s", kind, version, at, seconds,
                    detail)  # fmt: skip

    # --- what the operator tells -----------------------------------------------------------------
    def status(self) -> dict:
        """What is served, the running experiment, the last runs and updates (JSON)."""
        with self._lock:
            champ = self.registry.champion_version()
            challenger = self.registry.challenger_version()
            exp = self.experiment
            return {
                "stream_time": (t.isoformat() if (t := stream_time(self.store)) else None),
                "schedule_paused": self.schedule_paused,
                "ingest_paused": bool(getattr(self.ingestor, "paused", None) and self.ingestor.paused.is_set()),
                "champion": champ.as_dict() if champ else None,
                "challenger": challenger.as_dict() if challenger else None,
                "experiment": None if exp is None else {"name": exp.name, "status": exp.status, "share": exp.share,
                                                        "step": exp.step, "decisions": exp.decisions[-5:]},
                "runs": [r.as_dict() for r in self.runs[-5:]],
                "updates": [u.__dict__ for u in self.updates[-10:]],
            }  # fmt: skip


def _label(mv) -> str:
    """`model/artifact version` of a registered version, as serving's X-Model header names it."""
    return f"{mv.model}/{mv.tags.get('artifact_version', mv.version)}"


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
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False)[:5])  # fmt: skip
        return JSONResponse({"error": f"bad request body: {problems}"}, 400)


def create_control_app(operator: Operator, tokens: Tokens) -> Starlette:
    """The operator's HTTP face, for a loopback listener: `/metrics` (Prometheus, no token) and, with a token of
    `tokens` (401 otherwise), `/status`, the manual overrides `POST /canary/{promote,rollback,pause,resume}`
    with JSON `{"reason": ...}` (recorded `by` the token's identity), a hand-started canary `POST /canary/start`
    with `{"version": <registered version>}`, `POST /retrain`, a freeze of the schedule:
    `POST /schedule/pause` / `POST /schedule/resume`, and the incident mitigations of
    `movielab.recommender.mitigate` (pin, rollback, fallback, replicas restart, ingest pause/resume)."""

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(operator.status))  # waits for a tick, not the event loop

    async def override(request: Request) -> JSONResponse:
        action = request.path_params["action"]
        if action not in ("start", "promote", "rollback", "pause", "resume"):
            return JSONResponse({"error": "unknown canary action: choose start, promote, rollback, pause or "
                                 "resume"}, 404)  # fmt: skip
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
        logger.info("control: scheduled retraining %s by %s", "paused" if operator.schedule_paused else "resumed",
                    identity_of(request))  # fmt: skip
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

    from movielab.recommender.mitigate import mitigation_routes

    app = create_metrics_app(operator.metrics)
    app.router.routes.extend([
        Route("/status", status, methods=["GET"]),
        Route("/canary/{action}", override, methods=["POST"]),
        Route("/retrain", retrain, methods=["POST"]),
        Route("/schedule/{action:str}", schedule, methods=["POST"]),
        *mitigation_routes(operator),
    ])  # fmt: skip
    app.add_middleware(RequireToken, tokens=tokens, open_paths=("/metrics",))
    return app


def run(config, replicas: int = 2, control_port: int = 8083, tick_seconds: float = 2.0,
        plan: CanaryPlan | None = None, stop: threading.Event | None = None,
        on_ready: Callable[[Operator, str], None] | None = None, control_host: str = "127.0.0.1",
        keep_serving: bool = False) -> Operator:  # fmt: skip
    """The whole recommender from a `RecommenderConfig`, until `stop` is set (or SIGINT/SIGTERM in the main
    thread): ingest, operator ticks, serving (`replicas` processes behind nginx on `config.host:port`, or with 0
    one in-process server), `/metrics` and the control endpoints on `control_host:control_port` (loopback by
    default, whatever `config.host` is). Control and the replicas' admin ports accept the tokens in
    `access.tokens` next to the store (created with mode 0600 at first start). The fleet outlives this process
    if it is killed, and the next `run` adopts it; `keep_serving` leaves it running on a clean stop too."""
    import signal

    from movielab.kafka.admin import topic_name
    from movielab.recommender.ingest import Ingestor
    from movielab.recommender.worldapi import WorldApi

    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    base = Path(config.store).parent
    base.mkdir(parents=True, exist_ok=True)
    servings: list = []
    tokens_path = base / TOKEN_FILE
    tokens = ensure_tokens(tokens_path, "operator")

    def start_serving(version: Path) -> Serving:
        if replicas == 0:
            servings.append(OneServer(version, config.host, config.port))
        else:
            from movielab.recommender.fleet import Fleet

            # Versions come from the artifacts (a fresh run) and from the registry's download cache (resume).
            roots = [Path(config.artifacts), Path(operator.registry.cache)]
            fleet = Fleet(base / "fleet", version, replicas, config.port, config.host, tokens=tokens_path,
                          root=roots)  # fmt: skip
            servings.append(fleet.start())
        return servings[-1]

    with EventStore(config.store) as store, WorldApi(config.world_api) as api:
        ingestor = Ingestor(config.kafka, [topic_name(config.team)], store, api, edition=edition(config.edition),
                            coldstart=edition(config.edition).self_descriptions)  # fmt: skip
        operator = Operator(store, Retrainer.from_config(config, store), start_serving, base / "operator", plan,
                            ingestor)  # fmt: skip
        ingest = threading.Thread(target=lambda: ingestor.run(stop), name="ingest", daemon=True)
        control = ServerThread(create_control_app(operator, tokens), control_host, control_port).start()
        try:
            ingest.start()
            operator.start(tick_seconds)
            logger.info("operator on %s (metrics, status, canary overrides); serving on http://%s:%d",
                        control.url, config.host, config.port)  # fmt: skip
            if on_ready is not None:
                on_ready(operator, control.url)
            stop.wait()
        finally:
            operator.stop()
            control.stop()
            stop.set()
            ingest.join(timeout=60)
            for s in servings:
                if keep_serving and hasattr(s, "detach"):
                    s.detach()  # replicas and nginx keep answering; the next operator adopts them
                else:
                    s.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
    return operator
