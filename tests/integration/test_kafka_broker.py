"""The embedded broker itself: bad requests, refused records, group membership, and `movielab broker`."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from movielab.kafka import EmbeddedBroker, KafkaSetupError, KafkaSink, ensure_topics
from movielab.kafka.protocol import Reader, Writer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as b:
        yield b


def call(sock: socket.socket, api_key: int, version: int, body: Writer, correlation_id: int = 1) -> Reader:
    """Send one request (header v1) and return a reader positioned after the response's correlation id."""
    head = Writer().int16(api_key).int16(version).int32(correlation_id).string("movielab-test").getvalue()
    frame = head + body.getvalue()
    sock.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", _recv(sock, 4))[0]
    r = Reader(_recv(sock, size))
    assert r.int32() == correlation_id
    return r


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def connect(bootstrap: str) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


def test_a_garbage_request_closes_only_its_own_connection(broker):
    with connect(broker.bootstrap) as s:
        s.sendall(struct.pack(">i", 6) + b"\x00\x03\x00")  # a frame too short for a request header
        s.sendall(b"\x00\x00\x00")
        assert s.recv(10) == b""  # the broker hung up on this client
    with connect(broker.bootstrap) as s:
        s.sendall(struct.pack(">i", 2**31 - 1))  # a frame larger than any request the broker accepts
        assert s.recv(10) == b""
    with connect(broker.bootstrap) as s:  # an API the broker does not serve
        s.sendall(struct.pack(">i", 12) + Writer().int16(57).int16(0).int32(9).string("x").getvalue() + b"\x00")
        assert s.recv(10) == b""
    AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)  # and serves everyone else


def test_api_versions_answers_an_unknown_version_with_what_it_serves(broker):
    with connect(broker.bootstrap) as s:
        r = call(s, 18, 99, Writer())
        assert r.int16() == 35  # UNSUPPORTED_VERSION, in the v0 layout
        served = {key: (lo, hi) for key, lo, hi in r.array(lambda: (r.int16(), r.int16(), r.int16()))}
    assert served[0] == (3, 8) and served[1] == (4, 11) and served[18] == (0, 3)


def test_old_message_format_is_refused_and_nothing_is_written(broker):
    ensure_topics(broker.bootstrap, ["old-format"], partitions=1)
    batch = bytearray(61)
    struct.pack_into(">qib", batch, 0, 0, 49, 0)
    batch[16] = 1  # magic 1: a v1 message set, not a v2 record batch
    body = Writer().string(None).int16(1).int32(5000)
    body.array(
        [("old-format", [(0, bytes(batch))])],
        lambda t: (body.string(t[0]), body.array(t[1], lambda p: body.int32(p[0]).bytes_(p[1]))),
    )
    with connect(broker.bootstrap) as s:
        r = call(s, 0, 8, body)
        topics = r.array(
            lambda: (
                r.string(),
                r.array(
                    lambda: (
                        r.int32(),
                        r.int16(),
                        r.int64(),
                        r.int64(),
                        r.int64(),
                        r.array(lambda: None),
                        r.nullable_string(),
                    )
                ),
            )
        )
    (name, [(partition, error, base, _, _, _, message)]) = topics[0]
    assert (name, partition, error, base) == ("old-format", 0, 43, -1)  # UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert "magic 1" in message and "old-format-0" in message
    assert end_offset(broker.bootstrap, "old-format", 0) == 0


def test_invalid_topic_names_are_refused_with_the_name_and_reason(broker):
    with pytest.raises(KafkaSetupError, match=r"topic 'no spaces!' on .* could not be created: .*no spaces!"):
        ensure_topics(broker.bootstrap, ["no spaces!"])


def test_retried_idempotent_batches_are_written_once(broker):
    ensure_topics(broker.bootstrap, ["retries"], partitions=2)
    with KafkaSink(broker.bootstrap, "retries") as sink:  # idempotent producer (the project's default)
        sink.write(list(range(1000)), [f"line {i}" for i in range(1000)])
    assert sum(end_offset(broker.bootstrap, "retries", p) for p in range(2)) == 1000


def _join(sock: socket.socket, group: str, topic: str, session_ms: int) -> tuple[str, int]:
    """Join `group` by hand (JoinGroup v5 + SyncGroup v3 as leader taking every partition); (member, generation)."""
    subscription = Writer().int16(0)
    meta = subscription.array([topic], subscription.string).bytes_(b"").getvalue()
    body = Writer().string(group).int32(session_ms).int32(session_ms).string("").string(None).string("consumer")
    body.array([("range", meta)], lambda p: body.string(p[0]).bytes_(p[1]))
    r = call(sock, 11, 5, body)
    r.int32()
    assert r.int16() == 0
    generation, _, _, member = r.int32(), r.string(), r.string(), r.string()
    assignment = Writer().int16(0)
    assignment.array([topic], lambda t: (assignment.string(t), assignment.array([0, 1, 2], assignment.int32)))
    assignment.bytes_(b"")
    sync = Writer().string(group).int32(generation).string(member).string(None)
    sync.array([(member, assignment.getvalue())], lambda a: sync.string(a[0]).bytes_(a[1]))
    r = call(sock, 14, 3, sync)
    r.int32()
    assert r.int16() == 0
    return member, generation


def test_a_member_that_stops_heartbeating_loses_its_partitions(broker):
    topic, group = "takeover", "takeover-group"
    ensure_topics(broker.bootstrap, [topic], partitions=3)
    with connect(broker.bootstrap) as dead:
        member, generation = _join(dead, group, topic, session_ms=1000)  # then never heard of again
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": group,
                "session.timeout.ms": 6000,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 20
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(0.2)
            assert sorted(tp.partition for tp in consumer.assignment()) == [0, 1, 2]
            r = call(dead, 12, 3, Writer().string(group).int32(generation).string(member).string(None))
            r.int32()
            assert r.int16() == 25  # UNKNOWN_MEMBER_ID: it was expelled
        finally:
            consumer.close()


def test_two_consumers_split_the_partitions_and_one_takes_over_when_the_other_leaves(broker):
    topic, group = "split", "split-group"
    ensure_topics(broker.bootstrap, [topic], partitions=3)
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    a, b = Consumer(conf), Consumer(conf)
    try:
        a.subscribe([topic])
        b.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            a.assignment() and b.assignment() and len(a.assignment()) + len(b.assignment()) == 3
        ):
            a.poll(0.1)
            b.poll(0.1)
        parts_a = {tp.partition for tp in a.assignment()}
        parts_b = {tp.partition for tp in b.assignment()}
        assert parts_a and parts_b and parts_a | parts_b == {0, 1, 2} and not parts_a & parts_b
        b.close()
        deadline = time.monotonic() + 30
        while len(a.assignment()) < 3 and time.monotonic() < deadline:
            a.poll(0.1)
        assert sorted(tp.partition for tp in a.assignment()) == [0, 1, 2]
    finally:
        a.close()


def test_movielab_broker_serves_until_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "movielab", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line + proc.stderr.read()
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=5)
        assert [b.port for b in md.brokers.values()] == [port]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_kafka_python_admin_creates_and_lists_topics_but_deletes_only_where_allowed(broker):
    import kafka_drivers  # noqa: F401 (imports kafka-python without its import-time deprecation warnings)
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicDeletionDisabledError

    with EmbeddedBroker(allow_topic_deletion=True) as deleting:
        for b, deletes in ((broker, False), (deleting, True)):
            admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
            try:
                admin.create_topics([NewTopic("admin-made", num_partitions=4, replication_factor=1)])
                assert "admin-made" in admin.list_topics()
                assert end_offset(b.bootstrap, "admin-made", 3) == 0  # partition 3 exists
                if deletes:
                    admin.delete_topics(["admin-made"])
                    assert "admin-made" not in admin.list_topics()
                else:
                    with pytest.raises(TopicDeletionDisabledError):
                        admin.delete_topics(["admin-made"])
                    assert "admin-made" in admin.list_topics()
            finally:
                admin.close()


def test_offsets_for_times_point_at_the_first_batch_at_or_after_the_time(broker):
    ensure_topics(broker.bootstrap, ["timed"], partitions=1)
    with KafkaSink(broker.bootstrap, "timed") as sink:
        sink.write([1] * 10, [f"early {i}" for i in range(10)])
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    with KafkaSink(broker.bootstrap, "timed") as sink:
        sink.write([1] * 5, [f"late {i}" for i in range(5)])
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "timed"})
    try:
        (found,) = c.offsets_for_times([TopicPartition("timed", 0, cut)], timeout=10)
        (future,) = c.offsets_for_times([TopicPartition("timed", 0, cut + 3_600_000)], timeout=10)
    finally:
        c.close()
    assert found.offset == 10
    assert future.offset == -1  # nothing that late (Kafka answers -1 too)
