"""The command line's error lines: each names the setting, its value and the reason."""

from __future__ import annotations

from movielab.cli import main


def test_an_invalid_setting_is_one_line_naming_field_value_and_reason(capsys) -> None:
    assert main(["world", "run", "--users", "-5", "--days", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "movielab: error: invalid WorldConfig setting: users=-5: Input should be greater than or equal to 1"


def test_an_unknown_edition_names_the_editions(capsys) -> None:
    assert main(["world", "run", "--edition", "2031", "--days", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "edition='2031'" in err and "unknown course edition '2031'" in err and "2019-2023" in err
    assert "\n" not in err.strip()
