"""The two experiments' analysis (`recommender/release/study.py`) on hand-made store contents with a known effect."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import numpy as np
import pytest
from batches import lines_batch

from movielab.contract import account_line, rate_line, recommendation_line, watch_line
from movielab.recommender.release.study import (
    StudyDesign,
    StudyError,
    analyze,
    coldstart_design,
    costaware_design,
    write_report,
)
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo

T0 = datetime(2026, 3, 20, 0, 0, 0)
START, END = T0 + timedelta(days=1), T0 + timedelta(days=3)
PRICEY, CHEAP, OTHER = "pricey+2000", "cheap+2001", "other+2002"
SERVER = "team1.local:8082"


def ts(t: datetime, us: bool = False) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f" if us else "%Y-%m-%dT%H:%M:%S")


def session(t: datetime, user: int, recs: list[str], pick: str | None, rating: int | None = None) -> list[str]:
    """One session: a request answered with `recs`, then (if any) two minutes of `pick` and maybe a rating."""
    lines = [recommendation_line(ts(t, True), user, SERVER, 200, ", ".join(recs), 12)]
    if pick is not None:
        lines += [watch_line(ts(t + timedelta(minutes=1 + i)), user, pick, i + 1) for i in range(2)]
        if rating is not None:
            lines.append(rate_line(ts(t + timedelta(minutes=5)), user, pick, rating))
    return lines


def store_with(lines: list[str]) -> EventStore:
    store = EventStore(None)
    store.add_records(
        movies=[
            MovieInfo(PRICEY, 100, (), "Pricey", 1.0),
            MovieInfo(CHEAP, 100, (), "Cheap", 0.2),
            MovieInfo(OTHER, 100, (), "Other", 0.5),
        ]
    )
    store.append(lines_batch(lines))
    return store


def arms(design: StudyDesign, n: int, first: int = 1000) -> tuple[list[int], list[int]]:
    ids = np.arange(first, first + 20 * n)
    treated = design.treated(ids)
    return ids[~treated][:n].tolist(), ids[treated][:n].tolist()


# --- A: cold start ---------------------------------------------------------------------------------------
def coldstart_lines(
    design: StudyDesign, p_control: float, p_treatment: float, n: int = 300, n_treated: int | None = None, seed: int = 0
) -> tuple[list[str], dict]:
    """New accounts during the window; each of their first 3 sessions converts with the arm's probability.
    Also lines that must not count: a 4th session, an old user, a pick after the next request, a late pick."""
    rng = np.random.default_rng(seed)
    control, treatment = arms(design, max(n, n_treated or n))
    treatment = treatment[: n_treated or n]
    control = control[:n]
    lines, expect = [], {"control": [0, 0], "treatment": [0, 0]}
    for arm, users, p in (("control", control, p_control), ("treatment", treatment, p_treatment)):
        for k, u in enumerate(users):
            t = START + timedelta(minutes=5 * k)
            lines.append(account_line(ts(t), u))
            for s in range(3):
                at = t + timedelta(hours=2 + 3 * s)
                hit = bool(rng.random() < p)
                lines += session(at, u, [CHEAP, OTHER], CHEAP if hit else PRICEY, rating=8 if hit else None)
                expect[arm][0] += 1
                expect[arm][1] += hit
            lines += session(t + timedelta(hours=12), u, [CHEAP], CHEAP)  # a 4th session: not counted
    old = control[0] + 100_000  # an old user (no account line in the window)
    lines += session(START + timedelta(hours=1), old, [CHEAP], CHEAP)
    return lines, expect


def test_coldstart_known_effect_is_found_and_shipped() -> None:
    design = coldstart_design("coldstart-test", START, END)
    lines, expect = coldstart_lines(design, 0.3, 0.6)
    with store_with(lines) as store:
        res = analyze(store, design)
    c, t = res.counts["demographic"], res.counts["selfdesc"]
    assert (c.accounts, t.accounts, c.users, t.users) == (300, 300, 300, 300)
    assert (c.requests, c.conversions) == tuple(expect["control"])
    assert (t.requests, t.conversions) == tuple(expect["treatment"])
    m = res.metrics["conversion"]
    assert m.control == pytest.approx(expect["control"][1] / expect["control"][0])
    assert m.treatment == pytest.approx(expect["treatment"][1] / expect["treatment"][0])
    assert m.test.difference == pytest.approx(m.treatment - m.control)
    assert m.test.ci_low > 0 and m.test.p_value < 0.001
    assert m.control_ci[0] < m.control < m.control_ci[1]
    assert not res.srm.mismatch
    assert res.decision == "ship", res.reason
    assert res.metrics["rating"].role == "reported" and res.metrics["rating"].control == pytest.approx(8.0)


def test_coldstart_without_effect_is_not_shipped() -> None:
    design = coldstart_design("coldstart-test", START, END)
    lines, _ = coldstart_lines(design, 0.45, 0.45, seed=3)
    with store_with(lines) as store:
        res = analyze(store, design)
    m = res.metrics["conversion"]
    assert m.test.ci_low < 0 < m.test.ci_high
    assert res.decision == "no ship" and "does not exclude 0" in res.reason


def test_sample_ratio_mismatch_means_no_decision() -> None:
    design = coldstart_design("coldstart-test", START, END)
    lines, _ = coldstart_lines(design, 0.3, 0.6, n=200, n_treated=400)  # twice as many treated: a broken split
    with store_with(lines) as store:
        res = analyze(store, design)
    assert res.srm.mismatch and (res.srm.champion, res.srm.challenger) == (200, 400)
    assert res.decision == "invalid" and "sample-ratio mismatch" in res.reason


# --- B: cost-aware ---------------------------------------------------------------------------------------
def costaware_lines(
    design: StudyDesign, treated_picks: tuple[float, float], n: int = 300, seed: int = 1
) -> tuple[list[str], dict]:
    """Old users: a pre-period session the day before (control list for everyone), then two sessions. Control
    users pick the pricey movie; treated users the cheap one with probability treated_picks[0], and convert
    (pick from the list) with probability treated_picks[1] (control: 0.7). Ratings 7 both arms."""
    rng = np.random.default_rng(seed)
    control, treatment = arms(design, n)
    lines, expect = [], {"requests": 0, "new": 0}
    for arm, users in (("control", control), ("treatment", treatment)):
        for k, u in enumerate(users):
            t = START + timedelta(minutes=3 * k)
            pre = [PRICEY, OTHER, None][int(rng.integers(3))]
            lines += session(t - timedelta(hours=20), u, [PRICEY, OTHER], pre, 7)
            for s in range(2):
                convert = rng.random() < (0.7 if arm == "control" else treated_picks[1])
                movie = CHEAP if arm == "treatment" and rng.random() < treated_picks[0] else PRICEY
                lines += session(t + timedelta(hours=4 * s), u, [movie, OTHER] if convert else [OTHER], movie, 7)
                expect["requests"] += 1
    new = control[-1] + 50_000  # a new account in the window: left out of B
    lines += [
        account_line(ts(START + timedelta(hours=2)), new),
        *session(START + timedelta(hours=3), new, [CHEAP], CHEAP),
    ]
    return lines, expect


def test_costaware_cheaper_plays_at_equal_conversion_ship() -> None:
    design = costaware_design("cost-test", START, END, trade_off=1.0)
    lines, expect = costaware_lines(design, (0.8, 0.7))
    with store_with(lines) as store:
        res = analyze(store, design)
    c, t = res.counts["plain"], res.counts["costaware"]
    assert c.users == t.users == 300
    assert c.requests + t.requests == expect["requests"]  # the new account's request is not in either arm
    assert res.extra["new_users_left_out"] == 1
    assert c.license_cost == pytest.approx(c.costed_plays * 1.0)  # control plays only the pricey movie
    cost = res.metrics["cost_per_play"]
    assert cost.control == pytest.approx(1.0) and cost.treatment < 0.5
    assert cost.test.ci_high < 0
    assert cost.test.variance_reduction is not None  # the pre-period was used (CUPED)
    assert res.metrics["rating"].test.difference == pytest.approx(0.0)
    assert res.metrics["conversion"].holds and res.metrics["rating"].holds
    assert res.decision == "ship", res.reason


def test_costaware_that_loses_conversion_fails_its_guard() -> None:
    design = costaware_design("cost-test", START, END, trade_off=1.0)
    lines, _ = costaware_lines(design, (0.8, 0.4))
    with store_with(lines) as store:
        res = analyze(store, design)
    assert res.metrics["cost_per_play"].test.ci_high < 0
    assert res.metrics["conversion"].holds is False
    assert res.decision == "no ship" and "guard conversion" in res.reason


def test_report_has_rule_tables_decision_and_plots(tmp_path) -> None:
    a = coldstart_design("coldstart-test", START, END)
    b = costaware_design("cost-test", START, END, trade_off=1.0)
    la, _ = coldstart_lines(a, 0.3, 0.6, n=100)
    lb, _ = costaware_lines(b, (0.8, 0.7), n=100)
    with store_with(la + lb) as store:
        results = [analyze(store, a), analyze(store, b)]
    path = write_report(results, tmp_path, notes=["hand-made data"])
    text = path.read_text()
    assert text.count("**Decision rule (fixed before the data):**") == 2
    assert text.count("**Decision: ") == 2 and "![coldstart](coldstart.svg)" in text
    for kind in ("coldstart", "costaware"):
        root = ET.parse(tmp_path / f"{kind}.svg").getroot()  # well-formed SVG
        assert root.tag.endswith("svg") and len(root.findall(".//{http://www.w3.org/2000/svg}circle")) >= 2
    assert (tmp_path / "results.json").is_file()


def test_designs_are_checked_and_round_trip() -> None:
    b = costaware_design("cost-test", START, END, trade_off=1.0)
    assert StudyDesign.from_dict(b.as_dict()) == b
    with pytest.raises(StudyError, match="kind 'nope' is unknown"):
        StudyDesign("nope", "x", START, END)
    with pytest.raises(StudyError, match="share 1.0"):
        StudyDesign("coldstart", "x", START, END, share=1.0)
    with pytest.raises(StudyError, match="not after its start"):
        StudyDesign("coldstart", "x", END, START)
    with pytest.raises(StudyError, match="metric 'cost_per_play' is unknown"):
        StudyDesign("coldstart", "x", START, END, primary="cost_per_play")
    with pytest.raises(StudyError, match="unknown keys: colour"):
        StudyDesign.from_dict({**b.as_dict(), "colour": "red"})
    assert "cost per play" in b.rule() and "−0.02" in b.rule()


def test_report_command_analyses_a_store_file_again(tmp_path, capsys) -> None:
    from movielab.cli import main

    a = coldstart_design("coldstart-test", START, END)
    lines, _ = coldstart_lines(a, 0.3, 0.6, n=100)
    with EventStore(tmp_path / "store.duckdb") as store:
        store.append(lines_batch(lines))
    designs = tmp_path / "designs.json"
    designs.write_text(json.dumps([a.as_dict()]))
    assert (
        main(
            [
                "experiments",
                "report",
                "--store",
                str(tmp_path / "store.duckdb"),
                "--designs",
                str(designs),
                "--out",
                str(tmp_path / "again"),
            ]
        )
        == 0
    )
    assert "coldstart-test: ship" in capsys.readouterr().out
    assert (tmp_path / "again" / "report.md").is_file()
    # Bad input: a clear error naming the file, exit status 2, no traceback.
    designs.write_text(json.dumps({"kind": "coldstart"}))
    assert main(["experiments", "report", "--store", str(tmp_path / "store.duckdb"), "--designs", str(designs)]) == 2
    assert "expected a JSON list of designs" in capsys.readouterr().err
    designs.write_text(json.dumps([{**a.as_dict(), "share": 2}]))
    assert main(["experiments", "report", "--store", str(tmp_path / "store.duckdb"), "--designs", str(designs)]) == 2
    assert "share 2 must be strictly between 0 and 1" in capsys.readouterr().err
