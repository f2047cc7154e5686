"""The live world: Kafka topics per team, the user/movie API, team services called over HTTP.

`run_live` is the one place that wires the running parts together; it stops them all, in
order, whatever happens: the world's last tick is flushed to Kafka before anything closes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from movielab.auth import ensure_tokens
from movielab.kafka.admin import ensure_topics, topic_name
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.metrics import ProducedLinesCollector
from movielab.kafka.producer import KafkaSink
from movielab.webserver import ServerThread, check_free
from movielab.world.api import create_app, server_options
from movielab.world.bootstrap import Universe, build_universe, build_world, run_until
from movielab.world.client import HttpRecommender, Team
from movielab.world.config import WorldConfig
from movielab.world.engine import Stats, World
from movielab.world.instructor import create_instructor_app
from movielab.world.scenarios.apilayer import ScenarioApi
from movielab.world.service import run_world
from movielab.world.sessionlog import SessionLog
from movielab.world.sinks import ConfirmedFileSink, EventSink, TeamRouter, TeeSink

logger = logging.getLogger(__name__)


@dataclass
class LiveWorld:
    """Handles of a running live world, given to `on_ready` callbacks."""

    world: World
    universe: Universe
    bootstrap: str
    topics: list[str]
    api_url: str
    teams: list[Team]
    instructor_url: str | None = None  # the scenario manifest, behind a token (config.instructor_port)


def run_live(
    config: WorldConfig,
    *,
    universe: Universe | None = None,
    extra_sink: EventSink | None = None,
    on_ready: Callable[[LiveWorld], None] | None = None,
    after: Callable[[LiveWorld, Stats], None] | None = None,
    stop: threading.Event | None = None,
    journal: list[tuple] | None = None,
    on_tick: Callable[[World], None] | None = None,
    out: str | Path | None = None,
    sessionlog: SessionLog | None = None,
) -> tuple[Stats, LiveWorld]:
    """Start (or join) Kafka, create the team topics, serve the API and run the world until done.

    `on_ready` runs once everything is up, before the first tick; `after` runs once the world
    has stopped and flushed, while the broker and the API still run (to read the topics back).
    `out` names a file that gets every line once Kafka confirmed it (`ConfirmedFileSink`).
    `sessionlog` records every session for scoring (`world.scoring.board.DailyScorer`: build it in `on_ready`
    from `live.universe.catalog`, pass its `on_tick`, and `close(live.world)` it in `after`).
    """
    teams = [Team.parse(i, url) for i, url in enumerate(config.teams, start=1)]
    check_free(config.api_host, config.api_port, "the world API's port (api_port)")  # before anything is written
    check_free("127.0.0.1", config.instructor_port, "the instructor port (instructor_port)")
    broker = None
    api = None
    instructor = None
    client = None
    out_sink = None
    try:
        if config.kafka is None:
            broker = EmbeddedBroker().start()
            logger.info("embedded Kafka broker on %s", broker.bootstrap)
        bootstrap = config.kafka or broker.bootstrap
        topics = [topic_name(t.number) for t in teams]
        ensure_topics(bootstrap, topics, partitions=config.partitions)
        out_sink = ConfirmedFileSink(out) if out is not None else None
        on_delivered = out_sink.confirmed if out_sink is not None else None
        kafka_sinks = [KafkaSink(bootstrap, t, on_delivered=on_delivered) for t in topics]
        sink: EventSink = TeamRouter(kafka_sinks)
        if out_sink is not None:
            sink = TeeSink(sink, out_sink)  # after the Kafka sinks: it appends what they confirmed
        if extra_sink is not None:
            sink = TeeSink(sink, extra_sink)
        universe = universe or build_universe(config)
        client = HttpRecommender(teams, {s: i for i, s in enumerate(universe.catalog.slug)}, config.timeout_ms)
        world, universe = build_world(
            config, universe=universe, service=client, sink=sink, journal=journal, sessionlog=sessionlog
        )
        # The API's /metrics says how many lines each topic got: consumers' lag is measured against it.
        registry = CollectorRegistry()
        registry.register(ProducedLinesCollector(kafka_sinks))
        app = create_app(
            world.pop, universe.catalog, metrics=registry, edition=world.edition, taste=universe.taste, seed=config.seed
        )
        if world.scenario is not None:  # API-layer injections and the public announcements channel
            app = ScenarioApi(app, world.scenario, seed=config.seed)
        api = ServerThread(app, config.api_host, config.api_port or None, **server_options()).start()
        instructor = _start_instructor(config, world)
        live = LiveWorld(
            world, universe, bootstrap, topics, api.url, teams, instructor.url if instructor is not None else None
        )
        logger.info("world API on %s; topics %s on %s", api.url, ", ".join(topics), bootstrap)
        if on_ready is not None:
            on_ready(live)
        stats = run_world(world, run_until(config), stop=stop, on_tick=on_tick)
        if after is not None:
            after(live, stats)
        return stats, live
    finally:
        if out_sink is not None:
            out_sink.close()  # no-op after the world closed its sinks
        if client is not None:
            client.close()
        if api is not None:
            api.stop()
        if instructor is not None:
            instructor.stop()
        if broker is not None and config.kafka is None:
            broker.stop()


def _start_instructor(config: WorldConfig, world: World) -> ServerThread | None:
    """The instructor app (manifest and announcements, behind a token) on its own loopback port, if configured."""
    if config.instructor_port is None:
        return None
    tokens = ensure_tokens(config.instructor_tokens, identity="instructor")
    scenario = world.scenario
    from movielab.world.manifest import Manifest

    manifest = scenario.manifest if scenario is not None else Manifest()
    app = create_instructor_app(manifest, tokens, announcements=scenario.announcements if scenario else [])
    server = ServerThread(app, "127.0.0.1", config.instructor_port or None).start()
    logger.info("instructor app on %s (token file %s)", server.url, config.instructor_tokens)
    return server
