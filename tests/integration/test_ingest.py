"""Ingestion with real parts: embedded broker, a world publishing to it, the world API over HTTP, bad lines.

One topic for the module: world lines with injected bad lines in between. The in-process test checks
every line's fate; the crash test kills an ingest process with SIGKILL mid-way, restarts it, and
checks that the store then holds every (partition, offset) of the topic exactly once.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from movielab.contract import rate_line, watch_line
from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics, read_topic
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.offsets import EndOffsets
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.data import TrainingData
from movielab.webserver import ServerThread
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig

pytestmark = pytest.mark.integration

TOPIC = "movielog1"
GOOD_LINES = 36_000
UNKNOWN_USER = 1_000_000_000


@dataclass
class Live:
    """The running parts and the topic's truth: every record, and the expected fate of the injected ones."""

    bootstrap: str
    api_url: str
    records: list[tuple[int, int, bytes]]  # (partition, offset, value) of every line on the topic
    bad: dict[tuple[int, int], str]  # (partition, offset) of each injected bad line -> expected reason kind


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _bad_lines(now: float, slug: str, user: int, earlier: str) -> list[tuple[int, str | bytes, str]]:
    """(key, value, expected reason kind) of lines to inject at simulated time `now`."""
    t = _stamp(now)
    good = watch_line(t, user, slug, 1)
    return [
        (user, good[: len(good) // 2], "malformed"),  # truncated
        (user, f"{t},{user}", "malformed"),  # too few fields
        (user, f"{good},GET /rate/{slug}=4", "malformed"),  # too many fields
        (user, watch_line(t, user, "no+such+movie+1899", 1), "unknown_movie"),
        (user, rate_line(t, user, slug, 4).replace("=4", "=11"), "malformed"),  # rating 11: beyond every scale
        (user, good.replace(t[:10], "2026-02-30"), "malformed"),  # no such day
        (user, good.replace(t[:4], "1970"), "bad_time"),
        (user, good.replace(t[:4], "2099"), "bad_time"),
        (user, b"\xff\xfe\x00\x81garbage " + t.encode(), "malformed"),
        (int(earlier.split(",")[1]), earlier, "duplicate"),  # an exact copy of a line already published
    ]


@pytest.fixture(scope="module")
def live(universe):
    """A world publishing ~36k lines to a 2-partition topic, with bad lines injected twice in between."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [TOPIC], partitions=2)
        sink = KafkaSink(broker.bootstrap, TOPIC)
        published: list[str] = []
        config = WorldConfig(users=1500, days=None, arrivals_per_day=0.5, allow_download=False)
        world, _ = build_world(config, universe=universe, sink=_Tee(sink, published))
        expected: list[tuple[str | bytes, str]] = []
        with KafkaSink(broker.bootstrap, TOPIC) as inject:
            for share in (1 / 3, 2 / 3, 1):
                while sink.sent < GOOD_LINES * share:
                    world.step()
                if share < 1:
                    sink.flush()
                    bad = _bad_lines(world.now, universe.catalog.slug[7], 3, published[len(published) // 2])
                    # A user the API does not know (yet): kept, not quarantined.
                    stranger = watch_line(_stamp(world.now), UNKNOWN_USER, universe.catalog.slug[8], 1)
                    inject.write([UNKNOWN_USER], [stranger])
                    inject.write([k for k, _, _ in bad], [v for _, v, _ in bad])
                    inject.flush()
                    expected += [(v if isinstance(v, bytes) else v.encode(), kind) for _, v, kind in bad]
        sink.close()
        records = [(p, o, v) for _, v, p, o in read_topic(broker.bootstrap, TOPIC, group_id="truth")]
        bad_at: dict[tuple[int, int], str] = {}
        for value, kind in expected:
            at = [(p, o) for p, o, v in records if v == value]
            bad_at[max(at)] = kind  # a duplicate is the later copy
        assert len(bad_at) == len(expected) == 20
        with ServerThread(create_app(world.pop, universe.catalog, taste=universe.taste)) as api:
            yield Live(broker.bootstrap, api.url, records, bad_at)


class _Tee:
    """Passes lines to the Kafka sink and remembers them (to copy one as a duplicate)."""

    def __init__(self, sink: KafkaSink, lines: list[str]) -> None:
        self.sink, self.lines = sink, lines

    def write(self, keys, lines) -> None:
        self.sink.write(keys, lines)
        self.lines.extend(lines)

    def close(self) -> None:
        self.sink.close()


def _stored(store: EventStore) -> tuple[list[tuple[int, int]], dict[tuple[int, int], str]]:
    events = [(p, o) for _, p, o in store.event_keys()]
    quarantine = {(p, o): kind for _, p, o, _, kind, _ in store.quarantined(limit=1_000_000)}
    return events, quarantine


def test_every_line_is_stored_or_quarantined_with_its_reason(live: Live, tmp_path) -> None:
    with EventStore(tmp_path / "events.duckdb") as store, WorldApi(live.api_url) as api:
        ingestor = Ingestor(live.bootstrap, [TOPIC], store, api, group_id="test-ingest", batch_size=5000)
        handled = ingestor.run_until_idle(idle_seconds=2.0, timeout=60.0)
        events, quarantine = _stored(store)
        assert handled == len(live.records)
        assert quarantine == live.bad
        good = {(p, o) for p, o, _ in live.records} - live.bad.keys()
        assert len(events) == len(good) and set(events) == good
        assert ingestor.events_stored == len(good)
        assert ingestor.quarantined == Counter(live.bad.values())
        assert store.quarantine_counts() == dict(Counter(live.bad.values()))
        data = TrainingData.from_snapshot(store, store.create_snapshot("all", None, None))
        assert data.watched.nnz > 100 and data.ratings.nnz > 0
        unknown = data.row_of(UNKNOWN_USER)
        assert unknown is not None and data.segment[unknown] == -1 and data.watched[unknown].nnz == 1
        assert (data.segment >= 0).sum() == len(data.users) - 1  # every other user's record came from the API


class _FlakyTransport(httpx.BaseTransport):
    """The network to the world API, refusing the first `failures` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise httpx.ConnectError("connection refused (test)", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_world_api_outage_delays_ingest_but_quarantines_nothing(live: Live, tmp_path) -> None:
    with (
        EventStore(tmp_path / "events.duckdb") as store,
        WorldApi(live.api_url, transport=_FlakyTransport(failures=3)) as api,
    ):
        ingestor = Ingestor(
            live.bootstrap, [TOPIC], store, api, group_id="test-outage", batch_size=5000, fetch_users=False
        )
        ingestor.run_until_idle(idle_seconds=2.0, timeout=60.0)
        events, quarantine = _stored(store)
    assert ingestor.api_outages == 3
    assert quarantine == live.bad  # no line was taken for an unknown movie while the API was down
    assert len(events) == len(live.records) - len(live.bad)


def test_a_killed_ingest_process_resumes_without_loss_or_double(live: Live, tmp_path) -> None:
    path = tmp_path / "events.duckdb"
    cmd = [
        sys.executable,
        "-m",
        "movielab",
        "-v",
        "recommender",
        "ingest",
        "--kafka",
        live.bootstrap,
        "--topic",
        TOPIC,
        "--store",
        str(path),
        "--world-api",
        live.api_url,
        "--group",
        "crash-test",
        "--batch-size",
        "400",
        "--until-idle",
        "3",
    ]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in first.stderr], daemon=True)
    reader.start()
    try:
        deadline = datetime.now() + timedelta(seconds=30)
        while datetime.now() < deadline:
            if "stored batch 4:" in lines.get(timeout=30):
                first.send_signal(signal.SIGKILL)  # mid-way: ~90 batches of 400 in this topic
                break
        else:
            pytest.fail("the ingest process stored no 4 batches within 30 s")
    finally:
        first.kill()
        first.wait(10)
        reader.join(10)
        first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    with EventStore(path) as store:
        events, quarantine = _stored(store)
    assert 0 < len(events) + len(quarantine) < len(live.records)  # killed mid-way indeed
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr[-2000:]
    with EventStore(path) as store:
        events, quarantine = _stored(store)
    topic = {(p, o) for p, o, _ in live.records}
    assert len(events) + len(quarantine) == len(topic)  # nothing twice
    assert set(events) | quarantine.keys() == topic  # nothing lost
    assert quarantine == live.bad


def test_end_offsets_are_read_from_the_broker_per_partition(live: Live) -> None:
    topic = "endoffsets1"
    ensure_topics(live.bootstrap, [topic], partitions=2)
    written = Counter()
    with KafkaSink(live.bootstrap, topic) as sink:
        for i in range(9):  # one line per produce request: the embedded broker's watermark is exact for those
            sink.write([i], [f"line {i}"])
            sink.flush()
    for _, _, partition, offset in read_topic(live.bootstrap, topic, group_id="endoffsets-truth"):
        written[partition] = max(written[partition], offset + 1)
    reader = EndOffsets(live.bootstrap, [topic], "endoffsets-reader", every=0.2)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not reader.read_at and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.ends == {(topic, p): n for p, n in written.items()} and sum(written.values()) == 9
    finally:
        reader.stop()
    assert not reader.is_alive() and reader.failures == 0
