"""A server whose port is taken fails at once with one clear error naming host and port, and nothing else runs."""

from __future__ import annotations

import socket

import pytest
from starlette.applications import Starlette

from movielab.errors import MovielabError
from movielab.webserver import PortInUseError, ServerThread, check_free


@pytest.fixture
def taken():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_port_is_one_clear_error_not_a_dying_thread(taken: int) -> None:
    server = ServerThread(Starlette(), "127.0.0.1", taken)
    with pytest.raises(PortInUseError, match=rf"cannot listen on 127\.0\.0\.1:{taken}: .*in use") as err:
        server.start()
    assert isinstance(err.value, MovielabError) and isinstance(err.value, OSError)
    assert server.thread is None  # no server thread was started
    server.stop()  # stopping a server that never started is harmless


def test_check_free_names_what_needs_the_port(taken: int) -> None:
    with pytest.raises(PortInUseError, match=rf"^\[api\] port: cannot listen on 127\.0\.0\.1:{taken}"):
        check_free("127.0.0.1", taken, "[api] port")
    check_free("127.0.0.1", 0, "[api] port")  # any free port
    check_free("127.0.0.1", None, "[api] port")


def test_a_free_port_serves(tmp_path) -> None:
    with ServerThread(Starlette()) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass


def test_course_run_refuses_a_taken_port_before_writing_anything(taken: int, tmp_path, capsys) -> None:
    from movielab.cli import main

    course = tmp_path / "c.toml"
    teams = '[[teams]]\nname = "a"\nurl = "http://127.0.0.1:9"\n[[teams]]\nname = "b"\nurl = "http://127.0.0.1:9"\n'
    course.write_text(f'name = "c"\n[api]\nport = {taken}\n' + teams)
    assert main(["course", "run", str(course)]) == 2
    err = capsys.readouterr().err
    assert f"{course}: [api] port: cannot listen on 127.0.0.1:{taken}" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no state, manifest or reports


def test_world_run_refuses_a_taken_port_before_writing_anything(taken: int, tmp_path, capsys) -> None:
    from movielab.cli import main

    out = tmp_path / "lines.txt"
    argv = ["world", "run", "--users", "100", "--days", "0.01", "--api-port", str(taken), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"api_port): cannot listen on 127.0.0.1:{taken}" in err and not out.exists()
