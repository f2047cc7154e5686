"""The demo: the live world against the operated recommender, next to the random placeholder, in one run.

Two teams share the world (disjoint users). Team 1 is movielab's recommender as it runs in production,
in this process, built by the recommender's composition root (`movielab.recommender.bootstrap`): Kafka ingest
into the DuckDB store and the operator (`movielab.recommender.release.operator`),
ticking every simulated half hour: scheduled retraining with the offline gate and the MLflow registry
(popularity serves first, until a trained model beats it), a canary for every later accepted version with
automatic promotion or rollback, monitoring. Team 2 is the random placeholder. When the Debian package
`prometheus` is installed, a real Prometheus scrapes the world, the serving app and the operator, with
movielab's alert rules. Both teams are measured from the stream alone, after team 1's first answer.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from movielab.demo.streamstats import stream_stats
from movielab.kafka.consumer import read_topic
from movielab.recommender.bootstrap import build
from movielab.recommender.config import RecommenderConfig
from movielab.recommender.release.canary import CanaryPlan
from movielab.recommender.serving.placeholder import SeenMovies, StreamFollower
from movielab.recommender.serving.placeholder import create_app as placeholder_app
from movielab.recommender.training.gate import RetrainPolicy
from movielab.webserver import ServerThread, free_port
from movielab.world.config import WorldConfig
from movielab.world.live import LiveWorld, run_live
from movielab.world.report import summarize

logger = logging.getLogger(__name__)
HOUR = 3600.0
RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"  # in a source checkout


class OperatedTeam:
    """A team's recommender in this process, built by the recommender's composition root (`bootstrap.build`):
    ingest thread, store, registry, operator with its control app, one in-process HTTP server."""

    def __init__(
        self, live: LiveWorld, topic: str, folder: Path, port: int, policy: RetrainPolicy, plan: CanaryPlan
    ) -> None:
        team = int(topic.removeprefix("movielog"))
        config = RecommenderConfig(
            kafka=live.bootstrap,
            team=team,
            world_api=live.api_url,
            store=folder / "store.duckdb",
            artifacts=folder / "models",
            port=port,
            # Given, so that MOVIELAB_REC_* in the environment cannot move the demo's team elsewhere.
            host="127.0.0.1",
            edition="current",
            tracking_uri=None,
        )
        self.system = build(config, replicas=0, plan=plan, policy=policy, monitor_every=1, coldstart=False)
        self.system.start(tick_seconds=None)  # the demo ticks the operator from the world's clock
        self.port = port
        self.store, self.api, self.ingestor = self.system.store, self.system.api, self.system.ingestor
        self.registry, self.retrainer, self.operator = self.system.registry, self.system.retrainer, self.system.operator
        self.tokens, self.control = self.system.tokens, self.system.control  # /status and overrides need the token
        self.servers = self.system.servings

    def catch_up(self, produced: int, timeout: float = 120) -> None:
        """Wait until the ingestor has consumed `produced` lines."""
        deadline = time.monotonic() + timeout
        while self.ingestor.lines_consumed < produced and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop serving, the control server and ingesting."""
        self.system.close()


def start_prometheus(live: LiveWorld, team: OperatedTeam):
    """A real Prometheus over the world API, team 1's serving app and operator, or None when not installed."""
    from movielab.demo.prometheus import PrometheusError, PrometheusServer, ScrapeJob, find_prometheus

    if find_prometheus() is None:
        print("Prometheus is not installed (Debian: apt-get install prometheus); running without it")
        return None
    jobs = [
        ScrapeJob("world", [live.api_url.split("//", 1)[1]]),
        ScrapeJob("recommender", [f"127.0.0.1:{team.port}"]),
        ScrapeJob("operator", [team.control.url.split("//", 1)[1]]),
    ]
    try:
        return PrometheusServer(jobs, [RULES] if RULES.is_file() else [], interval="2s").start()
    except PrometheusError as exc:
        print(f"Prometheus did not start ({exc}); running without it")
        return None


def run_demo(
    users: int = 20_000,
    hours: float = 36.0,
    seed: int = 0,
    model: str = "als",
    params: dict | None = None,
    linger: float = 0.0,
) -> int:
    """Run the demo and print what happened; exit status 1 if a figure could not be measured."""
    if params is None:  # a popularity prior lets ALS pass the offline gate within the demo's hours
        params = {"popularity_weight": 8.0} if model == "als" else {}
    ports = free_port(), free_port()
    config = WorldConfig(
        users=users,
        days=hours / 24,
        seed=seed,
        api_port=0,
        teams=[f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"],
    )
    folder = Path(tempfile.mkdtemp(prefix="movielab-demo-"))
    policy = RetrainPolicy(model=model, params=params, every_hours=6.0)
    plan = CanaryPlan(steps=(0.5, 1.0), min_requests=300, margin=0.05, tau=0.05, max_step_seconds=12 * HOUR)
    parts: dict[str, object] = {"next": 0.5, "shown": 0}
    t0 = time.perf_counter()

    def on_ready(live: LiveWorld) -> None:
        parts["start"] = live.world.now
        team = parts["team"] = OperatedTeam(live, live.topics[0], folder, ports[0], policy, plan)
        seen = SeenMovies()
        parts["follower"] = StreamFollower(live.bootstrap, [live.topics[1]], seen)
        parts["follower"].start()
        parts["placeholder"] = ServerThread(placeholder_app(seen, seed=seed), port=ports[1]).start()
        team.ingestor.assigned.wait(30)
        parts["follower"].assigned.wait(30)
        parts["prometheus"] = prom = start_prometheus(live, team)
        print(
            f"world API {live.api_url}; Kafka {live.bootstrap}\n"
            f"team 1 = movielab recommender on http://127.0.0.1:{ports[0]} (retrains {model} {params or ''} every "
            f"6 simulated hours; operator {team.control.url}/metrics, and /status with the token in "
            f"{team.tokens.path})\n"
            f"team 2 = random placeholder on http://127.0.0.1:{ports[1]}"
        )
        if prom is not None:
            print(f"Prometheus: open {prom.url} (try the query `stream_availability_ratio` or the Alerts page)")
        print(
            f"simulating {hours:g} h of {users:,} users; team 1 serves popularity until a trained model beats it:",
            flush=True,
        )
        parts["wall"] = time.perf_counter()

    def on_tick(world) -> None:
        team: OperatedTeam = parts["team"]
        hours_in = (world.now - parts["start"]) / HOUR
        if hours_in < parts["next"]:
            return
        parts["next"] += 0.5
        sink = world.sink.sinks[0]
        sink.flush()
        team.catch_up(sink.sent)
        team.operator.tick()
        for u in team.operator.updates[parts["shown"] :]:
            took = f", {u.seconds_to_serving:.1f} s from retraining start" if u.seconds_to_serving else ""
            print(f"  hour {hours_in:4.1f}: {u.kind} {u.version}{took} — {u.detail}", flush=True)
        parts["shown"] = len(team.operator.updates)

    def after(live: LiveWorld, stats) -> None:
        print(summarize(live.world, live.universe, stats, time.perf_counter() - parts["wall"]))
        parts["placeholder"].stop()
        parts["follower"].stop()
        team: OperatedTeam = parts["team"]
        team.catch_up(live.world.sink.sinks[0].sent, timeout=60)
        print(
            f"\nteam 1 ingest: {team.ingestor.events_stored:,} events stored, quarantined "
            f"{dict(team.ingestor.quarantined) or 0}"
        )
        runs = team.operator.runs
        print(
            f"team 1 retraining runs: {len(runs)} ({sum(r.status == 'accepted' for r in runs)} accepted); "
            f"last: {runs[-1].status}, {runs[-1].reason[:100]}"
            if runs
            else "team 1: no retraining run"
        )
        exp = team.operator.experiment
        if exp is not None:
            last = exp.decisions[-1] if exp.decisions else {}
            print(f"last canary {exp.name}: {exp.status} at share {exp.share:g}; {last.get('reason', '')}")
        prom = parts.get("prometheus")
        if prom is not None:
            show_prometheus(prom)
            if linger > 0:
                print(f"Prometheus stays up {linger:g} s more at {prom.url}", flush=True)
                time.sleep(linger)
            prom.stop()
        team.close()
        first = _first_answer(live, team)
        since = datetime.fromtimestamp(first, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        print(f"\nfrom the stream alone, after team 1's first answer ({since}):")
        print(f"{'team':38}{'requests':>10}{'ok':>8}{'p50 ms':>8}{'p99 ms':>8}{'picks':>8}{'from recs':>11}")
        names = ["1 movielab recommender (operated)", "2 random placeholder"]
        for name, topic in zip(names, live.topics, strict=True):
            records = read_topic(live.bootstrap, topic, group_id=f"demo-{topic}")
            lines = [v for _, v, _, _ in records if v[:19].decode("ascii", "replace") >= since]
            s = stream_stats(lines)
            parts[topic] = s
            print(
                f"{name:38}{s.requests:10,}{s.success_rate:8.1%}{s.latency_ms(50):8.0f}{s.latency_ms(99):8.0f}"
                f"{s.picks:8,}{s.pick_share:11.1%}"
            )

    run_live(config, on_ready=on_ready, on_tick=on_tick, after=after)
    ok = all(t in parts for t in ("movielog1", "movielog2")) and parts["team"].operator.updates
    a, b = (parts.get("movielog1"), parts.get("movielog2"))
    if a is not None and b is not None and b.pick_share > 0:
        print(
            f"\nshare of picks from the recommended list: movielab {a.pick_share:.1%} vs random {b.pick_share:.1%} "
            f"(×{a.pick_share / b.pick_share:.1f})"
        )
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; its files are in {folder}")
    return 0 if ok else 1


def _first_answer(live: LiveWorld, team: OperatedTeam) -> float:
    """Simulated time of team 1's first served model (the world's clock when the operator first updated)."""
    updates = team.operator.updates
    if not updates or not updates[0].stream_time:
        return live.world.now
    return datetime.fromisoformat(updates[0].stream_time).replace(tzinfo=UTC).timestamp()


def show_prometheus(prom) -> None:
    """A few figures as Prometheus has them, to show it scraped and evaluated the rules."""
    from movielab.demo.prometheus import PrometheusError

    queries = {
        "targets up": "sum(up)",
        "availability (stream)": "stream_availability_ratio",
        "serving requests": "sum(recommend_requests_total)",
        "firing alerts": 'count(ALERTS{alertstate="firing"}) or vector(0)',
    }  # no alert: 0, not an empty answer
    print("\nPrometheus now says:")
    for name, expr in queries.items():
        try:
            value = prom.value(expr)
        except (PrometheusError, ValueError) as exc:  # a figure Prometheus cannot give is reported, not fatal
            value = f"n/a ({exc})"
        print(f"  {name:24} {expr:55} {value}")
