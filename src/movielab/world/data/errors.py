"""Errors of the data layer; each names the file, source or id it refuses and why."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from movielab.world.errors import WorldError


class DataError(WorldError):
    """Base class of every error raised by `movielab.world.data`."""


class DataUnavailable(DataError):
    """No source in a fetch chain produced the data set; `attempts` holds (source, reason) pairs."""

    def __init__(self, dataset: str, attempts: Sequence[tuple[str, str]]) -> None:
        self.dataset = dataset
        self.attempts = list(attempts)
        tried = "; ".join(f"{source}: {reason}" for source, reason in self.attempts) or "no source tried"
        super().__init__(f"{dataset} is unavailable; tried {tried}")


class DataFormatError(DataError):
    """A file of a data set is malformed; `line` is 1-based, or None when the file as a whole is wrong."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class ChecksumMismatch(DataError):
    """A file's digest differs from the published one, so its content cannot be trusted."""

    def __init__(self, path: Path | str, expected: str, actual: str, algorithm: str = "sha256") -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        self.algorithm = algorithm
        super().__init__(f"{self.path}: {algorithm} is {actual}, expected {expected}")


class UnknownMovie(WorldError, KeyError):
    """A movie slug that is not in the catalog."""

    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(slug)

    def __str__(self) -> str:
        # KeyError's own __str__ shows only repr(arg); say what is missing.
        return f"unknown movie {self.slug!r}: not in the catalog"
