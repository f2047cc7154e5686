"""The one place that builds a world from its config (tests pass overrides)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from movielab.contract.editions import edition
from movielab.world.behavior import BehaviorParams, Discovery
from movielab.world.clock import SimClock, parse_start
from movielab.world.config import WorldConfig
from movielab.world.data.catalog import Catalog, build_catalog, scale_catalog
from movielab.world.data.demographics import utc_offsets
from movielab.world.data.movielens import load_movielens
from movielab.world.data.sources import fetch_ml100k
from movielab.world.data.types import MovieLensData
from movielab.world.engine import World
from movielab.world.manifest import Manifest
from movielab.world.population import ActivityModel, Demographics, Population, draw_population
from movielab.world.recs import NoService, RecommendationService
from movielab.world.scenarios import load as load_scenario
from movielab.world.scenarios.runtime import ScenarioRuntime
from movielab.world.sessionlog import SessionLog
from movielab.world.sinks import EventSink, NullSink
from movielab.world.truth import TasteModel, build_taste_model, fit_factors

logger = logging.getLogger(__name__)


@dataclass
class Universe:
    """Everything a world is built from, before it runs: data, catalog, hidden taste, demographics."""

    data: MovieLensData
    catalog: Catalog
    taste: TasteModel
    demographics: Demographics
    timings: dict[str, float] = field(default_factory=dict)


def load_data(config: WorldConfig) -> MovieLensData:
    """Load the configured MovieLens data set (ml-100k through its source chain)."""
    if config.dataset == "ml-100k":
        return fetch_ml100k(config.data_dir, config.cache_dir, allow_download=config.allow_download)
    if config.data_dir is None:
        raise ValueError(f"dataset {config.dataset} needs data_dir: a folder holding it in its native format")
    return load_movielens(config.dataset, config.data_dir)


def build_universe(config: WorldConfig, data: MovieLensData | None = None) -> Universe:
    """Fit the hidden taste model and build the (scaled) catalog."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = data if data is not None else load_data(config)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    catalog = build_catalog(data, seed=config.seed)
    if config.movies is not None and config.movies > len(catalog):
        catalog = scale_catalog(catalog, config.movies, seed=config.seed)
    timings["catalog"] = time.perf_counter() - t
    t = time.perf_counter()
    factors = fit_factors(data.ratings, data.n_users, len(data.movies), k=config.factors, seed=config.seed)
    users = data.users
    taste = build_taste_model(
        factors,
        data.movies.genres,
        catalog.genres,
        users.age if users else None,
        users.gender if users else None,
        users.occupation if users else None,
        seed=config.seed,
    )
    timings["fit"] = time.perf_counter() - t
    demographics = Demographics.fit(users, utc_offsets(users.zip_code) if users else None)
    return Universe(data, catalog, taste, demographics, timings)


def browse_weights(catalog: Catalog, params: BehaviorParams) -> np.ndarray:
    """How likely a user finds each movie without recommendations: by how often it was rated."""
    return (catalog.vote_count.astype(np.float64) + 1.0) ** params.popularity_power


def discovery(catalog: Catalog, taste: TasteModel, params: BehaviorParams, seed: int = 0) -> Discovery:
    """How users find movies: through taste neighbourhoods of the hidden factors and genres, and popularity."""
    return Discovery.build(
        taste.item_factors,
        catalog.genres,
        browse_weights(catalog, params),
        params.taste_clusters,
        params.taste_share,
        params.taste_temperature,
        seed,
    )


def familiarity(catalog: Catalog, params: BehaviorParams) -> np.ndarray:
    """Utility of knowing a title: `params.familiarity` stars per tenfold of its rating count."""
    return (params.familiarity * np.log10(catalog.vote_count.astype(np.float64) + 1.0)).astype(np.float32)


def build_world(
    config: WorldConfig,
    *,
    universe: Universe | None = None,
    service: RecommendationService | None = None,
    sink: EventSink | None = None,
    journal: list[tuple] | None = None,
    params: BehaviorParams | None = None,
    activity: ActivityModel | None = None,
    population: Population | None = None,
    sessionlog: SessionLog | None = None,
    scenario: ScenarioRuntime | None = None,
) -> tuple[World, Universe]:
    """Build a ready-to-run world (and what it was built from) from `config` and optional overrides.

    With `config.scenario` (and no `scenario` override) the world runs that scenario, writing its manifest
    to `config.manifest` (kept in memory only when that is None).
    """
    universe = universe or build_universe(config)
    params = params or BehaviorParams()
    activity = activity or ActivityModel()
    start = parse_start(config.start)
    t = time.perf_counter()
    rng = np.random.default_rng([config.seed, 2])
    # Accounts were created over the year before the start.
    created = start - rng.random(config.users) * 365 * 86400
    expected_arrivals = int(config.arrivals_per_day * config.users * (config.days or 30) * 1.2) + 64
    if population is None:  # a given population (the fidelity report's ml-100k users) replaces the drawn one
        population = draw_population(
            config.users,
            universe.demographics,
            universe.taste,
            activity,
            created,
            rng,
            capacity=config.users + expected_arrivals,
        )
    universe.timings["population"] = time.perf_counter() - t
    world = World(
        slugs=universe.catalog.slug,
        runtime=universe.catalog.runtime,
        browse_weights=browse_weights(universe.catalog, params),
        familiarity=familiarity(universe.catalog, params),
        taste=universe.taste,
        population=population,
        demographics=universe.demographics,
        activity=activity,
        service=service or NoService(),
        sink=sink if sink is not None else NullSink(),
        clock=SimClock(start, config.speed),
        seed=config.seed,
        arrivals_per_day=config.arrivals_per_day * config.users,
        params=params,
        journal=journal,
        edition=edition(config.edition),
        lanes=len(config.teams) if config.pacing == "team" else 1,
        discovery=discovery(universe.catalog, universe.taste, params, config.seed),
        sessionlog=sessionlog,
        scenario=scenario or scenario_runtime(config, universe),
    )
    return world, universe


def scenario_runtime(config: WorldConfig, universe: Universe) -> ScenarioRuntime | None:
    """The scenario `config` names (a preset or a TOML file) bound to this universe, or None."""
    if config.scenario is None:
        return None
    return ScenarioRuntime(
        load_scenario(config.scenario),
        catalog=universe.catalog,
        n_teams=len(config.teams),
        seed=config.seed,
        run_start=parse_start(config.start),
        manifest=Manifest(config.manifest),
        team_urls=config.teams,
        time_scale=config.scenario_time_scale,
    )


def run_until(config: WorldConfig) -> float | None:
    """The simulated end time of a run, or None to run until stopped."""
    return None if config.days is None else parse_start(config.start) + config.days * 86400
