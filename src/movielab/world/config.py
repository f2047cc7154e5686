"""The world's typed configuration: one settings object, environment variables override.

Every field can be set as `MOVIELAB_WORLD_<FIELD>` (e.g. `MOVIELAB_WORLD_USERS=1000000`);
unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from movielab.contract import editions
from movielab.world.client import Team
from movielab.world.clock import parse_start

Dataset = Literal["ml-100k", "ml-1m", "ml-latest-small", "ml-25m"]


class WorldConfig(BaseSettings):
    """How to build and run a world."""

    model_config = SettingsConfigDict(env_prefix="MOVIELAB_WORLD_", extra="forbid", frozen=True)

    edition: str = Field(
        "current",
        description="course edition (a year 2019..2026, '2019-2023', '2024-2025', "
        "'2026' or 'current'): rating scale, time-stamp precision, API fields",
    )
    dataset: Dataset = "ml-100k"
    data_dir: Path | None = Field(None, description="folder with the data set in its native format")
    cache_dir: Path | None = Field(None, description="where fetched data is cached (default ~/.cache/movielab)")
    allow_download: bool = Field(True, description="try GroupLens before the recbole wheel")
    users: int = Field(10_000, ge=1, le=50_000_000, description="initial population")
    movies: int | None = Field(None, ge=1, le=5_000_000, description="catalog size; synthetic movies fill it up")
    factors: int = Field(16, ge=2, le=256, description="latent dimensions of the hidden taste model")
    seed: int = 0
    start: str = Field("2026-03-20T00:00:00", description="simulated start, ISO-8601, UTC")
    speed: float | None = Field(None, gt=0, description="simulated seconds per wall second; None = as fast as possible")
    days: float | None = Field(1.0, gt=0, description="simulated days to run; None = until stopped")
    arrivals_per_day: float = Field(0.002, ge=0, description="new accounts a day, as a share of the initial users")
    teams: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8082"],
        description="recommendation service URL of each team; team N publishes to movielog<N>",
    )
    timeout_ms: int = Field(600, ge=1, le=60_000, description="how long the world waits for a recommendation")
    pacing: Literal["team", "together"] = Field(
        "team",
        description="with several teams run as fast as possible: 'team' = each team's users advance at the pace of"
        " its own answers (a slow team holds back only its own users; each team's stream is reproducible on its"
        " own); 'together' = one clock, every simulated minute waits for the slowest team",
    )
    kafka: str | None = Field(None, description="bootstrap host:port of a Kafka cluster; None = embedded broker")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of each team topic the world creates")
    scenario: str | None = Field(None, description="scenario preset name (movielab world scenarios) or TOML file")
    scenario_time_scale: float = Field(
        1.0, gt=0, description="> 1 compresses the scenario's timeline (168: a week an hour)"
    )
    manifest: Path | None = Field(None, description="hidden manifest file (JSONL) of the scenario's injections")
    instructor_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="loopback port of the instructor app (manifest, behind a token); None = off; 0 = any free port",
    )
    instructor_tokens: Path = Field(
        Path(".movielab/world/instructor.tokens"),
        description="token file of the instructor app (created mode 0600 at first start)",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535, description="port of the world's user/movie API; 0 = any free port")

    @field_validator("teams")
    @classmethod
    def _teams_are_urls(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one team URL is needed")
        for i, url in enumerate(v, start=1):
            Team.parse(i, url)
        return v

    @field_validator("edition")
    @classmethod
    def _known_edition(cls, v: str) -> str:
        editions.edition(v)  # raises UnknownEdition (a ValueError) naming the value
        return v

    @field_validator("scenario")
    @classmethod
    def _scenario_loads(cls, v: str | None) -> str | None:
        if v is not None:
            from movielab.world.scenarios import load

            load(v)  # raises ScenarioError (a ValueError) naming the entry, the field and the reason
        return v

    @field_validator("start")
    @classmethod
    def _start_is_iso(cls, v: str) -> str:
        parse_start(v)
        return v
