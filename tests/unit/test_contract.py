"""The contract: exact line shapes, strict parsing, slugs."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movielab.contract import (
    AccountEvent,
    InvalidMovieId,
    MalformedEvent,
    RateEvent,
    RecommendationEvent,
    WatchEvent,
    check_slug,
    format_event,
    is_slug,
    parse_line,
    slugify,
    split_title_year,
    unique_slugs,
)

DESIGN_EXAMPLES = [
    "2026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg",
    "2026-03-20T08:12:41,118106,GET /rate/grumpier+old+men+1995=3",
    "2026-03-20T08:12:38.176557,128017,recommendation request team1.local:8082, status 200, result: "
    "the+green+mile+1999, the+sound+of+music+1965, 131 ms",
    "2026-03-20T08:13:02.001200,17,recommendation request team1.local:8082, status 0, result: "
    "Request timeout to team1.local:8082 after 600 ms, 601 ms",
]


@pytest.mark.parametrize("line", DESIGN_EXAMPLES)
def test_design_examples_round_trip(line: str) -> None:
    assert format_event(parse_line(line)) == line


def test_parsed_fields() -> None:
    w = parse_line(DESIGN_EXAMPLES[0])
    assert w == WatchEvent(datetime(2026, 3, 20, 8, 12, 38), 614, "brides+2004", 20)
    r = parse_line(DESIGN_EXAMPLES[1])
    assert r == RateEvent(datetime(2026, 3, 20, 8, 12, 41), 118106, "grumpier+old+men+1995", 3)
    ok = parse_line(DESIGN_EXAMPLES[2])
    assert isinstance(ok, RecommendationEvent) and ok.ok and ok.status == 200 and ok.response_ms == 131
    assert ok.recommendations == ("the+green+mile+1999", "the+sound+of+music+1965")
    fail = parse_line(DESIGN_EXAMPLES[3])
    assert isinstance(fail, RecommendationEvent) and not fail.ok and fail.status == 0
    assert fail.error == "Request timeout to team1.local:8082 after 600 ms" and fail.recommendations == ()
    assert parse_line("2026-03-20T08:13:02,17,GET /create_account") == AccountEvent(datetime(2026, 3, 20, 8, 13, 2), 17)


def test_status_200_with_a_bad_body_is_a_failure_with_its_text() -> None:
    line = ("2026-03-20T08:12:38.176557,5,recommendation request t:8082, status 200, result: "
            "Invalid response from t:8082: not a comma-separated list of movie ids, 3 ms")  # fmt: skip
    ev = parse_line(line)
    assert isinstance(ev, RecommendationEvent) and not ev.ok and ev.status == 200
    assert format_event(ev) == line


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides+2004/20", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides+2004/0.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m/Brides+2004/3.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /rate/brides+2004=7", "rate request"),
        ("2026-03-20T08:12:38,614,GET /rate/brides+2004=", "rate request"),
        ("2026-02-30T08:12:38,614,GET /rate/brides+2004=3", "not a valid date"),
        ("2026-03-20 08:12:38,614,GET /rate/brides+2004=3", "expected '<time>"),
        ("2026-03-20T08:12:38.123456,614,GET /rate/brides+2004=3", "only recommendation lines"),
        ("2026-03-20T08:12:38,614,recommendation request t:1, status 200, result: a+1, 3 ms", "microseconds"),
        ("2026-03-20T08:12:38,-4,GET /rate/brides+2004=3", "expected '<time>"),
        ("2026-03-20T08:12:38,0614,GET /rate/brides+2004=3", "expected '<time>"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg\n", "line break"),
        ("2026-03-20T08:12:38,614,POST /rate/brides+2004=3", "unknown request"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:99999, status 200, result: a+1, 3 ms", "port"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:80, status 200, result: a+1, a+1, 3 ms", "repeat"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:80, status 500, result: , 3 ms", "error text"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:80, status 200, result: a+1, 3ms", "expected 'recommendation"),
    ],
)  # fmt: skip
def test_malformed_lines_name_line_and_reason(line: str, reason: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        parse_line(line)
    assert reason in info.value.reason
    assert repr(line[:50])[1:-1][:30] in str(info.value)


def test_more_than_twenty_recommendations_is_malformed() -> None:
    ids = ", ".join(f"m{i}+2000" for i in range(21))
    with pytest.raises(MalformedEvent, match="21 recommendations"):
        parse_line(f"2026-03-20T08:12:38.000001,6,recommendation request t:80, status 200, result: {ids}, 3 ms")


def test_binary_garbage_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedEvent, match="not UTF-8"):
        parse_line(b"\xff\xfe\x00garbage")
    with pytest.raises(MalformedEvent, match="expected str or bytes"):
        parse_line(12345)  # type: ignore[arg-type]


# --- property tests -----------------------------------------------------------------------------
times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30))
users = st.integers(1, 9_999_999_999)
words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
slugs = st.lists(words, min_size=1, max_size=5).map("+".join)
servers = st.tuples(st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True), st.integers(0, 65535)).map(
    lambda hp: f"{hp[0]}:{hp[1]}"
)
errors = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=60).filter(
    lambda s: s.strip() and not s.endswith(" ") and s[0].isupper()
)
events = st.one_of(
    st.builds(WatchEvent, times.map(lambda t: t.replace(microsecond=0)), users, slugs, st.integers(1, 99_999)),
    st.builds(RateEvent, times.map(lambda t: t.replace(microsecond=0)), users, slugs, st.integers(1, 5)),
    st.builds(AccountEvent, times.map(lambda t: t.replace(microsecond=0)), users),
    st.builds(RecommendationEvent, times, users, servers, st.just(200),
              st.lists(slugs, min_size=1, max_size=20, unique=True).map(tuple), st.none(), st.integers(0, 10**6)),
    st.builds(RecommendationEvent, times, users, servers, st.sampled_from([0, 404, 500, 503]), st.just(()), errors,
              st.integers(0, 10**6)),
)  # fmt: skip


@given(events)
@settings(max_examples=400)
def test_format_then_parse_round_trips(event) -> None:
    assert parse_line(format_event(event)) == event


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
@settings(max_examples=500)
def test_random_input_parses_or_raises_malformed(raw) -> None:
    try:
        parse_line(raw)
    except MalformedEvent:
        pass


@given(st.sampled_from(DESIGN_EXAMPLES), st.data())
@settings(max_examples=500)
def test_mutated_lines_never_crash_and_mutations_that_parse_reformat_exactly(line: str, data) -> None:
    pos = data.draw(st.integers(0, len(line) - 1))
    how = data.draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
    char = data.draw(st.characters(codec="utf-8"))
    mutated = {"delete": line[:pos] + line[pos + 1 :], "insert": line[:pos] + char + line[pos:],
               "replace": line[:pos] + char + line[pos + 1 :], "truncate": line[:pos]}[how]  # fmt: skip
    try:
        ev = parse_line(mutated)
    except MalformedEvent:
        return
    assert format_event(ev) == mutated  # the parser accepts only exact shapes


# --- slugs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Usual Suspects, The (1995)", "the+usual+suspects+1995"),
        ("Toy Story (1995)", "toy+story+1995"),
        ("Misérables, Les (1995)", "les+miserables+1995"),
        ("Don't Be a Menace to South Central While Drinking Your Juice in the Hood (1996)",
         "dont+be+a+menace+to+south+central+while+drinking+your+juice+in+the+hood+1996"),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "the+city+of+lost+children+1995"),
        ("unknown", "unknown"),
        ("!!! (2001)", "untitled+2001"),
    ],
)  # fmt: skip
def test_slug_rule(title: str, slug: str) -> None:
    assert slugify(*split_title_year(title)) == slug
    assert is_slug(slug)


def test_clashing_slugs_get_deterministic_suffixes() -> None:
    got = unique_slugs([("Hamlet", 1996), ("Hamlet", 1996), ("Hamlet", 1996), ("Hamlet 1996", 2)])
    assert got == ["hamlet+1996", "hamlet+1996+2", "hamlet+1996+3", "hamlet+1996+2+2"]
    assert len(set(got)) == len(got)


@given(st.lists(st.tuples(st.text(max_size=30), st.one_of(st.none(), st.integers(1888, 2030))), max_size=40))
def test_unique_slugs_are_unique_valid_slugs(items) -> None:
    got = unique_slugs(items)
    assert len(set(got)) == len(got) and all(is_slug(s) for s in got)


def test_check_slug_names_the_id() -> None:
    with pytest.raises(InvalidMovieId, match="'Toy Story'"):
        check_slug("Toy Story")
    assert check_slug("toy+story+1995") == "toy+story+1995"


def test_years_below_1000_keep_four_digits() -> None:
    line = "0026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg"
    assert format_event(parse_line(line)) == line


def test_non_ascii_digits_are_refused() -> None:
    with pytest.raises(MalformedEvent):
        parse_line("２０２６-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg")
    with pytest.raises(MalformedEvent):
        parse_line("2026-03-20T08:12:38,６１４,GET /data/m/brides+2004/20.mpg")
