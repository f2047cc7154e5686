"""Errors of the contract; each names the thing it refuses and why."""

from movielab.errors import MovielabError


class ContractError(MovielabError, ValueError):
    """Base class of every error raised by `movielab.contract`."""


class MalformedEvent(ContractError):
    """An event line that does not match any line shape of the contract."""

    def __init__(self, line: str | bytes, reason: str) -> None:
        self.line = line
        self.reason = reason
        shown = line if len(line) <= 200 else line[:200] + ("…" if isinstance(line, str) else b"...")
        super().__init__(f"malformed event line {shown!r}: {reason}")


class InvalidMovieId(ContractError):
    """A movie id that is not a slug of the contract."""

    def __init__(self, movie_id: object, reason: str) -> None:
        self.movie_id = movie_id
        self.reason = reason
        super().__init__(f"invalid movie id {movie_id!r}: {reason}")
