"""The recommender's typed configuration; every field can be set as `MOVIELAB_REC_<FIELD>`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RecommenderConfig(BaseSettings):
    """Where the recommender reads, stores, trains and serves."""

    model_config = SettingsConfigDict(env_prefix="MOVIELAB_REC_", extra="forbid", frozen=True)

    kafka: str = Field("127.0.0.1:9092", description="bootstrap host:port of the world's Kafka")
    team: int = Field(1, ge=1, description="team number: the recommender reads topic movielog<team>")
    world_api: str = Field("http://127.0.0.1:8080", description="base URL of the world's user/movie API")
    store: Path = Field(Path(".movielab/recommender/store.duckdb"), description="DuckDB event store file")
    artifacts: Path = Field(Path(".movielab/recommender/models"), description="folder of trained model versions")
    model: str = Field("ease", description="model trained by default")
    host: str = "127.0.0.1"
    port: int = Field(8082, ge=0, le=65535)
