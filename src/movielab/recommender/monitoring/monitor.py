"""The loop that refreshes the operator's Prometheus metrics (`monitoring.exporter`) from the event store.

`MonitorLoop.update(store, now)` costs two DuckDB queries:

1. counters, incrementally by ingestion sequence (`seq > last seen`): events per topic and kind,
   recommendation requests per outcome, the highest offset per partition, plus the (small)
   quarantine table per reason kind. Counting by `seq`, not by event time, counts every line
   exactly once even when it arrives late.
2. the last event-time window (`window`, default 1 h) as a `drift.WindowProfile`, compared with a
   reference profile (a given one, else the same hours a day earlier): drift, availability, conversion
   and feedback-loop gauges.

Consumer lag is not computed here: the ingestor exports each partition's end offset, read from the
broker (`ingest_end_offset`, see `ingest.offsets.EndOffsets`), this loop the store's next offset per partition
(`ingest_committed_offset`), and the recording rule `topic:consumer_lag:lines` subtracts the two. Both
are in the broker's offset space, so a producer that restarts (its own line counter back at 0) cannot
make the lag negative.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from movielab.recommender.errors import MonitorError
from movielab.recommender.ingest.validation import REASON_KINDS
from movielab.recommender.monitoring.conversions import window_cost
from movielab.recommender.monitoring.drift import (
    MIN_SAMPLE,
    REQUEST_BUDGET_MS,
    DriftReport,
    WindowProfile,
    compare,
    profile_window,
    read_rows,
)
from movielab.recommender.monitoring.exporter import OUTCOMES, OperatorMetrics, epoch
from movielab.recommender.store.outcomes import good_answer_sql

logger = logging.getLogger(__name__)

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
                m.latest_event.labels(topic).set(epoch(max_time))
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
