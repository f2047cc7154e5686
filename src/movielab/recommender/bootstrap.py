"""The recommender's one wiring place: `build` makes the operated system from a `RecommenderConfig`.

The operated system is: the event store, the world API client, the ingestor (Kafka → store), the registry and
the retrainer, the operator (retrain, canary, monitor), the control app's tokens, and serving, started by the
operator once a first version exists (`replicas` processes behind nginx, or with 0 one in-process server).
`movielab recommender operate` (`run`), the demo and the tests build it here; nothing connects anywhere until
`start()`. Overrides for tests and the demo (retrain policy, canary plan, monitoring pace, cold start) are
arguments, not edits of the parts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from movielab.auth import Tokens, ensure_tokens
from movielab.contract.editions import edition
from movielab.kafka.admin import topic_name
from movielab.recommender.config import RecommenderConfig
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.release.canary import CanaryPlan
from movielab.recommender.release.control import create_control_app
from movielab.recommender.release.operator import Operator, ServingSide
from movielab.recommender.serving.server import OneServer
from movielab.recommender.store.events import EventStore
from movielab.recommender.training.gate import RetrainPolicy
from movielab.recommender.training.registry import Registry
from movielab.recommender.training.retrain import Retrainer
from movielab.webserver import ServerThread

logger = logging.getLogger(__name__)

TOKEN_FILE = "access.tokens"  # next to the store: control and admin tokens (mode 0600)


@dataclass
class Recommender:
    """The operated recommender, built by `build`; `start()` runs it, `close()` stops what it started."""

    config: RecommenderConfig
    store: EventStore
    api: WorldApi
    ingestor: Ingestor
    registry: Registry
    retrainer: Retrainer
    operator: Operator
    tokens: Tokens
    servings: list[ServingSide] = field(default_factory=list)  # what the operator started, in order
    stop: threading.Event = field(default_factory=threading.Event)
    control: ServerThread | None = None
    ingest_thread: threading.Thread | None = None

    def start(
        self, control_host: str = "127.0.0.1", control_port: int | None = None, tick_seconds: float | None = 2.0
    ) -> Recommender:
        """Start ingesting (a thread), the control app on `control_host:control_port` (None: any free port) and,
        unless `tick_seconds` is None (the caller ticks), the operator's loop."""
        self.control = ServerThread(create_control_app(self.operator, self.tokens), control_host, control_port).start()
        self.ingest_thread = threading.Thread(target=self.ingestor.run, args=(self.stop,), name="ingest", daemon=True)
        self.ingest_thread.start()
        if tick_seconds is not None:
            self.operator.start(tick_seconds)
        return self

    def close(self, keep_serving: bool = False) -> None:
        """Stop the operator, the control app, ingesting and serving (with `keep_serving`, a fleet is detached
        instead: replicas and nginx keep answering and the next operator adopts them); close the store."""
        self.operator.stop()
        if self.control is not None:
            self.control.stop()
        self.stop.set()
        if self.ingest_thread is not None:
            self.ingest_thread.join(timeout=60)  # Ingestor.run closes the consumer when it stops
        for s in self.servings:
            if keep_serving and hasattr(s, "detach"):
                s.detach()
            else:
                s.stop()
        self.api.close()
        self.store.close()


def build(
    config: RecommenderConfig,
    *,
    replicas: int = 2,
    plan: CanaryPlan | None = None,
    policy: RetrainPolicy | None = None,
    monitor_every: int = 5,
    coldstart: bool | None = None,
) -> Recommender:
    """The operated recommender `config` describes, built and not started.

    `replicas`: serving processes behind nginx on `config.host:config.port`, or 0 for one in-process server
    there. `plan`: the canary plan (default `CanaryPlan()`); `policy`: the retrain policy (default from
    `config`); `monitor_every`: operator ticks between monitor updates; `coldstart`: cold-start lists from users'
    self-descriptions (default: when the edition has them). The store, the registry (MLflow next to the
    artifacts unless `config.tracking_uri`), `retrain.jsonl`, `operator/`, `fleet/` and the token file
    (`access.tokens`, mode 0600, created at first start) live next to `config.store`.
    """
    base = Path(config.store).parent
    base.mkdir(parents=True, exist_ok=True)
    tokens_path = base / TOKEN_FILE
    tokens = ensure_tokens(tokens_path, "operator")
    course = edition(config.edition)
    store = EventStore(config.store)
    api = WorldApi(config.world_api)
    ingestor = Ingestor(
        config.kafka,
        [topic_name(config.team)],
        store,
        api,
        edition=course,
        coldstart=course.self_descriptions if coldstart is None else coldstart,
    )
    registry = Registry.from_config(config)
    retrainer = Retrainer(
        store,
        registry,
        config.artifacts,
        policy or RetrainPolicy.from_config(config),
        Path(config.artifacts).parent / "retrain.jsonl",
    )
    servings: list[ServingSide] = []
    start_serving = _serving_starter(config, replicas, base, tokens_path, registry, servings)
    operator = Operator(store, retrainer, start_serving, base / "operator", plan, ingestor, monitor_every=monitor_every)
    return Recommender(config, store, api, ingestor, registry, retrainer, operator, tokens, servings)


def _serving_starter(
    config: RecommenderConfig,
    replicas: int,
    base: Path,
    tokens_path: Path,
    registry: Registry,
    servings: list[ServingSide],
) -> Callable[[Path], ServingSide]:
    """How the operator starts serving its first version: a fleet of `replicas`, or one in-process server."""

    def start_serving(version: Path) -> ServingSide:
        if replicas == 0:
            servings.append(OneServer(version, config.host, config.port))
        else:
            from movielab.recommender.serving.fleet import Fleet

            # Versions come from the artifacts (a fresh run) and from the registry's download cache (resume).
            roots = [Path(config.artifacts), Path(registry.cache)]
            fleet = Fleet(base / "fleet", version, replicas, config.port, config.host, tokens=tokens_path, root=roots)
            servings.append(fleet.start())
        return servings[-1]

    return start_serving


def run(
    config: RecommenderConfig,
    replicas: int = 2,
    control_port: int = 8083,
    tick_seconds: float = 2.0,
    plan: CanaryPlan | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[Operator, str], None] | None = None,
    control_host: str = "127.0.0.1",
    keep_serving: bool = False,
) -> Operator:
    """The whole recommender from a `RecommenderConfig`, until `stop` is set (or SIGINT/SIGTERM in the main
    thread): ingest, operator ticks, serving (`replicas` processes behind nginx on `config.host:port`, or with 0
    one in-process server), `/metrics` and the control endpoints on `control_host:control_port` (loopback by
    default, whatever `config.host` is). Control and the replicas' admin ports accept the tokens in
    `access.tokens` next to the store (created with mode 0600 at first start). The fleet outlives this process
    if it is killed, and the next `run` adopts it; `keep_serving` leaves it running on a clean stop too."""
    import signal

    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    system = build(config, replicas=replicas, plan=plan)
    system.stop = stop
    try:
        system.start(control_host, control_port, tick_seconds)
        logger.info(
            "operator on %s (metrics, status, canary overrides); serving on http://%s:%d",
            system.control.url,
            config.host,
            config.port,
        )
        if on_ready is not None:
            on_ready(system.operator, system.control.url)
        stop.wait()
    finally:
        system.close(keep_serving)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return system.operator
