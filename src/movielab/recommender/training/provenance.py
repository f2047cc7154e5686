"""Where an answer comes from: the code version that produced a model."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import movielab


@functools.cache
def code_version() -> str:
    """`<package version>+g<git commit>` when running from a git checkout, else the package version."""
    here = Path(movielab.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return movielab.__version__
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return movielab.__version__
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()  # fmt: skip
    return f"{movielab.__version__}+g{commit}{'.dirty' if dirty else ''}"
