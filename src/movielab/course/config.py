"""The course file: one TOML file describes a course's world and its teams, validated field by field.

    movielab course init course.toml     # a commented example
    movielab course run course.toml      # run it (resumes from its state folder after a restart)
    movielab course status course.toml   # where it stands

Relative paths in the file are relative to the file's folder. Unknown keys are errors; every error
names the field (`world.users`, `team 2 (teams[1]).url`: team N is the N-th `[[teams]]` entry, `teams[N-1]`)
and the reason.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from movielab.contract import editions
from movielab.course.errors import CourseError
from movielab.validation import place, problems
from movielab.world.client import Team
from movielab.world.clock import parse_start
from movielab.world.config import Dataset, WorldConfig

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")


class CourseFileError(CourseError, ValueError):
    """A course file that cannot be read or is invalid; names the file, each field and the reason."""


class TeamEntry(BaseModel):
    """One team: its name, the URL of its recommendation service, its topic and its share of users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the team's name (letters, digits, space, _ . -; unique)")
    url: str = Field(description="recommendation service base URL: the world calls <url>/recommend/<user id>")
    topic: str | None = Field(None, description="Kafka topic of the team's users' lines (default movielog<N>)")
    user_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="share of the users the team serves. Every team serves the same share: user u belongs to team "
        "(u - 1) % teams + 1 (the world's lanes, topics and scores follow that split), so it must be 1/teams if "
        "given; uneven shares are not supported",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError(
                f"team name {v!r} must be 1-64 letters, digits, spaces or _ . - (starting with a letter or digit)"
            )
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        Team.parse(None, v)  # raises TeamConfigError (a ValueError) naming the URL; the field names the team
        return v

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and (not _TOPIC.fullmatch(v) or v in (".", "..")):
            raise ValueError(f"topic {v!r} is not a Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)")
        return v


class WorldSection(BaseModel):
    """The world every team shares: population, catalog, data, time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edition: str = Field("current", description="course edition: a year 2019..2026 or 'current'")
    dataset: Dataset = "ml-100k"
    data_dir: Path | None = Field(None, description="folder holding the data set in its native format")
    users: int = Field(10_000, ge=1, le=50_000_000, description="initial population")
    movies: int | None = Field(None, ge=1, le=5_000_000, description="catalog size; synthetic movies fill it up")
    factors: int = Field(16, ge=2, le=256)
    seed: int = 0
    start: str = Field("2026-03-20T00:00:00", description="simulated start, ISO-8601 UTC")
    speed: float | None = Field(
        None, gt=0, description="simulated seconds per second (1 = real time); absent: as fast as possible"
    )
    days: float | None = Field(None, gt=0, description="simulated days to run; absent: until stopped")
    arrivals_per_day: float = Field(0.002, ge=0, description="new accounts a day, as a share of the initial users")
    timeout_ms: int = Field(600, ge=1, le=60_000, description="how long the world waits for a recommendation")
    scenario: str | None = Field(
        None,
        description="scenario: a preset name (`movielab world scenarios`) or a TOML "
        "file (relative to the course file): drift, outages, attacks, ...",
    )
    scenario_time_scale: float = Field(
        1.0, gt=0, description="> 1 compresses the scenario's timeline (7: the semester's weeks in days)"
    )

    @field_validator("edition")
    @classmethod
    def _edition(cls, v: str) -> str:
        editions.edition(v)
        return v

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        parse_start(v)
        return v


class KafkaSection(BaseModel):
    """Where the team topics live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap: str | None = Field(
        None,
        description="host:port of the Kafka cluster; absent: an embedded broker "
        "(in memory: its topics do not survive a restart)",
    )
    partitions: int = Field(4, ge=1, le=1024)


class ApiSection(BaseModel):
    """The world's user/movie API (what teams call)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 = any free port")


class InstructorSection(BaseModel):
    """The instructor's port: manifest, scores and their /metrics, every route behind a token (never the teams')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="serve the instructor app (a course needs it to read scores live)")
    host: str = Field("127.0.0.1", description="listen address (loopback unless a proxy with TLS is in front)")
    port: int = Field(8090, ge=0, le=65535, description="0 = any free port; must differ from [api].port")
    tokens: Path = Field(
        Path("state/instructor.tokens"),
        description="token file (created mode 0600 at first start); `Authorization: Bearer <token>`",
    )


class StateSection(BaseModel):
    """Where the world keeps what only the instructor may see: checkpoints, manifest, reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path = Field(Path("state"), description="checkpoints and the manifest (mode 0700)")
    reports: Path = Field(Path("reports"), description="scoreboards and reports (mode 0700)")
    checkpoint_every_minutes: int = Field(10, ge=1, le=7 * 24 * 60, description="simulated minutes between checkpoints")
    reload_seconds: float = Field(2.0, gt=0, le=3600, description="how often the course file is checked for changes")


class CourseConfig(BaseModel):
    """A whole course file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("course", description="the course's name (reports and the manifest carry it)")
    world: WorldSection = WorldSection()
    kafka: KafkaSection = KafkaSection()
    api: ApiSection = ApiSection()
    instructor: InstructorSection = InstructorSection()
    state: StateSection = StateSection()
    teams: list[TeamEntry] = Field(min_length=1, description="the teams, in order: team N is the N-th entry")
    path: Path | None = Field(None, exclude=True, description="the file this was read from (set by `load`)")

    @model_validator(mode="after")
    def _teams_are_distinct(self) -> CourseConfig:
        for what in ("name", "topic"):
            seen: dict[str, int] = {}
            for i, value in enumerate(getattr(self, f"{what}s")()):
                if value in seen:
                    raise ValueError(f"{team_place(i, what)}: {value!r} is already team {seen[value] + 1}'s")
                seen[value] = i
        ins = self.instructor
        if ins.enabled and ins.port != 0 and ins.port == self.api.port:
            raise ValueError(f"instructor.port: {ins.port} is the teams' API port; the instructor's needs its own")
        n = len(self.teams)
        for i, t in enumerate(self.teams):
            if t.user_share is not None and abs(t.user_share - 1 / n) > 1e-6:
                raise ValueError(
                    f"{team_place(i, 'user_share')}: {t.user_share} is not 1/{n} ({1 / n:.4g}): every team serves the same "
                    f"share of the users (user u belongs to team (u - 1) % {n} + 1, new accounts too); uneven "
                    f"shares are not supported: remove user_share, or set it to 1/{n} on every team"
                )
        return self

    def names(self) -> list[str]:
        """Team names, in team order."""
        return [t.name for t in self.teams]

    def topics(self) -> list[str]:
        """Each team's topic (default `movielog<N>`), in team order."""
        return [t.topic or f"movielog{i}" for i, t in enumerate(self.teams, start=1)]

    def resolve(self, p: Path | None) -> Path | None:
        """A path of the file, relative to the file's folder."""
        if p is None or p.is_absolute() or self.path is None:
            return p
        return (self.path.parent / p).resolve()

    @property
    def state_dir(self) -> Path:
        """The state folder (checkpoints, manifest)."""
        return self.resolve(self.state.dir)

    @property
    def reports_dir(self) -> Path:
        """The reports folder: the scoreboard (`scores/<day>.json`, `scores.csv`)."""
        return self.resolve(self.state.reports)

    def scenario_ref(self) -> str | None:
        """The scenario as `WorldConfig.scenario` takes it: a preset name, or the file resolved against this file."""
        s = self.world.scenario
        if s is None:
            return None
        path = self.resolve(Path(s))
        return str(path) if path.is_file() else s

    @property
    def manifest_path(self) -> Path:
        """The hidden manifest (JSON lines) of what happened: team changes, restores, scenario injections."""
        return self.state_dir / "manifest.jsonl"

    def world_config(self) -> WorldConfig:
        """The `WorldConfig` of this course's world."""
        w = self.world
        return WorldConfig(
            edition=w.edition,
            dataset=w.dataset,
            data_dir=self.resolve(w.data_dir),
            users=w.users,
            movies=w.movies,
            factors=w.factors,
            seed=w.seed,
            start=w.start,
            speed=w.speed,
            days=w.days,
            arrivals_per_day=w.arrivals_per_day,
            teams=[t.url for t in self.teams],
            timeout_ms=w.timeout_ms,
            pacing="team",
            kafka=self.kafka.bootstrap,
            partitions=self.kafka.partitions,
            api_host=self.api.host,
            api_port=self.api.port,
            scenario=self.scenario_ref(),
            scenario_time_scale=w.scenario_time_scale,
            manifest=self.manifest_path,
        )

    def fingerprint_fields(self) -> dict[str, Any]:
        """What decides how the world is built: a checkpoint is only restored into the same."""
        w = self.world
        return {
            "edition": w.edition,
            "dataset": w.dataset,
            "users": w.users,
            "movies": w.movies,
            "factors": w.factors,
            "seed": w.seed,
            "start": w.start,
            "arrivals_per_day": w.arrivals_per_day,
            "partitions": self.kafka.partitions,
            **({"scenario": w.scenario, "scenario_time_scale": w.scenario_time_scale} if w.scenario else {}),
        }


def team_place(index: int, field: str | None = None) -> str:
    """Where a team's entry is, by its team number and its 0-based entry: `team 2 (teams[1]).url`."""
    return f"team {index + 1} (teams[{index}])" + (f".{field}" if field else "")


def _place(loc: tuple[Any, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "teams" and isinstance(loc[1], int):
        return team_place(loc[1], place(loc[2:]) or None)
    return place(loc)


def _describe(exc: ValidationError) -> str:
    return "; ".join(problems(exc, _place))


def parse(text: str, path: Path | None = None) -> CourseConfig:
    """A course config from TOML text; `CourseFileError` naming the file, the fields and the reasons."""
    where = path or "<course file>"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CourseFileError(f"course file {where} is not valid TOML: {exc}") from None
    try:
        config = CourseConfig.model_validate(raw)
    except ValidationError as exc:
        raise CourseFileError(f"course file {where}: {_describe(exc)}") from None
    config = config.model_copy(update={"path": path.resolve() if path else None})
    if config.world.scenario is not None:
        from movielab.world.scenarios import load as load_scenario

        try:
            load_scenario(config.scenario_ref())
        except ValueError as exc:  # ScenarioError names the preset or file, the entry and the reason
            raise CourseFileError(f"course file {where}: world.scenario: {exc}") from None
    return config


def load(path: str | Path) -> CourseConfig:
    """Read and validate a course file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CourseFileError(f"course file {path} cannot be read: {exc}") from None
    return parse(text, path)


EXAMPLE = """\
# A movielab course: one world for every team, run 24/7 (`movielab course run THIS_FILE`).
# Relative paths are relative to this file's folder. Unknown keys are errors.
name = "mlip-2026"

[world]
edition = "current"          # course edition: 2019..2026 or "current" (rating scale, stamps, API fields)
dataset = "ml-100k"          # or ml-1m / ml-latest-small / ml-25m with data_dir = "path/to/folder"
users = 1000000              # initial population (new accounts keep arriving)
movies = 20000               # catalog size: synthetic movies fill up the real ones
seed = 0
start = "2026-09-01T00:00:00"  # simulated start (UTC)
speed = 1.0                  # simulated seconds per second: 1 = real time; remove for as fast as possible
# days = 100                 # simulated days to run; absent: until stopped
arrivals_per_day = 0.002     # new accounts a day, as a share of the initial users
timeout_ms = 600             # how long the world waits for a team's answer
# scenario = "semester"      # a preset (`movielab world scenarios`) or a file: drift, outages, attacks, ...
# scenario_time_scale = 1.0  # > 1 compresses the scenario's timeline (7: its weeks become days)

[kafka]
bootstrap = "127.0.0.1:9092" # run the broker apart (`movielab broker --port 9092`) so topics outlive the world
partitions = 4

[api]                        # the user/movie API teams call
host = "127.0.0.1"
port = 8080

[instructor]                 # manifest, scores and their /metrics: token only, never the teams' port
port = 8090
tokens = "state/instructor.tokens"  # created mode 0600 at first start: Authorization: Bearer <token>

[state]                      # instructor-only: never served to teams (folders mode 0700, files 0600)
dir = "state"                # checkpoints, manifest.jsonl, sessions/ (the hidden session log)
reports = "reports"          # the scoreboard: scores/<day>.json, scores.csv
checkpoint_every_minutes = 10  # simulated minutes; also on SIGTERM/SIGINT
reload_seconds = 2.0         # this file is re-read when it changes: teams may be added, URLs changed

# One [[teams]] block per team; team N writes to movielog<N> unless `topic` says otherwise.
# Users are split evenly: user u belongs to team (u - 1) % (number of teams) + 1, so every team
# serves the same share (`user_share`, if given, must be 1/teams; uneven shares are not supported).
[[teams]]
name = "team-1"
url = "http://127.0.0.1:8082"

[[teams]]
name = "team-2"
url = "http://127.0.0.1:8092"
"""


def write_example(path: str | Path, force: bool = False) -> Path:
    """Write the commented example course file to `path`; CourseFileError if it exists (unless `force`) or cannot
    be written."""
    path = Path(path)
    try:
        with path.open("w" if force else "x", encoding="utf-8") as f:
            f.write(EXAMPLE)
    except FileExistsError:
        raise CourseFileError(
            f"course file {path} already exists: not overwritten (edit it, choose another path, or pass --force)"
        ) from None
    except OSError as exc:
        raise CourseFileError(f"course file {path} cannot be written: {exc.strerror or exc}") from None
    return path
