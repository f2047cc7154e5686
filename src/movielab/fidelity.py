"""Fidelity of the world to the data it was fitted to: the same figures, the same protocol, side by side.

A population shaped like ml-100k — its 943 users' demographics (taste drawn given them, as the
world draws every user), its 1,682 movies — lives in the world, with no recommendation service,
until each simulated user has started as many distinct movies as the real user rated (users who
reached their count stop acting; extra viewings of the last day are cut by time). Each user acts at a
pace set by their real count and heavy users binge more, so that all 943 reach their counts (about
57 simulated days, ~70 s of simulation). Then both
interaction sets go through the recommender's published protocol (`ml100k_protocol`: per-user
random 80/20, full ranking, seeds 0–4) and through the same descriptive figures:

- NDCG@10 and Recall@20 of popularity, item-kNN, ALS and EASE (real: ratings; simulated: movies started);
- rating histogram (1–5 stars; simulated: each kept (user, movie) pair's first rating, like ml-100k's one
  rating per pair — the world rates a pair at most once, the report checks it), mean rating, mean and spread (std) of user means (users with ≥ 5 ratings);
- item popularity: share of interactions on the top 10% of movies, Gini of interactions per movie;
- per-user activity (interactions per user: quantiles), genre shares of interactions;
- watch completion (simulated only: ml-100k has no viewings) and the time between sessions
  (real: gaps over 1 h between a user's consecutive ratings; simulated: between recommendation requests).

This module may import both the world and the recommender (like the demo); neither imports it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from movielab.recommender.training.evaluate import ml100k_protocol
from movielab.recommender.training.models import create
from movielab.world.behavior import BehaviorParams
from movielab.world.bootstrap import Universe, build_universe, build_world
from movielab.world.clock import parse_start
from movielab.world.config import WorldConfig
from movielab.world.data.demographics import utc_offsets
from movielab.world.data.types import GENRES
from movielab.world.population import Population
from movielab.world.recs import NoService

logger = logging.getLogger(__name__)

DAY = 86_400
# The recommender's tuned ml-100k parameters (benchmarks/offline.py DEFAULTS), used for both data sets.
MODEL_PARAMS: dict[str, dict[str, object]] = {
    "popularity": {},
    "itemknn": {"k": 1600},
    "als": {"factors": 16, "alpha": 1.0, "regularization": 0.1, "value": "binary"},
    "ease": {"lam": 500.0},
}
SESSION_GAP = 3600.0  # seconds between two real ratings that start a new session


@dataclass
class Interactions:
    """One data set's (user, movie) interactions and what goes with them (rows index users/movies)."""

    user: np.ndarray  # int64 user row
    movie: np.ndarray  # int64 movie row
    time: np.ndarray  # float64 unix seconds
    ratings: np.ndarray  # float32 (n_ratings, 3): user row, movie row, stars 1..5
    session_gaps_h: np.ndarray  # float64 hours between a user's consecutive sessions
    completion: np.ndarray | None = None  # share of runtime watched per viewing (simulated only)
    n_users: int = 0
    n_movies: int = 0
    notes: dict[str, float] = field(default_factory=dict)


class _RatingsAndCompletion:
    """A sink that keeps rating lines, session starts and each viewing's furthest minute; counts the rest."""

    def __init__(self, slug_row: dict[str, int]) -> None:
        self.slug_row = slug_row
        self.ratings: list[tuple[int, int, int]] = []
        self.max_minute: dict[tuple[int, int], int] = {}
        self.lines = 0

    def write(self, keys: Sequence[int], lines: Sequence[str]) -> None:
        """Parse what the figures need from the batch."""
        self.lines += len(lines)
        rows, mm = self.slug_row, self.max_minute
        for line in lines:
            _, user, rest = line.split(",", 2)
            if rest.startswith("GET /data/m/"):
                slug, minute = rest[12:-4].rsplit("/", 1)
                key = (int(user), rows[slug])
                m = int(minute)
                if mm.get(key, 0) < m:
                    mm[key] = m
            elif rest.startswith("GET /rate/"):
                slug, stars = rest[10:].rsplit("=", 1)
                self.ratings.append((int(user), rows[slug], int(stars)))

    def close(self) -> None:
        """Nothing to release."""


def real_interactions(universe: Universe) -> Interactions:
    """ml-100k's ratings as interactions, with their session gaps."""
    r = universe.data.ratings
    order = np.lexsort((r.timestamp, r.user))
    u, t = r.user[order].astype(np.int64), r.timestamp[order].astype(np.float64)
    gaps = np.diff(t)[np.diff(u) == 0]
    ratings = np.column_stack([r.user, r.movie, r.rating]).astype(np.float32)
    return Interactions(
        r.user.astype(np.int64),
        r.movie.astype(np.int64),
        r.timestamp.astype(np.float64),
        ratings,
        gaps[gaps > SESSION_GAP] / 3600.0,
        None,
        universe.data.n_users,
        len(universe.data.movies),
    )


def _population_like_ml100k(
    universe: Universe, target: np.ndarray, days: float, start: float, rng: np.random.Generator
) -> Population:
    """The real users' demographics, taste drawn given them, activity set to reach `target` in about `days`."""
    users = universe.data.users
    if users is None:
        raise ValueError(f"{universe.data.name} has no user demographics: the fidelity report needs ml-100k or ml-1m")
    n = len(users)
    vec, bias = universe.taste.draw_users(users.age, users.gender, users.occupation, rng)
    zips = np.array([int(z[:3]) if z[:3].isdigit() else 0 for z in users.zip_code], dtype=np.uint16)
    # Sessions a day so that the user's count is reached in about `days` (some sessions end without a pick).
    # A day holds at most ~15 viewings, so heavy users (ml-100k's top user rated 737 movies) also binge more:
    # probability of picking another movie right after one = viewings a day needed / 10, within 0.3..0.9.
    need = target / days
    act = (1.5 * need).astype(np.float32)
    binge = np.clip(need / 10, 0.3, 0.9).astype(np.float32)
    return Population(
        age=users.age.astype(np.int16),
        gender=users.gender.astype(np.uint8),
        occupation=users.occupation.astype(np.uint8),
        utc_offset=np.asarray(utc_offsets(users.zip_code), np.int8),
        zip_prefix=zips,
        activity=act,
        binge=binge,
        created_at=np.full(n, start - DAY),
        taste=vec.astype(np.float32),
        bias=bias.astype(np.float32),
        size=n,
    )


def first_ratings(lines: Sequence[tuple[int, int, int]], kept: set[tuple[int, int]]) -> tuple[np.ndarray, int]:
    """Each kept (user row, movie row) pair's first rating, as ml-100k has one rating per pair.

    `lines`: (user id from 1, movie row, stars) in time order. Returns float32 (n, 3) rows of user row,
    movie row, stars, and how many later ratings of an already rated pair were left out (0 in this world,
    which rates a pair at most once; the report prints it).
    """
    out, rated, repeats = [], set(), 0
    for uid, mv, stars in lines:
        key = (uid - 1, mv)
        if key in rated:
            repeats += 1
        elif key in kept:
            rated.add(key)
            out.append((key[0], mv, stars))
    return np.array(out, dtype=np.float32).reshape(-1, 3), repeats


def simulated_interactions(
    universe: Universe, params: BehaviorParams | None = None, seed: int = 0, days: float = 20.0, max_days: float = 90.0
) -> Interactions:
    """Run an ml-100k-shaped population until each user started as many distinct movies as the real one rated."""
    data = universe.data
    target = np.bincount(data.ratings.user, minlength=data.n_users).astype(np.int64)
    config = WorldConfig(
        users=1, seed=seed, days=None, arrivals_per_day=0.0, allow_download=False, edition="2019"
    )  # ml-100k rates 1..5: compare on its scale
    slug_row = {s: i for i, s in enumerate(universe.catalog.slug)}
    sink, journal = _RatingsAndCompletion(slug_row), []
    start = parse_start(config.start)
    pop = _population_like_ml100k(universe, target, days, start, np.random.default_rng([seed, 12]))
    world, _ = build_world(
        config, universe=universe, service=NoService(), sink=sink, journal=journal, params=params, population=pop
    )
    seen: set[tuple[int, int]] = set()
    first: list[tuple[int, int, float]] = []
    sessions: list[tuple[int, float]] = []
    count = np.zeros(data.n_users, np.int64)
    pos, t_end = 0, world.now + max_days * DAY
    while world.now < t_end and (count < target).any():
        world.run(until=world.now + DAY)
        for kind, t, uid, slug, _ in journal[pos:]:
            if kind == "session":
                sessions.append((uid - 1, t))
            elif kind == "start":
                key = (uid - 1, slug_row[slug])
                if key not in seen:
                    seen.add(key)
                    first.append((key[0], key[1], t))
                    count[key[0]] += 1
        pos = len(journal)
        done = count >= target
        world.pop.activity[: data.n_users][done] = 0.0  # users with their count stop starting sessions
        world.pop.binge[: data.n_users][done] = 0.0
    arr = np.array(first, dtype=np.float64).reshape(-1, 3)
    order = np.lexsort((arr[:, 2], arr[:, 0]))
    arr = arr[order]
    u = arr[:, 0].astype(np.int64)
    rank = np.arange(len(u)) - np.searchsorted(u, u, side="left")
    keep = rank < target[u]  # each user's first `target` movies by time
    u, m, t = u[keep], arr[keep, 1].astype(np.int64), arr[keep, 2]
    kept = set(zip(u.tolist(), m.tolist(), strict=True))
    ratings, repeats = first_ratings(sink.ratings, kept)
    runtime = universe.catalog.runtime
    comp = [
        min(mm / max(int(runtime[mv]), 1), 1.0) for (uid, mv), mm in sink.max_minute.items() if (uid - 1, mv) in kept
    ]
    s = np.array(sessions, dtype=np.float64).reshape(-1, 2)
    s = s[np.lexsort((s[:, 1], s[:, 0]))]
    gaps = np.diff(s[:, 1])[np.diff(s[:, 0]) == 0] / 3600.0
    notes = {
        "simulated_days": (world.now - world.clock.start) / DAY,
        "users_short": float((count < target).sum()),
        "repeat_ratings_of_kept_pairs": float(repeats),
        "lines": float(sink.lines),
    }
    return Interactions(u, m, t, ratings, gaps, np.array(comp), data.n_users, len(data.movies), notes)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = equal, 1 = all on one)."""
    c = np.sort(np.asarray(counts, np.float64))
    n, total = len(c), c.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ c / (n * total))


def top_share(counts: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total held by the top `fraction` of entries."""
    c = np.sort(np.asarray(counts))[::-1]
    return float(c[: max(1, int(len(c) * fraction))].sum() / max(c.sum(), 1))


def describe(x: Interactions, genres: np.ndarray) -> dict[str, object]:
    """The descriptive figures of one data set (see the module docstring)."""
    stars = x.ratings[:, 2].astype(int)
    hist = np.bincount(stars, minlength=6)[1:6] / max(len(stars), 1)
    by_user = np.bincount(x.ratings[:, 0].astype(int), minlength=x.n_users)
    sums = np.bincount(x.ratings[:, 0].astype(int), weights=x.ratings[:, 2], minlength=x.n_users)
    rated = by_user >= 5
    user_means = sums[rated] / by_user[rated]
    per_item = np.bincount(x.movie, minlength=x.n_movies)
    per_user = np.bincount(x.user, minlength=x.n_users)
    g = genres[x.movie].sum(axis=0).astype(np.float64)
    gaps = x.session_gaps_h
    gaps_q = np.quantile(gaps, [0.25, 0.5, 0.75]).tolist() if len(gaps) else [math.nan] * 3
    comp = x.completion if x.completion is not None else np.empty(0)
    out: dict[str, object] = {
        "interactions": len(x.user),
        "ratings": len(stars),
        "rating_hist": hist.tolist(),
        "mean_rating": float(stars.mean()) if len(stars) else math.nan,
        "user_mean_mean": float(user_means.mean()) if len(user_means) else math.nan,
        "user_mean_std": float(user_means.std()) if len(user_means) else math.nan,
        "top10_share": top_share(per_item),
        "gini": gini(per_item),
        "per_user_q": np.quantile(per_user, [0.1, 0.5, 0.9, 1.0]).tolist(),
        "genre_share": (g / max(g.sum(), 1)).tolist(),
        "session_gap_h_q": gaps_q,
        "completion_mean": float(comp.mean()) if len(comp) else math.nan,
        "completion_full": float((comp >= 1).mean()) if len(comp) else math.nan,
        "popularity_curve": (np.cumsum(np.sort(per_item)[::-1]) / max(per_item.sum(), 1)).tolist(),
        "activity_sorted": np.sort(per_user)[::-1].tolist(),
    }
    return out


def protocol(x: Interactions, seeds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict[str, dict[str, float]]:
    """NDCG@10 and Recall@20 (mean and std over seeds) of each model under the published protocol."""
    rating = np.ones(len(x.user), np.float32)
    rows = ml100k_protocol(
        x.user,
        x.movie,
        rating,
        x.time,
        lambda: [create(n, **p) for n, p in MODEL_PARAMS.items()],
        seeds=seeds,
        latency_users=20,
    )
    return {
        r.model: {
            "ndcg@10": r.metrics["ndcg@10"],
            "recall@20": r.metrics["recall@20"],
            "ndcg@10_std": r.std.get("ndcg@10", 0.0),
        }
        for r in rows
    }


@dataclass
class Report:
    """Both data sets' figures and the checks of issue 12."""

    real: dict[str, object]
    sim: dict[str, object]
    models_real: dict[str, dict[str, float]]
    models_sim: dict[str, dict[str, float]]
    notes: dict[str, float]

    def checks(self) -> dict[str, bool]:
        """Each target: NDCG@10 within ±20% and the same model order; histogram ±2 points; top-10%/Gini ±10%."""
        out = {}
        for m, real in self.models_real.items():
            out[f"ndcg {m} ±20%"] = abs(self.models_sim[m]["ndcg@10"] / real["ndcg@10"] - 1) <= 0.2
        order = ["ease", "als", "itemknn", "popularity"]
        s = [self.models_sim[m]["ndcg@10"] for m in order]
        out["order ease > als > itemknn > popularity"] = all(a > b for a, b in itertools.pairwise(s))
        rh, sh = np.array(self.real["rating_hist"]), np.array(self.sim["rating_hist"])
        out["histogram ±2 points"] = bool(np.all(np.abs(rh - sh) <= 0.02))
        for k in ("top10_share", "gini"):
            out[f"{k} ±10%"] = abs(self.sim[k] / self.real[k] - 1) <= 0.1
        return out

    def table(self) -> str:
        """The side-by-side table as text."""
        r, s = self.real, self.sim
        lines = [f"{'':34}{'ml-100k':>12}{'simulated':>12}{'sim/real':>10}"]

        def row(name: str, a: float, b: float, fmt: str = "{:12.4f}") -> None:
            ratio = f"{b / a:10.2f}" if a and not math.isnan(a) and not math.isnan(b) else f"{'':10}"
            lines.append(f"{name:34}" + fmt.format(a) + fmt.format(b) + ratio)

        for m in ("popularity", "itemknn", "als", "ease"):
            row(f"NDCG@10 {m}", self.models_real[m]["ndcg@10"], self.models_sim[m]["ndcg@10"])
        for m in ("popularity", "itemknn", "als", "ease"):
            row(f"Recall@20 {m}", self.models_real[m]["recall@20"], self.models_sim[m]["recall@20"])
        row(
            "EASE / popularity NDCG@10",
            self.models_real["ease"]["ndcg@10"] / self.models_real["popularity"]["ndcg@10"],
            self.models_sim["ease"]["ndcg@10"] / self.models_sim["popularity"]["ndcg@10"],
            "{:12.2f}",
        )
        for i in range(5):
            row(f"ratings {i + 1}★ share", r["rating_hist"][i], s["rating_hist"][i], "{:12.3f}")
        row("mean rating", r["mean_rating"], s["mean_rating"], "{:12.3f}")
        row("mean of user means (≥5 ratings)", r["user_mean_mean"], s["user_mean_mean"], "{:12.3f}")
        row("std of user means", r["user_mean_std"], s["user_mean_std"], "{:12.3f}")
        row("top-10% movies' share", r["top10_share"], s["top10_share"], "{:12.3f}")
        row("Gini of interactions per movie", r["gini"], s["gini"], "{:12.3f}")
        for q, a, b in zip(("p10", "median", "p90", "max"), r["per_user_q"], s["per_user_q"], strict=True):
            row(f"interactions per user {q}", a, b, "{:12.0f}")
        row("interactions", r["interactions"], s["interactions"], "{:12.0f}")
        row("ratings", r["ratings"], s["ratings"], "{:12.0f}")
        for i in np.argsort(r["genre_share"])[::-1][:8]:
            row(f"genre share {GENRES[i]}", r["genre_share"][i], s["genre_share"][i], "{:12.3f}")
        for q, a, b in zip(("p25", "median", "p75"), r["session_gap_h_q"], s["session_gap_h_q"], strict=True):
            row(f"hours between sessions {q}", a, b, "{:12.1f}")
        row("watch completion (mean share)", math.nan, s["completion_mean"], "{:12.3f}")
        row("viewings watched to the end", math.nan, s["completion_full"], "{:12.3f}")
        lines.append("")
        lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in self.checks().items()]
        lines.append(
            "real: ml-100k ratings; simulated: distinct movies started, ratings: each pair's first; hours between real sessions are gaps "
            "over 1 h between ratings (MovieLens users rate in bursts), so that row is context, not a target; "
            "ml-100k has no viewings, so completion is simulated only."
        )
        lines.append("simulation: " + ", ".join(f"{k} {v:,.1f}" for k, v in self.notes.items()))
        return "\n".join(lines)


def _svg(
    path: Path, title: str, series: dict[str, Sequence[float]], xlabel: str, ylabel: str, log_y: bool = False
) -> None:
    """A minimal line chart as SVG (no plotting library): one polyline per series."""
    w, h, pad = 640, 400, 50
    ys = [np.log10(np.maximum(np.asarray(v, float), 1e-9)) if log_y else np.asarray(v, float) for v in series.values()]
    n = max(len(y) for y in ys)
    lo, hi = min(float(y.min()) for y in ys), max(float(y.max()) for y in ys)
    hi = hi if hi > lo else lo + 1
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
        f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">{xlabel}</text>',
        f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">{ylabel}</text>',
        f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" stroke="#888"/>',
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{(10**hi if log_y else hi):.3g}</text>',
        f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{(10**lo if log_y else lo):.3g}</text>',
    ]
    for i, (name, y) in enumerate(zip(series, ys, strict=True)):
        xs = pad + (w - 2 * pad) * np.arange(len(y)) / max(n - 1, 1)
        yy = h - pad - (h - 2 * pad) * (y - lo) / (hi - lo)
        step = max(1, len(y) // 400)  # at most ~400 points per line
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs[::step], yy[::step], strict=True))
        c = colors[i % len(colors)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{w - pad - 4}" y="{pad + 16 + 16 * i}" text-anchor="end" fill="{c}">{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def write_plots(report: Report, out: Path) -> list[Path]:
    """Write the rating histogram, popularity curve and activity curve as SVG, and all figures as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    r, s = report.real, report.sim
    files = [out / "ratings.svg", out / "popularity.svg", out / "activity.svg", out / "fidelity.json"]
    _svg(
        files[0],
        "Rating histogram",
        {"ml-100k": r["rating_hist"], "simulated": s["rating_hist"]},
        "stars 1..5",
        "share of ratings",
    )
    _svg(
        files[1],
        "Cumulative share of interactions, movies by popularity",
        {"ml-100k": r["popularity_curve"], "simulated": s["popularity_curve"]},
        "movies, most popular first",
        "share",
    )
    _svg(
        files[2],
        "Interactions per user, users by activity",
        {"ml-100k": r["activity_sorted"], "simulated": s["activity_sorted"]},
        "users, most active first",
        "interactions (log)",
        log_y=True,
    )
    files[3].write_text(
        json.dumps(
            {
                "real": r,
                "simulated": s,
                "models_real": report.models_real,
                "models_simulated": report.models_sim,
                "checks": report.checks(),
                "notes": report.notes,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    return files


def fidelity_report(
    config: WorldConfig | None = None,
    params: BehaviorParams | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    universe: Universe | None = None,
) -> Report:
    """Simulate the ml-100k-shaped population and compare it with ml-100k (see the module docstring)."""
    config = config or WorldConfig(dataset="ml-100k", arrivals_per_day=0.0, edition="2019")  # 1..5 stars as ml-100k
    if config.dataset not in ("ml-100k", "ml-1m") or config.movies is not None:
        raise ValueError(
            f"the fidelity report needs a data set with demographics and its own catalog "
            f"(ml-100k or ml-1m, no --movies); got {config.dataset} with movies={config.movies}"
        )
    universe = universe or build_universe(config)
    t = time.perf_counter()
    sim = simulated_interactions(universe, params, seed=config.seed)
    sim.notes["simulation_seconds"] = time.perf_counter() - t
    real = real_interactions(universe)
    genres = universe.catalog.genres[: sim.n_movies]
    return Report(describe(real, genres), describe(sim, genres), protocol(real, seeds), protocol(sim, seeds), sim.notes)
