"""Per-arm online metrics from the event store, on hand-built batches whose right answer is known."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from batches import lines_batch
from prometheus_client import generate_latest

from movielab.contract import rate_line, recommendation_line, watch_line
from movielab.recommender.monitoring.conversions import window_cost
from movielab.recommender.monitoring.online import ArmGauges, ArmMetrics, arm_metrics, assign_arms, by_arm
from movielab.recommender.release.canary import CanaryPlan, Experiment, tick
from movielab.recommender.serving.traffic import in_challenger
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo

T0 = datetime(2026, 3, 20, 8, 0, 0)
END = T0 + timedelta(hours=3)
A, B, C = "a+2000", "b+2001", "c+2002"
SERVER = "team1.local:8082"
SALT, SHARE = 4242, 0.5


def users_of(salt: int, share: float, n: int) -> tuple[list[int], list[int]]:
    """The first `n` champion and `n` challenger user ids under (salt, share)."""
    champion, challenger = [], []
    for u in range(1, 10_000):
        (challenger if in_challenger(u, salt, share) else champion).append(u)
    return champion[:n], challenger[:n]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def request(minutes: float, user: int, status: int, result: str, ms: int) -> str:
    return recommendation_line(at(minutes).strftime("%Y-%m-%dT%H:%M:%S.%f"), user, SERVER, status, result, ms)


def watch(minutes: float, user: int, movie: str, watched: list[int]) -> list[str]:
    """One line a minute from `minutes` on."""
    return [watch_line(at(minutes + i).strftime("%Y-%m-%dT%H:%M:%S"), user, movie, m) for i, m in enumerate(watched)]


def rate(minutes: float, user: int, movie: str, stars: int) -> str:
    return rate_line(at(minutes).strftime("%Y-%m-%dT%H:%M:%S"), user, movie, stars)


def known_lines(salt: int = SALT, share: float = SHARE) -> list[str]:
    """Champion users c1..c3 and challenger users h1, h2 (see each line's comment for what it should count)."""
    (c1, c2, c3), (h1, h2) = users_of(salt, share, 3)[0], users_of(salt, share, 2)[1]
    lines = [request(-60, c1, 200, A, 9)]  # before the window: not counted
    lines += watch(-59, c1, A, [1, 2])  # … nor its watch
    # c1: converts on A (first of its list), watches 50 of A's 100 minutes, rates it 4; a later request does not
    lines += [request(0, c1, 200, f"{A}, {B}", 10), *watch(1, c1, A, list(range(1, 51))), rate(60, c1, A, 4)]
    lines += [request(120, c1, 200, C, 20)]
    # c2: a time-out, then a request whose movie is watched 69 minutes later: outside the 60-minute window
    lines += [request(10, c2, 0, f"Request timeout to {SERVER} after 600 ms", 601)]
    lines += [request(11, c2, 200, B, 30), *watch(80, c2, B, [1, 2, 3])]
    # c3: converts on C (unknown runtime: 120) with 60 minutes; the next request (list B) takes the later
    # C lines as last touch but does not convert on them; a watch of a movie not recommended converts nothing
    lines += [request(5, c3, 200, f"{A}, {C}", 15), *watch(6, c3, C, list(range(1, 61)))]
    lines += [request(20, c3, 200, B, 25), *watch(100, c3, A, [1, 2])]
    # h1: an HTTP 500, then converts on B (90 minutes, all watched); rates B 5 then 3: the latest counts
    lines += [request(0, h1, 500, f"HTTP 500 from {SERVER}", 5), request(1, h1, 200, f"{B}, {A}", 7)]
    lines += [*watch(30, h1, B, list(range(1, 91))), rate(125, h1, B, 5), rate(130, h1, B, 3)]
    # h2: watches its recommendation only after the window ends; a refused connection; an invalid body
    lines += [request(30, h2, 200, A, 40), *watch(185, h2, A, [1, 2])]
    lines += [request(40, h2, 0, f"Connection refused to {SERVER}", 1)]
    lines += [request(50, h2, 200, f"Invalid response from {SERVER}: not movie ids", 3)]
    lines += [request(190, h2, 200, A, 4)]  # after the window
    return lines


@pytest.fixture
def store():
    with EventStore(None) as s:
        s.add_records(movies=[MovieInfo(A, 100, (), "A"), MovieInfo(B, 90, (), "B"), MovieInfo(C, None, (), "C")])
        yield s


def fill(store: EventStore, lines: list[str]) -> None:
    store.append(lines_batch(lines))


def test_known_answer_per_arm(store: EventStore) -> None:
    fill(store, known_lines())
    m = arm_metrics(store, T0, END, SALT, SHARE)
    champion, challenger = m["champion"], m["challenger"]
    assert (champion.users, champion.requests, champion.ok, champion.errors) == (3, 6, 5, {"timeout": 1})
    assert champion.conversions == 2 and champion.conversion == pytest.approx(2 / 6)
    assert champion.completion_mean == pytest.approx((50 / 100 + 60 / 120) / 2)
    assert (champion.ratings, champion.rating_mean) == (1, 4.0)
    ms = [10, 20, 601, 30, 15, 25]
    assert champion.latency_p50_ms == pytest.approx(np.percentile(ms, 50))
    assert champion.latency_p99_ms == pytest.approx(np.percentile(ms, 99))
    assert (challenger.users, challenger.requests, challenger.ok) == (2, 5, 2)
    assert challenger.errors == {"http_500": 1, "connect": 1, "invalid_body": 1}
    assert challenger.error_rate == pytest.approx(3 / 5) and challenger.ok_share == pytest.approx(2 / 5)
    assert (challenger.conversions, challenger.completion_mean) == (1, pytest.approx(1.0))
    assert (challenger.ratings, challenger.rating_mean) == (1, 3.0)
    assert challenger.latency_p99_ms == pytest.approx(np.percentile([5, 7, 40, 1, 3], 99))
    assert (challenger.salt, challenger.share, challenger.start, challenger.end) == (SALT, SHARE, T0, END)


def test_each_arm_carries_its_users_totals_and_their_pre_period(store: EventStore) -> None:
    fill(store, known_lines())
    (c1, c2, c3), (h1, h2) = users_of(SALT, SHARE, 3)[0], users_of(SALT, SHARE, 2)[1]
    m = arm_metrics(store, T0, END, SALT, SHARE)
    champion, challenger = m["champion"].per_user, m["challenger"].per_user

    def rows(u) -> dict[int, tuple]:
        cols = zip(
            u.requests.tolist(),
            u.ok.tolist(),
            u.conversions.tolist(),
            u.latency_ms.tolist(),
            u.pre_requests.tolist(),
            u.pre_conversions.tolist(),
            strict=True,
        )
        return dict(zip(u.user_id.tolist(), cols, strict=True))

    # c1 made a converted request an hour before the window: its pre-period (the default day before)
    assert rows(champion) == {c1: (2, 2, 1, 30.0, 1, 1), c2: (2, 1, 0, 631.0, 0, 0), c3: (2, 2, 1, 40.0, 0, 0)}
    assert rows(challenger) == {h1: (2, 1, 1, 12.0, 0, 0), h2: (3, 1, 0, 44.0, 0, 0)}
    assert list(challenger.errors) == [1, 2]  # h2: a refused connection and an invalid body
    later = arm_metrics(store, at(30), END, SALT, SHARE, pre_end=T0)  # a later step: pre-period before the start
    assert rows(later["champion"].per_user) == {c1: (1, 1, 0, 20.0, 1, 1)}
    none = arm_metrics(store, T0, END, SALT, SHARE, pre_period=timedelta(0))
    assert none["champion"].per_user.pre_requests.sum() == 0
    with pytest.raises(ValueError, match="pre-period end .* is after the window start"):
        arm_metrics(store, T0, END, SALT, SHARE, pre_end=END)


def test_a_longer_conversion_window_credits_the_late_watch(store: EventStore) -> None:
    fill(store, known_lines())
    m = arm_metrics(store, T0, END, SALT, SHARE, conversion_window=timedelta(minutes=70))
    assert m["champion"].conversions == 3  # c2's B, watched 69 minutes after its request
    assert m["champion"].completion_mean == pytest.approx((0.5 + 0.5 + 3 / 90) / 3)


def test_share_zero_and_one_put_everyone_in_one_arm(store: EventStore) -> None:
    fill(store, known_lines())
    split = arm_metrics(store, T0, END, SALT, SHARE)
    for share, full, empty in ((0.0, "champion", "challenger"), (1.0, "challenger", "champion")):
        m = arm_metrics(store, T0, END, SALT, share)
        assert m[empty].requests == 0 and math.isnan(m[empty].conversion) and m[empty].latency_p99_ms is None
        assert m[full].requests == sum(a.requests for a in split.values())
        assert m[full].conversions == sum(a.conversions for a in split.values())
        assert m[full].errors == {**split["champion"].errors, **split["challenger"].errors}


def test_a_window_only_counts_requests_inside_it(store: EventStore) -> None:
    fill(store, known_lines())
    m = arm_metrics(store, at(30), END, SALT, SHARE)
    # c1 at 120 (no conversion); h2 at 30, 40, 50; everything else is earlier
    assert (m["champion"].requests, m["challenger"].requests) == (1, 3)
    assert m["champion"].conversions == m["challenger"].conversions == 0


def test_events_arriving_later_extend_the_counts(store: EventStore) -> None:
    lines = known_lines()
    fill(store, lines[:5])
    first = arm_metrics(store, T0, END, SALT, SHARE)["champion"].requests
    store.append(lines_batch(lines[5:], first=5))
    assert first < arm_metrics(store, T0, END, SALT, SHARE)["champion"].requests == 6


def test_assignment_matches_the_split() -> None:
    users = np.arange(1, 5000)
    arms = assign_arms(users, SALT, 0.3)
    assert [a == "challenger" for a in arms] == [in_challenger(int(u), SALT, 0.3) for u in users]


def test_bad_windows_are_refused(store: EventStore) -> None:
    with pytest.raises(ValueError, match="is not after its start"):
        arm_metrics(store, END, T0, SALT, SHARE)
    with pytest.raises(ValueError, match="conversion window"):
        arm_metrics(store, T0, END, SALT, SHARE, conversion_window=timedelta(0))
    with pytest.raises(ValueError, match="challenger share 2"):
        arm_metrics(store, T0, END, SALT, 2)


def test_inconsistent_metrics_are_refused() -> None:
    with pytest.raises(ValueError, match="errors by kind add up to 0"):
        ArmMetrics("champion", 1, 0.5, T0, END, users=1, requests=2, ok=1)
    with pytest.raises(ValueError, match="arm 'treatment' is unknown"):
        ArmMetrics("treatment", 1, 0.5, T0, END)


def test_gauges_and_prometheus_export(store: EventStore) -> None:
    fill(store, known_lines())
    m = arm_metrics(store, T0, END, SALT, SHARE)
    g = m["challenger"].gauges()
    assert g["requests"] == 5 and g["conversion"] == pytest.approx(1 / 5) and g["error_rate"] == pytest.approx(0.6)
    assert g["share"] == SHARE and m["champion"].gauges()["share"] == 1 - SHARE
    assert all(isinstance(v, float) for v in g.values())
    gauges = ArmGauges()
    gauges.update("exp1", m)
    text = generate_latest(gauges.registry).decode()
    assert 'experiment_conversion{arm="challenger",experiment="exp1"} 0.2' in text
    assert 'experiment_requests{arm="champion",experiment="exp1"} 6.0' in text
    assert m["champion"].as_dict()["errors"] == {"timeout": 1}
    assert by_arm(m, "conversion") == {"champion": pytest.approx(2 / 6), "challenger": pytest.approx(1 / 5)}
    empty = arm_metrics(store, T0, END, SALT, 0.0)
    assert by_arm(empty, "latency_p99_ms") == {
        "champion": pytest.approx(np.percentile([10, 20, 601, 30, 15, 25, 5, 7, 40, 1, 3], 99))
    }  # the empty challenger arm has no p99
    with pytest.raises(ValueError, match="gauge 'p99' is unknown"):
        by_arm(m, "p99")


def test_tick_feeds_the_controller_from_the_store(store: EventStore) -> None:
    exp = Experiment.start("tick-test", "pop/v1", "ease/v2", CanaryPlan(steps=(0.5, 1.0), min_requests=10), T0)
    fill(store, known_lines(exp.salt, exp.share))
    d = tick(store, exp, END)
    assert d.champion["requests"] == 6 and d.challenger["requests"] == 5 and d.challenger["errors"] == 3
    assert d.action == "wait" and "2 of 50 users in the smaller arm" in d.reason
    assert exp.decisions[-1]["action"] == "wait" and d.p_value is None  # no test looks at two users


def test_license_cost_per_play_and_per_1000_requests_per_arm() -> None:
    with EventStore(None) as store:
        store.add_records(
            movies=[MovieInfo(A, 100, (), "A", 0.5), MovieInfo(B, 90, (), "B", 0.2), MovieInfo(C, None, (), "C")]
        )  # C: no cost in its record
        fill(store, known_lines())
        m = arm_metrics(store, T0, END, SALT, SHARE)
        champion, challenger = m["champion"], m["challenger"]
        # Champion plays in the window: c1 A, c2 B, c3 C and A (c1's earlier A is before it); C has no cost.
        assert (champion.plays, champion.costed_plays, champion.license_cost) == (4, 3, pytest.approx(1.2))
        assert champion.cost_per_play == pytest.approx(0.4)
        assert champion.cost_per_1000_requests == pytest.approx(1000 * 1.2 / 6)
        # Challenger: h1 B; h2 watches A only after the window.
        assert (challenger.plays, challenger.costed_plays, challenger.cost_per_play) == (1, 1, pytest.approx(0.2))
        assert challenger.cost_per_1000_requests == pytest.approx(1000 * 0.2 / 5)
        assert by_arm(m, "cost_per_play") == pytest.approx({"champion": 0.4, "challenger": 0.2})
        assert champion.as_dict()["cost_per_play"] == pytest.approx(0.4)
        assert window_cost(store, T0, END) == {
            "plays": 5,
            "costed_plays": 4,
            "license_cost": pytest.approx(1.4),
            "requests": 11,
        }
        with pytest.raises(ValueError, match="costed plays"):
            ArmMetrics("champion", SALT, SHARE, T0, END, plays=1, costed_plays=2)


def test_no_cost_known_is_nan_not_zero(store: EventStore) -> None:
    fill(store, known_lines())  # the fixture's movies carry no cost (an edition before 2026)
    champion = arm_metrics(store, T0, END, SALT, SHARE)["champion"]
    assert champion.plays == 4 and champion.costed_plays == 0
    assert math.isnan(champion.cost_per_play) and math.isnan(champion.cost_per_1000_requests)
    assert by_arm({"champion": champion}, "cost_per_play") == {}
