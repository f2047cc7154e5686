"""The operator's Prometheus metrics and the loop that refreshes them from the event store.

`OperatorMetrics` holds its own `CollectorRegistry` (no process-global state, like metrics.py).
`MonitorLoop.update(store, now)` costs two DuckDB queries:

1. counters, incrementally by ingestion sequence (`seq > last seen`): events per topic and kind,
   recommendation requests per outcome, the highest offset per partition, plus the (small)
   quarantine table per reason kind. Counting by `seq`, not by event time, counts every line
   exactly once even when it arrives late.
2. the last event-time window (`window`, default 1 h) as a `drift.WindowProfile`, compared with a
   reference profile (a given one, else the same hours a day earlier): drift, availability, conversion
   and feedback-loop gauges.

Consumer lag is not computed here: the ingestor exports each partition's end offset, read from the
broker (`ingest_end_offset`, see `ingest.EndOffsets`), this loop the store's next offset per partition
(`ingest_committed_offset`), and the recording rule `topic:consumer_lag:lines` subtracts the two. Both
are in the broker's offset space, so a producer that restarts (its own line counter back at 0) cannot
make the lag negative.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from movielab.recommender.errors import MonitorError
from movielab.recommender.ingest.validation import REASON_KINDS
from movielab.recommender.monitoring.conversions import window_cost
from movielab.recommender.monitoring.drift import (
    FEATURES,
    MIN_SAMPLE,
    REQUEST_BUDGET_MS,
    DriftReport,
    WindowProfile,
    compare,
    profile_window,
    read_rows,
)
from movielab.recommender.store.outcomes import good_answer_sql

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OUTCOMES = ("ok", "no_answer", "error_status", "bad_answer", "late")
DEFAULT_WINDOW = timedelta(hours=1)

# One scan of the new rows (seq > $last) and of the quarantine table (small: only bad lines).
COUNTERS_SQL = f"""
SELECT 'event' AS part, topic, partition, kind AS key,
       CASE WHEN kind <> 'recommendation' THEN ''
            WHEN {good_answer_sql()} THEN 'ok'
            WHEN status = 0 THEN 'no_answer' WHEN status <> 200 THEN 'error_status'
            WHEN error IS NOT NULL THEN 'bad_answer' ELSE 'late' END AS outcome,
       count(*) AS n, max("offset") AS max_offset, max(seq) AS max_seq, max(time) AS max_time
FROM events WHERE seq > $last GROUP BY ALL
UNION ALL
SELECT 'quarantine', topic, partition, reason_kind, '', count(*), max("offset"), NULL, NULL
FROM quarantine GROUP BY ALL
"""


class OperatorMetrics:
    """The operator's metrics: ingest, stream outcomes, offsets, conversion per arm, models, drift, feedback."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "stream_events",
            "Events stored, by topic and kind (counted by ingestion order)",
            ["topic", "kind"],
            registry=r,
        )
        self.requests = Counter(
            "stream_recommendation_requests",
            "Recommendation-request lines stored, by outcome: "
            "ok = status 200 within the budget; no_answer, error_status, bad_answer, late",
            ["topic", "outcome"],
            registry=r,
        )
        self.quarantined = Counter(
            "store_quarantined_lines",
            "Lines in the store's quarantine, by reason kind",
            ["topic", "reason_kind"],
            registry=r,
        )
        self.committed = Gauge(
            "ingest_committed_offset",
            "Next offset to read per partition (one past the last stored or quarantined line)",
            ["topic", "partition"],
            registry=r,
        )
        self.latest_event = Gauge(
            "stream_latest_event_timestamp_seconds", "Event time of the newest stored event", ["topic"], registry=r
        )
        self.availability = Gauge(
            "stream_availability_ratio",
            "Share of recommendation requests in the last window answered 200 within the budget",
            registry=r,
        )
        self.window_requests = Gauge("stream_window_requests", "Recommendation requests in the last window", registry=r)
        self.conversion = Gauge(
            "stream_conversion_ratio",
            "Share of answered requests in the last window whose next watch was a recommended movie (all arms)",
            registry=r,
        )
        self.arm_conversion = Gauge(
            "online_conversion_ratio",
            "Online conversion per arm, as the canary controller measures it",
            ["arm", "model_version"],
            registry=r,
        )
        self.cost_per_play = Gauge(
            "stream_license_cost_per_play_usd",
            "License cost per play (distinct user × "
            "movie watched) in the last window, USD, of movies whose record gives a cost",
            registry=r,
        )
        self.cost_per_1k = Gauge(
            "stream_license_cost_per_1000_requests_usd",
            "License cost of the last window's plays per 1,000 recommendation requests, USD",
            registry=r,
        )
        self.uncosted_plays = Gauge(
            "stream_plays_without_cost",
            "Plays in the last window of movies whose record gives no license cost (not priced above)",
            registry=r,
        )
        self.arm_cost_per_play = Gauge(
            "online_license_cost_per_play_usd",
            "License cost per play per arm, USD, as the canary controller measures it",
            ["arm", "model_version"],
            registry=r,
        )
        self.arm_cost_per_1k = Gauge(
            "online_license_cost_per_1000_requests_usd",
            "License cost per 1,000 requests per arm, USD",
            ["arm", "model_version"],
            registry=r,
        )
        self.model_info = Gauge(
            "operator_model_info", "1 for the model version each arm serves", ["arm", "model_version"], registry=r
        )
        self.psi = Gauge(
            "drift_psi", "Population stability index of a feature, last window vs reference", ["feature"], registry=r
        )
        self.ks = Gauge(
            "drift_ks_statistic", "Two-sample KS statistic, last window vs reference", ["feature"], registry=r
        )
        self.pvalue = Gauge(
            "drift_pvalue",
            "p-value of a drift test (ks or chi2), last window vs reference",
            ["feature", "test"],
            registry=r,
        )
        self.recommended_share = Gauge(
            "feedback_recommended_watch_share",
            "Share of new watches in the last window that were recommended to that user just before",
            registry=r,
        )
        self.rec_coverage = Gauge(
            "feedback_recommendation_coverage_ratio",
            "Share of the catalog recommended at least once in the last window",
            registry=r,
        )
        self.watch_coverage = Gauge(
            "feedback_watch_coverage_ratio", "Share of the catalog watched at least once in the last window", registry=r
        )
        self.gini = Gauge(
            "feedback_exposure_gini",
            "Gini coefficient of recommendation exposure across the catalog in the last window",
            registry=r,
        )
        self.updates = Counter("monitor_updates", "Monitor updates done", registry=r)
        self.update_seconds = Gauge(
            "monitor_update_duration_seconds", "Wall time of the last monitor update", registry=r
        )
        self.last_update = Gauge(
            "monitor_last_update_timestamp_seconds", "Wall-clock time of the last monitor update", registry=r
        )
        self.window_end = Gauge(
            "monitor_window_end_timestamp_seconds", "Event time at the end of the last window", registry=r
        )

    def set_conversion(self, rates: Mapping[str, float], versions: Mapping[str, str] | None = None) -> None:
        """Set online conversion per arm (`{"champion": 0.31, "canary": 0.27}`); arms not given are dropped."""
        versions = versions or {}
        for arm, rate in rates.items():
            if not isinstance(rate, int | float) or not (0.0 <= rate <= 1.0):
                raise MonitorError(f"conversion of arm {arm!r} is {rate!r}: expected a share in [0, 1]")
        self.arm_conversion.clear()
        for arm, rate in rates.items():
            self.arm_conversion.labels(arm, versions.get(arm, "")).set(rate)

    def set_cost(
        self,
        per_play: Mapping[str, float],
        per_1000_requests: Mapping[str, float],
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """Set license cost per play and per 1,000 requests per arm (USD); arms not given are dropped."""
        versions = versions or {}
        for arm, cost in [*per_play.items(), *per_1000_requests.items()]:
            if not isinstance(cost, int | float) or not (0.0 <= cost < float("inf")):
                raise MonitorError(f"license cost of arm {arm!r} is {cost!r}: expected a finite amount ≥ 0")
        self.arm_cost_per_play.clear()
        self.arm_cost_per_1k.clear()
        for arm, cost in per_play.items():
            self.arm_cost_per_play.labels(arm, versions.get(arm, "")).set(cost)
        for arm, cost in per_1000_requests.items():
            self.arm_cost_per_1k.labels(arm, versions.get(arm, "")).set(cost)

    def set_window_cost(self, cost: Mapping[str, float]) -> None:
        """Set the last window's license cost gauges from `conversions.window_cost` (NaN where undefined)."""
        costed, requests = cost["costed_plays"], cost["requests"]
        self.cost_per_play.set(cost["license_cost"] / costed if costed else float("nan"))
        self.cost_per_1k.set(1000.0 * cost["license_cost"] / requests if requests and costed else float("nan"))
        self.uncosted_plays.set(cost["plays"] - costed)

    def set_models(self, versions: Mapping[str, str]) -> None:
        """Mark the model version each arm serves (`{"champion": "als-7", "canary": "ease-8"}`)."""
        for arm, version in versions.items():
            if not version:
                raise MonitorError(f"model version of arm {arm!r} is empty")
        self.model_info.clear()
        for arm, version in versions.items():
            self.model_info.labels(arm, version).set(1)

    def set_drift(self, report: DriftReport) -> None:
        """Set drift and feedback gauges from a report; features it skipped lose their series (no stale values)."""
        for feature in FEATURES:
            d = report.features.get(feature)
            if d is None:
                _drop(self.psi, feature)
                _drop(self.ks, feature)
                _drop(self.pvalue, feature, "ks")
                _drop(self.pvalue, feature, "chi2")
                continue
            self.psi.labels(feature).set(d.psi)
            for gauge, value, labels in (
                (self.ks, d.ks_statistic, (feature,)),
                (self.pvalue, d.ks_pvalue, (feature, "ks")),
                (self.pvalue, d.chi2_pvalue, (feature, "chi2")),
            ):
                if value is None:
                    _drop(gauge, *labels)
                else:
                    gauge.labels(*labels).set(value)
        self.set_window(report.current)

    def set_window(self, p: WindowProfile) -> None:
        """Set availability, conversion and feedback gauges of one window (NaN where the window has no data)."""
        self.availability.set(p.availability)
        self.window_requests.set(p.requests)
        self.conversion.set(p.conversion)
        self.recommended_share.set(p.recommended_watch_share)
        self.rec_coverage.set(p.recommendation_coverage)
        self.watch_coverage.set(p.watch_coverage)
        self.gini.set(p.exposure_gini)
        self.window_end.set(_epoch(p.end))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _drop(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass  # never set: nothing to drop


def _epoch(t: datetime) -> float:
    # Event times carry no zone (DESIGN.md); they are read as UTC, consistently with the world's clock.
    return (t - datetime(1970, 1, 1)).total_seconds()


class MonitorLoop:
    """Refreshes `OperatorMetrics` from an event store: call `update(store, now)` every few seconds."""

    def __init__(
        self,
        metrics: OperatorMetrics,
        window: timedelta = DEFAULT_WINDOW,
        reference: WindowProfile | None = None,
        budget_ms: int = REQUEST_BUDGET_MS,
        profile_every: int = 1,
        min_sample: int = MIN_SAMPLE,
    ) -> None:
        if window <= timedelta(0):
            raise MonitorError(f"monitor window must be positive, got {window}")
        if profile_every < 1:
            raise MonitorError(f"profile_every must be at least 1 update, got {profile_every}")
        self.metrics = metrics
        self.window = window
        self.reference = reference
        self.budget_ms = budget_ms
        self.profile_every = profile_every
        self.min_sample = min_sample  # observations per window a feature needs before its drift counts
        self.last_seq = 0
        self.latest_time: datetime | None = None
        self.offsets: dict[tuple[str, int], int] = {}  # next offset per (topic, partition), events and quarantine
        self.quarantine_seen: dict[tuple[str, str], int] = {}  # (topic, reason kind) → lines already counted
        self.topic_latest: dict[str, datetime] = {}
        self._topics: set[str] = set()
        self.last_report: DriftReport | None = None
        self._strong: tuple[str, ...] = ()
        self.last_window: WindowProfile | None = None
        self._updates = 0

    def update(self, store, now: datetime | None = None) -> DriftReport | None:
        """Count what was ingested since the last call, profile the window ending at `now` (default: the newest
        event time) and compare it with the reference; return the drift report (None when not profiled)."""
        t0 = time.perf_counter()
        self._count(read_rows(store, COUNTERS_SQL, {"last": self.last_seq, "budget": self.budget_ms}))
        end = now or self.latest_time
        report = None
        if end is not None and self._updates % self.profile_every == 0:
            current = self.last_window = profile_window(store, end - self.window, end, self.budget_ms)
            self.metrics.set_window(current)
            self.metrics.set_window_cost(window_cost(store, end - self.window, end))
            reference = self.reference
            if reference is None:
                # Day over day: the same hours a day earlier, so the diurnal cycle (night vs evening activity,
                # who is awake where) is not mistaken for drift. The first day has nothing to compare with.
                day = timedelta(days=1)
                earlier = profile_window(store, end - day - self.window, end - day, self.budget_ms)
                reference = earlier if (earlier.requests or earlier.watches) else None
            if reference is not None:
                report = compare(reference, current, self.min_sample)
                self.metrics.set_drift(report)
                strong = tuple(report.strong)
                if strong != self._strong:  # a change of what drifts is news; the same drift every update is not
                    log = logger.warning if strong else logger.info
                    log(
                        "strong drift (PSI >= 0.25) in window [%s, %s): %s",
                        current.start,
                        current.end,
                        ", ".join(f"{f}={report.features[f].psi:.3f}" for f in strong) or "none any more",
                    )
                    self._strong = strong
                self.last_report = report
        self._updates += 1
        m = self.metrics
        m.updates.inc()
        m.update_seconds.set(time.perf_counter() - t0)
        m.last_update.set(time.time())
        return report

    def _count(self, rows: Iterable[tuple]) -> None:
        m = self.metrics
        quarantine: dict[tuple[str, str], int] = {}
        for part, topic, partition, key, outcome, n, max_offset, max_seq, max_time in rows:
            if topic not in self._topics:
                self._init_topic(topic)
            k = (topic, int(partition))
            self.offsets[k] = max(self.offsets.get(k, 0), int(max_offset) + 1)
            if part == "quarantine":
                quarantine[(topic, key)] = quarantine.get((topic, key), 0) + int(n)
                continue
            m.events.labels(topic, key).inc(int(n))
            if key == "recommendation":
                m.requests.labels(topic, outcome).inc(int(n))
            self.last_seq = max(self.last_seq, int(max_seq))
            if self.latest_time is None or max_time > self.latest_time:
                self.latest_time = max_time
            if topic not in self.topic_latest or max_time > self.topic_latest[topic]:
                self.topic_latest[topic] = max_time
                m.latest_event.labels(topic).set(_epoch(max_time))
        for key, n in quarantine.items():
            # The quarantine is append-only, so the table's count only grows: count the difference.
            new = n - self.quarantine_seen.get(key, 0)
            if new > 0:
                m.quarantined.labels(*key).inc(new)
                self.quarantine_seen[key] = n
        for (topic, partition), offset in self.offsets.items():
            m.committed.labels(topic, str(partition)).set(offset)

    def _init_topic(self, topic: str) -> None:
        # Series that exist from the start at 0: rate() cannot see the first increment of a series born later.
        self._topics.add(topic)
        for outcome in OUTCOMES:
            self.metrics.requests.labels(topic, outcome)
        for kind in REASON_KINDS:
            self.metrics.quarantined.labels(topic, kind)


class IngestorCollector(Collector):
    """Exports an `Ingestor`'s own counters at scrape time (lines consumed, events stored, quarantined, …)."""

    def __init__(self, ingestor) -> None:
        self.ingestor = ingestor

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        """The ingestor's counters as metric families (read without locking: each is one int)."""
        ing = self.ingestor
        for name, doc, value in (
            ("ingest_lines_consumed", "Kafka messages the ingestor handled", ing.lines_consumed),
            ("ingest_events_stored", "Events the ingestor added to the store", ing.events_stored),
            ("ingest_replayed_lines", "Lines of replayed batches the store had", ing.replayed),
            ("ingest_batches", "Batches stored", ing.batches),
            ("ingest_api_outages", "Times the world API was down during a batch", ing.api_outages),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        q = CounterMetricFamily(
            "ingest_quarantined_lines", "Lines the ingestor quarantined, by reason kind", labels=["reason_kind"]
        )
        for kind, n in sorted(ing.quarantined.items()):
            q.add_metric([kind], n)
        yield q
        yield GaugeMetricFamily(
            "ingest_last_batch_seconds", "Wall time of the last stored batch", value=ing.last_batch_seconds
        )
        if ing.end_offsets is not None:
            yield from EndOffsetsCollector(ing.end_offsets).collect()


class EndOffsetsCollector(Collector):
    """Exports an `ingest.EndOffsets` reader's last read: `ingest_end_offset{topic, partition}` and its time."""

    def __init__(self, end_offsets) -> None:
        self.end_offsets = end_offsets

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The end offsets of the last complete read (none before the first)."""
        ends = self.end_offsets
        family = GaugeMetricFamily(
            "ingest_end_offset",
            "End offset (high watermark) of each partition, read from "
            "the broker: the offset the next produced line gets",
            labels=["topic", "partition"],
        )
        for (topic, partition), offset in sorted(ends.ends.items()):
            family.add_metric([topic, str(partition)], offset)
        yield family
        if ends.read_at:
            yield GaugeMetricFamily(
                "ingest_end_offset_read_timestamp_seconds",
                "Wall time of the last complete read of the end offsets",
                value=ends.read_at,
            )


def create_metrics_app(metrics: OperatorMetrics) -> Starlette:
    """A tiny ASGI app serving `GET /metrics` from `metrics` (run it with `movielab.webserver.ServerThread`)."""

    async def page(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", page, methods=["GET"])])
