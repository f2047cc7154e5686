"""pydantic's validation errors as movielab prints them: the field's place and the reason, one per problem.

pydantic prefixes the message of a validator's ValueError with "Value error, "; movielab's validators already
name the thing and the reason, so the prefix is dropped. An error of a whole model (a model validator: an empty
location) is its message alone, which names its own field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError


def reason(error: dict[str, Any]) -> str:
    """The reason of one pydantic error (`ValidationError.errors()` item), without pydantic's "Value error, "."""
    return str(error["msg"]).removeprefix("Value error, ")


def place(loc: tuple[Any, ...]) -> str:
    """A field's place as dotted keys (`world.users`, `teams.1.url`)."""
    return ".".join(str(p) for p in loc)


def problems(exc: ValidationError, where: Callable[[tuple[Any, ...]], str] = place) -> list[str]:
    """One `<place>: <reason>` per problem of `exc` (`where(loc)` names the place); a model's own error (empty
    location) is its reason alone."""
    return [f"{where(tuple(e['loc']))}: {reason(e)}" if e["loc"] else reason(e) for e in exc.errors()]
