"""Every model by name (`MODELS`), and `create(name, **params)`; the MLflow registry of trained versions is `training.registry`."""

from __future__ import annotations

import inspect

from movielab.recommender.errors import ModelFitError, ModelLoadError, UnknownModel
from movielab.recommender.training.models.als import ALS
from movielab.recommender.training.models.base import Model
from movielab.recommender.training.models.costaware import CostAware
from movielab.recommender.training.models.ease import EASE
from movielab.recommender.training.models.itemknn import ItemKNN
from movielab.recommender.training.models.popularity import Popularity

MODELS: dict[str, type[Model]] = {cls.name: cls for cls in (Popularity, ItemKNN, ALS, EASE, CostAware)}


def create(name: str, **params) -> Model:
    """A new, unfitted model by registry name; raises UnknownModel or ValueError for unknown parameters."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise UnknownModel(name, list(MODELS)) from None
    allowed = set(inspect.signature(cls).parameters)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"model {name!r} has no parameter {', '.join(unknown)}; "
            f"its parameters: {', '.join(sorted(allowed)) or 'none'}"
        )
    return cls(**params)


__all__ = [
    "ALS",
    "EASE",
    "MODELS",
    "CostAware",
    "ItemKNN",
    "Model",
    "ModelFitError",
    "ModelLoadError",
    "Popularity",
    "UnknownModel",
    "create",
]
