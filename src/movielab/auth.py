"""Bearer tokens for privileged listeners (the recommender's admin and control ports; the world's instructor
port can use the same helper): a token file created at first start with mode 0600, read by the CLI that
calls the listener, and an ASGI middleware that names the authenticated identity.

The token file holds one `<identity> <token>` pair per line (`#` starts a comment); more identities can be
added by hand (one per engineer), and the identity, never a name sent in a request body, is what audit
records carry. Tokens are compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from movielab.errors import MovielabError

logger = logging.getLogger(__name__)

FILE_MODE = 0o600
IDENTITY = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{32,256}")
ENV_TOKEN = "MOVIELAB_TOKEN"  # a token given to a CLI by the environment instead of the file


class AuthError(MovielabError, RuntimeError):
    """A token file that is missing, readable by others, or malformed; names the file and the reason."""


@dataclass(frozen=True)
class Tokens:
    """identity -> token, as read from a token file."""

    by_identity: dict[str, str]
    path: Path | None = None

    def identify(self, presented: str) -> str | None:
        """The identity whose token is `presented`, else None; every entry is compared in constant time."""
        found = None
        given = presented.encode("utf-8", "replace")
        for identity, token in self.by_identity.items():
            if hmac.compare_digest(given, token.encode("ascii")):
                found = identity
        return found

    def token(self, identity: str | None = None) -> str:
        """The token of `identity` (default: the first in the file); AuthError if the file has no such one."""
        if identity is None:
            return next(iter(self.by_identity.values()))
        try:
            return self.by_identity[identity]
        except KeyError:
            raise AuthError(f"token file {self.path}: no identity {identity!r}") from None

    def headers(self, identity: str | None = None) -> dict[str, str]:
        """HTTP headers that authenticate as `identity` (default: the first)."""
        return {"authorization": f"Bearer {self.token(identity)}"}


def ensure_tokens(path: str | Path, identity: str = "operator") -> Tokens:
    """The tokens in `path`; at first start, a new file (mode 0600) with one random token for `identity`."""
    path = Path(path)
    if not IDENTITY.fullmatch(identity):
        raise AuthError(f"identity {identity!r} must be 1-64 letters, digits or _.@-")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return read_tokens(path)
    with os.fdopen(fd, "w") as f:
        f.write(
            f"# movielab access tokens: <identity> <token>, one a line; keep this file private (mode 0600)\n"
            f"{identity} {secrets.token_urlsafe(32)}\n"
        )
    logger.info("created token file %s for %s", path, identity)
    return read_tokens(path)


def read_tokens(path: str | Path) -> Tokens:
    """The tokens in `path`; AuthError when it is missing, readable or writable by others, or malformed."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"token file {path} cannot be read: {exc}") from None
    if mode & 0o077:
        raise AuthError(f"token file {path} has mode {mode:04o}: others may read it; chmod 600 it")
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not IDENTITY.fullmatch(parts[0]) or not TOKEN.fullmatch(parts[1]):
            raise AuthError(
                f"token file {path} line {n}: expected '<identity> <token>' (token: 32-256 of A-Z a-z 0-9 _ -)"
            )
        if parts[0] in out:
            raise AuthError(f"token file {path} line {n}: identity {parts[0]!r} repeats")
        out[parts[0]] = parts[1]
    if not out:
        raise AuthError(f"token file {path} holds no token")
    return Tokens(out, path)


def client_headers(path: str | Path, identity: str | None = None) -> dict[str, str]:
    """Headers for a CLI: the token from $MOVIELAB_TOKEN if set, else `identity`'s (default: first) in `path`."""
    token = os.environ.get(ENV_TOKEN)
    if token:
        return {"authorization": f"Bearer {token}"}
    return read_tokens(path).headers(identity)


class RequireToken:
    """ASGI middleware: HTTP requests need `Authorization: Bearer <token>` of a known identity (401 otherwise,
    the same answer for a missing and a wrong token); the identity goes to `request.state.identity`. Paths in
    `open_paths` (e.g. `/metrics` for Prometheus) pass without one."""

    def __init__(self, app, tokens: Tokens, open_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        identity = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, presented = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    identity = self.tokens.identify(presented.strip())
                break
        if identity is None:
            body = json.dumps(
                {
                    "error": "authentication required: send 'Authorization: Bearer <token>' "
                    "(a token of this listener's token file, mode 0600, beside the state it guards)"
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                        (b"www-authenticate", b'Bearer realm="movielab"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


def identity_of(request) -> str:
    """The identity `RequireToken` authenticated for this Starlette request ("anonymous" on an open path)."""
    return getattr(request.state, "identity", None) or "anonymous"
