"""The operator against the live world (real broker, world API, HTTP serving, MLflow on sqlite).

One simulated day and a half of 20,000 users, as fast as possible. The operator ingests the team's
topic, and every simulated half hour it ticks:
- at hour 6 the scheduled retraining run trains the first champion, which starts serving;
- at hour 7 a retraining run crashes mid-run (its training dies): the run is a failed record, the
  registry's champion and what is served do not change;
- at hour 8 a deliberately bad model (popularity turned upside down: the least popular movies first)
  is canaried by hand, past the offline gate; the statistics on the stream must roll it back.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from movielab.demo.run import OperatedTeam
from movielab.recommender.release.canary import CanaryPlan
from movielab.recommender.store.events import EventStore
from movielab.recommender.training import pipeline
from movielab.recommender.training.gate import RetrainPolicy
from movielab.recommender.training.pipeline import load, train
from movielab.webserver import free_port
from movielab.world.config import WorldConfig
from movielab.world.live import LiveWorld, run_live

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOUR = 3600.0


def bad_version(store: EventStore, artifacts: Path):
    """A real popularity version whose counts are turned upside down: it recommends the least popular movies."""
    trained = train(store, "popularity", artifacts)
    counts = np.load(trained.folder / "counts.npy", allow_pickle=False)
    np.save(trained.folder / "counts.npy", (counts.max() - counts + 1).astype(np.float32), allow_pickle=False)
    return load(trained.folder)


class Harness(OperatedTeam):
    """Team 1 as the demo runs it (store, ingest thread, MLflow on sqlite, operator, one HTTP server), plus the
    test's interventions, driven from the world's ticks."""

    def __init__(self, live: LiveWorld, folder: Path, port: int) -> None:
        policy = RetrainPolicy(model="ease", every_hours=10.0, window_days=7.0)
        plan = CanaryPlan(steps=(0.5, 1.0), min_requests=300, max_step_seconds=12 * HOUR, tau=0.08)
        super().__init__(live, live.topics[0], folder, port, policy, plan)
        self.folder = folder
        self.url = f"http://127.0.0.1:{port}"
        self.start = live.world.now
        self.events: dict[str, object] = {}

    def served_model(self, user: int = 1) -> str:
        r = httpx.get(f"{self.url}/recommend/{user}", timeout=5)
        assert r.status_code == 200
        return r.headers["x-model"].split(";")[0]

    def on_half_hour(self, hours: float) -> None:
        self.operator.tick()
        if hours >= 7 and "crash" not in self.events and self.servers:
            champion = self.registry.champion_version()
            before = self.served_model()
            fit = pipeline.train

            def boom(*args, **kwargs):
                raise RuntimeError("training worker died mid-run")

            pipeline.train = boom  # the run dies inside its train stage
            try:
                record = self.operator.retrain("crash test")
            finally:
                pipeline.train = fit
            self.events["crash"] = (record, champion, self.registry.champion_version(), before, self.served_model())
        if hours >= 8 and "canary" not in self.events and "crash" in self.events:
            bad = bad_version(self.store, self.folder / "bad")
            registered = self.registry.register(bad, tags={"note": "deliberately bad: least popular first"})
            self.events["canary"] = self.operator.start_canary(registered)


@pytest.fixture(scope="module")
def run(tmp_path_factory, universe):
    folder = tmp_path_factory.mktemp("operator")
    port = free_port()
    config = WorldConfig(
        users=20_000,
        days=0.67,
        seed=3,
        api_port=0,
        teams=[f"http://127.0.0.1:{port}"],
        movies=3000,
        allow_download=False,
    )
    parts: dict[str, object] = {}

    def on_ready(live: LiveWorld) -> None:
        parts["h"] = Harness(live, folder, port)
        parts["h"].ingestor.assigned.wait(30)
        parts["next"] = 0.5

    def on_tick(world) -> None:
        h: Harness = parts["h"]
        hours = (world.now - h.start) / HOUR
        if hours >= parts["next"]:
            parts["next"] += 0.5
            sink = world.sink.sinks[0]
            sink.flush()
            h.catch_up(sink.sent)
            h.on_half_hour(hours)

    def after(live: LiveWorld, stats) -> None:
        h = parts["h"]
        h.operator.tick()
        h.events["final"] = h.served_model() if h.servers else None
        h.close()  # before the broker stops

    run_live(config, universe=universe, on_ready=on_ready, on_tick=on_tick, after=after)
    yield parts["h"]


def test_the_first_scheduled_run_gives_the_first_champion_which_serves(run: Harness) -> None:
    first = run.operator.runs[0]
    assert first.trigger == "schedule" and first.status in ("accepted", "rejected")
    if first.status == "accepted":
        assert first.decision == "champion"
    else:  # no model beat popularity on 6 hours of data: popularity itself serves until one does
        assert run.registry.versions()[0].tags["model"] == "popularity"
    update = run.operator.updates[0]
    assert update.kind == "champion" and update.seconds_to_serving is not None and update.seconds_to_serving > 0


def test_a_run_that_crashes_mid_run_leaves_the_champion_registered_and_serving(run: Harness) -> None:
    record, champion_before, champion_after, served_before, served_after = run.events["crash"]
    assert record.status == "failed" and record.stage == "train"
    assert "training worker died" in record.reason
    assert champion_after.version == champion_before.version
    assert served_after == served_before


def test_a_canary_that_recommends_unpopular_movies_is_rolled_back_by_the_statistics(run: Harness) -> None:
    exp = run.events["canary"]
    assert exp.status == "rolled_back", [(d["reason"], d["challenger"], d["champion"]) for d in exp.decisions[-2:]]
    last = exp.decisions[-1]
    assert last["action"] == "rollback" and last["by"] is None  # the statistics decided, not a person
    assert last["p_value"] is not None and last["p_value"] < 0.05 and last["effect"] < 0
    assert run.registry.challenger_version() is None
    champion = run.registry.champion_version()
    assert run.events["final"].endswith(f"/{champion.tags['artifact_version']}")  # every user back on the champion
    assert [u.kind for u in run.operator.updates][:3] == ["champion", "canary", "rollback"]
