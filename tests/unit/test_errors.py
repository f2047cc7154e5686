"""Every error movielab raises on purpose shares one root, so a caller (the CLI) can tell them from bugs."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import movielab
from movielab.cli import main
from movielab.errors import ModelFitError, MovielabError


def _error_classes() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(movielab.__path__, "movielab."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_public_error_class_is_a_movielab_error() -> None:
    classes = _error_classes()
    assert len(classes) > 30
    assert sorted(n for n, c in classes.items() if not issubclass(c, MovielabError)) == []


def test_the_world_and_the_recommender_each_have_their_model_fit_error_under_one_base() -> None:
    from movielab.recommender.errors import ModelFitError as RecommenderFit
    from movielab.world.truth import ModelFitError as TruthFit

    assert RecommenderFit is not TruthFit
    assert issubclass(RecommenderFit, ModelFitError) and issubclass(TruthFit, ModelFitError)
    assert issubclass(RecommenderFit, RuntimeError) and issubclass(TruthFit, RuntimeError)  # old bases kept


@pytest.mark.parametrize("error", [MovielabError("the thing: the reason"), ModelFitError("the thing: the reason")])
def test_the_cli_prints_our_errors_as_one_line(error, monkeypatch, capsys) -> None:
    import movielab.cli as cli

    def fail(args) -> int:
        raise error

    monkeypatch.setattr(cli, "_cmd_data_fetch", fail)
    assert main(["data", "fetch"]) == 2
    assert capsys.readouterr().err == "movielab: error: the thing: the reason\n"
