"""The contract: exact line shapes, strict parsing, movie ids and slugs, time stamps, editions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from movielab.contract import (
    AccountEvent,
    InvalidMovieId,
    MalformedEvent,
    RateEvent,
    RecommendationEvent,
    UnknownEdition,
    WatchEvent,
    check_movie_id,
    edition,
    format_event,
    format_time,
    is_movie_id,
    parse_line,
    parse_time,
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
    line = (
        "2026-03-20T08:12:38.176557,5,recommendation request t:8082, status 200, result: "
        "Invalid response from t:8082: not a comma-separated list of movie ids, 3 ms"
    )
    ev = parse_line(line)
    assert isinstance(ev, RecommendationEvent) and not ev.ok and ev.status == 200
    assert format_event(ev) == line


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "empty"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides+2004/20", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides+2004/0.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides 2004/3.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m//3.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m/a,b/3.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /data/m/br\u00efdes/3.mpg", "watch request"),
        ("2026-03-20T08:12:38,614,GET /rate/brides+2004=11", "outside 1..10"),
        ("2026-03-20T08:12:38,614,GET /rate/brides+2004=0", "outside 1..10"),
        ("2026-03-20T08:12:38,614,GET /rate/brides+2004=07", "rate request"),
        ("2026-03-20T08:12:38,614,GET /rate/brides+2004=", "rate request"),
        ("2026-03-20T08:12:38,614,GET /rate/=4", "rate request"),
        ("2026-02-30T08:12:38,614,GET /rate/brides+2004=3", "not a valid date"),
        ("2026-03-20 08:12:38,614,GET /rate/brides+2004=3", "expected '<time>"),
        ("2026-03-20T08:12:38.1234567890,614,GET /rate/brides+2004=3", "expected '<time>"),
        ("2026-03-20T08:12:38.,614,GET /rate/brides+2004=3", "expected '<time>"),
        ("2026-03-20T08:12.5,614,GET /create_account", "expected '<time>"),  # a fraction needs seconds
        ("2026-03-20T08:12,614,recommendation request t:1, status 200, result: a+1, 3 ms ", "expected 'recommendation"),
        ("2026-03-20T08,614,GET /rate/brides+2004=3", "expected '<time>"),
        ("2024-10-14T15 :42:39,100015,GET /rate/robots+2005=3", "expected '<time>"),
        ("2024-10-14T16G:55:12,100016,GET /rate/el+dorado+1988=4", "expected '<time>"),
        ("2026-03-20T08:12:38,-4,GET /rate/brides+2004=3", "user id '-4' is not a positive integer"),
        ("2026-03-20T08:12:38,0614,GET /rate/brides+2004=3", "user id '0614'"),
        ("2026-03-20T08:12:38,12345678901,GET /create_account", "user id '12345678901'"),
        ("2026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg\n", "line break"),
        ("2026-03-20T08:12:38,614,POST /rate/brides+2004=3", "unknown request"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:99999, status 200, result: a+1, 3 ms", "port"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:80, status 200, result: a+1, a+1, 3 ms", "repeat"),
        ("2026-03-20T08:12:38.000001,6,recommendation request t:80, status 500, result: , 3 ms", "error text"),
        (
            "2026-03-20T08:12:38.000001,6,recommendation request t:80, status 200, result: a+1, 3ms",
            "expected 'recommendation",
        ),
    ],
)
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
nanos = st.one_of(st.just(0), st.integers(0, 999))
users = st.integers(1, 9_999_999_999)
#: The course's id alphabet: printable ASCII without whitespace, ',' or '/'.
ID_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ",/")
slugs = st.text(ID_ALPHABET, min_size=1, max_size=40)
servers = st.tuples(st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True), st.integers(0, 65535)).map(
    lambda hp: f"{hp[0]}:{hp[1]}"
)
errors = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=60).filter(
    lambda s: s.strip() and not s.endswith(" ") and s[0].isupper()
)
events = st.one_of(
    st.builds(WatchEvent, times, users, slugs, st.integers(1, 99_999), nanos),
    st.builds(RateEvent, times, users, slugs, st.integers(1, 10), nanos),
    st.builds(AccountEvent, times, users, nanos),
    st.builds(
        RecommendationEvent,
        times,
        users,
        servers,
        st.just(200),
        st.lists(slugs, min_size=1, max_size=20, unique=True).map(tuple),
        st.none(),
        st.integers(0, 10**6),
        nanos,
    ),
    st.builds(
        RecommendationEvent,
        times,
        users,
        servers,
        st.sampled_from([0, 404, 500, 503]),
        st.just(()),
        errors,
        st.integers(0, 10**6),
        nanos,
    ),
)


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
    mutated = {
        "delete": line[:pos] + line[pos + 1 :],
        "insert": line[:pos] + char + line[pos:],
        "replace": line[:pos] + char + line[pos + 1 :],
        "truncate": line[:pos],
    }[how]
    try:
        ev = parse_line(mutated)
    except MalformedEvent:
        return
    assert parse_line(format_event(ev)) == ev  # what parses formats to a line that says the same
    if mutated.split(",", 1)[0] == line.split(",", 1)[0]:
        assert format_event(ev) == mutated  # with the stamp untouched, only exact shapes are accepted


# --- real course lines ---------------------------------------------------------------------------
COURSE = Path(__file__).parent.parent / "data" / "course"


def _course_lines() -> tuple[list[str], list[str]]:
    """(lines that must parse, broken lines) of the real course stream kept by student teams."""
    good: list[str] = []
    broken: list[str] = []
    block = good
    for line in (COURSE / "lines.txt").read_text("utf-8").splitlines():
        if line.startswith("# Broken"):
            block = broken
        elif line and not line.startswith("#"):
            block.append(line)
    return good, broken


def test_every_real_course_line_parses_with_its_ids_and_precision() -> None:
    good, _ = _course_lines()
    events = [parse_line(line) for line in good]
    assert len(events) == 15
    by_user = {e.user_id: e for e in events}
    answered, timed_out = events[2], events[3]
    assert answered.ok and answered.recommendations[2] == "ben-hur+1959"  # a good answer, not a failure
    assert not timed_out.ok and timed_out.status == 0 and timed_out.error.endswith("after 800 ms")
    assert not [e for e in events if isinstance(e, RecommendationEvent) and e.status == 200 and not e.ok]
    assert by_user[100005].movie_id == "monsters_+inc.+2001"
    assert by_user[100008].movie_id == "dr.+no+1962" and by_user[100008].rating == 5
    assert by_user[100013].rating == 7  # the 2026 edition's 10-star scale
    assert by_user[100004].time == datetime(2023, 3, 20, 8, 13)  # minutes only
    assert by_user[100012].time == datetime(2026, 2, 14, 0, 9, 20, 426000)  # 3 fractional digits
    nine = by_user[100011]
    assert (nine.time.microsecond, nine.nanosecond) == (122692, 921)  # 9 digits, kept to the nanosecond
    assert nine.recommendations[1] == "the+hunger+games+mockingjay+-+part+1+2014"
    assert format_event(nine) == good[11]


def test_broken_real_course_lines_are_malformed_with_a_reason() -> None:
    _, broken = _course_lines()
    assert len(broken) == 2
    for line in broken:
        with pytest.raises(MalformedEvent, match="expected '<time>,<userid>,<request>'"):
            parse_line(line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-10-14T15:22", (datetime(2024, 10, 14, 15, 22), 0)),
        ("2019-09-05T19:27:01", (datetime(2019, 9, 5, 19, 27, 1), 0)),
        ("2026-02-14T00:09:20.4", (datetime(2026, 2, 14, 0, 9, 20, 400000), 0)),
        ("2026-02-14T00:09:20.426", (datetime(2026, 2, 14, 0, 9, 20, 426000), 0)),
        ("2022-02-08T18:06:56.145104", (datetime(2022, 2, 8, 18, 6, 56, 145104), 0)),
        ("2025-10-17T01:33:45.1226929", (datetime(2025, 10, 17, 1, 33, 45, 122692), 900)),
        ("2025-10-17T01:33:45.122692921", (datetime(2025, 10, 17, 1, 33, 45, 122692), 921)),
    ],
)
def test_time_stamps_of_every_precision(text: str, expected: tuple[datetime, int]) -> None:
    assert parse_time(text) == expected
    line = f"{text},5,GET /create_account"
    ev = parse_line(line)
    assert (ev.time, ev.nanosecond) == expected


def test_format_time_digits() -> None:
    t = datetime(2025, 10, 17, 1, 33, 45, 122692)
    assert format_time(t) == "2025-10-17T01:33:45"
    assert format_time(t, 6) == "2025-10-17T01:33:45.122692"
    assert format_time(t, 9, 921) == "2025-10-17T01:33:45.122692921"
    assert format_time(t, 3) == "2025-10-17T01:33:45.122"
    with pytest.raises(ValueError, match="not YYYY"):
        parse_time("2025-10-17 01:33:45")
    with pytest.raises(ValueError, match="not YYYY"):
        parse_time("2025-10-17T01:33.5")
    with pytest.raises(ValueError, match="not a valid date"):
        parse_time("2025-02-30T01:33:45")


@given(st.text(ID_ALPHABET, min_size=1, max_size=60), st.text(ID_ALPHABET, min_size=1, max_size=60))
def test_rate_line_id_is_what_stands_before_the_last_equals_sign(a: str, b: str) -> None:
    movie = f"{a}={b}"[:200]
    ev = parse_line(f"2026-03-20T08:12:41,7,GET /rate/{movie}=9")
    assert isinstance(ev, RateEvent) and ev.movie_id == movie and ev.rating == 9


def test_editions() -> None:
    assert edition("current") is edition("2026") is edition(2026)
    assert edition(2021).name == "2019-2023" and edition("2021").rating_max == 5
    assert edition("2024-2025").rec_fraction_digits == 9 and edition("2019").rec_fraction_digits == 6
    assert edition("2026").rating_max == 10 and edition("2026").self_descriptions and edition("2026").license_cost
    assert edition("2019").check_rating(7) == "rating 7 is outside 1..5 of the 2019-2023 edition"
    assert edition("2026").check_rating(7) is None
    for bad in ("2018", "2027", "next", ""):
        with pytest.raises(UnknownEdition, match=repr(bad)):
            edition(bad)


# --- slugs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Usual Suspects, The (1995)", "the+usual+suspects+1995"),
        ("Toy Story (1995)", "toy+story+1995"),
        ("Misérables, Les (1998)", "les+misrables+1998"),  # non-ASCII letters are dropped, not folded
        ("Monsters, Inc. (2001)", "monsters_+inc.+2001"),
        ("Ben-Hur (1959)", "ben-hur+1959"),
        ("Dr. No (1962)", "dr.+no+1962"),
        ("Harold & Kumar Go to White Castle (2004)", "harold++kumar+go+to+white+castle+2004"),
        ("Good, The Bad and The Ugly, The (1966)", "the+good_+the+bad+and+the+ugly+1966"),
        ("The Hunger Games: Mockingjay - Part 1 (2014)", "the+hunger+games+mockingjay+-+part+1+2014"),
        ("Schindler's List (1993)", "schindlers+list+1993"),
        ("Please Don't Eat the Daisies (1960)", "please+dont+eat+the+daisies+1960"),
        (
            "Don't Be a Menace to South Central While Drinking Your Juice in the Hood (1996)",
            "dont+be+a+menace+to+south+central+while+drinking+your+juice+in+the+hood+1996",
        ),
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "the+city+of+lost+children+1995"),
        ("Face/Off (1997)", "faceoff+1997"),
        ("What? Why! [Really] {No} (2000)", "what+why+really+no+2000"),
        ("Carcasses", "carcasses+"),  # no year: a trailing '+'
        ("!!! (2001)", "untitled+2001"),
    ],
)
def test_slug_rule(title: str, slug: str) -> None:
    assert slugify(*split_title_year(title)) == slug
    assert is_movie_id(slug)


def test_clashing_slugs_get_deterministic_suffixes() -> None:
    got = unique_slugs([("Hamlet", 1996), ("Hamlet", 1996), ("Hamlet", 1996), ("Hamlet 1996", 2)])
    assert got == ["hamlet+1996", "hamlet+1996+2", "hamlet+1996+3", "hamlet+1996+2+2"]
    assert len(set(got)) == len(got)
    assert unique_slugs([("Hamlet", 1996)], taken=["hamlet+1996"]) == ["hamlet+1996+2"]


@given(st.lists(st.tuples(st.text(max_size=30), st.one_of(st.none(), st.integers(1888, 2030))), max_size=40))
def test_unique_slugs_are_unique_valid_slugs(items) -> None:
    got = unique_slugs(items)
    assert len(set(got)) == len(got) and all(is_movie_id(s) for s in got)


def test_check_movie_id_names_the_id_and_the_reason() -> None:
    with pytest.raises(InvalidMovieId, match=r"'Toy Story'.*character ' '"):
        check_movie_id("Toy Story")
    with pytest.raises(InvalidMovieId, match="longer than 200"):
        check_movie_id("a" * 201)
    with pytest.raises(InvalidMovieId, match="expected a string"):
        check_movie_id(7)
    for good in ("toy+story+1995", "monsters_+inc.+2001", "ben-hur+1959", "carcasses+", "a=b"):
        assert check_movie_id(good) == good


def test_years_below_1000_keep_four_digits() -> None:
    line = "0026-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg"
    assert format_event(parse_line(line)) == line


def test_non_ascii_digits_are_refused() -> None:
    with pytest.raises(MalformedEvent):
        parse_line("２０２６-03-20T08:12:38,614,GET /data/m/brides+2004/20.mpg")
    with pytest.raises(MalformedEvent):
        parse_line("2026-03-20T08:12:38,６１４,GET /data/m/brides+2004/20.mpg")
