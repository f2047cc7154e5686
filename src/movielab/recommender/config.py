"""The recommender's typed configuration; every field can be set as `MOVIELAB_REC_<FIELD>`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from movielab.contract import editions


class RecommenderConfig(BaseSettings):
    """Where the recommender reads, stores, trains and serves."""

    model_config = SettingsConfigDict(env_prefix="MOVIELAB_REC_", extra="forbid", frozen=True)

    kafka: str = Field("127.0.0.1:9092", description="bootstrap host:port of the world's Kafka")
    team: int = Field(1, ge=1, description="team number: the recommender reads topic movielog<team>")
    edition: str = Field("current", description="course edition of the world (2019..2026, 'current'): rating scale")
    world_api: str = Field("http://127.0.0.1:8080", description="base URL of the world's user/movie API")
    store: Path = Field(Path(".movielab/recommender/store.duckdb"), description="DuckDB event store file")
    artifacts: Path = Field(Path(".movielab/recommender/models"), description="folder of trained model versions")
    model: str = Field("ease", description="model trained by default")
    model_params: dict[str, Any] = Field(default_factory=dict, description="hyper-parameters of retrained models")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (server URL or sqlite:///…); default sqlite:///<artifacts parent>/mlflow.db",
    )
    retrain_every_hours: float = Field(6.0, gt=0, description="retrain every N hours of stream time")
    retrain_window_days: float = Field(7.0, gt=0, description="train on the last N days up to stream time")
    retrain_min_events: int = Field(1000, ge=1, description="data check: fewest events in a retraining snapshot")
    retrain_min_users: int = Field(20, ge=1, description="data check: fewest users in a retraining snapshot")
    retrain_min_items: int = Field(10, ge=1, description="data check: fewest movies in a retraining snapshot")
    gate_tolerance: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="gate: reject a candidate whose NDCG@10 is below the champion's by more than this share",
    )
    host: str = "127.0.0.1"
    port: int = Field(8082, ge=0, le=65535)

    @field_validator("edition")
    @classmethod
    def _known_edition(cls, v: str) -> str:
        editions.edition(v)  # raises UnknownEdition (a ValueError) naming the value
        return v
