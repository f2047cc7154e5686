"""Scoring from the hidden truth: each figure on small hand-made session logs with known answers."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from movielab.contract import recommendation_line, watch_line
from movielab.world.scoring.board import Scoreboard, ScoreCollector, event_effects, read_manifest
from movielab.world.scoring.coursechecks import StreamChecks, course_checks
from movielab.world.scoring.daily import History, ScoreParams, Truth, score_day
from movielab.world.scoring.errors import ScoringError
from movielab.world.scoring.metrics import csr_sets, gini, jaccard_pairs, list_regret
from movielab.world.sessionlog import SessionLog, SessionLogError, day_start, read_days

DAY0 = day_start("2026-03-20")


def test_gini_of_known_vectors() -> None:
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)  # (n-1)/n: all on one of n
    assert gini(np.array([1, 2, 3, 4])) == pytest.approx(0.25)
    assert np.isnan(gini(np.zeros(3)))
    with pytest.raises(ScoringError, match="non-negative"):
        gini(np.array([1, -1]))


def test_jaccard_of_known_histories() -> None:
    # user 0: {1,2,3}; user 1: {2,3,4}; user 2: {}; user 3: {1,2,3} (2 repeated)
    owner = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3, 3])
    item = np.array([1, 2, 3, 2, 3, 4, 1, 2, 3, 2])
    indptr, items = csr_sets(owner, item, 4)
    got = jaccard_pairs(indptr, items, np.array([0, 0, 1, 0]), np.array([1, 3, 3, 2]))
    assert got[:3] == pytest.approx([2 / 4, 1.0, 2 / 4])
    assert got[3] == 0.0  # {1,2,3} vs {}: union 3, intersection 0


def test_regret_is_zero_for_the_oracle_list_and_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 100))
    seen = np.zeros((3, 100), np.bool_)
    seen[0, np.argmax(scores[0])] = True  # the best movie is seen: the oracle skips it
    oracle = np.argsort(-np.where(seen, -np.inf, scores), axis=1)[:, :20]
    assert list_regret(scores.copy(), np.nonzero(seen), oracle) == pytest.approx(np.zeros(3))
    shuffled = oracle[:, ::-1]  # order does not matter, only the set
    assert list_regret(scores.copy(), np.nonzero(seen), shuffled) == pytest.approx(np.zeros(3))
    worst = np.argsort(scores, axis=1)[:, :20]
    assert (list_regret(scores.copy(), np.nonzero(seen), worst) > 0.5).all()
    with_seen = oracle.copy()
    with_seen[0, 0] = int(np.argmax(scores[0]))  # serving a seen movie wastes the slot
    assert list_regret(scores.copy(), np.nonzero(seen), with_seen)[0] > 0


def _truth(n_users: int, n_movies: int, k: int = 4, seed: int = 0) -> Truth:
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, k)).astype(np.float32)
    return Truth(
        3.5,
        rng.normal(size=(n_movies, k)).astype(np.float32),
        np.zeros(n_movies, np.float32),
        np.full(n_movies, 0.1, np.float32),
        np.arange(n_movies)[::-1].copy(),
        taste,
        taste.copy(),
        np.zeros(n_users, np.float32),
        np.full(n_users, 30),
        (np.arange(n_users) // 2) % 2,
        np.arange(n_users) % 3,
    )


def _day(log: SessionLog, truth: Truth, lists: dict[int, np.ndarray], status: int = 200, t: float = DAY0 + 3600):
    """Every user asks once; picks the first served movie when the user is in `lists` (team by row)."""
    rows = np.arange(len(truth.taste_end), dtype=np.int32)
    served = np.full((len(rows), 20), -1, np.int32)
    for r in rows:
        served[r] = lists[r % log.n_teams][r] if status == 200 else -1
    log.requests(np.full(len(rows), t), rows, np.full(len(rows), status), np.full(len(rows), 5), served)
    go = (rows % log.n_teams == 0) & (status == 200)
    movie = served[go, 0]
    log.picks(go, movie, np.zeros(int(go.sum()), np.bool_), np.full(int(go.sum()), 4.0, np.float32))
    log.ended(rows[go], np.full(int(go.sum()), 50), np.ones(int(go.sum()), np.bool_), np.full(int(go.sum()), t + 3000))


def test_score_day_on_a_known_log() -> None:
    n, m = 60, 200
    truth = _truth(n, m)
    scores = truth.taste_start @ truth.item_factors.T
    oracle = np.argsort(-scores, axis=1)[:, :20].astype(np.int32)
    constant = np.tile(np.arange(20, dtype=np.int32), (n, 1))
    log = SessionLog(n_teams=2)
    _day(log, truth, {0: oracle, 1: constant})
    rows = score_day(
        log.day("2026-03-20"),
        truth,
        History.empty(),
        2,
        ScoreParams(min_group=5),
        takedowns=[(0, DAY0), (1, DAY0 + 7200)],
    )  # movie 1 taken down after the requests
    one, two = rows
    assert one["answered"] == two["answered"] == 30
    assert one["personalized_share"] == 1.0 and two["personalized_share"] == 0.0  # one list for everyone
    assert two["takedown_violations"] == 30 and one["takedown_violations"] == int((oracle[::2] == 0).any(1).sum())
    assert (one["team"], one["requests"], two["requests"]) == (1, 30, 30)
    assert one["availability"] == 1.0 and one["latency_p99"] == 5.0
    assert one["conversion"] == 1.0 and two["conversion"] == 0.0
    assert one["regret"] == pytest.approx(0.0, abs=1e-9) and two["regret"] > 0.3
    assert two["coverage"] == pytest.approx(20 / m)
    assert two["exposure_gini"] == pytest.approx(1 - 20 / m)  # 20 equal movies of m: (m-20)/m
    assert one["exposure_gini"] < two["exposure_gini"]
    assert two["popularity_bias"] == pytest.approx(1 - 9.5 / m)  # rows 0..19 are the most popular
    assert one["completion"] == 1.0 and one["watch_minutes"] == 50.0 and one["true_rating"] == 4.0
    assert one["profit"] == pytest.approx(30 * (50 * 0.005 - 0.1))
    assert two["profit"] == 0.0
    assert one["homogenization"] < 1.0 and np.isnan(two["homogenization"])  # team 2's users picked nothing
    assert one["conversion_gap_gender"] == 0.0
    assert set(one["fairness"]["conversion_gender"]) == {"F", "M"}
    assert one["feedback_pull"] == pytest.approx(0.0) and one["taste_drift"] == 0.0  # taste did not move
    json.dumps(rows)  # plain values only


def test_feedback_pull_sees_taste_moving_toward_the_served_lists() -> None:
    n, m = 40, 100
    truth = _truth(n, m, seed=3)
    lists = np.tile(np.arange(20, 40, dtype=np.int32), (n, 1))
    centroid = truth.item_factors[20:40].mean(axis=0)
    moved = truth.taste_start + 0.3 * (centroid - truth.taste_start)
    truth = Truth(**{**truth.__dict__, "taste_end": moved.astype(np.float32)})
    log = SessionLog(n_teams=1)
    _day(log, truth, {0: lists})
    (row,) = score_day(log.day("2026-03-20"), truth, History.empty(), 1)
    assert row["feedback_pull"] > 0.05 and row["taste_drift"] > 0


def test_failed_requests_score_no_availability_and_no_regret() -> None:
    truth = _truth(10, 100)
    log = SessionLog(n_teams=1)
    _day(log, truth, {0: np.zeros((10, 20), np.int32)}, status=0)
    (row,) = score_day(log.day("2026-03-20"), truth, History.empty(), 1)
    assert row["availability"] == 0.0 and row["conversion"] == 0.0 and np.isnan(row["regret"])


def test_session_log_flushes_days_to_npz_and_reads_them_back(tmp_path) -> None:
    truth = _truth(10, 100)
    log = SessionLog(n_teams=2, state_dir=tmp_path)
    _day(log, truth, {0: np.tile(np.arange(20, dtype=np.int32), (10, 1)), 1: np.zeros((10, 20), np.int32) - 1})
    _day(
        log,
        truth,
        {0: np.tile(np.arange(20, dtype=np.int32), (10, 1)), 1: np.zeros((10, 20), np.int32) - 1},
        t=DAY0 + 86400 + 60,
    )
    assert log.flush(DAY0 + 86400) == [tmp_path / "sessions" / "2026-03-20.npz"]
    (day,) = read_days(tmp_path)
    assert len(day) == 10 and day.sessions["served"].shape == (10, 20)
    assert day.sessions["ok"].sum() == 5  # team 2 served empty lists: not OK
    assert day.sessions["from_list"].sum() == 5 and (day.sessions["rank"][day.sessions["from_list"]] == 0).all()
    assert len(day.ends["end_sid"]) == 5
    assert log.days() == ["2026-03-20", "2026-03-21"]
    assert len(log.day("2026-03-21")) == 10  # still in memory
    with pytest.raises(SessionLogError, match="picks"):
        log.picks(np.ones(3, np.bool_), np.zeros(3), np.zeros(3), np.zeros(3))


def _rec(t: str, user: int, ids: list[str] | None, ms: int = 10) -> str:
    if ids is None:
        return recommendation_line(t, user, "team:8082", 0, "Request timeout to team:8082 after 600 ms", 600)
    return recommendation_line(t, user, "team:8082", 200, ", ".join(ids), ms)


def test_course_checks_from_stream_lines() -> None:
    at = datetime(2026, 3, 22, 12)
    lines = [
        _rec("2026-03-22T10:00:00.000001", 1, ["a+1", "b+2"]),
        _rec("2026-03-22T10:00:01.000001", 2, ["a+1", "b+2"]),  # same list as user 1: not personalized
        _rec("2026-03-22T11:00:00.000001", 3, ["c+3", "a+1"]),
        _rec("2026-03-22T11:30:00.000001", 3, ["c+3", "a+1"]),  # same user again: still personalized
        _rec("2026-03-22T11:40:00.000001", 4, None),
        _rec("2026-03-20T11:00:00.000001", 5, ["b+2"]),  # older than 24 h, inside the 72 h window
        _rec("2026-03-10T11:00:00.000001", 5, None),  # outside every window
        watch_line("2026-03-22T11:00:00", 1, "a+1", 3),
        "garbage line",
    ]
    got = course_checks(lines, at, takedowns=[("a+1", datetime(2026, 3, 22, 10, 30)), ("z+9", at)])
    assert got["answered_24h"] == 4
    assert got["personalized_share"] == pytest.approx(2 / 4)
    assert got["availability"] == pytest.approx(5 / 6) and got["window_requests"] == 6
    assert got["takedown_violations"] == {"a+1": 2, "z+9": 0}
    assert got["unparsable"] == 1 and got["recommendation_lines"] == 7
    with pytest.raises(ScoringError, match="takedown"):
        course_checks([], at, takedowns=[("a+1", "yesterday")])


def test_stream_checks_per_day_windows_and_counts() -> None:
    checks = StreamChecks(takedowns=[("a+1", datetime(2026, 3, 22, 10, 30))])
    lines = [
        _rec("2026-03-22T10:00:00.000001", 1, ["a+1", "b+2"]),  # before the takedown
        _rec("2026-03-22T10:00:01.000001", 2, ["a+1", "b+2"]),
        _rec("2026-03-22T11:00:00.000001", 3, ["c+3", "a+1"]),  # a violation
        _rec("2026-03-22T11:30:00.000001", 3, ["c+3", "a+1"]),  # same user again: personalized, a violation
        _rec("2026-03-22T11:40:00.000001", 4, None),
        _rec("2026-03-20T00:30:00.000001", 5, ["b+2"]),  # within 72 h before the 22nd's end: in its window
        _rec("2026-03-19T23:59:59.000001", 5, None),  # before that: outside it
        _rec("2026-03-26T23:00:00.000001", 6, None),  # the window's last day (96 h after the 22nd's end)
        _rec("2026-03-27T00:00:00.000001", 6, None),  # after it
        watch_line("2026-03-22T11:00:00", 1, "a+1", 3),
        "2026-03-22T11:00:00,1,recommendation request broken",
        watch_line("2026-03-23T01:00:00", 1, "a+1", 4),  # a day without requests
        "no stamp here",
    ]
    for i, line in enumerate(lines):
        checks.add(line.encode() if i % 2 else line)  # bytes from Kafka or text
    got = checks.day(date(2026, 3, 22))
    assert got["answered_24h"] == 4 and got["requests"] == 5
    assert got["personalized_share"] == pytest.approx(2 / 4)
    assert got["window_requests"] == 7 and got["availability"] == pytest.approx(5 / 7)
    assert got["takedown_violations"] == 2 and got["window_complete"] is True
    assert checks.unparsable == 1 and checks.other_lines == 3 and checks.recommendation_lines == 9
    # Lines not parsed are counted on their own day (not the whole read's count on every day), undated apart.
    assert got["unparsable"] == 1 and got["other_lines"] == 1
    assert checks.day(date(2026, 3, 23))["other_lines"] == 1 and checks.day(date(2026, 3, 20))["other_lines"] == 0
    assert checks.undated() == {"other_lines": 1, "unparsable": 0}
    assert date(2026, 3, 23) in checks.dates() and date(2026, 3, 23) not in checks.days
    assert sum(checks.day(d)["other_lines"] + checks.day(d)["unparsable"] for d in checks.dates()) == 3
    assert checks.day(date(2026, 3, 26))["window_complete"] is False  # lines of the 30th not seen yet
    empty = checks.day(date(2026, 1, 1))
    assert empty["answered_24h"] == 0 and math.isnan(empty["personalized_share"])


def test_scoreboard_files_table_metrics_and_events(tmp_path) -> None:
    board = Scoreboard(tmp_path)
    board.add(
        "2026-03-20",
        [
            {"team": 1, "day": "2026-03-20", "conversion": 0.5, "regret": float("nan")},
            {"team": 2, "day": "2026-03-20", "conversion": 0.1, "regret": 1.0},
        ],
    )
    again = Scoreboard(tmp_path)
    assert again.days["2026-03-20"][0]["regret"] is None  # nan → null in JSON
    assert (tmp_path / "scores.csv").read_text().splitlines()[1].startswith("2026-03-20,1,")
    assert "0.500" in again.table() and "-" in again.table()
    with pytest.raises(ScoringError, match="team 7"):
        again.team(7)
    samples = {
        (s.labels.get("team"), s.labels.get("metric")): s.value
        for fam in ScoreCollector(again).collect()
        for s in fam.samples
    }
    assert samples[("2", "conversion")] == 0.1 and ("1", "regret") not in samples
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        json.dumps({"kind": "outage", "start": "2026-03-20T02:00:00", "end": DAY0 + 3 * 3600})
        + "\n"
        + json.dumps({"kind": "drift", "at": DAY0 + 7200})
        + "\n"
    )
    events = read_manifest(manifest)
    assert events[0] == {"kind": "outage", "start": DAY0 + 7200, "end": DAY0 + 10800}
    assert events[1]["end"] == DAY0 + 7200 + 3600
    log = SessionLog(n_teams=1)
    truth = _truth(4, 100)
    _day(log, truth, {0: np.tile(np.arange(20, dtype=np.int32), (4, 1))}, t=DAY0 + 5000)  # before: all OK
    _day(log, truth, {0: np.zeros((4, 20), np.int32)}, status=0, t=DAY0 + 8000)  # during: all fail
    (effect, _) = event_effects([log.day("2026-03-20")], 1, events)
    assert effect["availability_before"] == 1.0 and effect["availability_during"] == 0.0
    assert effect["requests_after"] == 0 and effect["availability_after"] is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"start": 5}\n')
    with pytest.raises(ScoringError, match="line 1: needs 'kind'"):
        read_manifest(bad)


def test_course_score_command_prints_the_board_and_one_team(tmp_path, capsys) -> None:
    from movielab.cli import main

    assert main(["course", "score", "--state", str(tmp_path)]) == 2
    assert "no scores under" in capsys.readouterr().err
    n = 40
    truth = _truth(n, 100)
    log = SessionLog(n_teams=2, state_dir=tmp_path)
    lists = np.tile(np.arange(20, dtype=np.int32), (n, 1))
    _day(log, truth, {0: lists, 1: lists}, t=DAY0 + 3 * 3600)  # before the outage (2 h window)
    _day(log, truth, {0: lists, 1: lists}, status=0, t=DAY0 + 5 * 3600)
    log.flush(DAY0 + 86400)
    Scoreboard(tmp_path).add("2026-03-20", score_day(log.day("2026-03-20"), truth, History.empty(), 2))
    assert main(["course", "score", "--state", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "scores of 2026-03-20" and out.splitlines()[1].split()[:3] == [
        "team",
        "requests",
        "availability",
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"kind": "outage", "start": DAY0 + 4 * 3600, "end": DAY0 + 6 * 3600}) + "\n")
    assert main(["course", "score", "--state", str(tmp_path), "--team", "1", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "team 1, day by day" in out and "conversion_gender on 2026-03-20" in out
    event = out.splitlines()[-1].split()
    assert event[:4] == ["-", "outage", "2026-03-20T04:00", "2026-03-20T06:00"]  # no id: not a world manifest
    assert event[4:] == ["1.000", "0.000", "-", "1.000", "0.000", "-"]  # conversion, availability: before/during/after
    assert main(["course", "score", "--state", str(tmp_path), "--team", "5"]) == 2
    assert "team 5: no scores" in capsys.readouterr().err


def test_regret_counts_a_repeated_id_once() -> None:
    scores = np.arange(100, dtype=np.float64)[None, :]
    seen = np.zeros((1, 100), np.bool_)
    oracle = np.arange(80, 100)[None, :]
    repeated = oracle.copy()
    repeated[0, 1] = repeated[0, 0]  # 80 twice, 81 missing
    typical = scores.mean()  # 49.5 < the 20th best (80)
    assert list_regret(scores.copy(), np.nonzero(seen), repeated)[0] == pytest.approx((81 - typical) / 20)
    assert list_regret(scores.copy(), np.nonzero(seen), np.full((1, 20), -1))[0] == pytest.approx(89.5 - typical)


def test_daily_scorer_scores_each_midnight_off_the_loop(universe, tmp_path) -> None:
    from movielab.world.bootstrap import build_world
    from movielab.world.config import WorldConfig
    from movielab.world.recs import FixedService
    from movielab.world.scoring.board import DailyScorer

    log = SessionLog(n_teams=1, state_dir=tmp_path)
    world, _ = build_world(
        WorldConfig(users=600, allow_download=False, arrivals_per_day=0.05),
        universe=universe,
        service=FixedService(np.arange(20), universe.catalog.slug),
        sessionlog=log,
    )
    board = Scoreboard(tmp_path)
    scorer = DailyScorer(log, board, universe.catalog)
    world.run(until=DAY0 + 1.5 * 86400, on_tick=scorer.on_tick)
    scorer.close(world)
    assert sorted(board.days) == ["2026-03-20", "2026-03-21"]
    one, two = board.days["2026-03-20"][0], board.days["2026-03-21"][0]
    assert one["homogenization_change"] is None
    assert two["homogenization_change"] == pytest.approx(two["homogenization"] - one["homogenization"])
    assert [p.name for p in sorted((tmp_path / "sessions").iterdir())] == ["2026-03-20.npz", "2026-03-21.npz"]
    days = read_days(tmp_path)
    assert sum(len(d) for d in days) == world.stats.sessions  # every request recorded once, across midnight
    assert sum(d.sessions["picked"].sum() for d in days) == world.stats.viewings
    first = board.days["2026-03-20"][0]
    assert first["requests"] == len(days[0]) and first["coverage"] == pytest.approx(20 / len(universe.catalog.slug))
    assert 0 < first["taste_drift"] and first["conversion"] > 0


def test_session_log_checkpoint_state_and_replay_without_doubles(tmp_path) -> None:
    truth = _truth(10, 100)
    lists = {0: np.tile(np.arange(20, dtype=np.int32), (10, 1))}
    log = SessionLog(n_teams=1, state_dir=tmp_path)
    _day(log, truth, lists, t=DAY0 + 60)
    state = log.state()  # buffered records are on disk now
    assert int(state["next_sid"][0]) == 10 and len(read_days(tmp_path)[0]) == 10
    _day(log, truth, lists, t=DAY0 + 120)  # happens after the checkpoint, then the world is killed
    log.flush(np.inf)
    assert len(read_days(tmp_path)[0]) == 20
    again = SessionLog(n_teams=1, state_dir=tmp_path)
    again.restore(state)
    _day(again, truth, lists, t=DAY0 + 120)  # the same sessions, re-simulated after the restore
    again.flush(np.inf)
    (day,) = read_days(tmp_path)
    assert len(day) == 20 and len(np.unique(day.sessions["sid"])) == 20  # replaced, not doubled
    assert len(day.ends["end_sid"]) == len(np.unique(day.ends["end_sid"]))
    with pytest.raises(SessionLogError, match="incomplete"):
        again.restore({"open": np.zeros(3)})


def test_daily_scorer_stopping_at_midnight_scores_no_empty_day(universe, tmp_path) -> None:
    from movielab.world.bootstrap import build_world
    from movielab.world.config import WorldConfig
    from movielab.world.recs import FixedService
    from movielab.world.scoring.board import DailyScorer

    log = SessionLog(n_teams=1, state_dir=tmp_path)
    world, _ = build_world(
        WorldConfig(users=300, allow_download=False),
        universe=universe,
        service=FixedService(np.arange(20), universe.catalog.slug),
        sessionlog=log,
    )
    scorer = DailyScorer(log, Scoreboard(tmp_path), universe.catalog)
    world.run(until=DAY0 + 86400, on_tick=scorer.on_tick)
    scorer.close(world)
    assert sorted(Scoreboard(tmp_path).days) == ["2026-03-20"]


def test_read_manifest_pairs_start_and_end_records_by_injection_id(tmp_path) -> None:
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    records = [
        {"event": "course", "kind": "course_started", "at": iso(DAY0)},
        {"event": "start", "id": "0:outage", "kind": "api_outage", "start": iso(DAY0 + 3600), "end": iso(DAY0 + 9000)},
        {"event": "start", "id": "1:drift", "kind": "taste_shift", "start": iso(DAY0 + 7200), "end": None},
        {"event": "course", "kind": "restored", "at": iso(DAY0 + 3000)},  # SIGKILL: the outage's start comes again
        {"event": "start", "id": "0:outage", "kind": "api_outage", "start": iso(DAY0 + 3600), "end": iso(DAY0 + 9000)},
        {
            "event": "end",
            "id": "0:outage",
            "kind": "api_outage",
            "start": iso(DAY0 + 3600),
            "end": iso(DAY0 + 7200),
            "touched": 5,
        },
    ]
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    events = read_manifest(path, until=DAY0 + 20_000)
    assert events == [
        {"kind": "api_outage", "id": "0:outage", "start": DAY0 + 3600, "end": DAY0 + 7200},
        {"kind": "taste_shift", "id": "1:drift", "start": DAY0 + 7200, "end": DAY0 + 20_000},
    ]
    path.write_text(json.dumps({"event": "end", "kind": "api_outage", "start": iso(DAY0)}) + "\n")
    with pytest.raises(ScoringError, match="line 1: an injection's end record needs its 'id'"):
        read_manifest(path)
