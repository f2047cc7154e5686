"""The embedded broker's partition log: offsets, retried batches, refused records, reads by offset and time."""

from __future__ import annotations

import struct

import pytest

from movielab.kafka.server import InvalidRecords, PartitionLog


def batch(count: int, producer_id: int = -1, base_sequence: int = -1, max_ts: int = 0, body: bytes = b"r") -> bytes:
    """A v2 record batch header (61 bytes) for `count` records, then `body` standing in for the records."""
    header = bytearray(61)
    struct.pack_into(">qiib", header, 0, 0, 49 + len(body), 0, 2)  # base offset, length, leader epoch, magic
    struct.pack_into(">i", header, 23, count - 1)  # last offset delta
    struct.pack_into(">qq", header, 27, max_ts, max_ts)  # first and max timestamp
    struct.pack_into(">qhi", header, 43, producer_id, 0, base_sequence)
    struct.pack_into(">i", header, 57, count)
    return bytes(header) + body


def test_offsets_count_records_not_batches():
    log = PartitionLog()
    assert log.append(batch(100)) == 0
    assert log.append(batch(5) + batch(7)) == 100  # two batches in one produce
    assert log.end == 112
    assert [struct.unpack_from(">q", b)[0] for b in log.batches] == [0, 100, 105]


def test_a_retried_batch_gets_its_first_offset_back_and_is_not_written_again():
    log = PartitionLog()
    first = batch(10, producer_id=7, base_sequence=0)
    assert log.append(first) == 0
    assert log.append(batch(10, producer_id=7, base_sequence=10)) == 10
    assert log.append(first) == 0  # the retry of a batch the producer did not hear back about
    assert log.end == 20 and len(log.batches) == 2
    assert log.append(batch(10, producer_id=8, base_sequence=0)) == 20  # another producer's sequence 0


def test_read_returns_whole_batches_from_the_one_holding_the_offset():
    log = PartitionLog()
    for _ in range(4):
        log.append(batch(10))
    size = len(log.batches[0])
    assert log.read(0, 10 * size) == b"".join(log.batches)
    assert log.read(15, 10 * size) == b"".join(log.batches[1:])
    assert log.read(15, 1) == log.batches[1]  # at least one batch, even past max_bytes
    assert log.read(25, 2 * size) == b"".join(log.batches[2:4])


def test_offset_for_time_finds_the_first_batch_at_or_after_it():
    log = PartitionLog()
    for ts in (1000, 2000, 3000):
        log.append(batch(10, max_ts=ts))
    assert [log.offset_for_time(t) for t in (0, 1000, 1500, 3000, 3001)] == [0, 0, 10, 20, -1]


@pytest.mark.parametrize(
    ("records", "reason"),
    [
        (batch(3)[:40], "shorter than a batch header"),
        (batch(3) + b"\x00" * 10, "shorter than a batch header"),
        (batch(3)[:-1], "declares 50 bytes, 49 remain"),
        (batch(3)[:16] + b"\x01" + batch(3)[17:], "magic 1"),
    ],
)
def test_records_that_are_not_v2_batches_are_refused_whole(records, reason):
    log = PartitionLog()
    with pytest.raises(InvalidRecords, match=reason):
        log.append(records)
    assert (log.end, log.batches) == (0, [])
