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
The operator is built with everything it drives by `recommender.bootstrap`; its HTTP face is `release.control`.
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

from movielab.recommender.errors import OperatorError
from movielab.recommender.ingest.coldstart import ColdStartList
from movielab.recommender.monitoring.exporter import IngestorCollector, OperatorMetrics
from movielab.recommender.monitoring.monitor import MonitorLoop
from movielab.recommender.monitoring.online import arm_metrics, by_arm
from movielab.recommender.release.canary import CanaryPlan, Experiment, salt_of
from movielab.recommender.serving.versions import write_segments
from movielab.recommender.store.events import EventStore
from movielab.recommender.training import pipeline
from movielab.recommender.training.retrain import Reference, Retrainer, RunRecord, stream_time

logger = logging.getLogger(__name__)


class ServingSide(Protocol):
    """What the operator asks of the serving side (`movielab.recommender.serving.fleet.Fleet` has it)."""

    champion: Path  # the version folder served as champion: the reference a candidate is canaried against

    def rollout(self, version: Path) -> Any: ...

    def load_challenger(self, version: Path, share: float = 0.0, salt: int = 0) -> None: ...

    def set_share(self, share: float, salt: int | None = None) -> Any: ...

    def promote(self) -> Any: ...

    def rollback(self) -> Any: ...


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

    def __init__(
        self,
        store: EventStore,
        retrainer: Retrainer,
        start_serving: Callable[[Path], ServingSide],
        folder: Path,
        plan: CanaryPlan | None = None,
        ingestor=None,
        metrics: OperatorMetrics | None = None,
        monitor_every: int = 5,
    ) -> None:
        self.store = store
        self.retrainer = retrainer
        self.registry = retrainer.registry
        self.start_serving = start_serving
        self.serving: ServingSide | None = None
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
        self._lock = threading.Lock()  # ticks, manual overrides and the HTTP control take turns (never nested)
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
                self._retrain("schedule")

    def _push_coldstart(self) -> None:
        """Hand new users' cold-start lists from ingestion to serving (they wait until something serves)."""
        worker = getattr(self.ingestor, "coldstart", None)
        push = getattr(self.serving, "set_coldstart", None)
        if worker is not None and push is not None:
            lists = worker.take()
            if lists:
                push(lists)

    def _serve_first(self, folder: Path) -> None:
        """Start serving `folder` (nothing served before), with the cold-start lists the store already holds."""
        self.serving = self.start_serving(folder)
        self._restore_coldstart()

    def _restore_coldstart(self) -> None:
        """Give serving every cold-start list in the store: lists made before a restart (or before a replica or a
        fleet came up) keep being served to users the model does not know yet (it answers the others itself)."""
        push = getattr(self.serving, "set_coldstart", None)
        if push is None or getattr(self.ingestor, "coldstart", None) is None:
            return
        lists = [
            ColdStartList(u, tuple(m), tuple(li), tuple(d), tuple(g), k, f)
            for u, m, li, d, g, k, f in self.store.coldstart_rows()
        ]
        if lists:
            push(lists)
            logger.info("serving %d stored cold-start lists again", len(lists))

    def retrain(self, trigger: str = "on demand") -> RunRecord:
        """One retraining run now (rolled out or canaried when accepted); the record says what happened."""
        with self._lock:
            return self._retrain(trigger)

    def _retrain(self, trigger: str) -> RunRecord:
        if self.experiment is not None and not self.experiment.finished:
            raise OperatorError(
                f"retraining now would replace the running canary {self.experiment.name!r}; "
                "promote or roll it back first"
            )
        self._run_started = time.perf_counter()
        # What serves is the reference, whatever the registry says (its champion may have been deleted). The
        # run returns its record; an accepted version is put into service by this operator's `_release`, which
        # the run times as its last stage (and a failure there fails the run and clears the challenger).
        record = self.retrainer.run(trigger, self._reference(), rollout=self._release)
        self.runs.append(record)
        if (
            record.status == "rejected"
            and record.snapshot
            and self.serving is None
            and self.registry.champion_version() is None
        ):
            self._serve_popularity_first(record)
        return record

    def _serve_popularity_first(self, record: RunRecord) -> None:
        """Nothing serves and no model beat popularity yet: popularity itself becomes the first champion,
        so the world gets answers (a team without a model answers nothing) until a model beats it."""
        try:
            trained = pipeline.train(self.store, "popularity", self.retrainer.artifacts, snapshot=record.snapshot["id"])
            registered = self.registry.register(trained, tags={"bootstrap": f"run {record.id}: {record.reason}"[:500]})
            self.registry.promote(registered.version)
            folder = self._prepare(trained.folder)
            if self.serving is None:
                self._serve_first(folder)
            else:
                self.serving.rollout(folder)
        except Exception:  # the next scheduled run tries again
            logger.exception("bootstrapping popularity as the first champion failed")
            return
        self._updated(
            "champion",
            f"popularity/{trained.manifest['version']}",
            record.stream_time,
            f"bootstrap: registry version {registered.version}; {record.reason}",
        )

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
            self._serve_first(self._prepare(self.registry.folder(champ)))
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
        """Put an accepted version into service: the first champion starts serving, a challenger starts a canary."""
        folder = self._prepare(Path(record.folder))
        label = f"{record.model}/{record.artifact_version}"
        if record.champion_alias_missing:
            logger.warning(
                "the registry's champion alias is missing (version deleted?); %s is canaried against the serving %s",
                label,
                record.reference,
            )
        if record.decision == "champion":
            if self.serving is None:
                self._serve_first(folder)
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
        self.metrics.set_cost(
            by_arm(metrics, "cost_per_play"), by_arm(metrics, "cost_per_1000_requests"), self._arm_labels()
        )
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
        write_segments(Path(folder) / "segments.json", self.store.user_segments())
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
        logger.info(
            "update: %s %s at stream time %s (%s s from retraining start) %s", kind, version, at, seconds, detail
        )

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
                "experiment": None
                if exp is None
                else {
                    "name": exp.name,
                    "status": exp.status,
                    "share": exp.share,
                    "step": exp.step,
                    "decisions": exp.decisions[-5:],
                },
                "runs": [r.as_dict() for r in self.runs[-5:]],
                "updates": [u.__dict__ for u in self.updates[-10:]],
            }


def _label(mv) -> str:
    """`model/artifact version` of a registered version, as serving's X-Model header names it."""
    return f"{mv.model}/{mv.tags.get('artifact_version', mv.version)}"
