"""The demo: the live world against the recommender, next to the random placeholder, in one run.

Two teams share the world (disjoint users): team 1 is movielab's recommender — Kafka ingest into
the DuckDB store, a model trained on a snapshot after the first simulated hours and retrained
later (swapped in with no downtime), served on `/recommend`; team 2 is the random placeholder.
Both are measured from the stream alone, over the same simulated hours after the first model.
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from movielab.kafka.consumer import read_topic
from movielab.recommender.ingest import Ingestor
from movielab.recommender.pipeline import answer_table, train
from movielab.recommender.placeholder import SeenMovies, StreamFollower
from movielab.recommender.placeholder import create_app as placeholder_app
from movielab.recommender.serve import create_app as serve_app
from movielab.recommender.serve import swap
from movielab.recommender.store import EventStore
from movielab.recommender.worldapi import WorldApi
from movielab.streamstats import stream_stats
from movielab.webserver import ServerThread, free_port
from movielab.world.config import WorldConfig
from movielab.world.live import LiveWorld, run_live
from movielab.world.report import summarize


class _Recommender:
    """Team 1's service inside the demo process: ingest thread, store, training, serving."""

    def __init__(self, live: LiveWorld, port: int, model: str, folder: Path) -> None:
        self.store = EventStore(folder / "store.duckdb")
        self.api = WorldApi(live.api_url)
        self.ingestor = Ingestor(live.bootstrap, [live.topics[0]], self.store, self.api)
        self.lock = threading.Lock()  # the store has one connection: ingest and training take turns
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._ingest, name="demo-ingest", daemon=True)
        self.thread.start()
        self.port, self.model, self.folder = port, model, folder
        self.server: ServerThread | None = None
        self.trainings: list[str] = []

    def _ingest(self) -> None:
        try:
            while not self.stop.is_set():
                with self.lock:
                    self.ingestor.step(self.stop)
        finally:
            self.ingestor.close()

    def catch_up(self, produced: int, timeout: float = 120) -> None:
        """Wait until the ingestor has consumed `produced` lines."""
        deadline = time.monotonic() + timeout
        while self.ingestor.lines_consumed < produced and time.monotonic() < deadline:
            time.sleep(0.05)

    def retrain(self, sim_time: float) -> None:
        """Snapshot, train, and serve (first time) or swap in (later) the new version."""
        with self.lock:
            t = time.perf_counter()
            trained = train(self.store, self.model, self.folder / "models")
            table = answer_table(trained, self.store)
        when = datetime.fromtimestamp(sim_time, UTC).strftime("%Y-%m-%dT%H:%M")
        note = (f"{when}: trained {trained.provenance.header('model')} on {trained.manifest['snapshot_rows']:,} events "
                f"in {time.perf_counter() - t:.1f} s, {len(table):,} users")  # fmt: skip
        if self.server is None:
            self.server = ServerThread(serve_app(table), port=self.port).start()
            note += "; now serving"
        else:
            swap(self.server.server.config.app, table)
            note += "; swapped in"
        self.trainings.append(note)
        print("  " + note, flush=True)

    def close(self) -> None:
        """Stop serving and ingesting."""
        if self.server is not None:
            self.server.stop()
        self.stop.set()
        self.thread.join(timeout=30)
        self.api.close()
        self.store.close()


def run_demo(users: int = 20_000, hours: float = 36.0, train_at: tuple[float, ...] = (8.0, 20.0), seed: int = 0,
             model: str = "ease") -> int:  # fmt: skip
    """Run the demo and print what happened; exit status 1 if a figure could not be measured."""
    ports = free_port(), free_port()
    config = WorldConfig(users=users, days=hours / 24, seed=seed, api_port=0,
                         teams=[f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"])  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="movielab-demo-"))
    parts: dict[str, object] = {"due": list(train_at)}
    t0 = time.perf_counter()

    def on_ready(live: LiveWorld) -> None:
        parts["start"] = live.world.now
        parts["rec"] = _Recommender(live, ports[0], model, folder)
        seen = SeenMovies()
        parts["follower"] = StreamFollower(live.bootstrap, [live.topics[1]], seen)
        parts["follower"].start()
        parts["placeholder"] = ServerThread(placeholder_app(seen, seed=seed), port=ports[1]).start()
        parts["rec"].ingestor.assigned.wait(30)
        parts["follower"].assigned.wait(30)
        print(f"world API {live.api_url}; Kafka {live.bootstrap}; team 1 = movielab recommender "
              f"(http://127.0.0.1:{ports[0]}, {model}); team 2 = random placeholder (http://127.0.0.1:{ports[1]})")
        print(f"simulating {hours:g} h of {users:,} users; team 1 has no model until hour {train_at[0]:g}:", flush=True)
        parts["wall"] = time.perf_counter()

    def on_tick(world) -> None:
        due = parts["due"]
        if due and world.now >= parts["start"] + due[0] * 3600:
            due.pop(0)
            team1 = world.sink.sinks[0]
            team1.flush()
            parts["rec"].catch_up(team1.sent)
            parts["rec"].retrain(world.now)
            parts.setdefault("first_model", world.now)

    def after(live: LiveWorld, stats) -> None:
        print(summarize(live.world, live.universe, stats, time.perf_counter() - parts["wall"]))
        parts["placeholder"].stop()
        parts["follower"].stop()
        rec = parts["rec"]
        rec.catch_up(live.world.sink.sinks[0].sent, timeout=60)
        counts = rec.ingestor
        print(f"\nteam 1 ingest: {counts.events_stored:,} events stored, quarantined {dict(counts.quarantined) or 0}")
        rec.close()
        since = datetime.fromtimestamp(parts.get("first_model", live.world.now), UTC).strftime("%Y-%m-%dT%H:%M:%S")
        print(f"\nfrom the stream alone, after the first model ({since}):")
        print(f"{'team':38}{'requests':>10}{'ok':>8}{'p50 ms':>8}{'p99 ms':>8}{'picks':>8}{'from recs':>11}")
        names = ["1 movielab recommender (" + model + ")", "2 random placeholder"]
        for name, topic in zip(names, live.topics, strict=True):
            records = read_topic(live.bootstrap, topic, group_id=f"demo-{topic}")
            lines = [v for _, v, _, _ in records if v[:19].decode("ascii", "replace") >= since]
            s = stream_stats(lines)
            parts[topic] = s
            print(f"{name:38}{s.requests:10,}{s.success_rate:8.1%}{s.latency_ms(50):8.0f}{s.latency_ms(99):8.0f}"
                  f"{s.picks:8,}{s.pick_share:11.1%}")  # fmt: skip

    run_live(config, on_ready=on_ready, on_tick=on_tick, after=after)
    ok = all(t in parts for t in ("movielog1", "movielog2")) and parts["rec"].trainings
    a, b = (parts.get("movielog1"), parts.get("movielog2"))
    if a is not None and b is not None and b.pick_share > 0:
        print(f"\nshare of picks from the recommended list: movielab {a.pick_share:.1%} vs random {b.pick_share:.1%} "
              f"(×{a.pick_share / b.pick_share:.1f})")  # fmt: skip
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1
