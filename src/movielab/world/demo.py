"""The demo: the live world (embedded Kafka, user/movie API) against a placeholder team service.

Runs one simulated day as fast as possible, then reads every team topic back from Kafka and
prints per-team figures computed from the stream alone, and audits the stream it read back
against the world's hidden journal.
"""

from __future__ import annotations

import time

from movielab.kafka.consumer import read_topic
from movielab.recommender.placeholder import SeenMovies, StreamFollower, create_app
from movielab.streamstats import stream_stats
from movielab.webserver import ServerThread, free_port
from movielab.world.audit import audit
from movielab.world.config import WorldConfig
from movielab.world.live import LiveWorld, run_live
from movielab.world.report import summarize


def run_demo(users: int = 10_000, hours: float = 24.0, seed: int = 0) -> int:
    """Run the live demo and print what happened; exit status 1 if the stream read back fails the audit."""
    port = free_port()
    config = WorldConfig(users=users, days=hours / 24, seed=seed, teams=[f"http://127.0.0.1:{port}"], api_port=0)
    parts: dict[str, object] = {}
    journal: list[tuple] = []
    result = {"status": 0}
    t0 = time.perf_counter()

    def on_ready(live: LiveWorld) -> None:
        seen = SeenMovies()
        parts["follower"] = StreamFollower(live.bootstrap, live.topics, seen)
        parts["follower"].start()
        if not parts["follower"].assigned.wait(30):
            print("warning: the placeholder's consumer has no partitions after 30 s; it will answer 503 meanwhile")
        parts["service"] = ServerThread(create_app(seen, seed=seed), port=port).start()
        print(f"Kafka {live.bootstrap}, topics {', '.join(live.topics)}; world API {live.api_url} "
              f"(try {live.api_url}/user/1 and /movie/{live.universe.catalog.slug[0]}); "
              f"placeholder team service {parts['service'].url}")  # fmt: skip
        parts["t_run"] = time.perf_counter()

    def after(live: LiveWorld, stats) -> None:
        wall = time.perf_counter() - parts["t_run"]
        parts["service"].stop()
        parts["follower"].stop()
        print(summarize(live.world, live.universe, stats, wall))
        for team, topic in zip(live.teams, live.topics, strict=True):
            t = time.perf_counter()
            records = read_topic(live.bootstrap, topic, group_id=f"demo-readback-{topic}")
            lines = [r[1] for r in records]
            s = stream_stats(lines)
            print(f"\nteam {team.number} ({team.server}), read back {len(lines):,} lines from {topic} "
                  f"in {time.perf_counter() - t:.1f} s:")  # fmt: skip
            print(f"  recommendation requests {s.requests:,}, success rate {s.success_rate:.1%}, "
                  f"response time p50 {s.latency_ms(50):.0f} ms, p99 {s.latency_ms(99):.0f} ms")
            print(f"  failures: {dict(s.errors) or 'none'}")
            print(f"  picks from the recommended list: {s.picks_recommended:,} of {s.picks:,} ({s.pick_share:.1%})")
            print("  events by kind: " + ", ".join(f"{k} {v:,}" for k, v in s.lines.most_common()))
            problems = audit((r[1].decode() for r in records), journal, live.world.pop.size,
                             set(live.universe.catalog.slug))  # fmt: skip
            print(f"  audit against the hidden journal: {'consistent' if not problems else problems[:3]}")
            result["status"] |= bool(problems) or len(lines) != sum(stats.lines.values())

    run_live(config, on_ready=on_ready, after=after, journal=journal)
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s")
    return result["status"]
