"""Token files and the bearer-token middleware shared by the privileged listeners."""

from __future__ import annotations

import os
import stat
import warnings

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from movielab.auth import AuthError, RequireToken, client_headers, ensure_tokens, identity_of, read_tokens

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


def test_the_first_start_creates_a_private_file_and_later_starts_read_it(tmp_path) -> None:
    path = tmp_path / "state" / "access.tokens"
    first = ensure_tokens(path, "operator")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(first.by_identity) == ["operator"] and len(first.token()) >= 32
    assert ensure_tokens(path, "someone-else").by_identity == first.by_identity  # not rewritten
    assert first.identify(first.token()) == "operator"
    assert first.identify(first.token() + "x") is None and first.identify("") is None


def test_more_identities_by_hand_and_each_is_named(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_text("# comment\nalice " + "a" * 40 + "\nbob " + "b" * 40 + "  # bob's\n")
    os.chmod(path, 0o600)
    tokens = read_tokens(path)
    assert tokens.identify("b" * 40) == "bob" and tokens.token() == "a" * 40
    assert client_headers(path, "bob") == {"authorization": "Bearer " + "b" * 40}
    with pytest.raises(AuthError, match="no identity 'carol'"):
        tokens.token("carol")


@pytest.mark.parametrize(
    ("text", "mode", "reason"),
    [
        ("alice " + "a" * 40 + "\n", 0o644, "has mode 0644: others may read it"),
        ("alice\n", 0o600, "line 1: expected '<identity> <token>'"),
        ("alice short\n", 0o600, "line 1: expected"),
        ("alice " + "a" * 40 + "\nalice " + "b" * 40 + "\n", 0o600, "line 2: identity 'alice' repeats"),
        ("# nothing\n", 0o600, "holds no token"),
    ],
)
def test_bad_token_files_are_errors_naming_the_file_and_reason(tmp_path, text, mode, reason) -> None:
    path = tmp_path / "t"
    path.write_text(text)
    os.chmod(path, mode)
    with pytest.raises(AuthError, match=f"token file {path}.*{reason}"):
        read_tokens(path)
    with pytest.raises(AuthError, match="cannot be read"):
        read_tokens(tmp_path / "missing")


def test_the_middleware_names_the_identity_and_leaves_open_paths_open(tmp_path) -> None:
    tokens = ensure_tokens(tmp_path / "t", "alice")

    async def who(request: Request) -> PlainTextResponse:
        return PlainTextResponse(identity_of(request))

    app = Starlette(routes=[Route("/who", who), Route("/metrics", who)])
    app.add_middleware(RequireToken, tokens=tokens, open_paths=("/metrics",))
    with TestClient(app) as c:
        assert c.get("/who", headers=tokens.headers()).text == "alice"
        assert c.get("/who", headers={"authorization": "bearer " + tokens.token()}).text == "alice"
        for h in (
            {},
            {"authorization": "Bearer"},
            {"authorization": b"Bearer \xe9"},
            {"authorization": tokens.token()},
        ):
            r = c.get("/who", headers=h)
            assert r.status_code == 401 and "authentication required" in r.json()["error"]
        assert c.get("/metrics").text == "anonymous"
