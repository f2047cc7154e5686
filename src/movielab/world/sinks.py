"""Where event lines go: memory, a file, nowhere (benchmarks); Kafka lives in `bus`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


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
    """Appends lines to a text file, one per line (keys are not written)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Write the batch, newline-terminated."""
        if lines:
            self._f.write("\n".join(lines))
            self._f.write("\n")

    def close(self) -> None:
        """Flush and close the file."""
        self._f.close()


class TeeSink:
    """Writes every batch to several sinks."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Forward the batch."""
        for s in self.sinks:
            s.write(keys, lines)

    def close(self) -> None:
        """Close every sink."""
        for s in self.sinks:
            s.close()


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
