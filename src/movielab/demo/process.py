"""A Prometheus-family server (Prometheus, Alertmanager) as a child process on loopback: started from a command,
ready once `GET /-/ready` answers 200, stopped with SIGTERM (then SIGKILL), its temporary folder removed."""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import httpx

from movielab.errors import MovielabError

logger = logging.getLogger(__name__)


class ReadyServer:
    """Base of `PrometheusServer` and `AlertmanagerServer`: subclasses set `name`, `error` (the exception class
    raised, naming the port and Prometheus's or Alertmanager's own log), `host` and `port`, and call `_launch`."""

    name = "server"
    error: type[MovielabError] = MovielabError

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None
        self._log: Path | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9090."""
        return f"http://{self.host}:{self.port}"

    def _workdir(self) -> Path:
        """A new temporary folder for the config, the data and the log (removed by `stop`)."""
        self._tmp = tempfile.TemporaryDirectory(prefix=f"movielab-{self.name}-")
        work = Path(self._tmp.name)
        self._log = work / f"{self.name}.log"
        return work

    def _launch(self, cmd: list[str], timeout: float) -> Self:
        """Start `cmd` (output to the log) and return once `/-/ready` answers 200; `error` when the process exits
        first (with the log's tail) or is not ready within `timeout` s (it is stopped then)."""
        logger.info("starting %s on %s", self.name, self.url)
        assert self._log is not None, "call _workdir() first"
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                tail, code = self.log_tail(), self._proc.returncode
                self._cleanup()
                raise self.error(f"{self.name} on port {self.port} exited with {code}: {tail}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(f"{self.name} on port {self.port} not ready within {timeout} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout` s (then kill), remove the temporary files."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s on port %d did not stop within %s s; killing it", self.name, self.port, timeout)
                proc.kill()
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's own log (for error messages)."""
        if self._log is None or not self._log.exists():
            return "(no log)"
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
