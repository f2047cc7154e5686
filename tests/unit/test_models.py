"""One contract for every registered model, on data with a known answer; then model-specific checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from movielab.recommender.errors import ModelFitError, ModelLoadError, UnknownModel
from movielab.recommender.training.data import TrainingData
from movielab.recommender.training.models import MODELS, Model, create
from movielab.recommender.training.models.als import confidence
from movielab.recommender.training.models.base import FALLBACK_N

GROUPS = ((8, 100), (6, 200))  # (users, first user id): group g watches its own block of items


def block_data(nan: bool = False) -> TrainingData:
    """Two disjoint groups, each watching its own block of items; user i of a group misses the block's item i.

    Group A: 8 users × items a0..a7 (7 watchers each); group B: 6 users × items b0..b5 (5 watchers each).
    Right answers: a personalised model's top pick is the missing item of the user's block; popularity's
    is the most-watched unseen item (for a B user: any A item).
    """
    rng = np.random.default_rng(0)
    users, movies, watched, ratings = [], [], [], []
    for g, (n, first_id) in enumerate(GROUPS):
        block = [f"{'ab'[g]}{i}" for i in range(n)]
        for u in range(n):
            for i, movie in enumerate(block):
                if i != u:
                    users.append(first_id + u)
                    movies.append(movie)
                    watched.append(rng.uniform(0.3, 1.0) if (u + i) % 3 else 0.0)
                    ratings.append(float(rng.integers(1, 6)) if (u + i) % 3 != 1 else 0.0)
    if nan:
        watched[3] = float("nan")
    times = 1.7e9 + np.arange(len(users), dtype=np.float64)
    segments = {uid: 3 for uid in users if uid < 200}
    return TrainingData.from_triples(
        np.array(users), movies, np.array(watched), np.array(ratings), times, segments, snapshot_id="blocks"
    )


def missing_item(data: TrainingData, row: int) -> str:
    """The item of the user's block that the user has not seen."""
    uid = int(data.users[row])
    group = 0 if uid < 200 else 1
    return f"{'ab'[group]}{uid - GROUPS[group][1]}"


def seen_of(data: TrainingData, row: int) -> set[int]:
    """Item columns the user interacted with."""
    x = data.interactions
    return set(x.indices[x.indptr[row] : x.indptr[row + 1]].tolist())


class ModelContract:
    """The contract: each subclass supplies `make()` (a fresh model) and, if it differs, `expected_top`."""

    kind: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}

    def make(self) -> Model:
        """A fresh model for the synthetic data."""
        return create(self.kind, **self.params)

    def expected_top(self, data: TrainingData, row: int) -> set[str]:
        """Items that are a right first recommendation for the user row."""
        return {missing_item(data, row)}

    @pytest.fixture
    def data(self) -> TrainingData:
        return block_data()

    @pytest.fixture
    def fitted(self, data: TrainingData) -> Model:
        return self.make().fit(data)

    def test_fit_returns_self(self, data: TrainingData) -> None:
        model = self.make()
        assert model.fit(data) is model
        assert model.name == self.kind and MODELS[self.kind] is type(model)

    def test_known_answer(self, fitted: Model, data: TrainingData) -> None:
        top = fitted.recommend_rows(np.arange(len(data.users)), n=1)[:, 0]
        for row, item in enumerate(top):
            assert data.items[item] in self.expected_top(data, row), f"user {data.users[row]}"

    def test_scores_shape_and_dtype(self, fitted: Model, data: TrainingData) -> None:
        s = fitted.scores(np.array([0, 3, 9]))
        assert s.shape == (3, len(data.items)) and s.dtype == np.float32 and np.isfinite(s).all()

    def test_recommend_rows_shape_dtype_and_padding(self, fitted: Model, data: TrainingData) -> None:
        rows = np.arange(len(data.users))
        recs = fitted.recommend_rows(rows, n=20)
        assert recs.shape == (len(rows), 20) and recs.dtype == np.int32
        for row in rows:
            n_unseen = len(data.items) - len(seen_of(data, row))
            assert (recs[row, :n_unseen] >= 0).all() and (recs[row, n_unseen:] == -1).all()
        everything = fitted.recommend_rows(rows, n=20, exclude_seen=False)
        assert (everything[:, : len(data.items)] >= 0).all() and (everything[:, len(data.items) :] == -1).all()

    def test_no_seen_items_and_distinct(self, fitted: Model, data: TrainingData) -> None:
        recs = fitted.recommend_rows(np.arange(len(data.users)), n=5)
        for row, line in enumerate(recs):
            got = line[line >= 0].tolist()
            assert not set(got) & seen_of(data, row)
            assert len(got) == len(set(got))

    def test_recommend_by_user_id(self, fitted: Model, data: TrainingData) -> None:
        for row, uid in enumerate(data.users.tolist()):
            ids = fitted.recommend(uid, n=10)
            seen_ids = {data.items[i] for i in seen_of(data, row)}
            assert ids and len(ids) == len(set(ids)) and not set(ids) & seen_ids
            assert all(isinstance(i, str) for i in ids)
            assert ids[0] in self.expected_top(data, row)

    def test_unknown_user_gets_the_fallback(self, fitted: Model, data: TrainingData) -> None:
        assert fitted.row_of(10**9) is None
        assert fitted.recommend(10**9, n=5) == fitted.fallback(-1)[:5]
        assert fitted.recommend(10**9, n=5, segment=3) == fitted.fallback(3)[:5]
        assert fitted.fallback(-1)[0].startswith("a")  # the A items have the most watchers
        assert len(fitted.fallback(-1)) == min(FALLBACK_N, len(data.items))

    def test_save_load_gives_the_same_model(self, fitted: Model, data: TrainingData, tmp_path: Path) -> None:
        fitted.save(tmp_path / "m")
        loaded = Model.load(tmp_path / "m")
        assert type(loaded) is type(fitted) and loaded.params() == fitted.params()
        rows = np.arange(len(data.users))
        np.testing.assert_array_equal(loaded.recommend_rows(rows, n=20), fitted.recommend_rows(rows, n=20))
        for uid in [*data.users.tolist(), 10**9]:
            assert loaded.recommend(uid) == fitted.recommend(uid)
        assert loaded.nbytes == fitted.nbytes > 0
        mapped = type(fitted).load(tmp_path / "m", mmap=True)
        np.testing.assert_array_equal(mapped.recommend_rows(rows, n=3), fitted.recommend_rows(rows, n=3))

    def test_artifacts_are_arrays_and_json_only(self, fitted: Model, data: TrainingData, tmp_path: Path) -> None:
        fitted.save(tmp_path)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert all(name.endswith((".json", ".npy", ".npz")) for name in files), files
        for path in tmp_path.glob("*.np[yz]"):
            np.load(path, allow_pickle=False)  # raises on object arrays
        meta = json.loads((tmp_path / "model.json").read_text())
        assert meta["name"] == self.kind and meta["params"] == fitted.params()
        assert (meta["n_users"], meta["n_items"], meta["format_version"]) == (len(data.users), len(data.items), 1)

    def test_nan_input_is_refused(self) -> None:
        with pytest.raises(ModelFitError, match="NaN"):
            self.make().fit(block_data(nan=True))

    def test_empty_data_is_refused(self) -> None:
        empty = TrainingData.from_triples(np.zeros(0, np.int64), [], np.zeros(0), np.zeros(0), np.zeros(0))
        with pytest.raises(ModelFitError, match="empty"):
            self.make().fit(empty)


class TestPopularity(ModelContract):
    kind = "popularity"

    def expected_top(self, data: TrainingData, row: int) -> set[str]:
        counts = np.bincount(data.interactions.indices, minlength=len(data.items))
        unseen = np.setdiff1d(np.arange(len(data.items)), list(seen_of(data, row)))
        return {data.items[i] for i in unseen[counts[unseen] == counts[unseen].max()]}


class TestItemKNN(ModelContract):
    kind = "itemknn"
    params: ClassVar[dict[str, Any]] = {"k": 5}


class TestEASE(ModelContract):
    kind = "ease"
    params: ClassVar[dict[str, Any]] = {"lam": 1.0}


class TestALS(ModelContract):
    kind = "als"
    params: ClassVar[dict[str, Any]] = dict(factors=8, regularization=0.01, iterations=20, alpha=5.0, num_threads=1)

    @pytest.fixture(autouse=True)
    def _needs_implicit(self) -> None:
        pytest.importorskip("implicit")


def test_every_registered_model_has_a_contract_test() -> None:
    tested = {cls.kind for cls in ModelContract.__subclasses__()}
    assert tested == set(MODELS)


def test_create_names_the_known_models() -> None:
    with pytest.raises(UnknownModel, match="known models: als, costaware, ease, itemknn, popularity"):
        create("svd")
    with pytest.raises(ValueError, match="no parameter lambda; its parameters: lam, max_items"):
        create("ease", **{"lambda": 3})


def test_load_refuses_missing_or_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.json"):
        Model.load(tmp_path)
    model = create("popularity").fit(block_data())
    model.save(tmp_path)
    with pytest.raises(ModelLoadError, match="not a EASE"):
        MODELS["ease"].load(tmp_path)
    (tmp_path / "counts.npy").unlink()
    with pytest.raises(ModelLoadError, match=r"counts\.npy"):
        Model.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 1, "name": "svd", "params": {}}))
    with pytest.raises(ModelLoadError, match="unknown model 'svd'"):
        Model.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ModelLoadError, match="format version 99"):
        Model.load(tmp_path)


def test_unfitted_model_cannot_recommend_or_save(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        create("ease").recommend(1)
    with pytest.raises(RuntimeError, match="not fitted"):
        create("ease").save(tmp_path)


def test_ease_refuses_catalogs_above_its_limit() -> None:
    with pytest.raises(ModelFitError, match="14 items exceed max_items=10"):
        create("ease", max_items=10).fit(block_data())


def test_itemknn_keeps_at_most_k_neighbours() -> None:
    model = create("itemknn", k=2).fit(block_data())
    assert np.diff(model.sim_indptr).max() <= 2
    assert (model.similarity.diagonal() == 0).all()


def test_segment_lists_follow_the_segment() -> None:
    # 25 users of segment 1 watch x then y; 25 of segment 2 watch z; the global favourite is x.
    users = [*range(25), *range(25), *range(100, 125), *range(200, 230)]
    movies = ["x"] * 25 + ["y"] * 25 + ["z"] * 25 + ["x"] * 30
    seg = {**dict.fromkeys(range(25), 1), **dict.fromkeys(range(100, 125), 2)}
    data = TrainingData.from_triples(
        np.array(users), movies, np.ones(len(users)), np.zeros(len(users)), np.zeros(len(users)), seg
    )
    model = create("popularity").fit(data)
    assert model.fallback(-1) == ["x", "y", "z"] or model.fallback(-1) == ["x", "z", "y"]
    assert model.fallback(1)[:2] == ["x", "y"] and model.fallback(2)[0] == "z"
    assert model.fallback(5) == model.fallback(-1)  # a segment with too few users gets the global list
    assert model.recommend(10**9, n=1, segment=2) == ["z"]


def test_als_confidence_is_one_plus_alpha_times_value() -> None:
    data = block_data()
    binary = confidence(data, 4.0, "binary")
    strength = confidence(data, 4.0, "strength")
    assert np.allclose(binary.data, 5.0)
    expected = 1 + 4.0 * data.watched.maximum(data.ratings / 5).toarray()
    assert np.allclose(strength.toarray()[strength.toarray() > 0], expected[expected > 1])
    assert (strength.indices == data.interactions.indices).all()
    with pytest.raises(ValueError, match="value must be one of"):
        confidence(data, 1.0, "stars")


class _NanModel(Model):
    name = "nan"

    def params(self) -> dict[str, Any]:
        return {}

    def _fit(self, data: TrainingData) -> None:
        pass

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.full((len(rows), self.n_items), np.nan, np.float32)


def test_nan_scores_are_refused() -> None:
    with pytest.raises(ModelFitError, match="NaN"):
        _NanModel().fit(block_data())


def test_als_popularity_weight_pulls_recommendations_towards_popular_items() -> None:
    data = block_data()
    plain = create("als", factors=4, iterations=5).fit(data)
    blended = create("als", factors=4, iterations=5, popularity_weight=100.0).fit(data)
    counts = np.asarray(data.interactions.sum(axis=0)).ravel()
    rows = np.arange(len(data.users))
    top_plain, top_blend = plain.recommend_rows(rows, n=1)[:, 0], blended.recommend_rows(rows, n=1)[:, 0]
    assert counts[top_blend].mean() > counts[top_plain].mean()
    unseen = [np.setdiff1d(np.arange(len(data.items)), list(seen_of(data, r))) for r in rows]
    assert all(counts[t] == counts[u].max() for t, u in zip(top_blend, unseen, strict=True))


class TestCostAware(ModelContract):
    kind = "costaware"
    params: ClassVar[dict[str, Any]] = {"base": "ease", "trade_off": 0.5, "base_params": {"lam": 1.0}}


def test_cost_aware_trades_relevance_for_cheaper_plays(tmp_path: Path) -> None:
    plain = block_data()
    # Item a7 (what user 100+7 is missing) costs 10 × the rest; item a6 costs nothing.
    costs = {m: 0.2 for m in plain.items} | {"a7": 2.0, "a6": 0.0}
    data = TrainingData(
        plain.users,
        plain.items,
        plain.watched,
        plain.ratings,
        plain.times,
        plain.segment,
        plain.snapshot_id,
        item_cost=np.array([costs[m] for m in plain.items], np.float32),
    )
    row = data.row_of(100)  # user 100 misses a0; a6 and a7 are seen
    free = create("costaware", base="ease", trade_off=0.0, base_params={"lam": 1.0}).fit(data)
    ease = create("ease", lam=1.0).fit(data)
    assert (
        free.recommend_rows(np.arange(data.users.size), n=5).tolist()
        == ease.recommend_rows(np.arange(data.users.size), n=5).tolist()
    )  # trade-off 0: the base ranking
    row7 = data.row_of(107)  # misses a7, the expensive one
    assert free.recommend(107, n=1) == ["a7"]
    costly = create("costaware", base="ease", trade_off=50.0, base_params={"lam": 1.0}).fit(data)
    assert costly.recommend(107, n=1) != ["a7"]  # a steep trade-off gives up the right answer for cheaper plays
    assert costly.scores(np.array([row7]))[0, data.items.index("a7")] < free.scores(np.array([row7]))[0].min()
    costly.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m")
    assert np.allclose(loaded.scores(np.array([row, row7])), costly.scores(np.array([row, row7])))
    with pytest.raises(ValueError, match="trade_off"):
        create("costaware", trade_off=-1.0)
    with pytest.raises(ValueError, match="re-rank itself"):
        create("costaware", base="costaware")
