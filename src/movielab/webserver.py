"""Running ASGI apps under uvicorn: in a background thread (tests, demos, embedded services), or several apps
on their own listeners in one blocking server (a public port and a private admin port in one process)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from movielab.errors import MovielabError


class PortInUseError(MovielabError, OSError):
    """A server cannot listen on its host:port (taken by another process, or not an address of this host)."""

    def __str__(self) -> str:
        return str(self.strerror)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PortRouter:
    """ASGI app that hands each request to the app of the listener (local port) it arrived on, so a public and
    a private app share one process and one event loop but never a port; unknown ports get 404."""

    def __init__(self, apps: dict[int, object]) -> None:
        self.apps = dict(apps)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":  # the apps keep no lifespan state; answer for all of them
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        server = scope.get("server") or (None, None)
        app = self.apps.get(server[1])
        if app is None:
            body = b"no app on this listener"
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket on host:port (SO_REUSEADDR), ready to hand to uvicorn; OSError names a taken port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def check_free(host: str, port: int | None, what: str) -> None:
    """Refuse early, before anything is written, a port a server will need: PortInUseError names `what`
    (e.g. "[api].port"), host and port. None or 0 (any free port) is always fine."""
    if not port:
        return
    try:
        listen(host, port).close()
    except PortInUseError as exc:
        raise PortInUseError(exc.errno, f"{what}: {exc.strerror}") from None


def serve_listeners(listeners: list[tuple[object, str, int]], **config) -> None:
    """Serve each `(app, host, port)` on its own listener in one uvicorn server until SIGINT/SIGTERM; blocking.
    `config` goes to `uvicorn.Config` (log level, keep-alive, ...)."""
    sockets = [listen(host, port) for _, host, port in listeners]
    apps = {s.getsockname()[1]: app for s, (app, _, _) in zip(sockets, listeners, strict=True)}
    config = {"log_level": "warning", "access_log": False, **config}
    server = uvicorn.Server(uvicorn.Config(PortRouter(apps), lifespan="on", **config))
    server.run(sockets=sockets)


class ServerThread:
    """uvicorn serving `app` on host:port in a daemon thread; `stop()` shuts it down cleanly."""

    def __init__(
        self, app, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning", **options
    ) -> None:
        """`options` go to `uvicorn.Config` as they are (e.g. `http=` a protocol class)."""
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8082."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving; return once the socket accepts connections. PortInUseError (naming host:port) when
        the port cannot be bound; RuntimeError when the server does not come up within `timeout` s."""
        sock = listen(self.host, self.port)  # bound here, so a taken port is one clear error, not a dying thread
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{self.port}", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.host}:{self.port} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
