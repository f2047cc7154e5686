"""The model registry: every trained version as an MLflow run and registered-model version, with lineage.

One registered model per team (`movielab-team<N>`). A version's run holds the hyper-parameters as
params; the snapshot (id, content hash, window, rows), code version, model name and artifact version
as tags; the gate's offline metrics and the training time as metrics; and the version folder (arrays +
JSON + manifest.json, never a pickle) as the run's artifacts under `model/`. The aliases `champion`
and `challenger` name what serves and what is being tried. A lookup returns a local folder that
`pipeline.load` reads: the registry downloads the version's artifacts once into a cache folder and
writes `registration.json` (registered name, version, run id) beside them, so a serving process can
tell its MLflow lineage without importing MLflow.

The default backend is sqlite next to the artifacts (`sqlite:///<dir>/mlflow.db`, artifacts in
`<dir>/mlruns`); any MLflow tracking server works by URL. MLflow is imported here only, when a
`Registry` is built: serving never pays for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from movielab.recommender.errors import RegistryError
from movielab.recommender.training.pipeline import Trained

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EXPERIMENT = "movielab-recommender"
REGISTRATION_FILE = "registration.json"
ARTIFACT_PATH = "model"  # the version folder's place inside the run's artifacts


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version: its number, run, aliases and lineage tags."""

    name: str  # registered model name, e.g. movielab-team1
    version: str  # MLflow's version number, as a string ("1", "2", …)
    run_id: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)  # model, artifact_version, snapshot_id, code_version, …
    created_ms: int = 0

    @property
    def model(self) -> str:
        """The model kind (ease, als, …)."""
        return self.tags.get("model", "")

    @property
    def params(self) -> dict[str, Any]:
        """The exact hyper-parameters (JSON, types kept) that rebuild this model."""
        return json.loads(self.tags.get("params_json", "{}"))

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        out = asdict(self)
        out["aliases"] = list(self.aliases)
        return out


def default_tracking_uri(artifacts: Path) -> str:
    """`sqlite:///<artifacts parent>/mlflow.db`: the registry lives next to the model folders."""
    return f"sqlite:///{(Path(artifacts).resolve().parent / 'mlflow.db').as_posix()}"


def registered_name(team: int) -> str:
    """The registered model name of a team."""
    return f"movielab-team{team}"


class Registry:
    """Register trained versions in MLflow and move the champion/challenger aliases."""

    def __init__(self, tracking_uri: str, name: str, cache: Path, artifact_root: Path | None = None) -> None:
        """Connect to `tracking_uri` (sqlite:///… or a server URL); `cache` holds downloaded version folders.

        `artifact_root` is where a new experiment stores artifacts (a local folder for the sqlite default);
        None leaves it to the tracking server.
        """
        # No usage data leaves this machine (MLflow 3 sends telemetry unless told not to).
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # logs, not a progress bar
        from mlflow.tracking import MlflowClient

        if not name:
            raise RegistryError("the registered model name is empty")
        self.tracking_uri = tracking_uri
        self.name = name
        self.cache = Path(cache)
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id = self._experiment(artifact_root)
        self._ensure_registered_model()

    @classmethod
    def from_config(cls, config, existing: bool = False) -> Registry:
        """The registry a `RecommenderConfig` names (sqlite next to the artifacts unless `tracking_uri`).

        `existing=True` is for commands that only read (explain, registry, promote): a sqlite registry file
        that does not exist yet raises RegistryError naming it, instead of being created empty.
        """
        base = Path(config.artifacts).resolve().parent
        uri = config.tracking_uri or default_tracking_uri(config.artifacts)
        if existing and uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            if not db.exists():
                raise RegistryError(f"no model registry at {db}: run `movielab recommender retrain` first")
        root = base / "mlruns" if config.tracking_uri is None else None
        return cls(uri, registered_name(config.team), base / "registry-cache", root)

    def _experiment(self, artifact_root: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        location = None if artifact_root is None else Path(artifact_root).resolve().as_uri()
        try:
            return self._client.create_experiment(EXPERIMENT, artifact_location=location)
        except MlflowException:  # another process created it meanwhile
            found = self._client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return found.experiment_id

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.name)
        except MlflowException:
            try:
                self._client.create_registered_model(self.name, description="movielab recommender versions")
            except MlflowException:
                self._client.get_registered_model(self.name)  # created meanwhile; anything else raises

    # --- writing -----------------------------------------------------------------------------------
    def register(
        self, trained: Trained, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None
    ) -> RegisteredVersion:
        """Log a run for a trained version (params, lineage tags, metrics, artifacts) and register it."""
        m = trained.manifest
        start, end = m["window"]
        lineage = {
            "model": m["model"],
            "artifact_version": m["version"],
            "snapshot_id": m["snapshot_id"],
            "snapshot_name": m.get("snapshot_name", ""),
            "snapshot_hash": m["snapshot_hash"],
            "snapshot_rows": str(m["snapshot_rows"]),
            "window_start": start or "",
            "window_end": end or "",
            "code_version": m["code_version"],
            "trained_at": m["trained_at"],
            "params_json": json.dumps(m["params"]),
            "users": str(m.get("users", "")),
            "items": str(m.get("items", "")),
        }
        lineage.update(tags or {})
        values = {"train_seconds": float(m["train_seconds"]), **{k: float(v) for k, v in (metrics or {}).items()}}
        run = self._client.create_run(self._experiment_id, run_name=f"{m['model']}-{m['version']}", tags=lineage)
        run_id = run.info.run_id
        try:
            for key, value in m["params"].items():
                self._client.log_param(run_id, key, value)
            for key, value in values.items():
                self._client.log_metric(run_id, _metric_key(key), value)
            self._client.log_artifacts(run_id, str(trained.folder), ARTIFACT_PATH)
            mv = self._client.create_model_version(
                self.name, f"runs:/{run_id}/{ARTIFACT_PATH}", run_id=run_id, tags=lineage
            )
        except BaseException:
            self._client.set_terminated(run_id, "FAILED")
            raise
        self._client.set_terminated(run_id, "FINISHED")
        registered = self._version(mv)
        _write_registration(trained.folder, registered, self.tracking_uri)
        logger.info(
            "registered %s %s as %s version %s (run %s)",
            m["model"],
            m["version"],
            self.name,
            registered.version,
            run_id,
        )
        return registered

    def promote(self, version: str | int) -> RegisteredVersion:
        """Make `version` the champion (it stops being the challenger if it was one)."""
        mv = self.get(version)
        if CHALLENGER in mv.aliases:
            self._client.delete_registered_model_alias(self.name, CHALLENGER)
        self._client.set_registered_model_alias(self.name, CHAMPION, mv.version)
        logger.info(
            "%s version %s (%s %s) is the champion", self.name, mv.version, mv.model, mv.tags.get("artifact_version")
        )
        return self.get(mv.version)

    def set_challenger(self, version: str | int) -> RegisteredVersion:
        """Name `version` the challenger (the one a canary tries)."""
        mv = self.get(version)
        self._client.set_registered_model_alias(self.name, CHALLENGER, mv.version)
        logger.info("%s version %s is the challenger", self.name, mv.version)
        return self.get(mv.version)

    def clear_challenger(self) -> None:
        """Remove the challenger alias (no-op when none is set)."""
        if self.challenger_version() is not None:
            self._client.delete_registered_model_alias(self.name, CHALLENGER)
            logger.info("%s has no challenger now", self.name)

    # --- reading -----------------------------------------------------------------------------------
    def get(self, version: str | int) -> RegisteredVersion:
        """One registered version; RegistryError names it when it does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self._client.get_model_version(self.name, str(version)))
        except MlflowException as exc:
            raise RegistryError(f"{self.name} has no version {version!r}: {exc.message}") from None

    def versions(self) -> list[RegisteredVersion]:
        """Every registered version, oldest first, with its aliases."""
        found = self._client.search_model_versions(f"name = '{self.name}'")
        aliases = self._alias_map()
        return sorted((self._version(mv, aliases) for mv in found), key=lambda v: int(v.version))

    def find(self, model: str, artifact_version: str) -> RegisteredVersion | None:
        """The registered version of a model's artifact version (e.g. ease, v0003), None if not registered."""
        for v in self.versions():
            if v.tags.get("model") == model and v.tags.get("artifact_version") == artifact_version:
                return v
        return None

    def champion_version(self) -> RegisteredVersion | None:
        """The champion's registered version, None when there is no champion yet."""
        return self._alias(CHAMPION)

    def challenger_version(self) -> RegisteredVersion | None:
        """The challenger's registered version, None when there is none."""
        return self._alias(CHALLENGER)

    def champion(self) -> Path | None:
        """Local folder of the champion (for `pipeline.load`), None when there is no champion yet."""
        mv = self.champion_version()
        return None if mv is None else self.folder(mv)

    def challenger(self) -> Path | None:
        """Local folder of the challenger (for `pipeline.load`), None when there is none."""
        mv = self.challenger_version()
        return None if mv is None else self.folder(mv)

    def folder(self, mv: RegisteredVersion) -> Path:
        """Local copy of a version's folder, downloaded once into the cache (complete or absent)."""
        target = self.cache / self.name / f"version-{mv.version}"
        if (target / "manifest.json").is_file() and (target / REGISTRATION_FILE).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Download beside the target and rename: a crash mid-download never leaves a half folder in place.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            local = Path(self._client.download_artifacts(mv.run_id, ARTIFACT_PATH, tmp))
            if not (local / "manifest.json").is_file():
                raise RegistryError(
                    f"{self.name} version {mv.version} (run {mv.run_id}) has no "
                    f"{ARTIFACT_PATH}/manifest.json in its artifacts"
                )
            _write_registration(local, mv, self.tracking_uri)
            if target.exists():
                shutil.rmtree(target)
            local.rename(target)
        return target

    def _alias(self, alias: str) -> RegisteredVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self._client.get_model_version_by_alias(self.name, alias))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _version(self, mv, aliases: dict[str, str] | None = None) -> RegisteredVersion:
        # Model versions from a search carry no aliases: the registered model's alias map is the truth.
        aliases = self._alias_map() if aliases is None else aliases
        mine = tuple(sorted(a for a, v in aliases.items() if str(v) == str(mv.version)))
        return RegisteredVersion(
            mv.name, str(mv.version), mv.run_id or "", mine, dict(mv.tags or {}), int(mv.creation_timestamp or 0)
        )

    def _alias_map(self) -> dict[str, str]:
        return {a: str(v) for a, v in (self._client.get_registered_model(self.name).aliases or {}).items()}

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The metrics logged on a version's run (gate metrics, training time)."""
        return dict(self._client.get_run(run_id).data.metrics)


def read_registration(folder: Path) -> dict[str, Any] | None:
    """The registration (registered name, version, run id, tracking URI) written beside a version, if any."""
    path = Path(folder) / REGISTRATION_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _write_registration(folder: Path, mv: RegisteredVersion, tracking_uri: str) -> None:
    info = {
        "registered_model": mv.name,
        "version": mv.version,
        "run_id": mv.run_id,
        "tracking_uri": _without_credentials(tracking_uri),
    }
    (Path(folder) / REGISTRATION_FILE).write_text(json.dumps(info, indent=2))


def _without_credentials(uri: str) -> str:
    """The URI without a user:password part (a file next to a model must not carry secrets)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def _metric_key(key: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: `ndcg@10` becomes `ndcg_at_10`."""
    return key.replace("@", "_at_")
