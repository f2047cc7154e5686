"""`movielab recommender canary …` against a real control listener: the token file is read, the identity
recorded, and a missing token is a clear error."""

from __future__ import annotations

import json
import os

import pytest

from movielab.auth import ensure_tokens
from movielab.cli import main
from movielab.recommender.release.control import create_control_app
from movielab.webserver import ServerThread

pytestmark = pytest.mark.integration


class RecordingOperator:
    """The operator as the control app uses it, recording overrides (the rest is not asked here)."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.metrics = SimpleNamespace(exposition=lambda: b"")
        self.schedule_paused = False
        self.calls: list[tuple] = []

    def status(self) -> dict:
        return {"schedule_paused": self.schedule_paused}

    def override(self, action: str, by: str, reason: str) -> dict:
        self.calls.append((action, by, reason))
        return {"action": action, "by": by, "reason": reason}


def test_the_canary_cli_authenticates_with_the_token_file(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MOVIELAB_TOKEN", raising=False)
    path = ensure_tokens(tmp_path / "state" / "access.tokens", "operator").path
    with path.open("a") as f:
        f.write("alice " + "a" * 43 + "\n")
    op = RecordingOperator()
    with ServerThread(create_control_app(op, ensure_tokens(path))) as server:
        base = ["recommender", "canary", "--operator", server.url]
        assert main([*base[:2], "status", *base[2:], "--store", str(tmp_path / "state" / "store.duckdb")]) == 0
        assert json.loads(capsys.readouterr().out) == {"schedule_paused": False}
        assert (
            main(
                [
                    *base[:2],
                    "rollback",
                    *base[2:],
                    "--tokens",
                    str(path),
                    "--identity",
                    "alice",
                    "--reason",
                    "looks off",
                ]
            )
            == 0
        )
        assert op.calls == [("rollback", "alice", "looks off")]
        capsys.readouterr()
        os.chmod(path, 0o644)
        with pytest.raises(SystemExit, match=r"no token for the operator: .*has mode 0644"):
            main([*base[:2], "status", *base[2:], "--tokens", str(path)])
        monkeypatch.setenv("MOVIELAB_TOKEN", "b" * 43)  # a wrong token from the environment: 401, exit 1
        assert main([*base[:2], "status", *base[2:], "--tokens", str(path)]) == 1
        assert "authentication required" in capsys.readouterr().out
