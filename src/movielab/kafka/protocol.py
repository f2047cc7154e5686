"""Kafka wire-protocol primitives: a reader and a writer for the types request and response schemas use.

Types follow the protocol guide (kafka.apache.org/protocol): big-endian fixed-width integers, strings with an
int16 length (-1 = null), bytes and arrays with an int32 length (-1 = null), and for flexible versions
(KIP-482) unsigned varints, "compact" strings, bytes and arrays whose length is stored plus one, and tagged
fields. Nothing here knows which API a buffer belongs to: `movielab.kafka.server` does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from movielab.kafka.errors import MovielabKafkaError

T = TypeVar("T")

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class ProtocolError(MovielabKafkaError, ValueError):
    """A request that cannot be decoded: it names what was being read and where."""


class Reader:
    """Reads protocol types from a bytes-like buffer, front to back; raises ProtocolError past its end."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def _take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise ProtocolError(f"{what}: needs {n} byte(s) at {self.pos}, the request has {len(self.buf)}")
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def _fixed(self, s: struct.Struct, what: str) -> int:
        if self.pos + s.size > len(self.buf):
            raise ProtocolError(f"{what}: needs {s.size} byte(s) at {self.pos}, the request has {len(self.buf)}")
        (value,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return value

    def int8(self) -> int:
        return self._fixed(_I8, "int8")

    def int16(self) -> int:
        return self._fixed(_I16, "int16")

    def int32(self) -> int:
        return self._fixed(_I32, "int32")

    def int64(self) -> int:
        return self._fixed(_I64, "int64")

    def boolean(self) -> bool:
        return self.int8() != 0

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self._fixed(_I8, "varint") & 0xFF
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ProtocolError(f"varint longer than 10 bytes at {self.pos}")

    def nullable_string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self._decode(self._take(n, "string"))

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise ProtocolError(f"null where a string is required (at {self.pos})")
        return value

    def compact_nullable_string(self) -> str | None:
        n = self.uvarint() - 1
        return None if n < 0 else self._decode(self._take(n, "compact string"))

    def nullable_bytes(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else bytes(self._take(n, "bytes"))

    def bytes_(self) -> bytes:
        return self.nullable_bytes() or b""

    def nullable_array(self, item: Callable[[], T]) -> list[T] | None:
        n = self.int32()
        if n < 0:
            return None
        if n > len(self.buf) - self.pos:  # every item takes at least one byte
            raise ProtocolError(f"array of {n} items at {self.pos} is longer than the request")
        return [item() for _ in range(n)]

    def array(self, item: Callable[[], T]) -> list[T]:
        return self.nullable_array(item) or []

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self._take(self.uvarint(), "tagged field")

    @staticmethod
    def _decode(view: memoryview) -> str:
        try:
            return str(view, "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string is not UTF-8: {exc}") from None


class Writer:
    """Builds a response from protocol types; `getvalue()` joins the parts once."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def int8(self, v: int) -> Writer:
        self.parts.append(_I8.pack(v))
        return self

    def int16(self, v: int) -> Writer:
        self.parts.append(_I16.pack(v))
        return self

    def int32(self, v: int) -> Writer:
        self.parts.append(_I32.pack(v))
        return self

    def int64(self, v: int) -> Writer:
        self.parts.append(_I64.pack(v))
        return self

    def boolean(self, v: bool) -> Writer:
        return self.int8(1 if v else 0)

    def uvarint(self, v: int) -> Writer:
        out = bytearray()
        while v > 0x7F:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
        self.parts.append(bytes(out))
        return self

    def string(self, v: str | None) -> Writer:
        if v is None:
            return self.int16(-1)
        data = v.encode()
        self.parts.append(_I16.pack(len(data)))
        self.parts.append(data)
        return self

    def bytes_(self, v: bytes | None) -> Writer:
        if v is None:
            return self.int32(-1)
        self.parts.append(_I32.pack(len(v)))
        self.parts.append(v)
        return self

    def array(self, items: list[T] | None, write: Callable[[T], object]) -> Writer:
        if items is None:
            return self.int32(-1)
        self.int32(len(items))
        for item in items:
            write(item)
        return self

    def compact_array(self, items: list[T], write: Callable[[T], object]) -> Writer:
        self.uvarint(len(items) + 1)
        for item in items:
            write(item)
        return self

    def no_tags(self) -> Writer:
        return self.uvarint(0)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)
