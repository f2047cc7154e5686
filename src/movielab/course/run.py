"""Running a course file: build (or resume) the world, checkpoint it, reload its teams while it runs.

`run_course` is the one place that wires a course's world: Kafka topics per team, the user/movie
API, the team services, periodic checkpoints (every `state.checkpoint_every_minutes` simulated
minutes and on SIGTERM/SIGINT, after the last tick was flushed to Kafka) and the course file's
reload (a changed URL is used from the next request on; an added team joins at the next checkpoint
boundary). Started again with the same course file, it resumes from the newest checkpoint:

- SIGTERM/SIGINT: the last tick is flushed, a checkpoint is written, and the restart continues from
  exactly there: no line is lost or doubled.
- SIGKILL (or a crash): the restart continues from the last checkpoint, so the lines produced after
  it are produced again (a second time, for the same simulated minutes; with teams' answers that
  differ, not necessarily identical). At most `checkpoint_every_minutes` simulated minutes of lines are
  doubled; none is lost. How many were on the topics after the checkpoint is logged and recorded in the
  manifest (`{"kind": "restored", "re_emitted": {topic: lines}}`).
- A course that reached its `days` is finished: it stops with status "finished", and started again it says so,
  runs nothing and writes nothing to the manifest (raise `days` in the course file to continue it).

Every team change and restore is appended to the manifest (JSON lines, `state/manifest.jsonl`) through the
same `world.manifest.Manifest` the scenario (`world.scenario`) writes its injections to. The hidden session log
goes to `state/sessions/`, the scoreboard (scored at each simulated midnight, and for the day in progress when
the run stops) to the reports folder (`scores/<day>.json`, `scores.csv`). The instructor app
(`[instructor]`, its own loopback port, every route behind the token) serves `/manifest`, `/scores`,
`/scores/<team>` and the scores' `/metrics`; the teams' API serves none of them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from movielab.auth import ensure_tokens
from movielab.course.claims import TopicClaimed, claim_topics, course_identity
from movielab.course.config import CourseConfig, CourseFileError, load, team_place
from movielab.kafka.admin import ensure_topics
from movielab.kafka.broker import EmbeddedBroker
from movielab.kafka.producer import KafkaSink
from movielab.webserver import ServerThread, check_free
from movielab.world import checkpoint
from movielab.world.api import create_app, server_options
from movielab.world.bootstrap import Universe, build_universe, build_world, run_until
from movielab.world.client import HttpRecommender, Team
from movielab.world.clock import parse_start
from movielab.world.engine import Stats, World
from movielab.world.instructor import create_instructor_app
from movielab.world.lanes import add_lane
from movielab.world.manifest import Manifest
from movielab.world.recs import RecommendationService
from movielab.world.scenarios import load as load_scenario
from movielab.world.scenarios.apilayer import ScenarioApi
from movielab.world.scenarios.runtime import ScenarioRuntime
from movielab.world.scoring.board import DailyScorer, Scoreboard
from movielab.world.scoring_routes import score_routes
from movielab.world.service import run_world
from movielab.world.sessionlog import SessionLog
from movielab.world.sinks import TeamRouter

logger = logging.getLogger(__name__)

STATUS = "status.json"
Offsets = dict[str, dict[str, int]]  # topic -> partition (as text, for JSON) -> end offset


def record(manifest: Manifest, kind: str, at: float, **fields: Any) -> None:
    """Append one `{"event": "course", "kind": ..., "at": <simulated time, ISO>, ...}` record to the manifest.

    The course's own records (start, restores, team changes) share the scenario's writer: one file, one order.
    """
    manifest.append({"event": "course", "kind": kind, "at": _iso(at), **fields})


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def end_offsets(bootstrap: str, topics: list[str], timeout: float = 10.0) -> Offsets:
    """The end offset (high watermark) of every partition of `topics`, read from the broker."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "movielab-course-offsets",
            "enable.auto.commit": False,
            "logger": logger,
        }
    )
    try:
        meta = consumer.list_topics(timeout=timeout)
        out: Offsets = {}
        for topic in topics:
            if topic not in meta.topics:
                out[topic] = {}
                continue
            out[topic] = {
                str(p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in sorted(meta.topics[topic].partitions)
            }
        return out
    except KafkaException as exc:
        raise RuntimeError(f"end offsets of {', '.join(topics)} on {bootstrap} could not be read: {exc}") from None
    finally:
        consumer.close()


def _total(offsets: dict[str, int]) -> int:
    return sum(offsets.values())


@dataclass
class CourseRun:
    """Handles of a running course, given to `on_ready` and returned at the end."""

    config: CourseConfig
    world: World | None  # None when the course was already finished: nothing was built
    universe: Universe | None
    bootstrap: str
    api_url: str
    topics: list[str]
    sinks: list[KafkaSink]
    base_lines: dict[str, int]  # lines per topic before this process (from the restored checkpoint)
    restored_from: float | None = None  # simulated time of the restored checkpoint
    re_emitted: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    skipped: int = 0  # periodic checkpoints skipped while the previous one was still being written
    stats: Stats | None = None
    manifest: Manifest | None = None  # the hidden manifest (scenario injections and the course's own records)
    board: Scoreboard | None = None  # the scoreboard (in the reports folder)
    instructor_url: str = ""  # manifest, scores and /metrics behind the instructor token ("" when disabled)
    finished: bool = False  # the course reached its `days` (in this process, or before it: then nothing ran)
    finished_at: float | None = None  # simulated time of the checkpoint of a course already finished at the start

    def lines(self) -> dict[str, int]:
        """Lines the world produced per topic over the whole course (this process and those before)."""
        return {
            t: self.base_lines.get(t, 0) + (self.sinks[i].sent if i < len(self.sinks) else 0)
            for i, t in enumerate(self.topics)
        }

    def now(self) -> float | None:
        """The world's simulated time (of the checkpoint, when the course was already finished)."""
        return self.world.now if self.world is not None else self.finished_at


class _Reloader(threading.Thread):
    """Re-reads the course file when it changes: URL changes at once, added teams at the next checkpoint."""

    def __init__(self, path: Path, every: float, apply: Callable[[CourseConfig], None]) -> None:
        super().__init__(name="movielab-course-reload", daemon=True)
        self.path, self.every, self.apply = path, every, apply
        self._mtime = path.stat().st_mtime_ns
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                mtime = self.path.stat().st_mtime_ns
            except OSError as exc:
                logger.error("course file %s cannot be read (%s); keeping the running configuration", self.path, exc)
                continue
            if mtime == self._mtime:
                continue
            self._mtime = mtime
            try:
                self.apply(load(self.path))
            except CourseFileError as exc:
                logger.error("%s; keeping the running configuration", exc)


def run_course(
    config: CourseConfig,
    *,
    universe: Universe | None = None,
    service: Callable[[list[Team], Universe], RecommendationService] | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[CourseRun], None] | None = None,
) -> CourseRun:
    """Run (or resume) the course's world until its end, `stop`, or SIGTERM/SIGINT; checkpoint on the way out.

    `service(teams, universe)` replaces the HTTP client (tests: a fixed answer). Raises `CourseFileError` for a
    course file that does not fit its state (a team removed), `checkpoint.CheckpointMismatch` for a checkpoint
    of another version or configuration. A course whose checkpoint reached its `days` is finished: the returned
    run has `finished` set and no world; nothing is started and nothing is written to the manifest.
    """
    fields = config.fingerprint_fields()
    wc = config.world_config()
    end = run_until(wc)
    # The newest link's manifest first (no array read, nothing written): a finished course says so, busy ports or not.
    newest = checkpoint.latest(config.state_dir)
    if newest is not None:
        meta = checkpoint.read_meta(newest)
        checkpoint.check(meta, fields, newest)
        _check_teams(config, len(meta["lanes"]), Path(config.state_dir))
        if end is not None and meta["sim_time"] >= end:
            return _already_finished(config, meta, newest, len(meta["lanes"]), Path(config.state_dir))
    check_free(config.api.host, config.api.port, f"course file {config.path}: [api] port")  # before anything is written
    if config.instructor.enabled:
        check_free(config.instructor.host, config.instructor.port, f"course file {config.path}: [instructor] port")
    state_dir = checkpoint.ensure_private_dir(config.state_dir)
    reports_dir = checkpoint.ensure_private_dir(config.reports_dir)
    cp = checkpoint.load(state_dir, fingerprint_fields=fields)  # its lanes: at most the newest link's, checked above
    n_lanes = len(cp.meta["lanes"]) if cp is not None else len(config.teams)
    broker = api = client = reloader = instructor = scorer = None
    manifest = Manifest(config.manifest_path)
    try:
        if wc.kafka is None:
            broker = EmbeddedBroker().start()
            logger.warning(
                "embedded Kafka broker on %s: its topics live in this process's memory and do not "
                "survive a restart (set kafka.bootstrap for a course)",
                broker.bootstrap,
            )
        bootstrap = wc.kafka or broker.bootstrap
        topics = config.topics()
        ensure_topics(bootstrap, topics, partitions=config.kafka.partitions)
        ident = course_identity(state_dir, config.name)  # two courses never share a topic: refused here, by name
        on_broker = {t: _total(o) for t, o in end_offsets(bootstrap, topics).items()}
        claim_topics(bootstrap, topics, ident, first_start=cp is None, lines=on_broker)
        teams = [Team.parse(i, t.url) for i, t in enumerate(config.teams[:n_lanes], start=1)]
        sinks = [KafkaSink(bootstrap, t) for t in topics[:n_lanes]]
        router = TeamRouter(sinks)
        universe = universe or build_universe(wc)
        client = (service or _http(wc.timeout_ms))(list(teams), universe)
        room = int(wc.arrivals_per_day * wc.users * 30 * 1.2) + 64
        scenario = None
        if wc.scenario is not None:  # one manifest writer: the scenario appends to the course's Manifest
            scenario = ScenarioRuntime(
                load_scenario(wc.scenario),
                catalog=universe.catalog,
                n_teams=n_lanes,
                seed=wc.seed,
                run_start=parse_start(wc.start),
                manifest=manifest,
                team_urls=[t.url for t in config.teams[:n_lanes]],
                time_scale=wc.scenario_time_scale,
            )
        sessionlog = SessionLog(n_lanes, state_dir)  # hidden: state/sessions/<day>.npz
        world, universe = build_world(
            wc.model_copy(update={"teams": [t.url for t in teams]}),
            universe=universe,
            service=client,
            sink=router,
            sessionlog=sessionlog,
            scenario=scenario,
            population=cp.population(room) if cp is not None else None,
        )
        board = Scoreboard(reports_dir)
        scorer = DailyScorer(
            sessionlog, board, universe.catalog, takedowns=scenario.takedowns if scenario is not None else None
        )
        world.extra_state["scoring"] = scorer  # its day and start-of-day taste are checkpointed with the world
        run = CourseRun(
            config, world, universe, bootstrap, "", topics[:n_lanes], sinks, {}, manifest=manifest, board=board
        )
        if cp is not None:
            _resume(run, cp, manifest)
            if scenario is not None:
                scenario.resume(world)  # injections in progress: what their start computed (direction, CDFs)
        else:
            record(
                manifest,
                "course_started",
                world.now,
                course=config.name,
                teams=_teams(config, n_lanes),
                fingerprint=checkpoint.fingerprint(fields),
            )
        pending: list[int] = []  # indexes of teams added to the file, joining at the next checkpoint boundary
        live = {"config": config}
        lock = threading.Lock()

        def apply(new: CourseConfig) -> None:
            with lock:
                _reload(run, live, new, client, pending, manifest)

        pending.extend(range(n_lanes, len(config.teams)))  # added to the file while the course was down
        _join_teams(run, live["config"], pending, client, manifest, ident)

        saver = checkpoint.BackgroundSaver(state_dir, fields)

        def on_checkpoint(w: World) -> None:
            with lock:
                try:
                    _join_teams(run, live["config"], pending, client, manifest, ident)
                except TopicClaimed as exc:  # the team waits (tried again at each checkpoint); the world runs on
                    logger.error("a team added to the course file cannot join yet: %s", exc)
            _save(run, saver, live["config"], background=True)

        if cp is None:  # a SIGKILL before the first periodic checkpoint resumes from the start
            _save(run, saver, config, background=False)
        app = create_app(world.pop, universe.catalog, edition=world.edition, taste=world.taste, seed=wc.seed)
        if scenario is not None:  # API-layer injections and the public /announcements
            app = ScenarioApi(app, scenario, seed=wc.seed)
        api = ServerThread(app, config.api.host, config.api.port or None, **server_options()).start()
        run.api_url = api.url
        instructor = _start_instructor(config, run, scenario)
        if config.path is not None:
            reloader = _Reloader(config.path, config.state.reload_seconds, apply)
            reloader.start()
        _status(state_dir, "running", run)
        if on_ready is not None:
            on_ready(run)
        # end_scenario=None: open injections end only when the course reaches its end; a stop resumes them.
        run.stats = run_world(
            world,
            run_until(wc),
            stop=stop,
            on_tick=scorer.on_tick,
            end_scenario=None,
            checkpoint_every=config.state.checkpoint_every_minutes * 60,
            on_checkpoint=on_checkpoint,
        )
        scorer.close(world)  # the day in progress is scored as it stands (again, in full, after a restart)
        _save(run, saver, live["config"], background=False)  # the sinks are flushed and closed: offsets are final
        run.finished = end is not None and world.now >= end
        if run.finished:
            logger.info(
                "course %s finished: its %g simulated day(s) ended at %s", config.name, wc.days, _iso(world.now)
            )
        _status(state_dir, "finished" if run.finished else "stopped", run)
        return run
    finally:
        if reloader is not None:
            reloader.stopping.set()
        if instructor is not None:
            instructor.stop()
        manifest.close()
        if client is not None and hasattr(client, "close"):
            client.close()
        if api is not None:
            api.stop()
        if broker is not None:
            broker.stop()


def _check_teams(config: CourseConfig, n_lanes: int, state_dir: Path) -> None:
    """Refuse a course file with fewer teams than the course in `state_dir` has lanes (`CourseFileError`)."""
    if len(config.teams) < n_lanes:
        raise CourseFileError(
            f"course file {config.path}: teams: {len(config.teams)} team(s), but the course in "
            f"{state_dir} has {n_lanes}: a team cannot be removed from a running course"
        )


def _already_finished(
    config: CourseConfig, meta: dict[str, Any], where: Path, n_lanes: int, state_dir: Path
) -> CourseRun:
    """The run of a course whose checkpoint (`meta`, the newest link's manifest, in `where`) reached its end: said
    (log, status "finished"), nothing else done."""
    run = CourseRun(
        config,
        None,
        None,
        config.kafka.bootstrap or "",
        "",
        config.topics()[:n_lanes],
        [],
        dict(meta.get("info", {}).get("lines", {})),
        finished=True,
        finished_at=float(meta["sim_time"]),
    )
    logger.warning(
        "course %s is finished: its checkpoint %s is at %s, the end of its %g simulated day(s); nothing to run "
        "(raise world.days in %s to continue it)",
        config.name,
        where,
        _iso(float(meta["sim_time"])),
        config.world.days,
        config.path,
    )
    _status(state_dir, "finished", run)
    return run


def _start_instructor(config: CourseConfig, run: CourseRun, scenario: ScenarioRuntime | None) -> ServerThread | None:
    """The instructor app (manifest, scores, their /metrics; every route behind the token) on its own port."""
    ins = config.instructor
    if not ins.enabled:
        return None
    tokens_path = config.resolve(ins.tokens)
    tokens = ensure_tokens(tokens_path, identity="instructor")
    app = create_instructor_app(
        run.manifest,
        tokens,
        announcements=scenario.announcements if scenario else [],
        extra_routes=score_routes(run.board),
    )
    server = ServerThread(app, ins.host, ins.port or None).start()
    run.instructor_url = server.url
    logger.info("instructor app on %s (token file %s)", server.url, tokens_path)
    return server


def _http(timeout_ms: int) -> Callable[[list[Team], Universe], RecommendationService]:
    def make(teams: list[Team], universe: Universe) -> HttpRecommender:
        return HttpRecommender(teams, {s: i for i, s in enumerate(universe.catalog.slug)}, timeout_ms)

    return make


def _teams(config: CourseConfig, n: int) -> list[dict[str, Any]]:
    topics = config.topics()
    return [{"number": i + 1, "name": t.name, "url": t.url, "topic": topics[i]} for i, t in enumerate(config.teams[:n])]


def _resume(run: CourseRun, cp: checkpoint.Checkpoint, manifest: Manifest) -> None:
    """Restore the checkpoint; count what the topics got after it (re-emitted now) and record the restore."""
    checkpoint.restore(run.world, cp)
    saved: Offsets = cp.info.get("offsets", {})
    now = end_offsets(run.bootstrap, run.topics)
    for topic in run.topics:
        after = _total(now.get(topic, {})) - _total(saved.get(topic, {}))
        if after < 0:
            logger.warning(
                "topic %s has %d line(s) fewer than at the checkpoint: the broker lost them (restarted?)", topic, -after
            )
        run.re_emitted[topic] = after
    run.base_lines = dict(cp.info.get("lines", {}))
    run.restored_from = cp.sim_time
    logger.log(
        logging.WARNING if any(run.re_emitted.values()) else logging.INFO,  # 0 after a clean stop: nothing doubled
        "resumed from the checkpoint of %s (written %s); lines the topics got after it, produced again now: %s",
        _iso(cp.sim_time),
        time.ctime(cp.meta["written_at"]),
        run.re_emitted,
    )
    record(
        manifest,
        "restored",
        cp.sim_time,
        checkpoint=str(cp.path),
        written_at=cp.meta["written_at"],
        re_emitted=run.re_emitted,
        offsets_at_checkpoint=saved,
        offsets_at_restore=now,
    )


def _reload(run: CourseRun, live: dict, new: CourseConfig, client, pending: list[int], manifest: Manifest) -> None:
    """Apply a changed course file: URLs at once, added teams at the next checkpoint; refuse the rest."""
    old: CourseConfig = live["config"]
    if new.fingerprint_fields() != old.fingerprint_fields() or new.state != old.state or new.kafka != old.kafka:
        logger.error(
            "course file %s: only [[teams]] can change while the course runs (the world, kafka and "
            "state sections apply at the next start, and only if they keep the world's fingerprint)",
            new.path,
        )
    if len(new.teams) < len(old.teams):
        logger.error(
            "course file %s: a team cannot be removed from a running course; keeping %d teams", new.path, len(old.teams)
        )
        return
    old_topics, new_topics = old.topics(), new.topics()
    for i, (a, b) in enumerate(zip(old.teams, new.teams, strict=False)):
        if old_topics[i] != new_topics[i]:
            logger.error(
                "course file %s: %s cannot change while the course runs (%s -> %s); keeping the running teams",
                new.path,
                team_place(i, "topic"),
                old_topics[i],
                new_topics[i],
            )
            return
        if a == b:
            continue
        if a.url != b.url and i < len(run.topics) and hasattr(client, "set_url"):
            client.set_url(i, b.url)
            if run.world.scenario is not None:
                run.world.scenario.set_team_url(i + 1, b.url)
        record(
            manifest,
            "team_changed",
            run.world.now,
            team=i + 1,
            name=b.name,
            topic=new_topics[i],
            changes={
                k: [getattr(a, k), getattr(b, k)]
                for k in ("name", "url", "user_share")
                if getattr(a, k) != getattr(b, k)
            },
        )
        logger.info("team %d (%s) changed: %s -> %s", i + 1, b.name, a.url, b.url)
    pending.extend(range(len(old.teams), len(new.teams)))
    live["config"] = new


def _join_teams(
    run: CourseRun, config: CourseConfig, pending: list[int], client, manifest: Manifest, ident: dict[str, Any]
) -> None:
    """Add the pending teams: a topic (claimed for this course), a lane and a connection pool each; users re-split
    by id modulo teams. TopicClaimed (the team stays pending) when another course owns its topic."""
    while pending:
        i = pending[0]
        entry, topic = config.teams[i], config.topics()[i]
        if not hasattr(client, "add_team"):
            raise CourseFileError(f"{team_place(i)}: the recommendation service in use cannot add teams")
        ensure_topics(run.bootstrap, [topic], partitions=config.kafka.partitions)
        lines = {t: _total(o) for t, o in end_offsets(run.bootstrap, [topic]).items()}
        claim_topics(run.bootstrap, [topic], ident, first_start=True, lines=lines)
        pending.pop(0)
        sink = KafkaSink(run.bootstrap, topic)
        team = Team.parse(i + 1, entry.url)
        moved = add_lane(run.world)
        client.add_team(team)
        run.world.sink.sinks.append(sink)  # the TeamRouter now splits by modulo len(sinks)
        run.sinks.append(sink)
        run.topics.append(topic)
        if run.world.sessionlog is not None:  # sessions are split by team like the lines: id modulo teams
            run.world.sessionlog.n_teams = len(run.topics)
        if run.world.scenario is not None:  # injections for all teams include the new one
            run.world.scenario.add_team(entry.url)
        record(
            manifest,
            "team_added",
            run.world.now,
            team=i + 1,
            name=entry.name,
            url=entry.url,
            topic=topic,
            users_reassigned=moved,
            teams=len(run.topics),
        )
        logger.warning(
            "team %d (%s) added at %s: %d users changed team (users are split by id modulo %d)",
            i + 1,
            entry.name,
            _iso(run.world.now),
            moved,
            len(run.topics),
        )


def _save(run: CourseRun, saver: checkpoint.BackgroundSaver, config: CourseConfig, background: bool) -> None:
    """Flush the team topics, read their end offsets, write the checkpoint (skipped, loudly, if lines are pending).

    `background`: the arrays are copied and written by a thread while the world runs on (periodic checkpoints);
    otherwise written before returning (the first and the last). A periodic checkpoint that comes while the
    previous one is still being written is skipped (the world runs faster than the disk writes): the next
    boundary takes it.
    """
    if background and saver.busy:
        run.skipped += 1
        logger.info("checkpoint at %s skipped: the previous one is still being written", _iso(run.world.now))
        return
    for sink in run.sinks:
        if not sink._closed and sink.flush() > 0:
            logger.error(
                "checkpoint at %s skipped: topic %s still has undelivered lines", _iso(run.world.now), sink.topic
            )
            return
    info = {
        "offsets": end_offsets(run.bootstrap, run.topics),
        "lines": run.lines(),
        "teams": _teams(config, len(run.topics)),
        "course": config.name,
    }
    saver.save(run.world, info)
    if not background:
        saver.wait()  # written (a delta of the saver's chain, or its first full checkpoint) before returning
    run.checkpoints += 1
    _status(saver.state_dir, "running", run)


def _status(state_dir: Path, state: str, run: CourseRun) -> None:
    """Write `status.json` (what `movielab course status` shows besides the checkpoint)."""
    body = json.dumps(
        {
            "state": state,
            "pid": os.getpid(),
            "updated_at": time.time(),
            "sim_time": run.now(),
            "api": run.api_url,
            "instructor": run.instructor_url,
            "bootstrap": run.bootstrap,
            "topics": run.topics,
            "lines": run.lines(),
            "checkpoints_this_run": run.checkpoints,
            "skipped": run.skipped,
            "restored_from": run.restored_from,
            "re_emitted": run.re_emitted,
        },
        indent=1,
    )
    tmp = state_dir / f".{STATUS}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, checkpoint.FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    os.replace(tmp, state_dir / STATUS)
