"""Explain: the answer, its source, the version's lineage and the user's own events in the training snapshot."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from batches import lines_batch

from movielab.contract import rate_line, watch_line
from movielab.recommender.config import RecommenderConfig
from movielab.recommender.errors import BadVersionFolder
from movielab.recommender.serving.answers import answer_table
from movielab.recommender.serving.explain import explain, explain_from_registry
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo
from movielab.recommender.training import pipeline
from movielab.recommender.training.registry import Registry, default_tracking_uri, registered_name

T0 = datetime(2026, 3, 20, 8, 0, 0)
A, B, C, D = "a+2000", "b+2001", "c+2002", "d+2003"


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def watching(user: int, movie: str, minutes: int, start: datetime) -> list[str]:
    return [watch_line(stamp(start + timedelta(minutes=i)), user, movie, i + 1) for i in range(minutes)]


def first_day() -> list[str]:
    """User 1 watches 30 minutes of A, rates it 3 then 5, then watches 10 minutes of B; users 2, 3 watch C and A."""
    lines = watching(1, A, 30, T0) + [
        rate_line(stamp(T0 + timedelta(minutes=40)), 1, A, 3),
        rate_line(stamp(T0 + timedelta(hours=1)), 1, A, 5),
    ]
    lines += watching(1, B, 10, T0 + timedelta(hours=2)) + watching(2, C, 5, T0) + watching(3, A, 3, T0)
    return lines


def fill(store: EventStore, artifacts: Path) -> tuple[pipeline.Trained, pipeline.Trained]:
    """Version 1 trained on the first day; version 2 after user 1 also watched D."""
    store.add_records(
        movies=[MovieInfo(m, 100, (), m) for m in (A, B, C, D)],
        users=[UserInfo(u, 30, "F", "writer") for u in (1, 2, 3, 4)],
    )
    store.append(lines_batch(first_day(), 0))
    one = pipeline.train(store, "popularity", artifacts, snapshot=store.create_snapshot("day-1", None, None))
    store.append(lines_batch(watching(1, D, 20, T0 + timedelta(days=1)), 1000))
    two = pipeline.train(store, "popularity", artifacts, snapshot=store.create_snapshot("day-2", None, None))
    return one, two


@pytest.fixture
def store(tmp_path: Path):
    with EventStore(tmp_path / "store.duckdb") as s:
        yield s


def test_explain_names_the_snapshot_and_the_users_events_in_it(store: EventStore, tmp_path: Path) -> None:
    one, two = fill(store, tmp_path / "models")
    out = explain(1, answer_table(one, store), one.folder, store)
    day1 = store.snapshot("day-1")
    assert out["training_data"]["snapshot_id"] == day1.id != store.snapshot("day-2").id
    assert out["training_data"]["snapshot_hash"] == day1.content_hash and out["training_data"]["rows"] == day1.rows
    assert out["model"]["name"] == "popularity" and out["model"]["version"] == "v0001"
    assert out["source"] == "model" and out["recommendations"] == [C]  # the only movie of day 1 user 1 missed
    assert out["seen_by_model"] == {"movies": 2, "movie_ids": [A, B]}
    events = out["events_in_snapshot"]
    assert (events["movies_watched"], events["minutes_watched"], events["ratings"]) == (2, 40, 1)
    assert [e["movie_id"] for e in events["latest"]] == [B, A]  # D came after the snapshot
    assert events["latest"][1]["rating"] == 5 and events["latest"][1]["time"] == "2026-03-20T09:00:00"
    assert out["registry"] is None and "not registered" in out["registry_note"]
    later = explain(1, answer_table(two, store), two.folder, store)
    assert later["events_in_snapshot"]["latest"][0]["movie_id"] == D and later["seen_by_model"]["movies"] == 3


def test_explain_names_the_fallback_sources(store: EventStore, tmp_path: Path) -> None:
    one, _ = fill(store, tmp_path / "models")
    table = answer_table(one, store)
    known_segment = explain(4, table, one.folder)  # a user record, no events
    unknown = explain(99, table, one.folder)
    assert known_segment["source"] == "segment" and known_segment["seen_by_model"] is None
    assert unknown["source"] == "global" and "not in the model's training data" in unknown["reason"]
    assert unknown["recommendations"] == one.model.fallback(-1)
    assert known_segment["events_in_snapshot"] is None


def test_explain_refuses_a_folder_of_another_version_and_a_bad_user(store: EventStore, tmp_path: Path) -> None:
    one, two = fill(store, tmp_path / "models")
    with pytest.raises(BadVersionFolder, match="v0001.*v0002"):
        explain(1, answer_table(two), one.folder)
    with pytest.raises(TypeError, match="'1' must be an integer"):
        explain("1", answer_table(one), one.folder)  # type: ignore[arg-type]


def test_explain_from_registry_gives_the_registered_version_and_run(tmp_path: Path, mlflow_template: Path) -> None:
    config = RecommenderConfig(store=tmp_path / "store.duckdb", artifacts=tmp_path / "models", team=3)
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")  # where the default tracking URI points
    assert default_tracking_uri(config.artifacts) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    with EventStore(config.store) as store:
        one, two = fill(store, config.artifacts)
        day1 = store.snapshot("day-1")
    registry = Registry.from_config(config)
    first = registry.register(one, {"ndcg@10": 0.5})
    registry.register(two)
    registry.promote(first.version)
    out = explain_from_registry(config, 1)
    assert out["registry"]["registered_model"] == registered_name(3) == "movielab-team3"
    assert (out["registry"]["version"], out["registry"]["run_id"]) == ("1", first.run_id)
    assert out["aliases"] == ["champion"] and out["model"]["version"] == "v0001"
    assert out["training_data"]["snapshot_id"] == day1.id
    assert out["events_in_snapshot"]["snapshot_id"] == day1.id and "store_note" not in out
    assert explain_from_registry(config, 1, version="2")["training_data"]["snapshot_name"] == "day-2"
