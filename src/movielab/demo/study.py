"""The course's two experiments end to end, from the stream: a live 2026 world against movielab's recommender.

Wiring (one process, real parts on loopback): the embedded Kafka broker and topic `movielog1`, the world's
user/movie API over HTTP, the recommender's ingestor (Kafka → validator → DuckDB store, with the cold-start
worker on its path) and its public service (`recommender.release.study.StudyService` over `serve_app.create_app`) that the
world calls over HTTP (`/recommend/<user>`, 600 ms time-out). The analysis reads only the recommender's store.

Phases, in stream time:
1. history (`history_days`, no new accounts, no service: requests fail, users pick on their own): what the
   models are trained on; then one snapshot, the base model (`base`, default EASE) and the cost-aware
   re-ranker of it (`trade_off`) are fitted and their answer tables built;
2. pre-period (`pre_days`, no new accounts): everyone gets the base model; B's CUPED covariate;
3. experiment (`days`, new accounts arrive at `arrivals` per user per day): B's challenger (cost-aware) takes
   its share of the users by B's salt; new accounts get their cold-start list by A's salt (self-description or
   demographic fallback). Whenever a simulated minute produced new accounts, the world waits until the
   recommender has ingested it and built their lists (a team whose ingest keeps up with the stream; the
   world runs as fast as possible otherwise).
Then the topic is drained into the store, both experiments are analysed and the report is written.

This module wires the world and the recommender together (like `demo.py`); the recommender package itself
never imports the world.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.release.study import (
    StudyResult,
    StudyService,
    analyze,
    coldstart_design,
    costaware_design,
    write_report,
)
from movielab.recommender.serving import state as serve_state
from movielab.recommender.serving.answers import answer_table
from movielab.recommender.store.events import EventStore
from movielab.recommender.training import pipeline
from movielab.recommender.training.data import TrainingData
from movielab.webserver import ServerThread
from movielab.world.api import create_app as world_api
from movielab.world.bootstrap import Universe, build_universe, build_world
from movielab.world.client import HttpRecommender, Team
from movielab.world.config import WorldConfig
from movielab.world.recs import NoService
from movielab.world.sinks import EventSink, TeeSink

logger = logging.getLogger(__name__)

DAY = 86_400.0
TOPIC = "movielog1"


@dataclass(frozen=True)
class LiveStudyConfig:
    """Sizes and phases of a live study (days are simulated days; `arrivals`: new accounts per user per day)."""

    users: int = 20_000
    movies: int = 5_000
    seed: int = 0
    history_days: float = 2.0
    pre_days: float = 1.0
    days: float = 5.0
    arrivals: float = 0.03  # ~3,000 new accounts in 5 days of 20,000 users: enough for a 3-5 point effect
    base: str = "ease"
    trade_off: float = 1.0
    share: float = 0.5
    partitions: int = 2
    timeout_ms: int = 600
    max_conversion_drop: float = 0.02
    max_rating_drop: float = 0.2

    def __post_init__(self) -> None:
        if min(self.history_days, self.pre_days, self.days) <= 0 or self.arrivals <= 0 or self.users < 10:
            raise ValueError(
                f"live study: every phase needs a positive length, arrivals must be positive and "
                f"users at least 10, got {asdict(self)}"
            )


@dataclass
class _Counter:
    """World sink: lines and account lines produced (to know what the recommender must have ingested)."""

    lines: int = 0
    accounts: int = 0

    def write(self, keys, lines) -> None:
        self.lines += len(lines)
        self.accounts += sum(1 for line in lines if line.endswith("GET /create_account"))

    def close(self) -> None:
        pass


@dataclass
class LiveStudy:
    """What a live study produced: the results, the report's path, and the counts behind them."""

    results: list[StudyResult]
    report: Path
    lines_produced: int
    events_stored: int
    quarantined: int
    served: dict[str, int]
    phases: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def run_live_study(
    config: LiveStudyConfig,
    out: Path | str,
    *,
    universe: Universe | None = None,
    extra_sink: EventSink | None = None,
    catch_up_timeout: float = 120.0,
) -> LiveStudy:
    """Run the three phases, analyse both experiments from the store and write the report into `out`.

    `extra_sink` also gets every line (tests read the stream back from it). Raises RuntimeError when the
    recommender does not ingest what the world produced within `catch_up_timeout` seconds.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wc = WorldConfig(
        users=config.users,
        movies=config.movies,
        seed=config.seed,
        days=None,
        arrivals_per_day=config.arrivals,
        edition="2026",
        allow_download=universe is None,
    )
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    universe = universe or build_universe(wc)
    counter = _Counter()
    stop = threading.Event()
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [TOPIC], partitions=config.partitions)
        kafka = KafkaSink(broker.bootstrap, TOPIC)
        sinks = (kafka, counter) if extra_sink is None else (kafka, counter, extra_sink)
        world, _ = build_world(wc, universe=universe, service=NoService(), sink=TeeSink(*sinks))
        rate, world.arrivals_per_day = world.arrivals_per_day, 0.0
        app = world_api(
            world.pop, universe.catalog, rate_limit=None, edition=world.edition, taste=universe.taste, seed=config.seed
        )
        with ServerThread(app) as api, EventStore(out / "store.duckdb") as store, WorldApi(api.url) as wapi:
            ingestor = Ingestor(
                broker.bootstrap, [TOPIC], store, wapi, group_id="study", batch_timeout=0.05, coldstart=True
            )
            thread = threading.Thread(target=ingestor.run, args=(stop,), name="study-ingest", daemon=True)
            thread.start()
            client = None
            server = None
            try:
                seconds["setup"] = time.perf_counter() - t
                # 1. history
                t = time.perf_counter()
                _run(world, world.now + config.history_days * DAY)
                kafka.flush()
                _catch_up(ingestor, counter.lines, catch_up_timeout)
                history_end = _utc(world.now)
                seconds["history"] = time.perf_counter() - t
                t = time.perf_counter()
                snap = store.create_snapshot("study-history", None, history_end)
                data = TrainingData.from_snapshot(store, snap)
                artifacts = out / "models"
                plain = pipeline.train(store, config.base, artifacts, snapshot=snap, data=data)
                costaware = pipeline.train(
                    store,
                    "costaware",
                    artifacts,
                    snapshot=snap,
                    data=data,
                    params={"base": config.base, "trade_off": config.trade_off},
                )
                control, treatment = answer_table(plain, store), answer_table(costaware, store)
                seconds["train"] = time.perf_counter() - t
                # 2. pre-period: the base model for everyone (both arms serve the same table)
                t = time.perf_counter()
                pre_start = world.now
                start = pre_start + config.pre_days * DAY
                end = start + config.days * DAY
                a = coldstart_design("coldstart-selfdesc-2026", _utc(start), _utc(end), share=config.share)
                b = costaware_design(
                    f"costaware-{config.base}-{config.trade_off:g}",
                    _utc(start),
                    _utc(end),
                    config.trade_off,
                    config.base,
                    config.max_conversion_drop,
                    config.max_rating_drop,
                    share=config.share,
                    pre_period=timedelta(days=config.pre_days),
                )
                service = StudyService(control, control, costaware=b, coldstart=a)
                server = ServerThread(service.app).start()
                index = {s: i for i, s in enumerate(universe.catalog.slug)}
                client = HttpRecommender([Team.parse(1, server.url)], index, config.timeout_ms)
                world.service = client
                _run(world, start)
                seconds["pre-period"] = time.perf_counter() - t
                # 3. the experiment
                t = time.perf_counter()
                serve_state.set_challenger(service.app, treatment, b.share, b.salt)
                world.arrivals_per_day = rate
                worker_wait = _ColdStartPump(ingestor, counter, service, store, kafka, catch_up_timeout)
                _run(world, end, worker_wait)
                kafka.flush()
                _catch_up(ingestor, counter.lines, catch_up_timeout)
                worker_wait()  # lists of the last minute's accounts (no session left for them: not served)
                seconds["experiment"] = time.perf_counter() - t
            finally:
                kafka.close()
                if client is not None:
                    client.close()
                if server is not None:
                    server.stop()
                stop.set()
                thread.join(timeout=60)
            t = time.perf_counter()
            results = [analyze(store, a), analyze(store, b)]
            seconds["analysis"] = time.perf_counter() - t
            phases = {
                "history": f"{_utc(pre_start - config.history_days * DAY).isoformat()} .. {history_end.isoformat()}",
                "pre-period": f"{_utc(pre_start).isoformat()} .. {a.start.isoformat()}",
                "experiment": f"{a.start.isoformat()} .. {a.end.isoformat()}",
            }
            stored = ingestor.events_stored
            quarantined = sum(ingestor.quarantined.values())
    notes = [
        f"2026-edition world: {config.users:,} users, {config.movies:,} movies, seed {config.seed}; phases "
        f"(stream time): " + "; ".join(f"{k} {v}" for k, v in phases.items()),
        (
            f"stream: {counter.lines:,} lines produced to Kafka, {stored:,} stored by the recommender's ingestor, "
            f"{quarantined:,} quarantined; {counter.accounts:,} new accounts"
        ),
        (
            f"served over HTTP: base {plain.provenance.model_name}/{plain.provenance.model_version} (plain) and "
            f"costaware/{costaware.provenance.model_version} (trade-off {config.trade_off:g}) trained on snapshot "
            f"{snap.id}; cold-start lists pushed: {service.served['selfdesc']:,} self-description, "
            f"{service.served['demographic']:,} demographic fallback"
        ),
        "wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
    ]
    report = write_report(results, out, notes=notes)
    return LiveStudy(results, report, counter.lines, stored, quarantined, dict(service.served), phases, seconds)


def _run(world, until: float, after_step=None) -> None:
    while world.now < until:
        world.step()
        if after_step is not None:
            after_step()


def _catch_up(ingestor: Ingestor, produced: int, timeout: float) -> None:
    """Wait until the ingestor has stored or quarantined every line produced so far."""
    deadline = time.monotonic() + timeout
    while ingestor.events_stored + sum(ingestor.quarantined.values()) + ingestor.replayed < produced:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the recommender ingested {ingestor.events_stored:,} of {produced:,} lines in {timeout:g} s"
            )
        time.sleep(0.005)


class _ColdStartPump:
    """After a simulated minute with new accounts: wait for the ingest and the cold-start worker, then serve the
    new users their lists by A's arm."""

    def __init__(
        self,
        ingestor: Ingestor,
        counter: _Counter,
        service: StudyService,
        store: EventStore,
        kafka: KafkaSink,
        timeout: float,
    ) -> None:
        self.ingestor, self.counter, self.service, self.store = ingestor, counter, service, store
        self.kafka, self.timeout = kafka, timeout
        self.seen = counter.accounts

    def __call__(self) -> None:
        if self.counter.accounts == self.seen:
            return
        self.seen = self.counter.accounts
        self.kafka.flush()
        _catch_up(self.ingestor, self.counter.lines, self.timeout)
        worker = self.ingestor.coldstart
        deadline = time.monotonic() + self.timeout
        # Every account line of the run is a new account of the experiment (none arrive before it).
        while worker is None or worker.built < self.counter.accounts:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cold-start worker built {0 if worker is None else worker.built:,} lists of "
                    f"{self.counter.accounts:,} new accounts in {self.timeout:g} s"
                )
            time.sleep(0.005)
            worker = self.ingestor.coldstart
        lists = worker.take()
        if lists:
            self.service.push_coldstart(lists, worker.model(), self.store)
