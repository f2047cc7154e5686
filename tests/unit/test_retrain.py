"""Retraining: data checks, the offline gate (known good, worse-than-popularity and NaN models), the crash case."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from movielab.recommender.store.events import EVENT_SCHEMA, QUARANTINE_SCHEMA, Batch, EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo
from movielab.recommender.training import evaluate, pipeline
from movielab.recommender.training import models as model_registry
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.gate import RetrainPolicy, _same_recipe, _sample_rows, check_output, gate
from movielab.recommender.training.models import create
from movielab.recommender.training.models.popularity import Popularity
from movielab.recommender.training.registry import Registry
from movielab.recommender.training.retrain import Reference, Retrainer, read_records, stream_time

T0 = datetime(2026, 3, 20, 6, 0, 0)
GROUP_USERS = (40, 30, 20, 10)  # unequal groups: popularity favours group 0's block
BLOCK = 12  # movies per group; a user watches PER_USER of its own block
PER_USER = 8
MINUTES = 3  # each watch is minutes 1..3 of a 3-minute movie: completion 1
POLICY = RetrainPolicy(model="ease", params={"lam": 10.0}, min_events=100, min_users=10, min_items=10)


def movie(group: int, i: int) -> str:
    return f"block+{'abcd'[group]}+film+{i}+2000"


def block_events(seed: int = 0, first_user: int = 1, hours: float = 48.0) -> Batch:
    """Each group's users watch PER_USER random movies of the group's own block, at random times over `hours`.

    The known answer: a user's later watches are in its own block, so an item-item model ranks them first;
    popularity ranks group 0's block first for everyone.
    """
    rng = np.random.default_rng(seed)
    users, movies, times = [], [], []
    uid = first_user
    for g, n in enumerate(GROUP_USERS):
        for _ in range(n):
            for i in rng.choice(BLOCK, PER_USER, replace=False):
                users.append(uid)
                movies.append(movie(g, int(i)))
                times.append(T0 + timedelta(seconds=float(rng.uniform(0, hours * 3600))))
            uid += 1
    n = len(users) * MINUTES
    minute = np.tile(np.arange(1, MINUTES + 1, dtype=np.int32), len(users))
    t = np.repeat(np.array(times, "datetime64[us]"), MINUTES) + (minute - 1).astype("timedelta64[m]")
    none = pa.nulls(n)
    events = pa.table(
        {
            "topic": pa.array(["movielog1"] * n),
            "partition": pa.array(np.zeros(n, np.int32)),
            "offset": pa.array(np.arange(n, dtype=np.int64) + seed * 10_000_000),
            "time": pa.array(t),
            "user_id": pa.array(np.repeat(np.array(users, np.int64), MINUTES)),
            "kind": pa.array(["watch"] * n),
            "movie_id": pa.array(np.repeat(np.array(movies), MINUTES).tolist()),
            "minute": pa.array(minute),
            "rating": none,
            "server": none,
            "status": none,
            "recommendations": none,
            "error": none,
            "response_ms": none,
            "nanosecond": none,
        }
    ).cast(EVENT_SCHEMA)
    films = [MovieInfo(movie(g, i), MINUTES, ("Drama",), None) for g in range(len(GROUP_USERS)) for i in range(BLOCK)]
    people = [UserInfo(u, 20 + u % 40, "FM"[u % 2], "other") for u in range(first_user, uid)]
    return Batch(events, QUARANTINE_SCHEMA.empty_table(), films, people)


@pytest.fixture
def store():
    with EventStore(None) as s:
        s.append(block_events())
        yield s


@pytest.fixture
def registry(mlflow_template: Path, tmp_path: Path) -> Registry:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "movielab-team1", tmp_path / "cache", tmp_path / "mlruns")


def retrainer(
    store: EventStore, registry: Registry, tmp_path: Path, policy: RetrainPolicy = POLICY, rollout=None
) -> Retrainer:
    return Retrainer(store, registry, tmp_path / "models", policy, tmp_path / "retrain.jsonl", rollout)


class Unpopular(Popularity):
    """Ranks the least-watched movies first: a working model that is worse than popularity here."""

    name: ClassVar[str] = "unpopular"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Popularity's scores, negated."""
        return -super().scores(rows)


class NaNScores(Unpopular):
    """Scores every movie NaN."""

    name: ClassVar[str] = "nanscores"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.full((len(np.asarray(rows).reshape(-1)), self.n_items), np.nan, np.float32)


@pytest.fixture
def extra_models(monkeypatch):
    monkeypatch.setitem(model_registry.MODELS, "unpopular", Unpopular)
    monkeypatch.setitem(model_registry.MODELS, "nanscores", NaNScores)


# --- the gate on its own ---------------------------------------------------------------------------
def snapshot_data(store: EventStore) -> TrainingData:
    return TrainingData.from_snapshot(store, store.create_snapshot("all", None, None))


def test_gate_accepts_a_personalised_model_and_measures_all_three(store: EventStore) -> None:
    data = snapshot_data(store)
    verdict = gate(create("ease", lam=10.0).fit(data), data, ("popularity", {}), POLICY)
    m = verdict.metrics
    assert verdict.accepted, verdict.reason
    assert m["ndcg@10"] > m["popularity.ndcg@10"] and m["champion.ndcg@10"] == m["popularity.ndcg@10"]
    assert 0 < m["popularity.ndcg@10"] < m["ndcg@10"] <= 1 and m["test_users"] > 0


def test_gate_rejects_a_model_worse_than_popularity(store: EventStore, extra_models) -> None:
    data = snapshot_data(store)
    verdict = gate(create("unpopular").fit(data), data, None, POLICY)
    assert not verdict.accepted
    assert "below popularity's" in verdict.reason or "ranks no held-out interaction" in verdict.reason
    assert verdict.metrics["ndcg@10"] < verdict.metrics["popularity.ndcg@10"]


def test_gate_rejects_a_candidate_below_the_champion_beyond_the_tolerance(store: EventStore) -> None:
    data = snapshot_data(store)
    # itemknn with one neighbour is better than popularity here, but far below EASE.
    weak = create("itemknn", k=1).fit(data)
    verdict = gate(weak, data, ("ease", {"lam": 10.0}), POLICY)
    m = verdict.metrics
    assert m["ndcg@10"] > m["popularity.ndcg@10"], m
    assert m["ndcg@10"] < m["champion.ndcg@10"] * (1 - POLICY.tolerance), m
    assert not verdict.accepted and "below the champion" in verdict.reason


def test_check_output_finds_nan_that_fit_did_not_sample(store: EventStore) -> None:
    model = create("ease", lam=10.0).fit(snapshot_data(store))
    assert check_output(model) is None
    model.weights[0, 1] = np.nan  # after fit: only a scan of the arrays sees it
    assert "NaN" in check_output(model)
    verdict = gate(model, snapshot_data(store), None, POLICY)
    assert not verdict.accepted and "candidate output" in verdict.reason and verdict.metrics == {}


def test_gate_samples_test_users_reproducibly_and_knows_a_recipe() -> None:
    test = sp.csr_matrix(np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0]], np.float32))
    a, b = _sample_rows(test, 2), _sample_rows(test, 2)
    kept = set(np.flatnonzero(np.asarray(a.sum(axis=1)).ravel()).tolist())
    assert len(kept) == 2 and kept <= {0, 2, 3, 4} and (a != b).nnz == 0
    assert a[sorted(kept)].toarray().tolist() == test[sorted(kept)].toarray().tolist()
    assert _sample_rows(test, 4) is test
    assert _same_recipe(("ease", {"lam": 10}), ("ease", {"lam": 10.0}))
    assert not _same_recipe(("ease", {"lam": 10}), ("ease", {"lam": 11})) and not _same_recipe(
        ("als", {}), ("ease", {})
    )


# --- full runs with the registry ---------------------------------------------------------------------
def test_first_accepted_run_becomes_champion_and_the_next_the_challenger(store, registry, tmp_path) -> None:
    rolled = []
    r = retrainer(store, registry, tmp_path, rollout=lambda mv, rec: rolled.append((mv.version, mv.aliases)))
    first = r.run()
    assert first.status == "accepted", first.reason
    assert first.decision == "champion" and first.registered_version == "1" and first.stage == "rollout"
    assert registry.champion_version().version == "1" and registry.challenger_version() is None
    champ = pipeline.load(registry.champion())
    assert champ.manifest["snapshot_id"] == first.snapshot["id"] and champ.manifest["version"] == "v0001"
    second = r.run()
    assert second.status == "accepted" and second.decision == "challenger"
    assert rolled == [("1", ("champion",)), ("2", ("challenger",))]
    assert registry.champion_version().version == "1" and registry.challenger_version().version == "2"
    kept = read_records(tmp_path / "retrain.jsonl")
    assert [k["id"] for k in kept] == [first.id, second.id]
    assert set(kept[0]["seconds"]) == {"snapshot", "checks", "train", "gate", "register", "rollout", "total"}
    assert kept[0]["metrics"]["ndcg@10"] == pytest.approx(first.metrics["ndcg@10"])
    assert registry.run_metrics(first.run_id)["popularity.ndcg_at_10"] == pytest.approx(
        first.metrics["popularity.ndcg@10"]
    )


def test_rejected_models_never_reach_the_registry(store, registry, tmp_path, extra_models) -> None:
    for name in ("unpopular", "nanscores"):
        rec = retrainer(store, registry, tmp_path, RetrainPolicy(model=name, min_events=100)).run()
        assert rec.status == "rejected", rec
        assert rec.registered_version is None
    reasons = [k["reason"] for k in read_records(tmp_path / "retrain.jsonl")]
    assert "below popularity's" in reasons[0] or "ranks no held-out interaction" in reasons[0]
    assert reasons[1].startswith("training gave no safe model") and "NaN" in reasons[1]
    assert registry.versions() == [] and registry.champion() is None


def test_data_checks_reject_a_thin_snapshot_with_the_reason(store, registry, tmp_path) -> None:
    rec = retrainer(store, registry, tmp_path, RetrainPolicy(min_events=10**9)).run()
    assert rec.status == "rejected" and rec.stage == "checks"
    assert rec.reason.startswith("data check:") and "min_events=1000000000" in rec.reason
    assert rec.snapshot["rows"] == store.counts()["events"] and registry.versions() == []


def _boom(*args, **kwargs):
    raise RuntimeError("disk on fire")


CRASHES = {  # stage → (object, attribute) to replace with _boom
    "snapshot": (EventStore, "create_snapshot"),
    "checks": (EventStore, "verify_snapshot"),
    "train": (pipeline, "train"),
    "gate": (evaluate, "evaluate_model"),
    "register": ("client", "create_model_version"),
}


@pytest.mark.parametrize("stage", [*CRASHES, "rollout"])
def test_a_crash_in_any_stage_leaves_the_champion_untouched(stage, store, registry, tmp_path, monkeypatch) -> None:
    r = retrainer(store, registry, tmp_path)
    assert r.run().decision == "champion"
    before = pipeline.load(registry.champion())
    if stage == "rollout":
        r.rollout = _boom
    else:
        owner, attr = CRASHES[stage]
        monkeypatch.setattr(registry._client if owner == "client" else owner, attr, _boom)
    store.append(block_events(seed=1, first_user=1000))  # new data, so a run would make a new version
    rec = r.run()
    monkeypatch.undo()
    assert rec.status == "failed" and rec.stage == stage
    assert rec.reason == f"{stage} failed: RuntimeError: disk on fire"
    assert registry.champion_version().version == "1" and registry.challenger_version() is None
    after = pipeline.load(registry.champion())
    assert after.manifest == before.manifest
    users = before.model.users[:50]
    assert [after.model.recommend(int(u)) for u in users] == [before.model.recommend(int(u)) for u in users]
    assert read_records(tmp_path / "retrain.jsonl")[-1]["status"] == "failed"


def test_one_run_at_a_time(store, registry, tmp_path) -> None:
    inner = []
    r = retrainer(
        store,
        registry,
        tmp_path,
        RetrainPolicy(model="ease", params={"lam": 10.0}, min_events=100),
        rollout=lambda mv, rec: inner.append(r.run(trigger="request")),
    )
    outer = r.run()
    assert outer.status == "accepted" and inner[0].status == "rejected"
    assert inner[0].reason == "another retraining run is in progress" and len(registry.versions()) == 1
    assert r.run().status == "accepted"  # the guard is released after a run


def test_schedule_follows_stream_time_and_survives_a_restart(store, registry, tmp_path) -> None:
    policy = RetrainPolicy(model="popularity", min_events=100, every_hours=6)
    r = retrainer(store, registry, tmp_path, policy)
    now = stream_time(store)
    assert r.due() and r.due(now)
    first = r.maybe_run()
    assert first is not None and first.trigger == "schedule" and first.stream_time == now.isoformat()
    assert r.maybe_run() is None  # no new stream time
    restarted = retrainer(store, registry, tmp_path, policy)
    assert not restarted.due(now + timedelta(hours=5, minutes=59))
    assert restarted.due(now + timedelta(hours=6))


def test_policy_from_config_and_records_are_json(tmp_path) -> None:
    from movielab.recommender.config import RecommenderConfig

    c = RecommenderConfig(model="als", model_params={"factors": 8}, retrain_every_hours=2, gate_tolerance=0.1)
    p = RetrainPolicy.from_config(c)
    assert (p.model, p.params, p.every_hours, p.tolerance) == ("als", {"factors": 8}, 2, 0.1)
    with EventStore(None) as empty:
        assert stream_time(empty) is None
        r = Retrainer(empty, None, tmp_path / "m", p, tmp_path / "log.jsonl")  # type: ignore[arg-type]
        assert not r.due()
        rec = r.run()
    assert rec.status == "rejected" and rec.reason == "the store holds no events yet"
    assert json.loads((tmp_path / "log.jsonl").read_text())["reason"] == rec.reason


def test_training_reuses_the_checked_data_and_refuses_data_of_another_snapshot(store, tmp_path, monkeypatch) -> None:
    snap = store.create_snapshot("all", None, None)
    data = TrainingData.from_snapshot(store, snap)
    monkeypatch.setattr(TrainingData, "from_snapshot", lambda *a: pytest.fail("the snapshot was queried again"))
    trained = pipeline.train(store, "popularity", tmp_path / "models", snapshot=snap, data=data)
    assert trained.manifest["snapshot_id"] == snap.id and trained.manifest["users"] == len(data.users)
    store.append(block_events(seed=1, first_user=500))
    other = store.create_snapshot("more", None, None)
    with pytest.raises(ValueError, match=f"the data given is of snapshot {snap.id}, not of {other.id}"):
        pipeline.train(store, "popularity", tmp_path / "models", snapshot=other, data=data)
    with pytest.raises(ValueError, match="name the snapshot it was built from"):
        pipeline.train(store, "popularity", tmp_path / "models", data=data)


def test_a_deleted_champion_does_not_hand_the_next_candidate_full_traffic(store, registry, tmp_path, caplog) -> None:
    rolled = []
    r = retrainer(store, registry, tmp_path, rollout=lambda mv, rec: rolled.append((mv.version, mv.aliases)))
    first = r.run()
    assert first.decision == "champion" and first.reference is None and not first.champion_alias_missing
    served = Reference.of(registry.champion())  # what the operator serves: the reference from now on
    registry._client.delete_model_version(registry.name, "1")  # an operator cleans up the registry
    assert registry.champion_version() is None  # the alias went with the version
    second = r.run(serving=served)
    assert second.status == "accepted", second.reason
    assert second.decision == "challenger" and second.champion_alias_missing
    assert second.reference == f"serving {first.model}/{first.artifact_version}"
    assert "champion.ndcg@10" in second.metrics  # gated against the serving model's recipe
    assert registry.champion_version() is None and registry.challenger_version().version == "2"
    assert rolled[-1] == ("2", ("challenger",))
    assert "no champion alias" in caplog.text
    with pytest.raises(ValueError, match="cannot read model, params and version"):
        Reference.of(tmp_path / "nowhere")


def test_the_operator_canaries_against_what_serves_when_the_champion_was_deleted(
    store, registry, tmp_path, caplog
) -> None:
    from movielab.recommender.release.operator import Operator
    from movielab.recommender.serving.server import OneServer

    servers = []

    def start_serving(folder: Path) -> OneServer:
        servers.append(OneServer(folder))
        return servers[-1]

    op = Operator(store, retrainer(store, registry, tmp_path), start_serving, tmp_path / "operator")
    try:
        first = op.retrain()
        assert first.decision == "champion" and op.serving is servers[0]
        served = op.serving.champion
        registry._client.delete_model_version(registry.name, first.registered_version)
        second = op.retrain()
        assert second.status == "accepted" and second.decision == "challenger" and second.champion_alias_missing
        assert op.serving.champion == served  # the old model still serves everyone but the canary's share
        exp = op.experiment
        assert exp is not None and not exp.finished and exp.share == op.plan.steps[0] < 1.0
        assert exp.champion == f"{first.model}/{first.artifact_version}"  # the reference is what serves
        assert op.serving.app.state.serving.challenger is not None and len(servers) == 1
        assert "champion alias is missing" in caplog.text
    finally:
        for server in servers:
            server.stop()
