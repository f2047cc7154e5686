"""The embedded Kafka broker (`movielab.kafka.server`) as a child process on a loopback port."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from movielab.kafka.errors import MovielabKafkaError

logger = logging.getLogger(__name__)

_PORT_ATTEMPTS = 3
_LOG_TAIL_BYTES = 2000


class BrokerError(MovielabKafkaError, RuntimeError):
    """The embedded broker could not be found, started or kept running; the message says why."""


def _free_port(host: str) -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn making Linux SIGTERM the broker if we die without stopping it; None where unsupported."""
    # PDEATHSIG fires when the *thread* that forked exits, so only arm it from the main thread.
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child must not load libraries
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedBroker:
    """movielab's Kafka broker (in-memory, one node) on 127.0.0.1; `with EmbeddedBroker() as b: b.bootstrap`.

    It runs in its own process (`python -m movielab.kafka.server`), so it keeps serving while the caller's
    interpreter is busy. `binary` replaces that command by an executable taking `--host` and `--port`.
    Topics cannot be deleted unless `allow_topic_deletion` (clients get TOPIC_DELETION_DISABLED).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = 15.0,
        stop_timeout: float = 3.0,
        binary: Path | str | None = None,
        allow_topic_deletion: bool = False,
    ) -> None:
        self.host = host
        self.allow_topic_deletion = allow_topic_deletion
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._requested_port = port
        self._binary = Path(binary) if binary is not None else None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients connect to, e.g. "127.0.0.1:40123"."""
        if self._port is None or self._proc is None:
            raise BrokerError("embedded broker is not running: call start() first")
        return f"{self.host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, None when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and return once it answers a metadata request; raise BrokerError otherwise."""
        if self._proc is not None:
            raise BrokerError(f"embedded broker already running on {self.bootstrap}")
        command = [str(self._binary)] if self._binary is not None else [sys.executable, "-m", "movielab.kafka.server"]
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port(self.host)
            self._spawn(command, port)
            try:
                self._wait_ready(port)
                break
            except BrokerError as exc:
                tail = self._log_tail()
                self._terminate()
                if attempt == attempts or "in use" not in tail.lower():
                    raise BrokerError(f"{exc}; broker log tail:\n{tail}") from None
                logger.warning("port %d was taken before the broker bound it; retrying on another", port)
        self._port = port
        logger.info("Kafka broker ready on %s (pid %d, log %s)", self.bootstrap, self.pid, self._log_path)
        return self

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `stop_timeout`) and reap it; safe to call twice."""
        if self._proc is None:
            return
        pid = self._proc.pid
        self._terminate()
        self._port = None
        logger.info("Kafka broker (pid %d) stopped", pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, command: list[str], port: int) -> None:
        cmd = [*command, "--host", self.host, "--port", str(port)]
        if self.allow_topic_deletion:
            cmd.append("--allow-topic-deletion")
        fd, name = tempfile.mkstemp(prefix=f"movielab-kafka-{port}-", suffix=".log")
        self._log_path = Path(name)
        # Own session: a Ctrl-C reaches only us, and we stop the broker in order.
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )  # noqa: PLW1509 (prctl only, no locks)
        except OSError as exc:
            self._remove_log()
            raise BrokerError(f"cannot run the Kafka broker {cmd[0]}: {exc}") from exc
        finally:
            os.close(fd)
        atexit.register(self.stop)
        logger.debug("started %s (pid %d)", " ".join(cmd), self._proc.pid)

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        bootstrap = f"{self.host}:{port}"
        admin: AdminClient | None = None
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(f"Kafka broker on {bootstrap} exited with code {code} while starting")
            if admin is None:
                # Connect by hand first, so librdkafka does not log "connection refused" at us.
                try:
                    socket.create_connection((self.host, port), timeout=0.5).close()
                except OSError as exc:
                    last = str(exc)
                    time.sleep(0.02)
                    continue
                admin = AdminClient({"bootstrap.servers": bootstrap, "logger": logger})
            try:
                admin.list_topics(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            except KafkaException as exc:
                last = str(exc)
                continue
            # Whoever answered on this port may not be our broker: make sure ours is still alive.
            time.sleep(0.05)
            if self._proc.poll() is None:
                return
        raise BrokerError(
            f"Kafka broker on {bootstrap} did not answer metadata within {self.start_timeout} s (last: {last})"
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "Kafka broker (pid %d) ignored SIGTERM for %s s; killing it", proc.pid, self.stop_timeout
                )
                proc.kill()
                proc.wait()
        elif proc is not None:
            proc.wait()
        self._remove_log()

    def _log_tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
                return f.read().decode("utf-8", errors="replace").strip()
        except OSError as exc:
            return f"(log {self._log_path} unreadable: {exc})"

    def _remove_log(self) -> None:
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None


def run_broker(port: int | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Run an embedded broker in the foreground until SIGINT or SIGTERM; `on_ready(bootstrap)` is called once up."""
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        logger.info("received %s; stopping the broker", signal.Signals(signum).name)
        stopping.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmbeddedBroker(port=port) as broker:
            if on_ready is not None:
                on_ready(broker.bootstrap)
            while not stopping.wait(0.5):
                if not broker.running:
                    raise BrokerError(
                        f"Kafka broker on {broker.bootstrap} exited unexpectedly; tail:\n{broker._log_tail()}"
                    )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
