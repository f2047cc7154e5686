"""Event-line sinks: the `--out` file ends on a newline, holds whole lines, and a torn file is repaired."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from movielab.world.sinks import ConfirmedFileSink, FileSink, MemorySink, TeeSink


class _Msg:
    """What a delivery report carries that the file needs: the value."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


def test_file_sink_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    sink = FileSink(path)
    sink.write([1, 2], ["a,1,x", "b,2,y"])
    sink.write([], [])
    sink.write([3], ["c,3,z"])
    sink.close()
    assert path.read_bytes() == b"a,1,x\nb,2,y\nc,3,z\n"
    assert sink.lines_written == 3
    with pytest.raises(RuntimeError, match="closed"):
        sink.write([4], ["d"])


def test_a_file_torn_by_an_earlier_crash_gets_its_newline_before_the_next_append(tmp_path: Path, caplog) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"a,1,whole\n2026-03-20T08:12:38,7,GET /data/m/tor")
    with caplog.at_level(logging.WARNING, logger="movielab.world.sinks"):
        sink = FileSink(path)
    sink.write([8], ["next,8,line"])
    sink.close()
    assert path.read_bytes().splitlines() == [b"a,1,whole", b"2026-03-20T08:12:38,7,GET /data/m/tor", b"next,8,line"]
    assert path.read_bytes().endswith(b"\n")
    assert str(path) in caplog.text and "GET /data/m/tor" in caplog.text


def test_an_intact_or_empty_file_is_left_alone(tmp_path: Path, caplog) -> None:
    whole = tmp_path / "whole.log"
    whole.write_bytes(b"a\n")
    with caplog.at_level(logging.WARNING):
        FileSink(whole).close()
        FileSink(tmp_path / "new.log").close()
    assert whole.read_bytes() == b"a\n" and (tmp_path / "new.log").read_bytes() == b""
    assert caplog.text == ""


def test_confirmed_file_holds_only_confirmed_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    sink = ConfirmedFileSink(path)
    sink.write([1, 2, 3], ["l1", "l2", "l3"])  # queued, nothing confirmed yet
    assert path.read_bytes() == b""
    sink.confirmed(_Msg(b"l2"))
    sink.confirmed(_Msg(b"l1"))
    sink.write([4], ["l4"])
    assert path.read_bytes() == b"l2\nl1\n"  # in the order the cluster confirmed them
    sink.confirmed(_Msg(b"l4"))
    sink.close()  # the rest confirmed before close gets in; l3 never was
    assert path.read_bytes() == b"l2\nl1\nl4\n"
    assert sink.lines_written == 3


def test_tee_closes_every_sink_even_when_one_fails(tmp_path: Path) -> None:
    class Failing(MemorySink):
        def close(self) -> None:
            raise OSError("disk gone")

    last = ConfirmedFileSink(tmp_path / "out.log")
    last.confirmed(_Msg(b"kept"))
    with pytest.raises(OSError, match="disk gone"):
        TeeSink(Failing(), last).close()
    assert (tmp_path / "out.log").read_bytes() == b"kept\n"
