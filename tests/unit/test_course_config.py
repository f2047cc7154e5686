"""The course file: the example is valid, errors name the field, a world config follows from it."""

from __future__ import annotations

import json

import pytest

from movielab.cli import main
from movielab.contract import MalformedEvent, parse_line, recommendation_line
from movielab.course.config import EXAMPLE, CourseFileError, load, parse, write_example
from movielab.world.client import Team

TEAMS = """
[[teams]]
name = "a"
url = "http://127.0.0.1:8082"
[[teams]]
name = "b"
url = "http://127.0.0.1:8092"
"""


def test_the_example_is_a_valid_course_with_two_teams(tmp_path) -> None:
    path = write_example(tmp_path / "course.toml")
    config = load(path)
    assert config.names() == ["team-1", "team-2"] and config.topics() == ["movielog1", "movielog2"]
    assert config.world.users == 1_000_000 and config.world.speed == 1.0 and config.state.checkpoint_every_minutes == 10
    assert config.state_dir == tmp_path / "state" and config.manifest_path == tmp_path / "state" / "manifest.jsonl"
    wc = config.world_config()
    assert wc.teams == ["http://127.0.0.1:8082", "http://127.0.0.1:8092"] and wc.kafka == "127.0.0.1:9092"
    assert wc.days is None and wc.pacing == "team"
    path.write_text("mine")
    with pytest.raises(CourseFileError, match=r"course\.toml already exists: not overwritten .*--force"):
        write_example(path)
    assert path.read_text() == "mine"
    assert load(write_example(path, force=True)).names() == ["team-1", "team-2"]
    assert EXAMPLE.count("#") > 20  # commented


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[world]\nusers = 0\n" + TEAMS, r"world\.users: Input should be greater than or equal to 1"),
        ("[world]\nstart = 'yesterday'\n" + TEAMS, r"world\.start: .*'yesterday' is not an ISO-8601"),
        ("[world]\nedition = '1999'\n" + TEAMS, r"world\.edition: "),
        ("[world]\nspeeed = 2\n" + TEAMS, r"world\.speeed: Extra inputs are not permitted"),
        ("[state]\ncheckpoint_every_minutes = 0\n" + TEAMS, r"state\.checkpoint_every_minutes: "),
        ("name = 'x'\n", r"teams: Field required"),
        (
            TEAMS.replace("http://127.0.0.1:8092", "ftp://x"),
            r"team 2 \(teams\[1\]\)\.url: (?!.*team 0).*must look like http://host:port",
        ),
        (
            TEAMS.replace("http://127.0.0.1:8092", "not a url"),
            r"team 2 \(teams\[1\]\)\.url: .*the host must be a name or address",
        ),
        (TEAMS.replace('name = "b"', 'name = "a"'), r"team 2 \(teams\[1\]\)\.name: 'a' is already team 1's"),
        (TEAMS + 'topic = "movielog1"\n', r"team 2 \(teams\[1\]\)\.topic: 'movielog1' is already team 1's"),
        (TEAMS + 'topic = "bad topic"\n', r"team 2 \(teams\[1\]\)\.topic: .*not a Kafka topic name"),
        (
            TEAMS + "user_share = 0.7\n",
            r"team 2 \(teams\[1\]\)\.user_share: 0\.7 is not 1/2 \(0\.5\): every team serves the same share .*"
            r"user u belongs to team \(u - 1\) % 2 \+ 1.* uneven shares are not supported: remove user_share",
        ),
        ("[world\n", r"is not valid TOML"),
    ],
)
def test_invalid_course_files_are_refused_naming_the_field(text, message) -> None:
    with pytest.raises(CourseFileError, match=message) as got:
        parse(text)
    # The place is the field (a team by its number and its entry), not pydantic's "file: Value error, " prefix.
    assert str(got.value).startswith("course file <course file>") and "Value error" not in str(got.value)
    assert "course file <course file>: file: " not in str(got.value)


def test_an_ipv6_team_url_keeps_its_brackets_in_the_calls_and_the_lines() -> None:
    config = parse(TEAMS.replace("http://127.0.0.1:8092", "http://[::1]:8092/team-b/"))
    assert config.world_config().teams[1] == "http://[::1]:8092/team-b/"
    team = Team.parse(2, config.teams[1].url)
    assert team.url == "http://[::1]:8092/team-b" and team.server == "[::1]:8092"
    line = recommendation_line("2026-03-20T10:00:00.000001", 7, team.server, 200, "a+1, b+2", 12)
    event = parse_line(line)
    assert event.server == "[::1]:8092" and event.recommendations == ("a+1", "b+2")
    with pytest.raises(MalformedEvent):
        parse_line(line.replace("[::1]", "[::1"))


def test_a_missing_scenario_file_is_refused(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[world]\nscenario = 'semester.toml'\n" + TEAMS)
    with pytest.raises(CourseFileError, match=r"world\.scenario: .*semester\.toml: no such file and no such preset"):
        load(path)


def test_a_scenario_is_a_preset_or_a_file_next_to_the_course_file(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[world]\nscenario = 'semester'\nscenario_time_scale = 7\n" + TEAMS)
    config = load(path)
    assert config.world_config().scenario == "semester" and config.world_config().scenario_time_scale == 7
    assert config.world_config().manifest == tmp_path / "state" / "manifest.jsonl"
    (tmp_path / "mine.toml").write_text(
        'name = "mine"\n[[injections]]\nkind = "takedown"\nstart = "+1h"\nmovie = "auto"\n'
    )
    path.write_text("[world]\nscenario = 'mine.toml'\n" + TEAMS)
    assert load(path).world_config().scenario == str(tmp_path / "mine.toml")
    assert load(path).fingerprint_fields()["scenario"] == "mine.toml"


def test_the_instructor_port_is_not_the_teams_port() -> None:
    with pytest.raises(CourseFileError, match=r"instructor\.port: 8080 is the teams' API port"):
        parse("[instructor]\nport = 8080\n" + TEAMS)
    assert parse(TEAMS).instructor.enabled and parse(TEAMS).instructor.host == "127.0.0.1"


def test_cli_init_and_status_before_any_run(tmp_path, capsys) -> None:
    path = tmp_path / "c.toml"
    assert main(["course", "init", str(path)]) == 0
    assert main(["course", "status", str(path), "--offline"]) == 0
    assert "no checkpoint yet" in capsys.readouterr().out
    assert main(["course", "status", str(path), "--offline", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["course"] == "mlip-2026" and got["checkpoint"] is None and got["process"] is None
    assert main(["course", "init", str(path)]) == 2
    assert "already exists: not overwritten" in capsys.readouterr().err
    path.write_text(path.read_text().replace("users = 1000000", "users = -3"))
    assert main(["course", "status", str(path), "--offline"]) == 2
    assert "world.users" in capsys.readouterr().err
