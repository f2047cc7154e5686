"""Every error the recommender raises on purpose, by stage; each names the thing it refuses and why.

All subclass `RecommenderError` (itself a `movielab.errors.MovielabError`) and keep the built-in base they
always had, so `except ValueError` / `except LookupError` / `except RuntimeError` clauses still catch them.
"""

from __future__ import annotations

from pathlib import Path

from movielab import errors


class RecommenderError(errors.MovielabError):
    """Base class of the recommender's errors."""


# --- ingest ----------------------------------------------------------------------------------------
class IngestError(RecommenderError, RuntimeError):
    """Ingestion cannot go on (a fatal Kafka error); names the topics and the reason."""


class WorldApiUnavailable(RecommenderError, RuntimeError):
    """The world API could not answer (network error, 5xx, rate limit beyond patience); names URL and reason."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"world API {url} unavailable: {reason}")


# --- store -----------------------------------------------------------------------------------------
class StoreError(RecommenderError, RuntimeError):
    """Base class of the event store's errors."""


class UnknownSnapshot(StoreError, LookupError):
    """No snapshot has this name or id."""

    def __init__(self, name_or_id: str) -> None:
        self.name_or_id = name_or_id
        super().__init__(f"unknown snapshot {name_or_id!r}: no snapshot has this name or id")


class SnapshotConflict(StoreError):
    """A snapshot name already names other content (or the content already has another name)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"snapshot {name!r} cannot be created: {reason}")


# --- training --------------------------------------------------------------------------------------
class ModelFitError(RecommenderError, errors.ModelFitError):
    """Fitting gave nothing safe to ship: empty or non-finite data, NaN scores, or no recommendations."""


class ModelLoadError(RecommenderError, RuntimeError):
    """A saved model folder is missing, incomplete, unreadable or of another format version."""


class UnknownModel(RecommenderError, ValueError):
    """A model name that the registry does not know; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")
        self.name = name


class NoModel(RecommenderError, LookupError):
    """No trained version exists where one was asked for."""


class RegistryError(RecommenderError, RuntimeError):
    """The registry cannot do what was asked; the message names the model, version or alias and why."""


class RatingsFileError(RecommenderError, ValueError):
    """A ratings file that cannot be read; names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"ratings file {str(path)!r}: {reason}")


# --- serving ---------------------------------------------------------------------------------------
class BadUserId(RecommenderError, ValueError):
    """A `/recommend/<userid>` path segment that is not a user id; names the id and the reason."""

    def __init__(self, user_id: str, reason: str) -> None:
        self.user_id = user_id
        self.reason = reason
        shown = repr(user_id if len(user_id) <= 40 else user_id[:40] + "...")
        super().__init__(f"user id {shown} {reason}")


class NoChallenger(RecommenderError, RuntimeError):
    """An operation on the challenger (share, promote, drop) while none is loaded."""


class BadSegments(RecommenderError, ValueError):
    """A segments file that cannot be read or holds something other than user id -> segment (-1..13)."""


class BadVersionFolder(RecommenderError, ValueError):
    """A version folder without the manifest or arrays an explanation needs."""


class NginxError(RecommenderError, RuntimeError):
    """nginx is missing, refused its config (the message quotes nginx's reason), or did not start or reload."""


class FleetError(RecommenderError, RuntimeError):
    """A replica did not start, refused an admin request (the message carries its answer), or a rollout step
    failed; names the replica."""


# --- monitoring ------------------------------------------------------------------------------------
class MonitorError(RecommenderError, ValueError):
    """Bad input to the operator metrics; names the thing and the reason."""


class DriftError(RecommenderError, ValueError):
    """Inputs a drift statistic cannot be computed on; names the feature and the reason."""


# --- release ---------------------------------------------------------------------------------------
class ExperimentError(RecommenderError, RuntimeError):
    """An experiment was asked to do something its state does not allow; names the experiment and why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"experiment {name!r}: {reason}")


class OperatorError(RecommenderError, RuntimeError):
    """An operation the operator's state does not allow; names the operation and why."""


class StudyError(RecommenderError, ValueError):
    """A study design or its data cannot be used; names the experiment and the reason."""
