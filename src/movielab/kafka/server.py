"""movielab's embedded Kafka-protocol broker: one node, in-memory topics, consumer groups, asyncio.

What it serves (the versions it advertises in ApiVersions; every Kafka client negotiates down to them):
Produce 3-8, Fetch 4-11, ListOffsets 0-5, Metadata 0-8, OffsetCommit 0-7, OffsetFetch 0-5,
FindCoordinator 0-2, JoinGroup 0-5, Heartbeat 0-3, LeaveGroup 0-3, SyncGroup 0-3, ListGroups 0-2,
ApiVersions 0-3, CreateTopics 0-4, DeleteTopics 0-3, InitProducerId 0-1. These are the versions of the
Kafka 2.x line, which kafka-python, aiokafka, librdkafka (confluent-kafka, kcat) and the Java client all
speak. Records are v2 record batches (magic 2), kept as the producer sent them with the base offset set,
so the high watermark is exactly the next offset to be written (the sum over partitions is the number of
messages a consumer can read). Record CRCs are checked by consumers, not here. Idempotent producers get a
producer id, and a retried batch (same producer id and base sequence as one of the last five) is answered
with its first offset instead of being written twice. Transactions, ACLs, SASL/TLS, quotas and
replication are not served: the broker is for one machine, and binds to loopback by default. Any client
can create topics and produce (as on an open Kafka cluster); deleting topics is refused with
TOPIC_DELETION_DISABLED unless the broker runs with --allow-topic-deletion.

Run it with `python -m movielab.kafka.server --port 9092` (or `movielab broker`); `EmbeddedBroker` in
`movielab.kafka.broker` starts and stops it as a child process.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import logging
import re
import signal
import struct
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from movielab.kafka.errors import MovielabKafkaError
from movielab.kafka.protocol import ProtocolError, Reader, Writer

logger = logging.getLogger(__name__)

NODE_ID = 0
CLUSTER_ID = "movielab-embedded"
MAX_FRAME = 100 * 1024 * 1024  # a request larger than this is refused (Kafka's socket.request.max.bytes)
_UNAUTHORIZED_OPS = -(2**31)  # "not requested" in Metadata v8

# Error codes (kafka.apache.org/protocol#protocol_error_codes).
NONE, OFFSET_OUT_OF_RANGE, CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 2, 3
INVALID_TOPIC, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, INVALID_GROUP_ID = 17, 22, 23, 24
UNKNOWN_MEMBER_ID, INVALID_SESSION_TIMEOUT, REBALANCE_IN_PROGRESS = 25, 26, 27
UNSUPPORTED_VERSION, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR = 35, 36, 37, 38
INVALID_REQUEST, UNSUPPORTED_FOR_MESSAGE_FORMAT, FETCH_SESSION_ID_NOT_FOUND = 42, 43, 70
TOPIC_DELETION_DISABLED = 73
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_BATCH_HEADER = 61  # bytes of a v2 record batch before its records
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_BATCH_FIELDS = struct.Struct(">qib")  # baseOffset, batchLength, (partitionLeaderEpoch skipped below), magic
_DEDUP_WINDOW = 5  # batches remembered per producer and partition (Kafka keeps 5 too)


class InvalidRecords(MovielabKafkaError, ValueError):
    """A produce request's records are not v2 record batches; says what is wrong."""


def _valid_topic(name: str) -> bool:
    return bool(_TOPIC_NAME.fullmatch(name)) and name not in (".", "..")


class PartitionLog:
    """One partition: record batches in offset order, each with its base offset rewritten to its place."""

    __slots__ = ("_producers", "bases", "batches", "end", "max_timestamps")

    def __init__(self) -> None:
        self.bases: list[int] = []
        self.batches: list[bytes] = []
        self.max_timestamps: list[int] = []
        self.end = 0  # the high watermark: next offset to be written
        self._producers: dict[int, deque[tuple[int, int]]] = {}

    def append(self, records: bytes) -> int:
        """Append the batches in `records`, all or none; return the first offset they got. Raises InvalidRecords."""
        view = memoryview(records)
        found = []  # (start, size, last offset delta, max timestamp, producer id, base sequence)
        pos = 0
        while pos < len(view):
            if len(view) - pos < _BATCH_HEADER:
                raise InvalidRecords(f"{len(view) - pos} trailing byte(s) are shorter than a batch header")
            (length,) = _I32.unpack_from(view, pos + 8)
            size = 12 + length
            if length < _BATCH_HEADER - 12 or pos + size > len(view):
                raise InvalidRecords(f"batch at byte {pos} declares {length} bytes, {len(view) - pos - 12} remain")
            magic = view[pos + 16]
            if magic != 2:
                raise InvalidRecords(f"batch at byte {pos} has magic {magic}; only v2 record batches are served")
            (last_delta,) = _I32.unpack_from(view, pos + 23)
            if last_delta < 0:
                raise InvalidRecords(f"batch at byte {pos} has a negative last offset delta {last_delta}")
            (max_ts,) = _I64.unpack_from(view, pos + 35)
            (producer_id,) = _I64.unpack_from(view, pos + 43)
            (base_sequence,) = _I32.unpack_from(view, pos + 53)
            found.append((pos, size, last_delta, max_ts, producer_id, base_sequence))
            pos += size
        first = None
        for start, size, last_delta, max_ts, producer_id, base_sequence in found:
            idempotent = producer_id >= 0 and base_sequence >= 0
            seen = self._producers.get(producer_id) if idempotent else None
            duplicate = next((off for seq, off in seen if seq == base_sequence), None) if seen else None
            if duplicate is not None:  # a retry of a batch we already have
                first = duplicate if first is None else first
                continue
            batch = bytearray(view[start : start + size])
            _I64.pack_into(batch, 0, self.end)
            if first is None:
                first = self.end
            if idempotent:
                self._producers.setdefault(producer_id, deque(maxlen=_DEDUP_WINDOW)).append((base_sequence, self.end))
            self.bases.append(self.end)
            self.batches.append(bytes(batch))
            self.max_timestamps.append(max_ts)
            self.end += last_delta + 1
        return self.end if first is None else first

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding `offset`, up to `max_bytes` (but at least one batch)."""
        i = max(0, bisect.bisect_right(self.bases, offset) - 1)
        out, total = [], 0
        for j in range(i, len(self.batches)):  # by index: a slice or islice would walk from the start
            batch = self.batches[j]
            if out and total + len(batch) > max_bytes:
                break
            out.append(batch)
            total += len(batch)
        return b"".join(out)

    def offset_for_time(self, timestamp: int) -> int:
        """Base offset of the first batch holding a record at or after `timestamp` (ms); -1 if none (as Kafka)."""
        for base, ts in zip(self.bases, self.max_timestamps, strict=True):
            if ts >= timestamp:
                return base
        return -1


@dataclass
class Member:
    member_id: str
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    instance_id: str | None = None
    last_seen: float = field(default_factory=time.monotonic)
    join: asyncio.Future | None = None
    sync: asyncio.Future | None = None
    assignment: bytes = b""


@dataclass
class Group:
    """A classic consumer group: members, generation, and the committed offsets."""

    group_id: str
    state: str = "Empty"  # Empty, PreparingRebalance, CompletingRebalance, Stable
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""
    leader: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    offsets: dict[tuple[str, int], tuple[int, int, str | None]] = field(default_factory=dict)
    rebalance_deadline: float = 0.0


def _resolve(fut: asyncio.Future | None, value: object) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


class Broker:
    """The broker's state and request handlers; `serve()` runs it on an asyncio loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        advertised_host: str | None = None,
        default_partitions: int = 1,
        allow_topic_deletion: bool = False,
    ) -> None:
        self.host = host
        self.allow_topic_deletion = allow_topic_deletion
        self.port = port
        self.advertised_host = advertised_host or host
        self.default_partitions = default_partitions
        self.topics: dict[str, list[PartitionLog]] = {}
        self.groups: dict[str, Group] = {}
        self._producer_ids = itertools.count(1000)
        self._data_waiters: set[asyncio.Future] = set()
        self._handlers: dict[int, tuple[int, int, Callable[[int, Reader, str], Awaitable[Writer | None]]]] = {
            0: (3, 8, self.produce),
            1: (4, 11, self.fetch),
            2: (0, 5, self.list_offsets),
            3: (0, 8, self.metadata),
            8: (0, 7, self.offset_commit),
            9: (0, 5, self.offset_fetch),
            10: (0, 2, self.find_coordinator),
            11: (0, 5, self.join_group),
            12: (0, 3, self.heartbeat),
            13: (0, 3, self.leave_group),
            14: (0, 3, self.sync_group),
            16: (0, 2, self.list_groups),
            18: (0, 3, self.api_versions),
            19: (0, 4, self.create_topics),
            20: (0, 3, self.delete_topics),
            22: (0, 1, self.init_producer_id),
        }

    # --- connections -------------------------------------------------------------------------

    async def serve(self, ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
        """Listen on host:port until `stop` is set; `ready(port)` is called once listening."""
        server = await asyncio.start_server(self._connection, self.host, self.port, reuse_address=True, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        reaper = asyncio.create_task(self._expire_members())
        try:
            if ready is not None:
                ready(self.port)
            await (stop.wait() if stop is not None else asyncio.Event().wait())
        finally:
            reaper.cancel()
            server.close()
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                (size,) = _I32.unpack(await reader.readexactly(4))
                if not 0 < size <= MAX_FRAME:
                    raise ProtocolError(f"request size {size} is outside 1..{MAX_FRAME}")
                response = await self._handle(await reader.readexactly(size))
                if response is not None:
                    writer.write(_I32.pack(len(response)))
                    writer.write(response)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            logger.warning("closing the connection from %s: %s", peer, exc)
        except Exception:
            logger.exception("closing the connection from %s after an internal error", peer)
        finally:
            writer.close()

    async def _handle(self, frame: bytes) -> bytes | None:
        r = Reader(frame)
        api_key, version, correlation_id = r.int16(), r.int16(), r.int32()
        client_id = r.nullable_string() or ""
        handler = self._handlers.get(api_key)
        if api_key == 18 and version == 3:  # the only flexible version served: header v2 has tagged fields
            r.skip_tags()
        if handler is None or not handler[0] <= version <= handler[1]:
            if api_key == 18:  # answer in v0 so the client can learn what is supported
                return _I32.pack(correlation_id) + self._api_versions_body(UNSUPPORTED_VERSION, 0).getvalue()
            raise ProtocolError(f"client {client_id!r} sent api {api_key} v{version}, which is not served")
        try:
            body = await handler[2](version, r, client_id)
        except ProtocolError as exc:
            raise ProtocolError(f"api {api_key} v{version} from {client_id!r}: {exc}") from None
        if body is None:  # acks=0 produce: no response at all
            return None
        return _I32.pack(correlation_id) + body.getvalue()

    # --- cluster -----------------------------------------------------------------------------

    def _api_versions_body(self, error: int, version: int) -> Writer:
        w = Writer().int16(error)
        keys = sorted(self._handlers.items())
        if version >= 3:
            w.compact_array(keys, lambda kv: w.int16(kv[0]).int16(kv[1][0]).int16(kv[1][1]).no_tags())
        else:
            w.array(keys, lambda kv: w.int16(kv[0]).int16(kv[1][0]).int16(kv[1][1]))
        if version >= 1:
            w.int32(0)
        if version >= 3:
            w.no_tags()
        return w

    async def api_versions(self, v: int, r: Reader, client: str) -> Writer:
        if v >= 3:
            r.compact_nullable_string()
            r.compact_nullable_string()
            r.skip_tags()
        return self._api_versions_body(NONE, v)

    def _create(self, name: str, partitions: int) -> list[PartitionLog]:
        logs = [PartitionLog() for _ in range(partitions)]
        self.topics[name] = logs
        logger.info("created topic %s with %d partition(s)", name, partitions)
        return logs

    async def metadata(self, v: int, r: Reader, client: str) -> Writer:
        names = r.array(r.string) if v == 0 else r.nullable_array(r.string)
        if v == 0 and not names:
            names = None
        auto_create = r.boolean() if v >= 4 else True
        if v >= 8:
            r.boolean(), r.boolean()
        w = Writer()
        if v >= 3:
            w.int32(0)
        w.array(
            [NODE_ID],
            lambda n: (w.int32(n).string(self.advertised_host).int32(self.port), w.string(None) if v >= 1 else None),
        )
        if v >= 2:
            w.string(CLUSTER_ID)
        if v >= 1:
            w.int32(NODE_ID)
        if names is None:
            names = sorted(self.topics)
        rows = []
        for name in names:
            if name not in self.topics and auto_create and _valid_topic(name):
                self._create(name, self.default_partitions)
            if name in self.topics:
                rows.append((NONE, name, len(self.topics[name])))
            else:
                rows.append((INVALID_TOPIC if not _valid_topic(name) else UNKNOWN_TOPIC_OR_PARTITION, name, 0))

        def partition(p: int) -> None:
            w.int16(NONE).int32(p).int32(NODE_ID)
            if v >= 7:
                w.int32(0)
            w.int32(1).int32(NODE_ID).int32(1).int32(NODE_ID)
            if v >= 5:
                w.int32(0)

        def topic(row: tuple[int, str, int]) -> None:
            w.int16(row[0]).string(row[1])
            if v >= 1:
                w.boolean(False)
            w.array(list(range(row[2])), partition)
            if v >= 8:
                w.int32(_UNAUTHORIZED_OPS)

        w.array(rows, topic)
        if v >= 8:
            w.int32(_UNAUTHORIZED_OPS)
        return w

    async def create_topics(self, v: int, r: Reader, client: str) -> Writer:
        def read_topic() -> tuple[str, int, int, int]:
            name, partitions, replication = r.string(), r.int32(), r.int16()
            assignments = r.array(lambda: (r.int32(), r.array(r.int32)))
            r.array(lambda: (r.string(), r.nullable_string()))
            return name, partitions, replication, len(assignments)

        topics = r.array(read_topic)
        r.int32()
        validate_only = r.boolean() if v >= 1 else False
        results = []
        for name, partitions, replication, assigned in topics:
            if assigned and partitions == -1:
                partitions = assigned
            if partitions == -1:
                partitions = self.default_partitions
            if not _valid_topic(name):
                results.append((name, INVALID_TOPIC, f"topic name {name!r} is not 1-249 of [A-Za-z0-9._-]"))
            elif name in self.topics:
                results.append((name, TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists"))
            elif partitions < 1:
                results.append((name, INVALID_PARTITIONS, f"topic {name!r}: {partitions} partitions, need >= 1"))
            elif replication not in (-1, 1):
                results.append(
                    (
                        name,
                        INVALID_REPLICATION_FACTOR,
                        f"topic {name!r}: replication factor {replication}, but there is one broker",
                    )
                )
            else:
                if not validate_only:
                    self._create(name, partitions)
                results.append((name, NONE, None))
        w = Writer()
        if v >= 2:
            w.int32(0)
        w.array(results, lambda t: (w.string(t[0]).int16(t[1]), w.string(t[2]) if v >= 1 else None))
        return w

    async def delete_topics(self, v: int, r: Reader, client: str) -> Writer:
        names = r.array(r.string)
        r.int32()
        results = []
        for name in names:
            if not self.allow_topic_deletion:  # as Kafka with delete.topic.enable=false: a team cannot wipe a stream
                logger.warning("client %r asked to delete topic %r: deletion is disabled", client, name)
                results.append((name, TOPIC_DELETION_DISABLED))
                continue
            results.append((name, NONE if self.topics.pop(name, None) is not None else UNKNOWN_TOPIC_OR_PARTITION))
            for group in self.groups.values():
                for key in [k for k in group.offsets if k[0] == name]:
                    del group.offsets[key]
        w = Writer()
        if v >= 1:
            w.int32(0)
        w.array(results, lambda t: w.string(t[0]).int16(t[1]))
        return w

    async def init_producer_id(self, v: int, r: Reader, client: str) -> Writer:
        transactional_id = r.nullable_string()
        r.int32()
        w = Writer().int32(0)
        if transactional_id is not None:
            logger.warning(
                "client %r asked for transactional id %r: transactions are not served", client, transactional_id
            )
            return w.int16(TRANSACTIONAL_ID_AUTHORIZATION_FAILED).int64(-1).int16(-1)
        return w.int16(NONE).int64(next(self._producer_ids)).int16(0)

    # --- records -----------------------------------------------------------------------------

    def _log(self, topic: str, partition: int) -> PartitionLog | None:
        logs = self.topics.get(topic)
        return logs[partition] if logs is not None and 0 <= partition < len(logs) else None

    async def produce(self, v: int, r: Reader, client: str) -> Writer | None:
        transactional_id = r.nullable_string()
        acks = r.int16()
        r.int32()
        data = r.array(lambda: (r.string(), r.array(lambda: (r.int32(), r.nullable_bytes()))))
        results = []
        wrote = False
        for topic, partitions in data:
            rows = []
            for index, records in partitions:
                log = self._log(topic, index)
                error, base, message = NONE, -1, None
                if transactional_id is not None:
                    error, message = TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactions are not served"
                elif log is None:
                    error, message = UNKNOWN_TOPIC_OR_PARTITION, f"{topic}-{index} does not exist"
                elif records:
                    try:
                        base = log.append(records)
                        wrote = True
                    except InvalidRecords as exc:
                        error, message = (
                            UNSUPPORTED_FOR_MESSAGE_FORMAT if "magic" in str(exc) else CORRUPT_MESSAGE,
                            f"{topic}-{index}: {exc}",
                        )
                if message is not None:
                    logger.warning("produce from %r refused: %s", client, message)
                rows.append((index, error, base, message))
            results.append((topic, rows))
        if wrote:
            self._wake_fetchers()
        if acks == 0:
            return None
        w = Writer()

        def partition(row: tuple[int, int, int, str | None]) -> None:
            w.int32(row[0]).int16(row[1]).int64(row[2]).int64(-1)
            if v >= 5:
                w.int64(0)
            if v >= 8:
                w.int32(0).string(row[3])

        w.array(results, lambda t: (w.string(t[0]), w.array(t[1], partition)))
        w.int32(0)
        return w

    def _wake_fetchers(self) -> None:
        waiters, self._data_waiters = self._data_waiters, set()
        for fut in waiters:
            _resolve(fut, None)

    async def fetch(self, v: int, r: Reader, client: str) -> Writer:
        r.int32()  # replica id
        max_wait_ms, min_bytes, max_bytes = r.int32(), r.int32(), r.int32()
        r.int8()  # isolation level: there are no transactions, so both levels read the same
        session_id = r.int32() if v >= 7 else 0
        if v >= 7:
            r.int32()

        def read_partition() -> tuple[int, int, int]:
            index = r.int32()
            if v >= 9:
                r.int32()
            offset = r.int64()
            if v >= 5:
                r.int64()
            return index, offset, r.int32()

        wanted = r.array(lambda: (r.string(), r.array(read_partition)))
        if v >= 7:
            r.array(lambda: (r.string(), r.array(r.int32)))
        if v >= 11:
            r.string()
        if session_id != 0:  # we never hand out fetch sessions, so a client cannot name one
            w = Writer().int32(0).int16(FETCH_SESSION_ID_NOT_FOUND).int32(0)
            return w.array([], lambda _: None)
        deadline = time.monotonic() + max(0, max_wait_ms) / 1000
        while True:
            total, results = self._gather(wanted, max_bytes)
            remaining = deadline - time.monotonic()
            if total >= max(1, min_bytes) or remaining <= 0 or any(e for _, rows in results for _, e, *_ in rows):
                break
            fut = asyncio.get_running_loop().create_future()
            self._data_waiters.add(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                self._data_waiters.discard(fut)
        w = Writer().int32(0)
        if v >= 7:
            w.int16(NONE).int32(0)

        def partition(row: tuple[int, int, int, bytes]) -> None:
            w.int32(row[0]).int16(row[1]).int64(row[2]).int64(row[2])
            if v >= 5:
                w.int64(0)
            w.int32(0)  # aborted transactions: none (an empty array)
            if v >= 11:
                w.int32(-1)
            w.bytes_(row[3])

        w.array(results, lambda t: (w.string(t[0]), w.array(t[1], partition)))
        return w

    def _gather(
        self, wanted: list[tuple[str, list[tuple[int, int, int]]]], max_bytes: int
    ) -> tuple[int, list[tuple[str, list[tuple[int, int, int, bytes]]]]]:
        total, results = 0, []
        for topic, partitions in wanted:
            rows = []
            for index, offset, partition_max in partitions:
                log = self._log(topic, index)
                if log is None:
                    rows.append((index, UNKNOWN_TOPIC_OR_PARTITION, -1, b""))
                    continue
                if not 0 <= offset <= log.end:
                    rows.append((index, OFFSET_OUT_OF_RANGE, log.end, b""))
                    continue
                data = b""
                if offset < log.end and (total < max_bytes or total == 0):
                    data = log.read(offset, min(partition_max, max(1, max_bytes - total)))
                    total += len(data)
                rows.append((index, NONE, log.end, data))
            results.append((topic, rows))
        return total, results

    async def list_offsets(self, v: int, r: Reader, client: str) -> Writer:
        r.int32()
        if v >= 2:
            r.int8()

        def read_partition() -> tuple[int, int]:
            index = r.int32()
            if v >= 4:
                r.int32()
            timestamp = r.int64()
            if v == 0:
                r.int32()
            return index, timestamp

        wanted = r.array(lambda: (r.string(), r.array(read_partition)))
        w = Writer()
        if v >= 2:
            w.int32(0)

        def partition(topic: str, index: int, timestamp: int) -> None:
            log = self._log(topic, index)
            if log is None:
                error, offset = UNKNOWN_TOPIC_OR_PARTITION, -1
            elif timestamp == -1:
                error, offset = NONE, log.end
            elif timestamp == -2:
                error, offset = NONE, 0
            elif timestamp >= 0:
                error, offset = NONE, log.offset_for_time(timestamp)
            else:
                error, offset = INVALID_REQUEST, -1
            w.int32(index).int16(error)
            if v == 0:
                w.array([offset] if offset >= 0 else [], w.int64)
                return
            w.int64(-1).int64(offset)
            if v >= 4:
                w.int32(0)

        w.array(wanted, lambda t: (w.string(t[0]), w.array(t[1], lambda p: partition(t[0], *p))))
        return w

    # --- groups ------------------------------------------------------------------------------

    async def find_coordinator(self, v: int, r: Reader, client: str) -> Writer:
        r.string()
        if v >= 1:
            r.int8()
        w = Writer()
        if v >= 1:
            w.int32(0)
        w.int16(NONE)
        if v >= 1:
            w.string(None)
        return w.int32(NODE_ID).string(self.advertised_host).int32(self.port)

    def _group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(group_id)
        return group

    def _prepare_rebalance(self, group: Group) -> None:
        if group.state != "PreparingRebalance":
            group.state = "PreparingRebalance"
            timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0) / 1000
            group.rebalance_deadline = time.monotonic() + timeout
            for m in group.members.values():  # members waiting for an assignment must rejoin
                _resolve(m.sync, (REBALANCE_IN_PROGRESS, b""))
        self._maybe_complete_join(group)

    def _maybe_complete_join(self, group: Group, force: bool = False) -> None:
        if group.state != "PreparingRebalance":
            return
        pending = [m for m in group.members.values() if m.join is None or m.join.done()]
        if pending and not force:
            return
        for m in pending:  # missed the rebalance deadline: out of the group
            del group.members[m.member_id]
        if not group.members:
            group.state, group.leader, group.protocol = "Empty", "", ""
            group.generation += 1
            return
        common = set.intersection(*({name for name, _ in m.protocols} for m in group.members.values()))
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        leader = group.members[group.leader]
        group.protocol = next((name for name, _ in leader.protocols if name in common), "")
        group.generation += 1
        group.state = "CompletingRebalance"
        for m in group.members.values():
            m.assignment = b""
            _resolve(m.join, NONE)

    async def join_group(self, v: int, r: Reader, client: str) -> Writer:
        group_id, session_ms = r.string(), r.int32()
        rebalance_ms = r.int32() if v >= 1 else session_ms
        member_id = r.string()
        instance_id = r.nullable_string() if v >= 5 else None
        protocol_type = r.string()
        protocols = r.array(lambda: (r.string(), r.bytes_()))

        def answer(error: int, group: Group | None = None, mid: str = member_id) -> Writer:
            w = Writer()
            if v >= 2:
                w.int32(0)
            w.int16(error)
            if group is None or error:
                w.int32(-1).string("").string("").string(mid)
                return w.array([], lambda _: None)
            w.int32(group.generation).string(group.protocol).string(group.leader).string(mid)
            members = list(group.members.values()) if mid == group.leader else []

            def member(m: Member) -> None:
                w.string(m.member_id)
                if v >= 5:
                    w.string(m.instance_id)
                w.bytes_(dict(m.protocols).get(group.protocol, b""))

            return w.array(members, member)

        if not group_id:
            return answer(INVALID_GROUP_ID)
        if not 1000 <= session_ms <= 30 * 60 * 1000:
            return answer(INVALID_SESSION_TIMEOUT)
        group = self._group(group_id)
        if not protocols or (group.members and protocol_type != group.protocol_type):
            return answer(INCONSISTENT_GROUP_PROTOCOL)
        if group.members and not {n for n, _ in protocols} & set.intersection(
            *({n for n, _ in m.protocols} for m in group.members.values())
        ):
            return answer(INCONSISTENT_GROUP_PROTOCOL)
        if member_id and member_id not in group.members:
            return answer(UNKNOWN_MEMBER_ID)
        if not member_id:
            member_id = f"{client or 'member'}-{uuid.uuid4()}"
        member = group.members.get(member_id)
        if member is None:
            member = group.members[member_id] = Member(
                member_id, client, session_ms, rebalance_ms, protocol_type, protocols, instance_id
            )
        else:
            member.protocols, member.session_timeout_ms, member.rebalance_timeout_ms = (
                protocols,
                session_ms,
                rebalance_ms,
            )
        group.protocol_type = protocol_type
        member.last_seen = time.monotonic()
        member.join = asyncio.get_running_loop().create_future()
        self._prepare_rebalance(group)
        await member.join
        member.join = None
        member.last_seen = time.monotonic()
        if member_id not in group.members:
            return answer(UNKNOWN_MEMBER_ID)
        return answer(NONE, group, member_id)

    def _check_member(self, group: Group | None, member_id: str, generation: int) -> int:
        if group is None or member_id not in group.members:
            return UNKNOWN_MEMBER_ID
        group.members[member_id].last_seen = time.monotonic()
        if generation != group.generation:
            return ILLEGAL_GENERATION
        return NONE

    async def sync_group(self, v: int, r: Reader, client: str) -> Writer:
        group_id, generation, member_id = r.string(), r.int32(), r.string()
        if v >= 3:
            r.nullable_string()
        assignments = r.array(lambda: (r.string(), r.bytes_()))
        group = self.groups.get(group_id)
        error = self._check_member(group, member_id, generation)
        assignment = b""
        if error == NONE and group.state == "PreparingRebalance":
            error = REBALANCE_IN_PROGRESS
        elif error == NONE and group.state == "Stable":
            assignment = group.members[member_id].assignment
        elif error == NONE:
            member = group.members[member_id]
            if member_id == group.leader:
                given = dict(assignments)
                for m in group.members.values():
                    m.assignment = given.get(m.member_id, b"")
                group.state = "Stable"
                for m in group.members.values():
                    _resolve(m.sync, (NONE, m.assignment))
                assignment = member.assignment
            else:
                member.sync = asyncio.get_running_loop().create_future()
                error, assignment = await member.sync
                member.sync = None
        w = Writer()
        if v >= 1:
            w.int32(0)
        return w.int16(error).bytes_(assignment)

    async def heartbeat(self, v: int, r: Reader, client: str) -> Writer:
        group_id, generation, member_id = r.string(), r.int32(), r.string()
        if v >= 3:
            r.nullable_string()
        group = self.groups.get(group_id)
        error = self._check_member(group, member_id, generation)
        if error == NONE and group.state == "PreparingRebalance":
            error = REBALANCE_IN_PROGRESS
        w = Writer()
        if v >= 1:
            w.int32(0)
        return w.int16(error)

    async def leave_group(self, v: int, r: Reader, client: str) -> Writer:
        group_id = r.string()
        if v >= 3:
            leaving = r.array(lambda: (r.string(), r.nullable_string()))
        else:
            leaving = [(r.string(), None)]
        group = self.groups.get(group_id)
        results = []
        for member_id, instance_id in leaving:
            if group is None or member_id not in group.members:
                results.append((member_id, instance_id, UNKNOWN_MEMBER_ID))
                continue
            member = group.members.pop(member_id)
            _resolve(member.join, NONE)
            _resolve(member.sync, (UNKNOWN_MEMBER_ID, b""))
            results.append((member_id, instance_id, NONE))
            logger.info("member %s left group %s", member_id, group_id)
        if group is not None and any(e == NONE for *_, e in results):
            self._after_departure(group)
        w = Writer()
        if v >= 1:
            w.int32(0)
        if v < 3:
            return w.int16(results[0][2])
        w.int16(NONE)
        return w.array(results, lambda m: w.string(m[0]).string(m[1]).int16(m[2]))

    def _after_departure(self, group: Group) -> None:
        if group.members:
            group.state = "Stable" if group.state == "Empty" else group.state
            if group.state == "PreparingRebalance":
                self._maybe_complete_join(group)
            else:
                self._prepare_rebalance(group)
        else:
            group.state, group.leader, group.protocol = "Empty", "", ""
            group.generation += 1

    async def _expire_members(self) -> None:
        """Every 0.25 s: drop members whose session lapsed, and close rebalances past their deadline."""
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for group in list(self.groups.values()):
                expired = [
                    m
                    for m in group.members.values()
                    if (m.join is None or m.join.done()) and now - m.last_seen > m.session_timeout_ms / 1000
                ]
                for m in expired:
                    logger.info(
                        "member %s of group %s missed its session time-out; removed", m.member_id, group.group_id
                    )
                    del group.members[m.member_id]
                    _resolve(m.sync, (UNKNOWN_MEMBER_ID, b""))
                if expired:
                    self._after_departure(group)
                if group.state == "PreparingRebalance" and now >= group.rebalance_deadline:
                    self._maybe_complete_join(group, force=True)

    async def offset_commit(self, v: int, r: Reader, client: str) -> Writer:
        group_id = r.string()
        generation = r.int32() if v >= 1 else -1
        member_id = r.string() if v >= 1 else ""
        if v >= 7:
            r.nullable_string()
        if 2 <= v <= 4:
            r.int64()

        def read_partition() -> tuple[int, int, int, str | None]:
            index, offset = r.int32(), r.int64()
            epoch = r.int32() if v >= 6 else -1
            if v == 1:
                r.int64()
            return index, offset, epoch, r.nullable_string()

        topics = r.array(lambda: (r.string(), r.array(read_partition)))
        group = self._group(group_id) if group_id else None
        if group is None:
            error = INVALID_GROUP_ID
        elif generation < 0 and not member_id:
            error = NONE if not group.members else UNKNOWN_MEMBER_ID  # a simple (group-less) consumer
        else:
            error = self._check_member(group, member_id, generation)
            if error == NONE and group.state == "PreparingRebalance":
                error = REBALANCE_IN_PROGRESS
        results = []
        for topic, partitions in topics:
            rows = []
            for index, offset, epoch, metadata in partitions:
                code = error
                if code == NONE and self._log(topic, index) is None:
                    code = UNKNOWN_TOPIC_OR_PARTITION
                if code == NONE:
                    group.offsets[(topic, index)] = (offset, epoch, metadata)
                rows.append((index, code))
            results.append((topic, rows))
        w = Writer()
        if v >= 3:
            w.int32(0)
        w.array(results, lambda t: (w.string(t[0]), w.array(t[1], lambda p: w.int32(p[0]).int16(p[1]))))
        return w

    async def offset_fetch(self, v: int, r: Reader, client: str) -> Writer:
        group_id = r.string()
        wanted = r.nullable_array(lambda: (r.string(), r.array(r.int32)))
        group = self.groups.get(group_id)
        offsets = group.offsets if group is not None else {}
        if wanted is None:  # every partition with an offset
            by_topic: dict[str, list[int]] = {}
            for topic, index in sorted(offsets):
                by_topic.setdefault(topic, []).append(index)
            wanted = list(by_topic.items())
        w = Writer()
        if v >= 3:
            w.int32(0)

        def partition(topic: str, index: int) -> None:
            offset, epoch, metadata = offsets.get((topic, index), (-1, -1, ""))
            w.int32(index).int64(offset)
            if v >= 5:
                w.int32(epoch)
            w.string(metadata).int16(NONE)

        w.array(wanted, lambda t: (w.string(t[0]), w.array(t[1], lambda p: partition(t[0], p))))
        if v >= 2:
            w.int16(NONE)
        return w

    async def list_groups(self, v: int, r: Reader, client: str) -> Writer:
        w = Writer()
        if v >= 1:
            w.int32(0)
        w.int16(NONE)
        return w.array(
            sorted(self.groups.values(), key=lambda g: g.group_id),
            lambda g: w.string(g.group_id).string(g.protocol_type or "consumer"),
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m movielab.kafka.server [--host H] [--port P]`: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m movielab.kafka.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=9092, help="TCP port (0: any free one)")
    parser.add_argument("--advertised-host", default=None, help="host clients are told to connect to")
    parser.add_argument("--default-partitions", type=int, default=1, help="partitions of auto-created topics")
    parser.add_argument(
        "--allow-topic-deletion",
        action="store_true",
        help="serve DeleteTopics (off by default: any client could wipe a team's stream)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    broker = Broker(args.host, args.port, args.advertised_host, args.default_partitions, args.allow_topic_deletion)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)

        def ready(port: int) -> None:
            print(f"listening on {broker.advertised_host}:{port}", flush=True)

        await broker.serve(ready, stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
