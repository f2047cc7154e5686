"""The operator metrics and the monitor loop over a real in-memory event store with known events."""

from __future__ import annotations

import warnings
from collections import Counter
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import ClassVar

import pytest
from batches import lines_batch
from prometheus_client.parser import text_string_to_metric_families

from movielab.contract import format_time_us, rate_line, recommendation_line, watch_line
from movielab.recommender.errors import MonitorError
from movielab.recommender.monitoring.exporter import IngestorCollector, OperatorMetrics, create_metrics_app
from movielab.recommender.monitoring.monitor import MonitorLoop
from movielab.recommender.store.events import Batch, EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

T0 = datetime(2026, 3, 20, 8, 0, 0)
A, B = "a+2000", "b+2001"


def batch(lines: list[str], first: int, partition: int = 0, quarantine: list[tuple[int, str]] = ()) -> Batch:
    """Good lines at offsets first.. on `partition` of movielog1, plus quarantined (offset, reason kind)."""
    return lines_batch(lines, first, partition, quarantine=[(o, b"garbage", k, "test") for o, k in quarantine])


def rec(minutes: float, user: int, status: int = 200, ms: int = 20, movies: tuple[str, ...] = (A, B)) -> str:
    t = T0 + timedelta(minutes=minutes)
    result = ", ".join(movies) if status == 200 else "Request timeout to team1.local:8082 after 600 ms"
    return recommendation_line(format_time_us(t), user, "team1.local:8082", status, result, ms)


def watch(minutes: float, user: int, movie: str = A) -> str:
    return watch_line((T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S"), user, movie, 1)


def rate(minutes: float, user: int, rating: int, movie: str = A) -> str:
    return rate_line((T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S"), user, movie, rating)


@pytest.fixture
def store():
    with EventStore(None) as s:
        s.add_records(
            movies=[MovieInfo(A, 100, ("Drama",), "A"), MovieInfo(B, 90, ("Comedy",), "B")],
            users=[UserInfo(1, 30, "F", "writer"), UserInfo(2, 40, "M", "artist")],
        )
        yield s


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_update_counts_events_outcomes_offsets_and_quarantine(store: EventStore) -> None:
    store.append(
        batch(
            [rec(0, 1), watch(1, 1), rec(2, 2, status=0, ms=601), rate(3, 1, 4)],
            first=0,
            quarantine=[(4, "malformed"), (5, "malformed")],
        )
    )
    store.append(batch([rec(4, 2, ms=700), watch(5, 2, B)], first=0, partition=1, quarantine=[(2, "bad_time")]))
    m = OperatorMetrics()
    loop = MonitorLoop(m, window=timedelta(hours=1), min_sample=1)
    loop.update(store, T0 + timedelta(minutes=30))
    assert value(m, "stream_events_total", topic="movielog1", kind="recommendation") == 3
    assert value(m, "stream_events_total", topic="movielog1", kind="watch") == 2
    assert value(m, "stream_events_total", topic="movielog1", kind="rate") == 1
    assert value(m, "stream_recommendation_requests_total", topic="movielog1", outcome="ok") == 1
    assert value(m, "stream_recommendation_requests_total", topic="movielog1", outcome="no_answer") == 1
    assert value(m, "stream_recommendation_requests_total", topic="movielog1", outcome="late") == 1  # 200 in 700 ms
    assert value(m, "store_quarantined_lines_total", topic="movielog1", reason_kind="malformed") == 2
    assert value(m, "store_quarantined_lines_total", topic="movielog1", reason_kind="bad_time") == 1
    offsets = store.committed_offsets()
    assert offsets == {("movielog1", 0): 6, ("movielog1", 1): 3}
    for (topic, partition), offset in offsets.items():
        assert value(m, "ingest_committed_offset", topic=topic, partition=str(partition)) == offset
    assert value(m, "stream_availability_ratio") == pytest.approx(1 / 3)
    assert value(m, "stream_window_requests") == 3
    assert (
        value(m, "stream_latest_event_timestamp_seconds", topic="movielog1")
        == (T0 + timedelta(minutes=5) - datetime(1970, 1, 1)).total_seconds()
    )
    assert value(m, "monitor_updates_total") == 1


def test_second_update_counts_only_new_lines(store: EventStore) -> None:
    store.append(batch([rec(0, 1), watch(1, 1)], first=0, quarantine=[(2, "malformed")]))
    m = OperatorMetrics()
    loop = MonitorLoop(m)
    loop.update(store)
    loop.update(store)  # nothing new: nothing counted twice
    assert value(m, "stream_events_total", topic="movielog1", kind="recommendation") == 1
    assert value(m, "store_quarantined_lines_total", topic="movielog1", reason_kind="malformed") == 1
    # A late line (event time before the others) still counts once, by ingestion order.
    store.append(batch([rec(-30, 2), watch(2, 1)], first=3, quarantine=[(5, "malformed")]))
    loop.update(store)
    assert value(m, "stream_events_total", topic="movielog1", kind="recommendation") == 2
    assert value(m, "stream_events_total", topic="movielog1", kind="watch") == 2
    assert value(m, "store_quarantined_lines_total", topic="movielog1", reason_kind="malformed") == 2
    assert value(m, "ingest_committed_offset", topic="movielog1", partition="0") == 6


def test_drift_day_over_day_and_against_a_given_reference(store: EventStore) -> None:
    # First day's first hour: user 1 (F, 30) rates high; the next day's first hour: user 2 (M, 40) rates low.
    store.append(batch([rec(i, 1) for i in range(0, 50, 5)] + [rate(i + 1, 1, 5) for i in range(0, 50, 5)], first=0))
    m = OperatorMetrics()
    loop = MonitorLoop(m, window=timedelta(hours=1), min_sample=1)
    assert loop.update(store, T0 + timedelta(hours=1)) is None  # nothing a day earlier to compare with
    assert value(m, "drift_psi", feature="rating") is None
    day = 24 * 60
    late = [rec(day + i, 2) for i in range(0, 50, 5)] + [rate(day + i + 1, 2, 1, B) for i in range(0, 50, 5)]
    store.append(batch(late, first=20))
    assert loop.update(store, T0 + timedelta(hours=12)) is None  # the same hours a day earlier were quiet
    report = loop.update(store, T0 + timedelta(days=1, hours=1))
    fixed = MonitorLoop(OperatorMetrics(), window=timedelta(hours=1), reference=loop.last_window, min_sample=1)
    assert fixed.update(store, T0 + timedelta(days=1, hours=1)).features["rating"].psi == 0.0  # same window
    assert report is not None and {"rating", "gender", "age", "occupation"} <= set(report.strong)
    assert value(m, "drift_psi", feature="rating") == pytest.approx(report.features["rating"].psi)
    assert value(m, "drift_psi", feature="rating") > 0.25
    assert value(m, "drift_pvalue", feature="rating", test="chi2") < 0.05  # 10 ratings of 5 vs 10 of 1
    assert value(m, "drift_pvalue", feature="gender", test="chi2") > 0.05  # one user vs one: not significant
    assert value(m, "drift_ks_statistic", feature="rating") == pytest.approx(1.0)
    # No watches in either window: genre drift is not computed, and no stale series is left.
    assert "genre" in report.skipped and value(m, "drift_psi", feature="genre") is None


def test_feedback_gauges(store: EventStore) -> None:
    # Both users get [A, B]; user 1 watches A (recommended), user 2 watches nothing: exposure A=2, B=2.
    store.append(batch([rec(0, 1), rec(0, 2), watch(1, 1)], first=0))
    m = OperatorMetrics()
    MonitorLoop(m).update(store, T0 + timedelta(minutes=10))
    assert value(m, "feedback_recommended_watch_share") == 1.0
    assert value(m, "feedback_recommendation_coverage_ratio") == 1.0
    assert value(m, "feedback_watch_coverage_ratio") == 0.5
    assert value(m, "feedback_exposure_gini") == 0.0
    assert value(m, "stream_conversion_ratio") == 0.5


def test_conversion_per_arm_and_model_versions() -> None:
    m = OperatorMetrics()
    m.set_conversion({"champion": 0.3, "canary": 0.25}, {"champion": "als-7", "canary": "ease-8"})
    assert value(m, "online_conversion_ratio", arm="canary", model_version="ease-8") == 0.25
    m.set_conversion({"champion": 0.31}, {"champion": "als-7"})  # the canary ended: its series goes
    assert value(m, "online_conversion_ratio", arm="canary", model_version="ease-8") is None
    with pytest.raises(MonitorError, match="arm 'canary'.*1.5"):
        m.set_conversion({"champion": 0.3, "canary": 1.5})
    assert value(m, "online_conversion_ratio", arm="champion", model_version="als-7") == 0.31  # unchanged
    m.set_models({"champion": "als-7"})
    assert value(m, "operator_model_info", arm="champion", model_version="als-7") == 1
    with pytest.raises(MonitorError, match="arm 'canary'"):
        m.set_models({"canary": ""})


def test_loop_refuses_bad_settings() -> None:
    with pytest.raises(MonitorError, match="window must be positive"):
        MonitorLoop(OperatorMetrics(), window=timedelta(0))
    with pytest.raises(MonitorError, match="profile_every"):
        MonitorLoop(OperatorMetrics(), profile_every=0)


class FakeIngestor:
    """The counters an `Ingestor` keeps, nothing else."""

    lines_consumed, events_stored, replayed, batches, api_outages, last_batch_seconds = 120, 100, 5, 3, 1, 0.25
    quarantined: ClassVar[Counter[str]] = Counter({"malformed": 12, "duplicate": 3})
    end_offsets = SimpleNamespace(ends={("movielog1", 1): 900, ("movielog1", 0): 1500}, read_at=1.7e9)


def test_ingestor_counters_and_metrics_page() -> None:
    m = OperatorMetrics()
    m.registry.register(IngestorCollector(FakeIngestor()))
    m.set_models({"champion": "v1"})
    with TestClient(create_metrics_app(m)) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(resp.text)
        for s in fam.samples
    }
    assert samples[("ingest_lines_consumed_total", ())] == 120
    assert samples[("ingest_events_stored_total", ())] == 100
    assert samples[("ingest_quarantined_lines_total", (("reason_kind", "malformed"),))] == 12
    assert samples[("ingest_end_offset", (("partition", "0"), ("topic", "movielog1")))] == 1500
    assert samples[("ingest_end_offset", (("partition", "1"), ("topic", "movielog1")))] == 900
    assert samples[("ingest_end_offset_read_timestamp_seconds", ())] == 1.7e9
    assert samples[("operator_model_info", (("arm", "champion"), ("model_version", "v1")))] == 1


def test_license_cost_gauges_per_arm_and_for_the_window() -> None:
    from movielab.recommender.errors import MonitorError
    from movielab.recommender.monitoring.exporter import OperatorMetrics

    m = OperatorMetrics()
    m.set_cost({"champion": 0.25, "challenger": 0.4}, {"champion": 180.0}, {"champion": "7", "challenger": "8"})
    text = m.exposition().decode()
    assert 'online_license_cost_per_play_usd{arm="challenger",model_version="8"} 0.4' in text
    assert 'online_license_cost_per_1000_requests_usd{arm="champion",model_version="7"} 180.0' in text
    m.set_window_cost({"plays": 10, "costed_plays": 8, "license_cost": 2.0, "requests": 40})
    text = m.exposition().decode()
    assert "stream_license_cost_per_play_usd 0.25" in text
    assert "stream_license_cost_per_1000_requests_usd 50.0" in text
    assert "stream_plays_without_cost 2.0" in text
    with pytest.raises(MonitorError, match="license cost of arm 'champion'"):
        m.set_cost({"champion": -1.0}, {})
