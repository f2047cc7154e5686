"""Layers point inward: the contract imports nothing of ours, the recommender never imports the world."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "movielab"


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
    [("contract", ("movielab.world", "movielab.recommender", "movielab.kafka")),
     ("recommender", ("movielab.world",)), ("kafka", ("movielab.world", "movielab.recommender")),
     ("world", ("movielab.recommender", "movielab.course")), ("course", ("movielab.recommender",))],
)  # fmt: skip
def test_layers(package: str, forbidden: tuple[str, ...]) -> None:
    files = list((SRC / package).rglob("*.py"))
    assert files
    bad = {f"{p.relative_to(SRC)} imports {name}" for p in files for name in _imports(p) if name.startswith(forbidden)}
    assert not bad, sorted(bad)
