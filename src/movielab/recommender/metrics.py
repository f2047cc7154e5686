"""Prometheus metrics of the serving app, in a registry of its own (no process-global state).

Label children are bound once here, so the hot path only calls `.inc()` / `.observe()`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from movielab.recommender.answers import SOURCES, Provenance

# Fine-grained below 10 ms (the serving target is p99 <= 5 ms), coarse up to the world's 600 ms time-out.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
                   0.01, 0.025, 0.05, 0.1, 0.25, 0.6, 1.0)  # fmt: skip
FALLBACK_KINDS = ("unknown_user", "empty_row")
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus 2.x scrapes


class ServeMetrics:
    """The serving metrics: requests by source, latency, fallbacks by kind, bad requests, model info, swaps."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        requests = Counter("recommend_requests", "Answered /recommend requests by answer source",
                           ["source"], registry=r)  # fmt: skip
        fallbacks = Counter("recommend_fallbacks", "Answers not from the model: unknown_user (not in the model) "
                            "or empty_row (in the model, no movie left)", ["kind"], registry=r)  # fmt: skip
        self.latency = Histogram("recommend_latency_seconds", "Time in the /recommend endpoint, from routing to "
                                 "the response handed to the server", buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.bad_requests = Counter("recommend_bad_requests", "Requests refused with 400 (malformed user id)",
                                    registry=r)  # fmt: skip
        self.model_info = Gauge("model_info", "1 for the model currently serving", ["model", "version", "snapshot",
                                "code"], registry=r)  # fmt: skip
        self.swaps = Counter("model_swaps", "Answer tables swapped in after the first", registry=r)
        self.requests = {s: requests.labels(s) for s in SOURCES}
        self.fallbacks = {k: fallbacks.labels(k) for k in FALLBACK_KINDS}
        self._current: tuple[str, ...] | None = None

    def set_model(self, provenance: Provenance) -> None:
        """Mark `provenance` as the serving model (model_info = 1) and drop the previous one's series."""
        labels = (provenance.model_name, provenance.model_version, provenance.snapshot_id, provenance.code_version)
        self.model_info.labels(*labels).set(1)
        if self._current is not None and self._current != labels:
            self.model_info.remove(*self._current)
        self._current = labels

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
