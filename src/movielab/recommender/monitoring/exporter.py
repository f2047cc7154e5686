"""The operator's Prometheus exporter: `OperatorMetrics` (its own `CollectorRegistry`, no process-global state,
like the serving replicas' `serving.metrics`), the collectors that read the ingestor's live counters and end
offsets at scrape time, and the `/metrics` app the control app extends. `monitoring.monitor` sets the gauges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from movielab.recommender.errors import MonitorError
from movielab.recommender.monitoring.drift import FEATURES, DriftReport, WindowProfile

logger = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OUTCOMES = ("ok", "no_answer", "error_status", "bad_answer", "late")


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
                drop_labels(self.psi, feature)
                drop_labels(self.ks, feature)
                drop_labels(self.pvalue, feature, "ks")
                drop_labels(self.pvalue, feature, "chi2")
                continue
            self.psi.labels(feature).set(d.psi)
            for gauge, value, labels in (
                (self.ks, d.ks_statistic, (feature,)),
                (self.pvalue, d.ks_pvalue, (feature, "ks")),
                (self.pvalue, d.chi2_pvalue, (feature, "chi2")),
            ):
                if value is None:
                    drop_labels(gauge, *labels)
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
        self.window_end.set(epoch(p.end))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def drop_labels(gauge: Gauge, *labels: str) -> None:
    """Remove the child of `gauge` with these label values, if it was ever set."""
    try:
        gauge.remove(*labels)
    except KeyError:
        pass  # never set: nothing to drop


def epoch(t: datetime) -> float:
    """Seconds since 1970 of an event time. Event times carry no zone (the contract, `movielab.contract`); they are
    read as UTC, consistently with the world's clock."""
    return (t - datetime(1970, 1, 1)).total_seconds()


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
    """Exports an `ingest.offsets.EndOffsets` reader's last read: `ingest_end_offset{topic, partition}` and its time."""

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
