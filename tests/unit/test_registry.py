"""The MLflow registry on a temporary sqlite backend: register with lineage, aliases, folders that load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_retrain import block_events  # one synthetic data set for both test modules

from movielab.recommender.errors import RegistryError
from movielab.recommender.serving.answers import answer_table
from movielab.recommender.store.events import EventStore
from movielab.recommender.training import pipeline
from movielab.recommender.training.provenance import code_version
from movielab.recommender.training.registry import REGISTRATION_FILE, Registry, _without_credentials, read_registration


@pytest.fixture
def registry(mlflow_template: Path, tmp_path: Path) -> Registry:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "movielab-team7", tmp_path / "cache", tmp_path / "mlruns")


@pytest.fixture
def trained(tmp_path: Path) -> tuple[pipeline.Trained, pipeline.Trained, EventStore]:
    with EventStore(None) as store:
        store.append(block_events())
        snap = store.create_snapshot("week", None, None)
        ease = pipeline.train(store, "ease", tmp_path / "models", snapshot=snap, params={"lam": 10.0})
        pop = pipeline.train(store, "popularity", tmp_path / "models", snapshot=snap)
        yield ease, pop, store


def test_register_round_trip_with_lineage_and_aliases(registry: Registry, trained, tmp_path: Path) -> None:
    ease, pop, store = trained
    assert registry.versions() == [] and registry.champion() is None and registry.challenger() is None
    v1 = registry.register(ease, {"ndcg@10": 0.61, "popularity.ndcg@10": 0.22})
    v2 = registry.register(pop)
    assert (v1.version, v2.version, v1.aliases) == ("1", "2", ())
    tags, m = v1.tags, ease.manifest
    assert (tags["model"], tags["artifact_version"], tags["snapshot_id"]) == ("ease", "v0001", m["snapshot_id"])
    assert tags["snapshot_hash"] == store.snapshot("week").content_hash
    assert int(tags["snapshot_rows"]) == m["snapshot_rows"]
    assert tags["code_version"] == code_version() and json.loads(tags["params_json"]) == m["params"]
    assert v1.params == {"lam": 10.0, "max_items": 30_000} and v1.model == "ease"
    metrics = registry.run_metrics(v1.run_id)
    assert metrics == {"ndcg_at_10": 0.61, "popularity.ndcg_at_10": 0.22, "train_seconds": m["train_seconds"]}
    assert read_registration(ease.folder) == {
        "registered_model": "movielab-team7",
        "version": "1",
        "run_id": v1.run_id,
        "tracking_uri": registry.tracking_uri,
    }

    registry.promote("1")
    registry.set_challenger(2)
    assert [(v.version, v.aliases) for v in registry.versions()] == [("1", ("champion",)), ("2", ("challenger",))]
    champion = pipeline.load(registry.champion())
    assert champion.manifest == ease.manifest
    assert registry.champion() != ease.folder and (registry.champion() / REGISTRATION_FILE).is_file()
    users = ease.model.users.tolist()
    assert [champion.model.recommend(u) for u in users] == [ease.model.recommend(u) for u in users]
    table, original = answer_table(champion, store), answer_table(ease, store)
    assert all(table.lookup(u) == original.lookup(u) for u in [*users, 10**9])
    assert pipeline.load(registry.challenger()).manifest["model"] == "popularity"

    registry.promote(2)  # the challenger wins: it is the champion now, and no longer the challenger
    assert registry.champion_version().version == "2" and registry.challenger_version() is None
    registry.clear_challenger()  # nothing to clear: no error
    assert registry.find("ease", "v0001").version == "1" and registry.find("ease", "v0009") is None


def test_a_second_registry_on_the_same_backend_sees_the_same_versions(registry: Registry, trained, tmp_path) -> None:
    ease, _, _ = trained
    registry.promote(registry.register(ease).version)
    again = Registry(registry.tracking_uri, "movielab-team7", tmp_path / "other-cache")
    assert again.champion_version().run_id == registry.champion_version().run_id
    assert pipeline.load(again.champion()).manifest == ease.manifest
    other_team = Registry(registry.tracking_uri, "movielab-team8", tmp_path / "other-cache")
    assert other_team.versions() == [] and other_team.champion() is None


def test_unknown_versions_are_named(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="movielab-team7 has no version '42'"):
        registry.promote("42")
    with pytest.raises(RegistryError, match="name is empty"):
        Registry(registry.tracking_uri, "", registry.cache)


def test_no_credentials_are_written_beside_a_model() -> None:
    assert _without_credentials("https://bob:s3cret@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    assert _without_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_cli_retrain_registry_promote_explain(mlflow_template: Path, tmp_path: Path, capsys) -> None:
    from movielab.cli import main

    with EventStore(tmp_path / "store.duckdb") as store:
        store.append(block_events())
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")  # the default backend: next to the artifacts
    common = ["--store", str(tmp_path / "store.duckdb"), "--artifacts", str(tmp_path / "models"), "--team", "4"]
    lam = ["--params", '{"lam": 10}']
    assert main(["recommender", "retrain", *common, *lam]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["status"], first["decision"], first["registered_version"]) == ("accepted", "champion", "1")
    assert main(["recommender", "retrain", *common, "--model", "popularity"]) == 1  # not better than itself
    assert "below the champion" in json.loads(capsys.readouterr().out)["reason"]
    assert main(["recommender", "retrain", *common, *lam]) == 0
    capsys.readouterr()
    assert main(["recommender", "registry", *common, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["aliases"]) for v in listed] == [("1", ["champion"]), ("2", ["challenger"])]
    assert main(["recommender", "promote", "2", *common]) == 0
    assert json.loads(capsys.readouterr().out)["aliases"] == ["champion"]
    assert main(["recommender", "registry", *common]) == 0
    assert "movielab-team4" in capsys.readouterr().out
    assert main(["recommender", "explain", "5", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["user"], out["source"], out["registry"]["version"]) == (5, "model", "2")
    assert out["training_data"]["snapshot_id"] == first["snapshot"]["id"]
    assert main(["recommender", "promote", "7", *common]) == 2
    assert main(["recommender", "explain", "-5", *common]) == 2
    assert "user id '-5'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["explain", "5"], ["registry"], ["promote", "1"]])
def test_read_only_commands_do_not_create_a_registry(command: list[str], tmp_path: Path, capsys) -> None:
    from movielab.cli import main

    common = ["--store", str(tmp_path / "store.duckdb"), "--artifacts", str(tmp_path / "models"), "--team", "4"]
    assert main(["recommender", *command, *common]) == 2
    err = capsys.readouterr().err
    assert "no model registry at" in err and "mlflow.db" in err and "retrain" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created: no mlflow.db, no store
