"""What `movielab course score` is asked (team, day, manifest), checked before anything is read or written.

Reading the teams' topics for the course's checks takes minutes at a million users; a team the course does not
have, a day that is not a date or a manifest that does not exist is refused first, naming the argument.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from movielab.course.config import CourseConfig
from movielab.course.errors import CourseError

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class ScoreRequestError(CourseError, ValueError):
    """A `course score` argument that does not fit: names the argument, its value and the reason."""


def check_request(
    team: int | None, day: str | None, manifest: str | Path | None, config: CourseConfig | None = None
) -> Path | None:
    """Check `--team`, `--day` and `--manifest` (against `config`, the course file, when given); return the
    manifest to read: `manifest`, else (with `config`) the course's own when it exists, else None.

    Raises ScoreRequestError for a team number below 1 or beyond the course file's teams, a day that is not
    YYYY-MM-DD, a manifest that is not a file, and (with `config`) a course without scores or a day not scored.
    """
    if team is not None:
        if team < 1:
            raise ScoreRequestError(f"--team {team}: team numbers start at 1")
        if config is not None and team > len(config.teams):
            raise ScoreRequestError(
                f"--team {team}: course file {config.path} has {len(config.teams)} team(s), numbered "
                f"1..{len(config.teams)}"
            )
    if day is not None:
        try:
            if not _DAY.fullmatch(day):
                raise ValueError
            date.fromisoformat(day)
        except ValueError:
            raise ScoreRequestError(f"--day {day!r}: not a day (YYYY-MM-DD, e.g. 2026-03-20)") from None
    if manifest is not None and not Path(manifest).is_file():
        reason = "is not a file" if Path(manifest).exists() else "does not exist"
        raise ScoreRequestError(f"--manifest {manifest}: {reason}")
    if config is None:
        return Path(manifest) if manifest is not None else None
    scores = config.reports_dir / "scores"
    days = sorted(p.stem for p in scores.glob("*.json")) if scores.is_dir() else []
    if not days:
        raise ScoreRequestError(f"no scores under {scores}: has the course's world scored a day yet?")
    if day is not None and day not in days:
        raise ScoreRequestError(f"--day {day}: no scores (scored days: {', '.join(days)})")
    if manifest is not None:
        return Path(manifest)
    return config.manifest_path if config.manifest_path.exists() else None
