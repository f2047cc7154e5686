"""Prometheus figures of the world's Kafka sinks: lines produced per topic, read at scrape time.

Consumer lag is `world_lines_produced_total{topic}` minus the consumer's committed offsets (a recording
rule in deploy/prometheus/alerts.yml), so it does not depend on the cluster's reported watermarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class CountingSink(Protocol):
    """What the collector reads of a sink (`KafkaSink` has it)."""

    topic: str

    @property
    def delivered(self) -> int: ...

    @property
    def failed(self) -> int: ...


class ProducedLinesCollector(Collector):
    """`world_lines_produced_total{topic}` (acknowledged by the cluster) and `world_lines_failed_total{topic}`."""

    def __init__(self, sinks: Iterable[CountingSink]) -> None:
        self.sinks = list(sinks)

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Sum the sinks' counters per topic; no hot-path cost, the sinks count anyway."""
        produced: dict[str, int] = {}
        failed: dict[str, int] = {}
        for sink in self.sinks:
            produced[sink.topic] = produced.get(sink.topic, 0) + sink.delivered
            failed[sink.topic] = failed.get(sink.topic, 0) + sink.failed
        ok = CounterMetricFamily("world_lines_produced", "Lines the cluster acknowledged, per topic", labels=["topic"])
        bad = CounterMetricFamily("world_lines_failed", "Lines whose delivery failed, per topic", labels=["topic"])
        for topic in sorted(produced):
            ok.add_metric([topic], produced[topic])
            bad.add_metric([topic], failed[topic])
        yield ok
        yield bad
