"""`movielab course score`: a team, day or manifest that does not fit is refused before the topics are read."""

from __future__ import annotations

import json
import re
import socket

import pytest

from movielab.cli import main
from movielab.course.config import load
from movielab.course.scoreargs import ScoreRequestError, check_request


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def course(tmp_path):
    """A course file of two teams, scored on 2026-03-20, whose broker does not answer (reading it would fail)."""
    path = tmp_path / "course.toml"
    path.write_text(f"""
[kafka]
bootstrap = "127.0.0.1:{_closed_port()}"
[[teams]]
name = "a"
url = "http://127.0.0.1:8082"
[[teams]]
name = "b"
url = "http://127.0.0.1:8092"
""")
    scores = tmp_path / "reports" / "scores"
    scores.mkdir(parents=True)
    (scores / "2026-03-20.json").write_text(json.dumps([{"day": "2026-03-20", "team": t} for t in (1, 2)]))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--team", "99"], "--team 99: course file .*course.toml has 2 team\\(s\\), numbered 1..2"),
        (["--team", "0"], "--team 0: team numbers start at 1"),
        (["--day", "bogus"], "--day 'bogus': not a day \\(YYYY-MM-DD"),
        (["--day", "2026-02-30"], "--day '2026-02-30': not a day"),
        (["--day", "2026-03-21"], "--day 2026-03-21: no scores \\(scored days: 2026-03-20\\)"),
        (["--manifest", "/nonexistent.jsonl"], "--manifest /nonexistent.jsonl: does not exist"),
    ],
)
def test_bad_arguments_are_refused_before_the_stream_is_read(course, args, message, capsys) -> None:
    assert main(["course", "score", str(course), *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no "course checks from the stream" line: the topics were not read
    assert err.startswith("movielab: error: ") and len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (course.parent / "reports" / "stream.csv").exists()  # nothing written


def test_check_request_names_each_argument(course) -> None:
    config = load(course)
    for team, day, manifest, message in [
        (99, None, None, r"--team 99: course file .* has 2 team\(s\)"),
        (0, None, None, "--team 0: team numbers start at 1"),
        (None, "bogus", None, "--day 'bogus': not a day"),
        (None, "2026-03-21", None, "--day 2026-03-21: no scores"),
        (None, None, "/nonexistent.jsonl", "--manifest /nonexistent.jsonl: does not exist"),
        (None, None, course.parent, f"--manifest {course.parent}: is not a file"),
    ]:
        with pytest.raises(ScoreRequestError, match=message):
            check_request(team, day, manifest, config)
    assert check_request(2, "2026-03-20", None, config) is None  # no manifest of its own yet
    (course.parent / "state").mkdir()
    config.manifest_path.write_text("")
    assert check_request(1, None, None, config) == config.manifest_path


def test_without_a_course_file_a_missing_manifest_is_named_not_the_scores(tmp_path, capsys) -> None:
    assert main(["course", "score", "--state", str(tmp_path), "--team", "1", "--manifest", "/nonexistent.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "--manifest /nonexistent.jsonl: does not exist" in err and "scores" not in err
    assert main(["course", "score", "--state", str(tmp_path), "--day", "bogus"]) == 2
    assert "--day 'bogus': not a day" in capsys.readouterr().err
