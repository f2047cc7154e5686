"""Misbehaving team services on real loopback sockets, and the line the world logs for each (for tests).

Each case is a small asyncio server that answers `GET /recommend/<user>` in its own wrong (or right)
way at the byte level: split writes, chunks, truncation, trickling, huge or compressed bodies. `run_cases`
asks every case at once through the world's real `HttpRecommender` and returns the outcome of each.

Print the table (case → status, ms, result text of the recommendation-request line):

    .venv/bin/python tests/teamservers.py
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from movielab.world.client import HttpRecommender, Team

IDS = [f"film+number+{i}+{1950 + i}" for i in range(1, 41)]
INDEX = {m: i for i, m in enumerate(IDS)}
BODY = ",".join(IDS[:20]).encode()  # a valid answer: 20 known ids, 479 bytes
RESULT = ", ".join(IDS[:20])
BIG = 10 * 1024 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Case"], Awaitable[None]]


@dataclass
class Case:
    """One way of answering; `status` and `result` (a regular expression) are what the world must log."""

    name: str
    handler: Handler
    status: int
    result: str
    connections: int = 0  # accepted so far
    requests: int = 0  # request heads read so far
    tasks: set = field(default_factory=set)


def head(status: str = "200 OK", **headers: str | int) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: text/plain"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _request(reader: asyncio.StreamReader, case: Case) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    case.requests += 1
    return True


async def _finish(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except ConnectionError:
        pass


# --- the handlers: each answers requests on one connection ---------------------------------------
async def one_write(reader, writer, case) -> None:
    while await _request(reader, case):  # keep-alive: serve every request on the connection
        writer.write(head(Content_Length=len(BODY)) + BODY)
        await writer.drain()
    await _finish(writer)


async def two_writes(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Content_Length=len(BODY)) + BODY[:200])  # cut inside an id
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(BODY[200:])
    await _finish(writer)


async def two_chunks(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Transfer_Encoding="chunked") + chunk(BODY[:200]))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(chunk(BODY[200:]) + b"0\r\n\r\n")
    await _finish(writer)


async def until_close(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Connection="close") + BODY[:100])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(BODY[100:])
    await _finish(writer)


async def gzipped(reader, writer, case) -> None:
    while await _request(reader, case):
        data = gzip.compress(BODY)
        writer.write(head(Content_Encoding="gzip", Content_Length=len(data)) + data)
        await writer.drain()
    await _finish(writer)


async def short_of_length(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Content_Length=1000) + BODY[:29])  # two whole ids and a comma, then close
    await _finish(writer)


async def chunked_cut(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Transfer_Encoding="chunked") + chunk(BODY))  # no last chunk
    await _finish(writer)


async def trickle(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Content_Length=len(BODY)))
        try:
            for b in BODY:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
    await _finish(writer)


async def huge_length(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Content_Length=BIG))
        try:
            for _ in range(BIG // 65536):
                writer.write(b"a" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
    await _finish(writer)


async def huge_chunked(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Transfer_Encoding="chunked"))
        try:
            for _ in range(BIG // 65536):
                writer.write(chunk(b"a" * 65536))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        except ConnectionError:
            pass
    await _finish(writer)


async def gzip_bomb(reader, writer, case) -> None:
    if await _request(reader, case):
        data = gzip.compress(b"a" * BIG)  # ~10 kB on the wire, 10 MB decoded
        writer.write(head(Content_Encoding="gzip", Content_Length=len(data)) + data)
    await _finish(writer)


async def bad_gzip(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Content_Encoding="gzip", Content_Length=len(BODY)) + BODY)
    await _finish(writer)


async def head_then_silence(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head(Content_Length=len(BODY)))
        await writer.drain()
        await asyncio.sleep(2)
    await _finish(writer)


async def silence(reader, writer, case) -> None:
    if await _request(reader, case):
        await asyncio.sleep(2)
    await _finish(writer)


async def hang_up(reader, writer, case) -> None:
    await _request(reader, case)
    await _finish(writer)


async def not_http(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(b"hello there\r\n\r\n")
    await _finish(writer)


async def status_500(reader, writer, case) -> None:
    if await _request(reader, case):
        writer.write(head("500 Internal Server Error", Content_Length=5) + b"oops!")
    await _finish(writer)


async def unknown_id(reader, writer, case) -> None:
    if await _request(reader, case):
        body = ",".join([*IDS[:19], "twelve+angry+men+1957"]).encode()
        writer.write(head(Content_Length=len(body)) + body)
    await _finish(writer)


async def json_body(reader, writer, case) -> None:
    if await _request(reader, case):
        body = json.dumps(IDS[:20]).encode()  # `["a", "b"]`: the space is outside the id alphabet
        writer.write(head(Content_Length=len(body)) + body)
    await _finish(writer)


async def json_compact(reader, writer, case) -> None:
    if await _request(reader, case):
        body = ('["' + '","'.join(IDS[:20]) + '"]').encode()
        writer.write(head(Content_Length=len(body)) + body)
    await _finish(writer)


OK = re.escape(RESULT)
S = r"127\.0\.0\.1:\d+"
CASES: list[tuple[str, Handler, int, str]] = [
    ("valid, one write (kept alive)", one_write, 200, OK),
    ("valid, two writes 20 ms apart", two_writes, 200, OK),
    ("valid, two chunks 20 ms apart", two_chunks, 200, OK),
    ("valid, no length, ends at close", until_close, 200, OK),
    ("valid, gzip-encoded", gzipped, 200, OK),
    (
        "Content-Length 1000, closes after 29 bytes",
        short_of_length,
        0,
        rf"Truncated response from {S}: connection closed before the end of the body \(.*received 29 of 1000 bytes.*",
    ),
    (
        "chunked, closes before the last chunk",
        chunked_cut,
        0,
        rf"Truncated response from {S}: connection closed before the last chunk",
    ),
    ("one byte per 100 ms", trickle, 0, rf"Request timeout to {S} after \d+ ms"),
    ("headers, then silence", head_then_silence, 0, rf"Request timeout to {S} after \d+ ms"),
    ("no answer", silence, 0, rf"Request timeout to {S} after \d+ ms"),
    (
        "10 MB body, Content-Length",
        huge_length,
        200,
        rf"Invalid response from {S}: body longer than 65536 bytes \(10,485,760 bytes or more\)",
    ),
    ("10 MB body, chunked", huge_chunked, 200, rf"Invalid response from {S}: body longer than 65536 bytes \(.*\)"),
    ("10 MB after gzip, 10 kB sent", gzip_bomb, 200, rf"Invalid response from {S}: body longer than 65536 bytes .*"),
    (
        "gzip header, body not gzip",
        bad_gzip,
        200,
        rf"Invalid response from {S}: body cannot be decoded from Content-Encoding 'gzip'",
    ),
    ("closes without answering", hang_up, 0, rf"Connection closed by {S} before a response"),
    ("not HTTP at all", not_http, 0, rf"Invalid HTTP response from {S}: .+"),
    ("HTTP 500", status_500, 500, rf"HTTP 500 from {S}"),
    (
        "valid shape, one unknown id",
        unknown_id,
        200,
        rf"Invalid response from {S}: unknown movie id 'twelve\+angry\+men\+1957'",
    ),
    ("a JSON list", json_body, 200, rf"Invalid response from {S}: body .* is not a comma-separated list of movie ids"),
    (
        "a JSON list without spaces",
        json_compact,
        200,  # each token is a well-formed id, the first one unknown
        rf"Invalid response from {S}: unknown movie id '\[\"film\+number\+1\+1951\"'",
    ),
]


class CaseServers:
    """Every case's server on its own free loopback port, served by one asyncio loop in a thread."""

    def __init__(self, cases: list[tuple[str, Handler, int, str]] = CASES) -> None:
        self.cases = [Case(n, h, s, r) for n, h, s, r in cases]
        self.ports: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="team-cases", daemon=True)
        self._servers: list[asyncio.Server] = []

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        for case in self.cases:

            async def serve(reader, writer, case=case) -> None:
                case.connections += 1
                task = asyncio.current_task()
                case.tasks.add(task)
                try:
                    await case.handler(reader, writer, case)
                except asyncio.CancelledError:
                    writer.close()  # stopped while a handler still talks or waits: end quietly
                finally:
                    case.tasks.discard(task)

            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        for server in self._servers:
            server.close()
        for case in self.cases:
            for task in list(case.tasks):
                task.cancel()
        await asyncio.sleep(0)
        for server in self._servers:
            await server.wait_closed()

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def teams(self) -> list[Team]:
        """One team per case, numbered from 1 in case order."""
        return [Team.parse(i, f"http://127.0.0.1:{port}") for i, port in enumerate(self.ports, start=1)]


def run_cases(timeout_ms: int = 600) -> list[tuple[Case, int, int, str]]:
    """Ask every case once, all at once, through the world's client: (case, status, ms, result) each."""
    with CaseServers() as servers, HttpRecommender(servers.teams(), INDEX, timeout_ms=timeout_ms) as client:
        users = np.arange(1, len(servers.cases) + 1)  # user i belongs to team i
        ans = client.recommend(users, np.zeros(len(users)))
        return [(c, int(ans.status[i]), int(ans.ms[i]), ans.result[i]) for i, c in enumerate(servers.cases)]


def main() -> int:
    """Print the table of cases and the lines' status, ms and result; exit 1 if any is not as expected."""
    rows = run_cases()
    width = max(len(c.name) for c, *_ in rows)
    print(f"{'team answers with':{width}}  status     ms  result (of the recommendation-request line)")
    bad = 0
    for case, status, ms, result in rows:
        ok = status == case.status and re.fullmatch(case.result, result) is not None
        bad += not ok
        shown = result if len(result) <= 110 else result[:107] + "..."
        print(f"{case.name:{width}}  {status:6d} {ms:6d}  {shown}{'' if ok else '   <-- NOT AS EXPECTED'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
