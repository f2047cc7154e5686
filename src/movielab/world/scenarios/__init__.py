"""Scenarios: the world's drift, faults, bias and attacks declared on a timeline (TOML, validated), applied
where each belongs (hidden state, lines, API), and recorded in a hidden manifest (`movielab.world.manifest`).

`load(name_or_path)` reads a preset (`presets()` lists them) or a file; `schema` holds the file's models,
`runtime.ScenarioRuntime` runs one against a world.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from movielab.world.scenarios.schema import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = ["Scenario", "ScenarioError", "load", "load_scenario", "presets"]


def _preset_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("movielab.world.scenarios") / "presets"
    return {f.name[: -len(".toml")]: f for f in folder.iterdir() if f.name.endswith(".toml")}


def presets() -> list[tuple[str, str]]:
    """(name, one-line description) of every preset that ships, by name."""
    out = []
    for name, f in sorted(_preset_files().items()):
        out.append((name, tomllib.loads(f.read_text(encoding="utf-8")).get("description", "")))
    return out


def load(name_or_path: str | Path) -> Scenario:
    """A preset by name (`semester`) or a TOML file by path; ScenarioError naming it when neither works."""
    files = _preset_files()
    if str(name_or_path) in files:
        f = files[str(name_or_path)]
        return parse_scenario(tomllib.loads(f.read_text(encoding="utf-8")), f"preset {name_or_path}")
    path = Path(name_or_path)
    if not path.exists():
        raise ScenarioError(
            f"scenario {name_or_path}: no such file and no such preset (presets: {', '.join(sorted(files))})"
        )
    return load_scenario(path)
