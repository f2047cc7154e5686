"""Prometheus metrics of the serving app, in a registry of its own (no process-global state).

Label children are bound once here, so the hot path only calls `.inc()` / `.observe()`.
Requests and latency carry the `arm` (champion or challenger) that answered, so a canary's error rate and
latency can be compared with the champion's from the same scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from movielab.recommender.serving.answers import SOURCES
from movielab.recommender.training.provenance import Provenance

# Fine-grained below 10 ms (the serving target is p99 <= 5 ms), coarse up to the world's 600 ms time-out.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.6,
    1.0,
)
FALLBACK_KINDS = ("unknown_user", "empty_row")
ARMS = ("champion", "challenger")
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus 2.x scrapes


class ServeMetrics:
    """The serving metrics: requests by arm and source, latency by arm, fallbacks, bad requests, models, swaps."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        requests = Counter(
            "recommend_requests",
            "Answered /recommend requests by arm (champion or challenger) and answer source",
            ["arm", "source"],
            registry=r,
        )
        fallbacks = Counter(
            "recommend_fallbacks",
            "Answers not from the model: unknown_user (not in the model) or empty_row (in the model, no movie left)",
            ["kind"],
            registry=r,
        )
        latency = Histogram(
            "recommend_latency_seconds",
            "Time in the /recommend endpoint, from routing to the response handed to the server, by arm",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bad_requests = Counter(
            "recommend_bad_requests", "Requests refused with 400 (malformed user id)", registry=r
        )
        self.model_info = Gauge(
            "model_info",
            "1 for each model currently serving, with its arm",
            ["arm", "model", "version", "snapshot", "code"],
            registry=r,
        )
        self.share = Gauge("recommend_challenger_share", "Share of users (0..1) routed to the challenger", registry=r)
        self.swaps = Counter(
            "model_swaps", "Answer tables swapped in after the first (champion or challenger)", registry=r
        )
        self.requests = {a: {s: requests.labels(a, s) for s in SOURCES} for a in ARMS}
        self.latency = {a: latency.labels(a) for a in ARMS}
        self.fallbacks = {k: fallbacks.labels(k) for k in FALLBACK_KINDS}
        self._current: set[tuple[str, ...]] = set()

    def set_models(self, champion: Provenance, challenger: Provenance | None, share: float) -> None:
        """Mark the serving models (model_info = 1 with their arm), drop the series of models no longer served."""
        now = {_labels("champion", champion)}
        if challenger is not None:
            now.add(_labels("challenger", challenger))
        for labels in now:
            self.model_info.labels(*labels).set(1)
        for labels in self._current - now:
            self.model_info.remove(*labels)
        self._current = now
        self.share.set(share)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _labels(arm: str, p: Provenance) -> tuple[str, ...]:
    return (arm, p.model_name, p.model_version, p.snapshot_id, p.code_version)
