"""Layers point inward: the contract imports nothing of ours, the world and the recommender never import each
other, and the recommender's stage packages import only stages below them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "movielab"
# The recommender's stages, bottom first; a stage may import only stages of a lower rank. Modules at the top of
# the package (config, errors, bootstrap, the commands) may import any stage; no stage imports them but
# `config` and `errors`.
STAGES = {"store": 0, "ingest": 1, "training": 2, "serving": 3, "monitoring": 4, "release": 5}
BASE = ("movielab.recommender.config", "movielab.recommender.errors")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("contract", ("movielab.world", "movielab.recommender", "movielab.kafka")),
        ("recommender", ("movielab.world",)),
        ("kafka", ("movielab.world", "movielab.recommender")),
        ("world", ("movielab.recommender", "movielab.course")),
        ("course", ("movielab.recommender",)),
    ],
)
def test_layers(package: str, forbidden: tuple[str, ...]) -> None:
    files = list((SRC / package).rglob("*.py"))
    assert files
    bad = {f"{p.relative_to(SRC)} imports {name}" for p in files for name in _imports(p) if name.startswith(forbidden)}
    assert not bad, sorted(bad)


def test_every_recommender_module_is_in_a_stage_or_at_the_top() -> None:
    root = SRC / "recommender"
    folders = {p.name for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES, key=STAGES.get))
def test_recommender_stages_import_only_downward(stage: str) -> None:
    files = list((SRC / "recommender" / stage).rglob("*.py"))
    assert files
    bad = set()
    for path in files:
        for name in _imports(path):
            if not name.startswith("movielab.recommender") or name.startswith(BASE):
                continue
            parts = name.split(".")
            target = parts[2] if len(parts) > 2 else None
            if target == stage:
                continue
            if target not in STAGES or STAGES[target] >= STAGES[stage]:
                bad.add(f"{path.relative_to(SRC)} ({stage}) imports {name}")
    assert not bad, sorted(bad)
