"""Automatic retraining: snapshot → data checks → train → offline gate → register → hand to rollout.

Runs inside the operator process (the DuckDB store allows one process), on a schedule of stream time
(every N hours of event time, read from the store) and on demand. Every run yields a `RunRecord`
(accepted / rejected / failed, the reason, the gate's metrics, the snapshot, the versions, seconds per
stage) that is logged and appended to a JSON-lines file. A run never raises: a bad snapshot or a
model that fails the gate is a rejection with a reason, an exception in any stage is a failed run, and
the registry's champion alias moves only as the last step of an accepted run.

The data checks, the output check and the offline gate are in `training.gate`. With no champion yet, the first accepted
version becomes the champion; later ones become the challenger. The run returns its record to the caller;
the caller's rollout step (`run(rollout=...)`, the operator's release) is timed as the run's last stage.

The model actually serving is the reference, whatever the registry says: when the caller names what
serves (`run(serving=Reference.of(folder))`) and the registry has no champion alias (its version was
deleted, and the alias with it), the candidate is gated against the serving model's recipe and becomes
the challenger, to be canaried against it; it never becomes champion without a canary. The record says
so (`champion_alias_missing`), and it is logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from movielab.recommender.errors import ModelFitError
from movielab.recommender.store.events import EventStore
from movielab.recommender.training import pipeline
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.gate import RetrainPolicy, check_data, gate
from movielab.recommender.training.pipeline import Trained
from movielab.recommender.training.registry import RegisteredVersion

logger = logging.getLogger(__name__)

Status = Literal["accepted", "rejected", "failed"]
STAGES = ("snapshot", "checks", "train", "gate", "register", "rollout")


@dataclass
class RunRecord:
    """What one retraining run did and why; `as_dict` is what the JSON-lines file keeps."""

    id: str
    trigger: str
    started_at: str
    model: str
    params: dict[str, Any]
    stream_time: str | None = None
    status: Status = "failed"
    stage: str = ""  # the last stage the run entered
    reason: str = ""
    snapshot: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_version: str | None = None
    folder: str | None = None
    registered_version: str | None = None
    run_id: str | None = None
    decision: str | None = None  # "champion" or "challenger" for an accepted run
    seconds: dict[str, float] = field(default_factory=dict)
    reference: str | None = None  # what the candidate was judged against: "registry version 3", "serving ease/v0002"
    champion_alias_missing: bool = False  # a model serves but the registry names no champion

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """The model actually serving as champion: its recipe (model class and parameters) and its label."""

    model: str
    params: dict[str, Any]
    label: str  # "<model>/<artifact version>", e.g. "ease/v0002"

    @classmethod
    def of(cls, folder: Path | str) -> Reference:
        """The reference a served version folder describes (its manifest.json); ValueError names the folder."""
        path = Path(folder) / "manifest.json"
        try:
            m = json.loads(path.read_text())
            return cls(str(m["model"]), dict(m.get("params") or {}), f"{m['model']}/{m['version']}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"served version {folder}: cannot read model, params and version from {path}: {exc!r}"
            ) from None


class RegistryLike(Protocol):
    """What retraining needs of `registry.Registry` (tests may pass a fake)."""

    def champion_version(self): ...
    def register(
        self, trained: Trained, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None
    ): ...
    def promote(self, version: str | int): ...
    def set_challenger(self, version: str | int): ...
    def clear_challenger(self) -> None: ...
    def folder(self, mv) -> Path: ...


Rollout = Callable[[RegisteredVersion, RunRecord], None]  # serve a new champion, or start a canary with a challenger


class _Rejected(Exception):
    """A run stops with a reason (not an error): bad data or a candidate that fails the gate."""


# --- the pipeline ------------------------------------------------------------------------------------
def stream_time(store: EventStore) -> datetime | None:
    """Time of the latest stored event (the stream's clock), None for an empty store."""
    times = store.latest_times().values()
    return max(times) if times else None


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every run record kept in a JSON-lines file, oldest first (none if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Retrainer:
    """Retrain on a schedule of stream time and on demand; keep a record of every run."""

    def __init__(
        self,
        store: EventStore,
        registry: RegistryLike,
        artifacts: Path,
        policy: RetrainPolicy,
        log_path: Path,
        rollout: Rollout | None = None,
    ) -> None:
        """Retrain from `store` into `artifacts`, register in `registry`, append records to `log_path`."""
        self.store = store
        self.registry = registry
        self.artifacts = Path(artifacts)
        self.policy = policy
        self.log_path = Path(log_path)
        self.rollout = rollout
        self.last_stream_time = self._last_stream_time()
        self._running = threading.Lock()  # one run at a time, even if a schedule and a request meet

    @classmethod
    def from_config(cls, config, store: EventStore, rollout: Rollout | None = None) -> Retrainer:
        """The retrainer a `RecommenderConfig` describes (its registry, artifacts, policy and run log)."""
        from movielab.recommender.training.registry import Registry

        log = Path(config.artifacts).parent / "retrain.jsonl"
        return cls(
            store, Registry.from_config(config), config.artifacts, RetrainPolicy.from_config(config), log, rollout
        )

    def _last_stream_time(self) -> datetime | None:
        """Stream time of the last kept run, so a restarted operator keeps the schedule."""
        for rec in reversed(read_records(self.log_path)):
            if rec.get("stream_time"):
                return datetime.fromisoformat(rec["stream_time"])
        return None

    def due(self, now: datetime | None = None) -> bool:
        """Whether `every_hours` of stream time have passed since the last run (or no run happened yet)."""
        now = stream_time(self.store) if now is None else now
        if now is None:
            return False
        last = self.last_stream_time
        return last is None or now - last >= timedelta(hours=self.policy.every_hours)

    def maybe_run(self) -> RunRecord | None:
        """Run when due by the schedule (call it from the operator's loop); None when not due."""
        now = stream_time(self.store)
        if not self.due(now):
            return None
        return self.run(trigger="schedule")

    def run(
        self, trigger: str = "on demand", serving: Reference | None = None, rollout: Rollout | None = None
    ) -> RunRecord:
        """One full run now; never raises (a failure is a record with status `failed`); returns its record.

        `serving`: the model actually serving as champion, if any; with it, a candidate is never made
        champion directly, even when the registry has lost its champion alias. `rollout(registered, record)`:
        the caller's step that puts an accepted version into service (default: the one given at construction,
        if any), timed as the run's last stage; when it raises, the run fails and a challenger is cleared.
        """
        p = self.policy
        record = RunRecord(uuid.uuid4().hex[:12], trigger, _utc_iso(), p.model, dict(p.params))
        t0 = time.perf_counter()
        if not self._running.acquire(blocking=False):
            record.status, record.reason = "rejected", "another retraining run is in progress"
            self._keep(record)
            return record
        try:
            self._run(record, serving, self.rollout if rollout is None else rollout)
        except _Rejected as rejected:
            record.status, record.reason = "rejected", str(rejected)
        except Exception as exc:  # the service boundary: the operator must survive any stage's error
            record.status, record.reason = "failed", f"{record.stage} failed: {type(exc).__name__}: {exc}"
            logger.exception("retraining run %s failed in stage %s", record.id, record.stage)
        finally:
            self._running.release()
        record.seconds["total"] = round(time.perf_counter() - t0, 3)
        if record.stream_time:
            self.last_stream_time = datetime.fromisoformat(record.stream_time)
        self._keep(record)
        return record

    def _run(self, record: RunRecord, serving: Reference | None, rollout: Rollout | None) -> None:
        p = self.policy
        with _stage(record, "snapshot"):
            now = stream_time(self.store)
            if now is None:
                raise _Rejected("the store holds no events yet")
            record.stream_time = now.isoformat()
            start = now - timedelta(days=p.window_days)
            end = now + timedelta(microseconds=1)  # the window's end is exclusive: keep the latest event
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            snap = self.store.create_snapshot(f"retrain-{now:%Y%m%dT%H%M%S}-{stamp}", start, end)
            record.snapshot = {
                "id": snap.id,
                "name": snap.name,
                "hash": snap.content_hash,
                "rows": snap.rows,
                "window": [start.isoformat(), end.isoformat()],
            }
        with _stage(record, "checks"):
            data = TrainingData.from_snapshot(self.store, snap)
            problem = check_data(self.store, snap, data, p)
            if problem:
                raise _Rejected(f"data check: {problem}")
        with _stage(record, "train"):
            try:
                # The checks just built the snapshot's training data: training reuses it, not the query.
                trained = pipeline.train(self.store, p.model, self.artifacts, snapshot=snap, params=p.params, data=data)
            except ModelFitError as exc:
                raise _Rejected(f"training gave no safe model: {exc}") from None
            record.artifact_version, record.folder = trained.manifest["version"], str(trained.folder)
            record.params = trained.manifest["params"]
        with _stage(record, "gate"):
            champ = self.registry.champion_version()
            recipe = None if champ is None else (champ.model, champ.params)
            record.reference = None if champ is None else f"registry version {champ.version}"
            if champ is None and serving is not None:
                record.champion_alias_missing = True
                recipe, record.reference = (serving.model, serving.params), f"serving {serving.label}"
                logger.warning(
                    "retraining run %s: the registry has no champion alias but %s serves; the "
                    "candidate is judged against it and canaried, not made champion",
                    record.id,
                    serving.label,
                )
            verdict = gate(trained.model, data, recipe, p)
            record.metrics = verdict.metrics
            if not verdict.accepted:
                raise _Rejected(f"gate: {verdict.reason}")
            record.reason = verdict.reason
        with _stage(record, "register"):
            registered = self.registry.register(
                trained, verdict.metrics, tags={"retrain_run": record.id, "gate": verdict.reason}
            )
            record.registered_version, record.run_id = registered.version, registered.run_id
            if champ is None and serving is None:  # nothing serves: there is nothing to canary against
                registered = self.registry.promote(registered.version)
                record.decision = "champion"
            else:
                registered = self.registry.set_challenger(registered.version)
                record.decision = "challenger"
        if rollout is not None:
            with _stage(record, "rollout"):
                try:
                    rollout(registered, record)
                except Exception:
                    if record.decision == "challenger":  # a challenger nobody tries is no challenger
                        self.registry.clear_challenger()
                    raise
        record.status = "accepted"

    def _keep(self, record: RunRecord) -> None:
        """Log the record and append it to the JSON-lines file."""
        log = logger.info if record.status == "accepted" else logger.warning
        log(
            "retraining run %s (%s) %s at %s: %s; version %s, %s s",
            record.id,
            record.trigger,
            record.status,
            record.stage,
            record.reason,
            record.registered_version,
            record.seconds.get("total"),
        )
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:
                f.write(json.dumps(record.as_dict(), default=str) + "\n")
        except OSError:
            logger.exception("retraining run %s could not be kept in %s", record.id, self.log_path)


@contextmanager
def _stage(record: RunRecord, name: str) -> Iterator[None]:
    """Enter a stage: the record names it (so a failure says where) and keeps its seconds."""
    record.stage = name
    t = time.perf_counter()
    try:
        yield
    finally:
        record.seconds[name] = round(time.perf_counter() - t, 3)


def _utc_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
