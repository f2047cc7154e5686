"""Every Kafka client course teams use, against the embedded broker: kafka-python, aiokafka, confluent-kafka
and Debian's kcat. Each reads a 3-partition team topic from the beginning, consumes it as a group with
committed offsets and resumes there after a restart, and sees end offsets that add up to what it can read."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from kafka_drivers import DRIVERS, Kcat, Record, next_offsets, produce_watch_lines

from movielab.kafka import EmbeddedBroker, topic_name

pytestmark = pytest.mark.integration

N = 3_000
PARTITIONS = 3
TOPIC = topic_name(1)


@pytest.fixture
def broker():
    with EmbeddedBroker() as b:
        yield b


def contents(records: list[Record]) -> Counter:
    return Counter((key, value) for _, _, key, value in records)


def offsets_by_partition(records: list[Record]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for partition, offset, _, _ in records:
        out[partition].append(offset)
    return out


@pytest.mark.parametrize("client", list(DRIVERS))
def test_client_reads_all_commits_resumes_and_counts_the_end(client, broker):
    driver = DRIVERS[client]
    if isinstance(driver, Kcat) and driver.binary is None:
        pytest.skip("kcat is not installed (Debian package kcat; .ci/run installs it when root)")
    expected, delivered, failed = produce_watch_lines(broker.bootstrap, TOPIC, PARTITIONS, N, users=500)
    assert (delivered, failed) == (N, 0)

    # (a) the whole topic from the beginning: every line once, offsets 0, 1, 2, … in each partition
    everything = driver.beginning(broker.bootstrap, TOPIC, PARTITIONS, N)
    assert contents(everything) == expected
    by_partition = offsets_by_partition(everything)
    assert sorted(by_partition) == list(range(PARTITIONS))
    for partition, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {partition} read out of order or with gaps"

    # (c) end offsets (high watermarks) add up to the readable messages, partition by partition
    ends = driver.end_offsets(broker.bootstrap, TOPIC, PARTITIONS)
    assert ends == next_offsets(everything)
    assert sum(ends.values()) == N

    # (b) a consumer group takes the first half and commits; restarted, it resumes exactly there
    group = f"team1-{client}"
    first = driver.group_read(broker.bootstrap, TOPIC, group, N // 2)
    assert len(first) == N // 2
    committed = next_offsets(first)
    checker = driver if not isinstance(driver, Kcat) else DRIVERS["confluent-kafka"]
    assert checker.committed(broker.bootstrap, TOPIC, group, PARTITIONS) == committed
    rest = driver.group_read(broker.bootstrap, TOPIC, group, N - N // 2)
    for partition, offsets in offsets_by_partition(rest).items():
        assert offsets[0] == committed.get(partition, 0), f"partition {partition} did not resume at its commit"
    assert contents(first) + contents(rest) == expected  # nothing lost, nothing twice
    assert checker.committed(broker.bootstrap, TOPIC, group, PARTITIONS) == ends
