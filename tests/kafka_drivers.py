"""The Kafka clients course teams use, each behind the same four calls, for tests and benchmarks.

Every driver reads a topic with its client's own API: `beginning` reads the whole topic (its partitions
0..partitions-1) from offset 0 without a group, `group_read` reads as consumer group `group` from its committed offsets (or the
beginning), takes the first `take` messages, commits the offsets after them and closes, `committed` asks
the broker for the group's committed offsets, and `end_offsets` for the high watermarks. A record is
(partition, offset, key, value). Drivers: kafka-python, aiokafka, confluent-kafka and kcat (Debian's
binary, librdkafka 2.0). Time-outs are generous: a driver stops early as soon as it has what it waits for. After `beginning`,
`reached_at - started_at` is how long the client took to read the expected count (monotonic seconds).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import warnings
from collections import Counter
from importlib.metadata import version
from typing import Protocol

from movielab.kafka import KafkaSink, ensure_topics

# kafka-python 3.0 builds its protocol classes at import with importlib.resources.read_text and open_text, deprecated
# since Python 3.11; the warning is about its packaging, not about how it is used here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "(read|open)_text is deprecated", DeprecationWarning)
    import kafka
    import kafka.structs  # noqa: F401

Record = tuple[int, int, bytes | None, bytes]
_QUIET_S = 1.0  # after the expected count: how long to wait for a message that should not come
_TIMEOUT_S = 60.0


class Driver(Protocol):
    name: str

    def version(self) -> str: ...
    def beginning(self, bootstrap: str, topic: str, partitions: int, expect: int) -> list[Record]: ...
    def group_read(self, bootstrap: str, topic: str, group: str, take: int) -> list[Record]: ...
    def committed(self, bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]: ...
    def end_offsets(self, bootstrap: str, topic: str, partitions: int) -> dict[int, int]: ...


def produce_watch_lines(bootstrap: str, topic: str, partitions: int, n: int, users: int) -> tuple[Counter, int, int]:
    """`n` course watch lines keyed by user (ids 1..`users`) into `topic` with `partitions` partitions.

    Returns the Counter of (key, value) pairs produced, and the lines the producer saw delivered and failed.
    """
    ensure_topics(bootstrap, [topic], partitions=partitions)
    keys = [(i * 7919) % users + 1 for i in range(n)]
    lines = [
        f"2026-03-20T08:{i // 60 % 60:02d}:{i % 60:02d},{u},GET /data/m/brides+2004/{i % 90 + 1}.mpg"
        for i, u in enumerate(keys)
    ]
    with KafkaSink(bootstrap, topic) as sink:
        sink.write(keys, lines)
    produced = Counter((str(u).encode(), line.encode()) for u, line in zip(keys, lines, strict=True))
    return produced, sink.delivered, sink.failed


def next_offsets(records: list[Record]) -> dict[int, int]:
    """Per partition, the offset after the last record: what a consumer commits once it has processed them."""
    out: dict[int, int] = {}
    for partition, offset, _, _ in records:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out


class KafkaPython:
    name = "kafka-python"

    def version(self) -> str:
        return version("kafka-python")

    def _consumer(self, bootstrap: str, group: str | None):
        from kafka import KafkaConsumer

        return KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )

    def _drain(self, consumer, want: int) -> list[Record]:
        out: list[Record] = []
        deadline = time.monotonic() + _TIMEOUT_S
        quiet_until = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            batches = consumer.poll(timeout_ms=200, max_records=max(1, want - len(out)) if len(out) < want else 500)
            for records in batches.values():
                out.extend((m.partition, m.offset, m.key, m.value) for m in records)
            if len(out) >= want and quiet_until is None:
                self.reached_at = time.monotonic()
                quiet_until = self.reached_at + _QUIET_S
        return out

    def beginning(self, bootstrap: str, topic: str, partitions: int, expect: int) -> list[Record]:
        self.started_at = self.reached_at = time.monotonic()
        from kafka import TopicPartition

        consumer = self._consumer(bootstrap, None)
        try:
            parts = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            return self._drain(consumer, expect)
        finally:
            consumer.close()

    def group_read(self, bootstrap: str, topic: str, group: str, take: int) -> list[Record]:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        consumer = self._consumer(bootstrap, group)
        try:
            consumer.subscribe([topic])
            out: list[Record] = []
            deadline = time.monotonic() + _TIMEOUT_S
            while len(out) < take and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200, max_records=take - len(out)).values():
                    out.extend((m.partition, m.offset, m.key, m.value) for m in records)
            taken = out[:take]
            consumer.commit(
                {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in next_offsets(taken).items()}
            )
            return taken
        finally:
            consumer.close(autocommit=False)

    def committed(self, bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
        from kafka import TopicPartition

        consumer = self._consumer(bootstrap, group)
        try:
            got = {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
            return {p: o for p, o in got.items() if o is not None}
        finally:
            consumer.close(autocommit=False)

    def end_offsets(self, bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
        from kafka import TopicPartition

        consumer = self._consumer(bootstrap, None)
        try:
            got = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
            return {tp.partition: o for tp, o in got.items()}
        finally:
            consumer.close()


class AioKafka:
    name = "aiokafka"

    def version(self) -> str:
        return version("aiokafka")

    def _consumer(self, bootstrap: str, group: str | None, *topics: str):
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )

    async def _drain(self, consumer, want: int, exact: bool) -> list[Record]:
        out: list[Record] = []
        deadline = time.monotonic() + _TIMEOUT_S
        quiet_until = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            limit = want - len(out) if exact else None
            if exact and limit <= 0:
                break
            for records in (await consumer.getmany(timeout_ms=200, max_records=limit)).values():
                out.extend((m.partition, m.offset, m.key, m.value) for m in records)
            if not exact and len(out) >= want and quiet_until is None:
                self.reached_at = time.monotonic()
                quiet_until = self.reached_at + _QUIET_S
        return out

    def beginning(self, bootstrap: str, topic: str, partitions: int, expect: int) -> list[Record]:
        self.started_at = self.reached_at = time.monotonic()
        from aiokafka import TopicPartition

        async def run() -> list[Record]:
            consumer = self._consumer(bootstrap, None)
            await consumer.start()
            try:
                parts = [TopicPartition(topic, p) for p in range(partitions)]
                consumer.assign(parts)
                await consumer.seek_to_beginning(*parts)
                return await self._drain(consumer, expect, exact=False)
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def group_read(self, bootstrap: str, topic: str, group: str, take: int) -> list[Record]:
        from aiokafka import TopicPartition

        async def run() -> list[Record]:
            consumer = self._consumer(bootstrap, group, topic)
            await consumer.start()
            try:
                taken = await self._drain(consumer, take, exact=True)
                await consumer.commit({TopicPartition(topic, p): o for p, o in next_offsets(taken).items()})
                return taken
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def committed(self, bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
        from aiokafka import TopicPartition

        async def run() -> dict[int, int]:
            consumer = self._consumer(bootstrap, group)
            await consumer.start()
            try:
                got = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
                return {p: o for p, o in got.items() if o is not None}
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def end_offsets(self, bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
        from aiokafka import TopicPartition

        async def run() -> dict[int, int]:
            consumer = self._consumer(bootstrap, None)
            await consumer.start()
            try:
                got = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
                return {tp.partition: o for tp, o in got.items()}
            finally:
                await consumer.stop()

        return asyncio.run(run())


class ConfluentKafka:
    name = "confluent-kafka"

    def version(self) -> str:
        import confluent_kafka

        return f"{version('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})"

    def _consumer(self, bootstrap: str, group: str):
        from confluent_kafka import Consumer

        return Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )

    def _drain(self, consumer, want: int, exact: bool) -> list[Record]:
        out: list[Record] = []
        deadline = time.monotonic() + _TIMEOUT_S
        quiet_until = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            if exact and len(out) >= want:
                break
            n = max(1, want - len(out)) if exact else 10_000
            for m in consumer.consume(n, 0.2):
                if m.error() is None:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
            if not exact and len(out) >= want and quiet_until is None:
                self.reached_at = time.monotonic()
                quiet_until = self.reached_at + _QUIET_S
        return out

    def beginning(self, bootstrap: str, topic: str, partitions: int, expect: int) -> list[Record]:
        self.started_at = self.reached_at = time.monotonic()
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        consumer = self._consumer(bootstrap, "unused-no-subscribe")  # assign(): the group is never joined
        try:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
            return self._drain(consumer, expect, exact=False)
        finally:
            consumer.close()

    def group_read(self, bootstrap: str, topic: str, group: str, take: int) -> list[Record]:
        from confluent_kafka import TopicPartition

        consumer = self._consumer(bootstrap, group)
        try:
            consumer.subscribe([topic])
            taken = self._drain(consumer, take, exact=True)
            offsets = [TopicPartition(topic, p, o) for p, o in next_offsets(taken).items()]
            consumer.commit(offsets=offsets, asynchronous=False)
            return taken
        finally:
            consumer.close()

    def committed(self, bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        consumer = self._consumer(bootstrap, group)
        try:
            got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
        finally:
            consumer.close()

    def end_offsets(self, bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        consumer = self._consumer(bootstrap, "unused-watermarks")
        try:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
            }
        finally:
            consumer.close()


class Kcat:
    """Debian's kcat, run as a process; records come back as JSON lines (-J)."""

    name = "kcat"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("kcat") or shutil.which("kafkacat")

    def _run(self, args: list[str], timeout: float = _TIMEOUT_S) -> str:
        if self.binary is None:
            raise FileNotFoundError("kcat is not installed (Debian package kcat)")
        done = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
            raise RuntimeError(f"kcat {' '.join(args)} exited with {done.returncode}: {last}")
        return done.stdout

    def version(self) -> str:
        out = self._run(["-V"], timeout=10)
        m = re.search(r"Version (\S+) .*?librdkafka (\S+)", out)
        return f"{m.group(1)} (librdkafka {m.group(2)})" if m else out.strip().splitlines()[-1]

    @staticmethod
    def _records(out: str) -> list[Record]:
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [
            (r["partition"], r["offset"], None if r["key"] is None else r["key"].encode(), r["payload"].encode())
            for r in rows
        ]

    def beginning(self, bootstrap: str, topic: str, partitions: int, expect: int) -> list[Record]:
        self.started_at = time.monotonic()
        out = self._run(["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"])
        self.reached_at = time.monotonic()
        return self._records(out)

    def group_read(self, bootstrap: str, topic: str, group: str, take: int) -> list[Record]:
        # A balanced consumer (-G) that exits after `take` messages; it commits the offsets of the messages it
        # handed out (librdkafka's auto offset store + commit on close).
        args = [
            "-b",
            bootstrap,
            "-G",
            group,
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "auto.offset.reset=earliest",
            "-c",
            str(take),
            "-e",
            "-J",
            "-q",
            topic,
        ]
        return self._records(self._run(args))

    def committed(self, bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
        raise NotImplementedError("kcat cannot show a group's committed offsets; ask another client")

    def end_offsets(self, bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
        args = ["-Q", "-b", bootstrap] + [a for p in range(partitions) for a in ("-t", f"{topic}:{p}:-1")]
        out = self._run(args)
        return {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"\[(\d+)\]\s+offset\s+(-?\d+)", out)}


DRIVERS: dict[str, Driver] = {d.name: d for d in (KafkaPython(), AioKafka(), ConfluentKafka(), Kcat())}
