"""Recommender commands that only read the event store refuse a missing one by name and create nothing."""

from __future__ import annotations

import pytest

from movielab.cli import main
from movielab.recommender.errors import StoreError
from movielab.recommender.store.events import EventStore


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--model", "ease"],
        ["evaluate"],
        ["evaluate", "--snapshot", "s1"],
        ["retrain"],
    ],
)
def test_a_missing_store_is_named_and_not_created(args, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder: the default store is .movielab/recommender/store.duckdb
    assert main(["recommender", *args]) == 2
    err = capsys.readouterr().err
    assert err == (
        "movielab: error: no event store at .movielab/recommender/store.duckdb: run `movielab recommender ingest` "
        "(or `operate`) first, or pass --store\n"
    )
    assert list(tmp_path.iterdir()) == []  # no store, no folder, no snapshot


def test_only_a_writer_creates_the_store(tmp_path) -> None:
    path = tmp_path / "deep" / "store.duckdb"
    with pytest.raises(StoreError, match=f"no event store at {path}"):
        EventStore(path, existing=True)
    assert not (tmp_path / "deep").exists()
    with EventStore(path) as store:  # ingest and operate open it this way: created
        assert store.counts()["events"] == 0
    with EventStore(path, existing=True) as store:  # and then readers open it
        assert store.counts()["events"] == 0
