"""A course stopped cleanly resumes without a warning; one that reached its days says it is finished, and started
again it runs nothing and writes nothing to its manifest."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest

from movielab.cli import main
from movielab.course.config import load
from movielab.course.run import run_course
from movielab.course.status import course_status, format_status
from movielab.kafka.broker import EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _course(path: Path, bootstrap: str) -> None:
    path.write_text(f"""
name = "short"
[world]
users = 1500
seed = 2
days = 0.02
[kafka]
bootstrap = "{bootstrap}"
partitions = 1
[api]
port = 0
[instructor]
enabled = false
[state]
checkpoint_every_minutes = 10
[[teams]]
name = "t1"
url = "http://127.0.0.1:9"
""")


def test_a_clean_resume_is_quiet_and_a_finished_course_says_so_and_writes_nothing(
    universe, tmp_path, caplog, capsys
) -> None:
    course = tmp_path / "course.toml"
    with EmbeddedBroker() as broker:
        _course(course, broker.bootstrap)
        config = load(course)
        stop = threading.Event()
        first = run_course(config, universe=universe, stop=stop, on_ready=lambda run: stop.set())
        assert not first.finished and course_status(config, live=False)["process"]["state"] == "stopped"

        caplog.set_level(logging.INFO, logger="movielab.course.run")
        caplog.clear()
        second = run_course(config, universe=universe)  # resumes the clean stop and runs to the end
        resumed = [r for r in caplog.records if r.getMessage().startswith("resumed from the checkpoint")]
        assert len(resumed) == 1 and set(second.re_emitted.values()) == {0}
        assert resumed[0].levelno == logging.INFO  # nothing produced again: not a warning
        assert second.finished and any("course short finished" in r.getMessage() for r in caplog.records)
        assert course_status(config, live=False)["process"]["state"] == "finished"
        manifest = config.manifest_path.read_bytes()

        caplog.clear()
        assert main(["course", "run", str(course)]) == 0  # started again: finished, nothing runs
        assert capsys.readouterr().out == f"course finished; lines per topic: {second.lines()}\n"
        said = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage().split(":")[0] for r in said] == ["course short is finished"]
        assert "nothing to run (raise world.days in" in said[0].getMessage()
        assert config.manifest_path.read_bytes() == manifest  # no restored record, nothing
        status = course_status(config, live=False)
        assert status["process"]["state"] == "finished" and not status["process"]["alive"]
        assert format_status(status).splitlines()[1].split(";")[0].endswith(": finished")

        # Its API port taken by another process: a finished course still just says it is finished.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            course.write_text(course.read_text().replace("[api]\nport = 0", f"[api]\nport = {port}"))
            assert load(course).api.port == port
            caplog.clear()
            assert main(["course", "run", str(course)]) == 0
            assert capsys.readouterr().out == f"course finished; lines per topic: {second.lines()}\n"
            assert config.manifest_path.read_bytes() == manifest
