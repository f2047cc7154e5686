"""Where event lines go: memory, a file, nowhere (benchmarks); Kafka lives in `movielab.kafka.producer`."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class EventSink(Protocol):
    """Receives event lines in time order with their keys (user ids)."""

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Take a batch of lines; `keys[i]` is the user id of `lines[i]`."""

    def close(self) -> None:
        """Flush and release resources."""


class MemorySink:
    """Keeps every line (tests, small demos)."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.lines: list[str] = []

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Append the batch."""
        self.keys.extend(keys)
        self.lines.extend(lines)

    def close(self) -> None:
        """Nothing to release."""


class NullSink:
    """Discards lines but counts them (benchmarks)."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Count the batch."""
        self.count += len(lines)

    def close(self) -> None:
        """Nothing to release."""


class FileSink:
    """Appends lines to a text file, one per line, each batch in one `write(2)` (keys are not written).

    The file always ends on a newline: a batch goes out whole in one system call on an `O_APPEND`
    descriptor (no user-space buffer a kill -9 could tear), and a file left without a final newline
    (by an older writer or a crash mid-write) gets one before the first append, with a warning naming
    the file and that last line, so the next line never glues onto it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines_written = 0
        self._terminate_last_line()

    def _terminate_last_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with self.path.open("rb") as f:
            f.seek(max(0, size - 200))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        last = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
        logger.warning(
            "%s did not end on a newline (a crash mid-write?); ending its last line %r before appending",
            self.path,
            last,
        )
        self._append(b"\n")

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError(f"{type(self).__name__} for {self.path} is closed")
        view = memoryview(data)
        while view:  # a regular file takes it all at once; loop only for the odd short write
            view = view[os.write(self._fd, view) :]

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Append the batch, each line newline-terminated, in one system call."""
        if lines:
            self._append(("\n".join(lines) + "\n").encode("utf-8"))
            self.lines_written += len(lines)

    def close(self) -> None:
        """Close the file (every batch is already in the kernel's hands)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ConfirmedFileSink(FileSink):
    """A file of the lines Kafka confirmed: only lines whose delivery the cluster acknowledged get in.

    Pass `confirmed` as `on_delivered` to each `movielab.kafka.producer.KafkaSink` and put this sink after
    them (in a `TeeSink`): `write` ignores the lines it is given and appends the lines confirmed since the
    last call (in the order the cluster confirmed them: each user's lines keep their order, users' lines
    interleave by partition); `close` appends the rest, so close it after the Kafka sinks have flushed.
    After a kill -9 the file lacks at most the lines confirmed since the last batch, and holds no line
    that did not reach the topic.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._confirmed: list[bytes] = []

    def confirmed(self, msg: Any) -> None:
        """Delivery callback: remember the confirmed message's value (one UTF-8 line, no newline)."""
        self._confirmed.append(msg.value())

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Append the lines confirmed so far (not `lines`: those may still be on their way)."""
        self._drain()

    def _drain(self) -> None:
        if self._confirmed:
            values, self._confirmed = self._confirmed, []
            self._append(b"\n".join(values) + b"\n")
            self.lines_written += len(values)

    def close(self) -> None:
        """Append the last confirmed lines and close the file."""
        if self._fd is not None:
            self._drain()
        super().close()


class TeeSink:
    """Writes every batch to several sinks."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Forward the batch."""
        for s in self.sinks:
            s.write(keys, lines)

    def close(self) -> None:
        """Close every sink, in order (all of them, even if one fails; the first failure is raised)."""
        errors = []
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # keep closing the others
                errors.append(exc)
        if errors:
            raise errors[0]


def kind_of(line: str) -> str:
    """Cheap classification of a well-formed line: watch, rate, recommendation, account or other."""
    if "/data/m/" in line:
        return "watch"
    if "/rate/" in line:
        return "rate"
    if "recommendation request" in line:
        return "recommendation"
    if line.endswith("/create_account"):
        return "account"
    return "other"


class KindCounter:
    """Counts lines by kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Count the batch by kind."""
        self.counts.update(kind_of(line) for line in lines)

    def close(self) -> None:
        """Nothing to release."""


class TeamRouter:
    """Routes each line to its user's team sink: teams own users by id modulo the number of teams."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        if not sinks:
            raise ValueError("TeamRouter needs at least one sink")
        self.sinks = list(sinks)

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Split the batch by team, keeping each team's order."""
        n = len(self.sinks)
        if n == 1:
            self.sinks[0].write(keys, lines)
            return
        parts_k: list[list[int]] = [[] for _ in range(n)]
        parts_l: list[list[str]] = [[] for _ in range(n)]
        for k, line in zip(keys, lines, strict=True):
            t = (k - 1) % n
            parts_k[t].append(k)
            parts_l[t].append(line)
        for sink, ks, ls in zip(self.sinks, parts_k, parts_l, strict=True):
            if ls:
                sink.write(ks, ls)

    def close(self) -> None:
        """Close every team's sink (all of them, even if one fails)."""
        errors = []
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # keep closing the others; report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]
