"""`movielab recommender train | evaluate | serve` on a store ingested from a real broker and world API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from movielab.auth import read_tokens
from movielab.cli import main
from movielab.kafka import EmbeddedBroker, KafkaSink, ensure_topics
from movielab.recommender.ingest.consumer import Ingestor
from movielab.recommender.ingest.worldapi import WorldApi
from movielab.recommender.store.events import EventStore
from movielab.webserver import ServerThread, free_port
from movielab.world.api import create_app
from movielab.world.bootstrap import build_world
from movielab.world.config import WorldConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store_file(universe, tmp_path_factory) -> Path:
    """A DuckDB store holding half a simulated day of 3,000 users, ingested from Kafka."""
    path = tmp_path_factory.mktemp("rec") / "store.duckdb"
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, ["movielog1"], partitions=2)
        config = WorldConfig(users=3000, days=0.5, allow_download=False)
        world, _ = build_world(config, universe=universe, sink=KafkaSink(broker.bootstrap, "movielog1"))
        world.run(until=world.now + 12 * 3600)
        with (
            ServerThread(create_app(world.pop, universe.catalog, taste=universe.taste, rate_limit=None)) as api,
            WorldApi(api.url) as wapi,
        ):
            with EventStore(path) as store:
                Ingestor(broker.bootstrap, ["movielog1"], store, wapi).run_until_idle(idle_seconds=2.0)
                assert store.counts()["events"] == sum(world.stats.lines.values())
    return path


def test_train_evaluate_serve(store_file: Path, tmp_path: Path, capsys) -> None:
    artifacts = tmp_path / "models"
    common = ["--store", str(store_file), "--artifacts", str(artifacts)]
    assert main(["recommender", "train", *common, "--model", "popularity"]) == 0
    assert main(["recommender", "train", *common, "--model", "ease", "--params", '{"lam": 100}']) == 0
    out = capsys.readouterr().out
    manifest = json.loads(out[out.rindex('{\n  "folder"') :])
    assert manifest["model"] == "ease" and manifest["version"] == "v0001" and manifest["params"]["lam"] == 100
    assert len(manifest["snapshot_id"]) == 16 and manifest["code_version"].startswith("0.1.0")
    assert not list(artifacts.rglob("*.pkl")) and not list(artifacts.rglob("*.pickle"))
    report = tmp_path / "table.md"
    assert main(["recommender", "evaluate", *common, "--models", "popularity,ease", "--out", str(report)]) == 0
    table = report.read_text()
    assert "| popularity" in table and "| ease" in table and "NDCG@10" in table
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "movielab",
            "recommender",
            "serve",
            *common,
            "--model",
            "ease",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--tokens",
            str(tmp_path / "tok"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("serving ease/v0001")
        for _ in range(100):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/recommend/1", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert r.headers["x-model"].startswith(f"ease/v0001; snapshot={manifest['snapshot_id']}")
        ids = r.text.split(",")
        assert 1 <= len(ids) <= 20 and len(set(ids)) == len(ids) and " " not in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/recommend/abc", timeout=2).status_code == 400
        # admin and explain: not on the serving port; on their own port only with the token (file mode 0600)
        assert httpx.get(f"http://127.0.0.1:{port}/admin/state", timeout=2).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{admin_port}/explain/1", timeout=2).status_code == 401
        assert (tmp_path / "tok").stat().st_mode & 0o777 == 0o600
        headers = read_tokens(tmp_path / "tok").headers()
        assert httpx.get(f"http://127.0.0.1:{admin_port}/explain/1", headers=headers, timeout=10).json()["user"] == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_bad_arguments_are_named(store_file: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(["recommender", "train", "--store", str(store_file), "--artifacts", str(tmp_path), "--model", "svd"]) == 2
    )
    assert "unknown model 'svd'" in capsys.readouterr().err
    assert main(["recommender", "serve", "--artifacts", str(tmp_path / "none"), "--store", str(store_file)]) == 2
    assert "no trained model" in capsys.readouterr().err


def test_evaluate_on_a_ratings_file_runs_the_published_protocol(tmp_path: Path, capsys) -> None:
    # 40 users in two taste groups over 30 movies: group A rates movies 0-14, group B movies 15-29
    rng = np.random.default_rng(0)
    lines = []
    for u in range(40):
        pool = np.arange(15) if u % 2 == 0 else np.arange(15, 30)
        for m in rng.choice(pool, 12, replace=False):
            lines.append(f"{u + 1}\t{m + 1}\t{rng.integers(1, 6)}\t{880000000 + len(lines)}")
    (tmp_path / "u.data").write_text("\n".join(lines) + "\n")
    out = tmp_path / "table.md"
    assert (
        main(
            [
                "recommender",
                "evaluate",
                "--ratings",
                str(tmp_path),
                "--models",
                "popularity,ease",
                "--params",
                '{"ease": {"lam": 10}}',
                "--seeds",
                "0,1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = out.read_text()
    assert "u.data: 480 ratings, per-user random 80/20 split" in table and "seeds 0,1" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    ndcg = {name.split(" ")[0]: float(row.split("|")[2].split("±")[0]) for name, row in rows.items() if name != "model"}
    assert ndcg["ease"] > ndcg["popularity"]  # the groups are learnable; popularity mixes them
    capsys.readouterr()
    assert (
        main(["recommender", "evaluate", "--ratings", str(tmp_path), "--models", "ease", "--params", '{"als": {}}'])
        != 0
    )
    assert "--params names models not in --models: als" in capsys.readouterr().err
