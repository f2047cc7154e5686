"""Where an answer comes from: the model version, its data snapshot, and the code version that produced it."""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import movielab

# Provenance fields travel in an HTTP header: printable ASCII tokens, nothing that splits the header.
_TOKEN = re.compile(r"[A-Za-z0-9._:+@-]{1,128}")


@functools.cache
def code_version() -> str:
    """`<package version>+g<git commit>` when running from a git checkout, else the package version."""
    here = Path(movielab.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return movielab.__version__
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return movielab.__version__
    dirty = subprocess.run(
        ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()
    return f"{movielab.__version__}+g{commit}{'.dirty' if dirty else ''}"


@dataclass(frozen=True)
class Provenance:
    """Where a table's answers come from: model and version, data snapshot, code version, training time."""

    model_name: str
    model_version: str
    snapshot_id: str
    code_version: str
    trained_at: str  # ISO-8601, e.g. 2026-03-20T08:12:38

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
                raise ValueError(f"Provenance.{name}={value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : + @ -")

    def header(self, source: str) -> str:
        """The `X-Model` header value of an answer from `source` (`serving.answers.SOURCES`)."""
        return (
            f"{self.model_name}/{self.model_version}; snapshot={self.snapshot_id}; "
            f"code={self.code_version}; source={source}"
        )

    def as_dict(self) -> dict[str, str]:
        """The fields as a JSON-ready dict."""
        return asdict(self)
