"""Every scenario error names the file, the entry (index, kind and name) and the field, and says why."""

from __future__ import annotations

import re

import pytest

from movielab.world.clock import parse_start
from movielab.world.scenarios import ScenarioError, load
from movielab.world.scenarios.runtime import ScenarioRuntime

START = parse_start("2026-03-20T00:00:00")


def _file(tmp_path, body: str):
    path = tmp_path / "course.toml"
    path.write_text('name = "x"\n' + body)
    return path


def _refused(tmp_path, body: str, n_teams: int = 1, universe=None) -> str:
    """The message of the error loading (and, with a universe, binding) a scenario file."""
    path = _file(tmp_path, body)
    with pytest.raises(ScenarioError) as err:
        scenario = load(path)
        ScenarioRuntime(scenario, catalog=universe.catalog, n_teams=n_teams, seed=0, run_start=START)
    message = str(err.value)
    assert message.startswith(f"scenario {path}: "), message
    return message


def _entry(kind: str, fields: str, name: str | None = None) -> str:
    label = f'name = "{name}"\n' if name else ""
    return f'[[injections]]\nkind = "stream_pause"\nstart = "+1h"\n[[injections]]\n{label}kind = "{kind}"\n{fields}\n'


def test_toml_syntax_names_the_file_and_the_line(tmp_path) -> None:
    message = _refused(tmp_path, "[[injections]\nkind = 1\n")
    assert re.search(r"not valid TOML: .*line 2", message)


def test_an_unknown_kind_names_the_entry_and_lists_the_kinds(tmp_path) -> None:
    message = _refused(tmp_path, _entry("shiling", 'start = "+1h"', name="bots"))
    assert "injections[1] (shiling 'bots').kind: kind 'shiling' is unknown; one of" in message
    assert "'shilling'" in message


def test_a_missing_kind_names_the_entry(tmp_path) -> None:
    message = _refused(tmp_path, '[[injections]]\nstart = "+1h"\n')
    assert "injections[0].kind: no 'kind' (what to inject); one of taste_shift" in message


def test_a_bad_field_names_the_entry_the_field_and_the_reason(tmp_path) -> None:
    message = _refused(tmp_path, _entry("shilling", 'start = "+1h"\nbots = 0', name="campaign"))
    assert "injections[1] (shilling 'campaign').bots: Input should be greater than or equal to 1" in message
    message = _refused(tmp_path, _entry("shilling", 'start = "+1h"\nbot = 3'))
    assert "injections[1] (shilling).bot: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("fields", "where", "reason"),
    [
        ('start = "soon"', "start", "'soon' is neither an offset like '+2h'"),
        ('start = "+3h"\nend = "+1h"', "end", "'+1h' is not after start '+3h'"),
        ('start = "2026-03-21T00:00:00"\nend = "2026-03-20T00:00:00"', "end", "is not after start"),
        ('start = "+1h"\nduration = "0h"', "duration", "'0h' is not a positive length"),
        ('start = "+1h"\nduration = "3 days"', "duration", "'3 days' is neither an offset"),
        ('start = "+1h"\nend = "+2h"\nduration = "1h"', "duration", "give end or duration, not both"),
    ],
)
def test_a_bad_time_names_the_field(tmp_path, fields, where, reason) -> None:
    message = _refused(tmp_path, _entry("api_outage", fields + '\nmode = "down"', name="sunday"))
    assert f"injections[1] (api_outage 'sunday').{where}: " in message and reason in message


def test_an_iso_end_before_an_offset_start_is_refused_when_the_run_start_is_known(tmp_path, universe) -> None:
    message = _refused(
        tmp_path, _entry("stream_pause", 'start = "+1d"\nend = "2026-03-20T12:00:00"'), universe=universe
    )
    assert "injections[1] (stream_pause).end: '2026-03-20T12:00:00' is not after start '+1d'" in message
    assert "the run starts 2026-03-20T00:00:00" in message


def test_teams_out_of_range_name_the_field(tmp_path, universe) -> None:
    message = _refused(tmp_path, _entry("stream_pause", 'start = "+1h"\nteams = [2, 3]'), n_teams=2, universe=universe)
    assert "injections[1] (stream_pause).teams: teams [3] do not exist (the world has 2)" in message
    message = _refused(tmp_path, _entry("stream_pause", 'start = "+1h"\nteams = [0]'))
    assert "injections[1] (stream_pause).teams: teams must be a non-empty list" in message
    message = _refused(tmp_path, _entry("stream_pause", 'start = "+1h"\nteams = [1, 1]'))
    assert "injections[1] (stream_pause).teams: teams [1, 1] name a team twice" in message
    message = _refused(tmp_path, _entry("popularity_shock", 'start = "+1h"\nteams = [1]'), n_teams=2, universe=universe)
    assert "injections[1] (popularity_shock).teams: popularity_shock acts on what every team shares" in message


def test_what_the_catalog_lacks_or_a_kind_cannot_do_names_the_field(tmp_path, universe) -> None:
    message = _refused(tmp_path, _entry("shilling", 'start = "+1h"\ntarget = "no+such+1999"'), universe=universe)
    assert "injections[1] (shilling).target: movie 'no+such+1999' is not in the catalog" in message
    message = _refused(tmp_path, _entry("takedown", 'start = "+1h"\nmovie = "no+such+1999"'), universe=universe)
    assert "injections[1] (takedown).movie: movie 'no+such+1999' is not in the catalog" in message
    message = _refused(
        tmp_path, _entry("taste_shift", 'start = "+1h"\ngenres = ["Drama"]\nstars = 1'), universe=universe
    )
    assert "injections[1] (taste_shift).end: a taste shift needs an end or a duration" in message
    body = _entry("corrupt_lines", 'start = "+1h"\nmode = "unknown_movie"\nshare = 0.1\nlines = ["account"]')
    message = _refused(tmp_path, body, universe=universe)
    assert "injections[1] (corrupt_lines).lines: unknown_movie applies to watch and rate lines only" in message


def test_contradicting_catalog_entries_name_both(tmp_path, universe) -> None:
    slug = universe.catalog.slug[2]
    body = (
        f'[[injections]]\nkind = "movie_removed"\nstart = "+1h"\nmovie = "{slug}"\n'
        f'[[injections]]\nname = "release"\nkind = "movie_added"\nstart = "+1d"\nmovie = "{slug}"\n'
    )
    message = _refused(tmp_path, body, universe=universe)
    assert f"injections[0] (movie_removed).movie: '{slug}' is added by injections[1] (movie_added 'release')" in message
