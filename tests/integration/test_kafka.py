"""movielab.kafka against the real embedded broker on a loopback port."""

from __future__ import annotations

import os
import socket
from collections import Counter, defaultdict

import pytest
from confluent_kafka.admin import AdminClient

from movielab.kafka import (
    BrokerError,
    DeliveryError,
    EmbeddedBroker,
    KafkaSetupError,
    KafkaSink,
    consumer_config,
    ensure_topics,
    read_topic,
    topic_name,
)

pytestmark = pytest.mark.integration


def unused_port() -> int:
    """A loopback port nobody listens on (free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker():
    """One embedded broker for the module."""
    with EmbeddedBroker() as b:
        yield b


def partitions_of(bootstrap: str, topic: str) -> int:
    """Number of partitions the cluster reports for `topic`."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


def test_sink_round_trip_keeps_every_line_and_each_users_order(broker):
    topic = "roundtrip"
    ensure_topics(broker.bootstrap, [topic], partitions=3)
    users, per_user = 100, 100
    # Interleave users the way the world does: minute m of every user, then minute m + 1.
    keys = [u for m in range(1, per_user + 1) for u in range(1, users + 1)]
    lines = [
        f"2026-03-20T08:12:38,{u},GET /data/m/brides+2004/{m}.mpg"
        for m in range(1, per_user + 1)
        for u in range(1, users + 1)
    ]
    sink = KafkaSink(broker.bootstrap, topic)
    for i in range(0, len(lines), 1000):
        sink.write(keys[i : i + 1000], lines[i : i + 1000])
    sink.close()
    assert (sink.sent, sink.delivered, sink.failed) == (10_000, 10_000, 0)

    records = read_topic(broker.bootstrap, topic, group_id="roundtrip-reader", idle_timeout=1.0)

    assert Counter(value.decode() for _, value, _, _ in records) == Counter(lines)
    by_user: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
    for key, value, partition, offset in records:
        minute = int(value.decode().rsplit("/", 1)[1].removesuffix(".mpg"))
        by_user[key].append((partition, offset, minute))
    assert set(by_user) == {str(u).encode() for u in range(1, users + 1)}
    for key, seen in by_user.items():
        assert len({p for p, _, _ in seen}) == 1, f"user {key!r} spread over partitions"
        assert [m for _, _, m in sorted(seen)] == list(range(1, per_user + 1)), f"user {key!r} out of order"
    assert len({p for _, _, p, _ in records}) > 1  # the keys did spread over the partitions


def test_read_topic_stops_at_max_messages(broker):
    topic = "bounded"
    ensure_topics(broker.bootstrap, [topic], partitions=1)
    with KafkaSink(broker.bootstrap, topic) as sink:
        sink.write(list(range(50)), [f"line {i}" for i in range(50)])
    records = read_topic(broker.bootstrap, topic, group_id="bounded-reader", max_messages=20)
    assert [v for _, v, _, _ in records] == [f"line {i}".encode() for i in range(20)]


def test_ensure_topics_is_idempotent(broker):
    names = ["movielog1", "movielog2"]
    ensure_topics(broker.bootstrap, names, partitions=3)
    ensure_topics(broker.bootstrap, names, partitions=3)
    ensure_topics(broker.bootstrap, ["movielog1"], partitions=5)  # exists: left as it is
    assert [partitions_of(broker.bootstrap, n) for n in names] == [3, 3]


def test_ensure_topics_names_topic_and_reason_when_cluster_unreachable():
    bootstrap = f"127.0.0.1:{unused_port()}"
    with pytest.raises(KafkaSetupError, match=r"topic 'movielog9' on 127\.0\.0\.1:\d+ could not be created: .+"):
        ensure_topics(bootstrap, ["movielog9"], timeout=1.0)


def test_topic_name_follows_the_contract():
    assert topic_name(1) == "movielog1"
    assert topic_name(12) == "movielog12"
    for bad in (0, -3, True, 1.0):
        with pytest.raises(ValueError, match="team number"):
            topic_name(bad)


def test_consumer_config_defaults_and_overrides():
    cfg = consumer_config("h:1", "g", **{"session.timeout.ms": 10_000, "fetch.min.bytes": 1})
    assert cfg["enable.auto.commit"] is False
    assert cfg["auto.offset.reset"] == "earliest"
    assert cfg["session.timeout.ms"] == 10_000
    assert (cfg["bootstrap.servers"], cfg["group.id"], cfg["fetch.min.bytes"]) == ("h:1", "g", 1)


def test_delivery_error_surfaces_when_the_cluster_is_unreachable():
    bootstrap = f"127.0.0.1:{unused_port()}"
    sink = KafkaSink(bootstrap, "movielog1", flush_timeout=10.0, **{"message.timeout.ms": 500})
    sink.write([1, 2, 3], ["a", "b", "c"])
    with pytest.raises(DeliveryError, match=r"topic 'movielog1' on 127\.0\.0\.1:\d+: 3 message\(s\) failed") as info:
        sink.close()
    assert "timed out" in str(info.value).lower() and "refused" in str(info.value).lower()
    assert (info.value.failed, sink.failed, sink.delivered) == (3, 3, 0)
    sink.close()  # a second close is a no-op
    with pytest.raises(RuntimeError, match="closed"):
        sink.write([1], ["x"])


def test_write_rejects_mismatched_batches(broker):
    with KafkaSink(broker.bootstrap, "mismatch") as sink, pytest.raises(ValueError, match="2 keys for 1 lines"):
        sink.write([1, 2], ["only one"])


def test_stop_leaves_no_process():
    b = EmbeddedBroker().start()
    pid = b.pid
    os.kill(pid, 0)  # alive
    b.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert b.pid is None and not b.running
    with pytest.raises(BrokerError, match="not running"):
        _ = b.bootstrap
    b.stop()  # safe twice


def test_two_brokers_get_two_ports():
    with EmbeddedBroker() as first, EmbeddedBroker() as second:
        assert first.bootstrap != second.bootstrap
        for b in (first, second):
            AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)


def test_start_failure_raises_broker_error_with_the_reason(tmp_path):
    fake = tmp_path / "broker"
    fake.write_text("#!/bin/sh\necho 'no such storage engine' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match=r"(?s)exited with code 3.*no such storage engine"):
        EmbeddedBroker(binary=fake, start_timeout=5).start()


def test_full_local_queue_blocks_instead_of_dropping(broker):
    ensure_topics(broker.bootstrap, ["tiny-queue"], partitions=1)
    sink = KafkaSink(broker.bootstrap, "tiny-queue", **{"queue.buffering.max.messages": 50, "linger.ms": 1})
    sink.write(list(range(5_000)), [f"line {i}" for i in range(5_000)])  # 100 x the queue: must wait, not drop
    sink.close()
    assert (sink.sent, sink.delivered, sink.failed) == (5_000, 5_000, 0)
