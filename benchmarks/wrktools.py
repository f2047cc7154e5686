"""Shared by the wrk benchmarks: a Lua script for random ids and the parser of wrk's `--latency` output."""

from __future__ import annotations

import re

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}

# Each wrk thread seeds its own generator, so the threads ask for different ids.
_LUA_RANDOM_ID = """
local counter = 0
function setup(thread)
  thread:set("seed", counter)
  counter = counter + 1
end
function init(args)
  math.randomseed(1000003 * (seed or 0) + 17)
end
function request()
  return wrk.format("GET", "%s" .. math.random(1, %d))
end
"""


def random_id_lua(prefix: str, n: int) -> str:
    """A wrk script requesting `<prefix><random id in 1..n>`, e.g. prefix `/user/`."""
    return _LUA_RANDOM_ID % (prefix, n)


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50/p99 in ms, the non-2xx count and whether socket errors occurred, from `wrk --latency`."""

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if m is None:
            raise ValueError(f"wrk output has no {pct}% latency line:\n{output}")
        return float(m.group(1)) * _UNIT[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rps is None:
        raise ValueError(f"wrk output has no Requests/sec line:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": errors is not None,
    }
