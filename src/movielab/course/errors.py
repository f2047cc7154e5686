"""Errors of the course package, under one root."""

from __future__ import annotations

from movielab.errors import MovielabError


class CourseError(MovielabError):
    """A course cannot run or be scored as asked; the message names the thing and the reason."""
