"""Drift and feedback-loop detection: one window of the stream against a reference window.

Pure functions on arrays (`psi`, `ks`, `chi_square`, `gini`, `compare_numeric`, `compare_categorical`)
and a thin layer that pulls a window's distributions from the event store in one query
(`profile_window`) and compares two profiles (`compare`).

Thresholds (the credit-scoring PSI convention, also used by most model-monitoring tools):
PSI < 0.1 no meaningful shift; 0.1 <= PSI < 0.25 moderate shift, watch it; PSI >= 0.25 strong shift,
act (retrain, or look for a broken producer). KS and chi-square p-values are exported as well, but
with 10^5 users every tiny shift is "significant", so alerts use PSI (an effect size), not p-values.

Feedback loop: when the world's users mostly watch what they were recommended, and recommendations
concentrate on few movies, the model trains on its own output. The indicators: the share of new
watches that were in the user's latest recommendation list, catalog coverage of recommendations and
of watches, and the Gini coefficient of recommendation exposure across the catalog (0 = every movie
recommended equally often, 1 = one movie gets all exposure).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from scipy import stats

from movielab.recommender.errors import DriftError
from movielab.recommender.store.outcomes import good_answer_sql

logger = logging.getLogger(__name__)

PSI_MODERATE = 0.1
PSI_STRONG = 0.25
PSI_BINS = 10
PSI_EPSILON = 1e-4  # floor of a bucket's share, so an empty bucket gives a large but finite PSI
REQUEST_BUDGET_MS = 600  # the world's time-out: an answer after it counts as failed
FEATURES = ("rating", "activity", "genre", "age", "gender", "occupation")
# MovieLens-1M age groups: the world's demographics use its vocabulary.
AGE_BUCKETS = (
    (0, 18, "under 18"),
    (18, 25, "18-24"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 50, "45-49"),
    (50, 56, "50-55"),
    (56, 1000, "56+"),
)


# --- pure statistics ----------------------------------------------------------------------------
def psi(
    reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, epsilon: float = PSI_EPSILON
) -> float:
    """Population stability index of two aligned bucket counts: sum((c - r) * ln(c / r)) over bucket shares."""
    ref, cur = _counts(reference, "reference"), _counts(current, "current")
    if ref.shape != cur.shape:
        raise DriftError(f"psi needs aligned buckets: reference has {ref.size}, current has {cur.size}")
    if ref.sum() == 0 or cur.sum() == 0:
        raise DriftError(
            "psi needs counts in both windows: " + ("reference" if ref.sum() == 0 else "current") + " is empty"
        )
    r = np.maximum(ref / ref.sum(), epsilon)
    c = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bucket edges at the reference's quantiles (ties collapse, so discrete data get fewer buckets)."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        raise DriftError("quantile edges need a non-empty reference sample")
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def bucket_counts(sample: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of `sample` in the buckets (-inf, e0], (e0, e1], …, (e_last, inf)."""
    idx = np.searchsorted(edges, np.asarray(sample, dtype=np.float64), side="left")
    return np.bincount(idx, minlength=len(edges) + 1)


def psi_samples(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of two numeric samples, bucketed at the reference's quantiles."""
    edges = quantile_edges(reference, bins)
    return psi(bucket_counts(reference, edges), bucket_counts(current, edges))


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (scipy, asymptotic for large samples)."""
    ref, cur = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    if ref.size == 0 or cur.size == 0:
        raise DriftError(
            "ks needs two non-empty samples: " + ("reference" if ref.size == 0 else "current") + " is empty"
        )
    res = stats.ks_2samp(ref, cur, method="asymp" if ref.size * cur.size > 10_000 else "auto")
    return float(res.statistic), float(res.pvalue)


def chi_square(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity of two aligned category counts: (statistic, p-value)."""
    ref, cur = _counts(reference, "reference"), _counts(current, "current")
    if ref.shape != cur.shape:
        raise DriftError(f"chi-square needs aligned categories: reference has {ref.size}, current has {cur.size}")
    keep = (ref + cur) > 0  # a category neither window has carries no information (and breaks the test)
    if ref.sum() == 0 or cur.sum() == 0:
        raise DriftError("chi-square needs counts in both windows")
    if keep.sum() < 2:
        return 0.0, 1.0  # one category only: the two windows cannot differ
    res = stats.chi2_contingency(np.vstack([ref[keep], cur[keep]]), correction=False)
    return float(res.statistic), float(res.pvalue)


def gini(counts: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, → 1 = one holds everything); 0 for no counts."""
    x = np.sort(_counts(counts, "counts"))
    n, total = x.size, x.sum()
    if n == 0 or total == 0:
        return 0.0
    # Mean-difference form over sorted values: G = sum((2i - n - 1) x_i) / (n sum x), i = 1..n.
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def align(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The union of categories (sorted) and both count vectors over it (0 where a window lacks a category)."""
    keys = sorted(set(reference) | set(current))
    return (
        keys,
        np.array([reference.get(k, 0) for k in keys], np.float64),
        np.array([current.get(k, 0) for k in keys], np.float64),
    )


def level(psi_value: float) -> str:
    """'none', 'moderate' or 'strong' by the PSI 0.1 / 0.25 convention."""
    return "strong" if psi_value >= PSI_STRONG else "moderate" if psi_value >= PSI_MODERATE else "none"


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature: PSI always; KS for numeric features; chi-square for categorical ones."""

    feature: str
    psi: float
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    chi2_statistic: float | None = None
    chi2_pvalue: float | None = None
    reference_n: int = 0
    current_n: int = 0

    @property
    def level(self) -> str:
        """'none', 'moderate' or 'strong' (PSI 0.1 / 0.25)."""
        return level(self.psi)


def compare_numeric(feature: str, reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> FeatureDrift:
    """PSI (reference-quantile buckets) and KS of a numeric feature."""
    try:
        value = psi_samples(reference, current, bins)
        stat, p = ks(reference, current)
    except DriftError as exc:
        raise DriftError(f"feature {feature!r}: {exc}") from exc
    return FeatureDrift(
        feature, value, ks_statistic=stat, ks_pvalue=p, reference_n=len(reference), current_n=len(current)
    )


def compare_categorical(feature: str, reference: Mapping[str, float], current: Mapping[str, float]) -> FeatureDrift:
    """PSI and chi-square of a categorical feature given counts per category."""
    _, ref, cur = align(reference, current)
    try:
        value = psi(ref, cur)
        stat, p = chi_square(ref, cur)
    except DriftError as exc:
        raise DriftError(f"feature {feature!r}: {exc}") from exc
    return FeatureDrift(
        feature, value, chi2_statistic=stat, chi2_pvalue=p, reference_n=int(ref.sum()), current_n=int(cur.sum())
    )


def _counts(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise DriftError(f"{name} counts must be finite and non-negative")
    return arr


# --- windows from the store ---------------------------------------------------------------------
@dataclass
class WindowProfile:
    """What one event-time window of the stream looks like, as compact distributions."""

    start: datetime
    end: datetime
    ratings: dict[str, int] = field(default_factory=dict)  # rating value → lines
    activity: dict[int, int] = field(default_factory=dict)  # events per user → users
    genres: dict[str, int] = field(default_factory=dict)  # genre → watch sessions started
    age: dict[str, int] = field(default_factory=dict)  # age bucket → active users
    gender: dict[str, int] = field(default_factory=dict)
    occupation: dict[str, int] = field(default_factory=dict)
    exposure: dict[str, int] = field(default_factory=dict)  # movie → times recommended (successful answers)
    requests: int = 0  # recommendation requests
    answered: int = 0  # answered 200 within the budget
    watches: int = 0  # watch sessions started (first minute line of a (user, movie) in the window)
    watches_recommended: int = 0  # … whose movie was in the user's latest answered recommendation before it
    converted: int = 0  # answered requests whose next watch (before the next request) was recommended
    watched_movies: int = 0  # distinct movies watched
    catalog: int = 0  # movies the store knows

    def activity_sample(self) -> np.ndarray:
        """Events per active user, one value per user (for KS)."""
        if not self.activity:
            return np.zeros(0)
        values = np.fromiter(self.activity, np.float64, len(self.activity))
        return np.repeat(values, np.fromiter(self.activity.values(), np.int64, len(self.activity)))

    @property
    def availability(self) -> float:
        """Share of requests answered 200 within the budget (NaN without requests)."""
        return self.answered / self.requests if self.requests else float("nan")

    @property
    def conversion(self) -> float:
        """Share of answered requests followed by a watch of a recommended movie (NaN without answers)."""
        return self.converted / self.answered if self.answered else float("nan")

    @property
    def recommended_watch_share(self) -> float:
        """Share of new watch sessions whose movie was recommended to that user just before (NaN without watches)."""
        return self.watches_recommended / self.watches if self.watches else float("nan")

    @property
    def recommendation_coverage(self) -> float:
        """Share of the catalog recommended at least once in the window (NaN with no known catalog)."""
        return len(self.exposure) / self.catalog if self.catalog else float("nan")

    @property
    def watch_coverage(self) -> float:
        """Share of the catalog watched at least once in the window (NaN with no known catalog)."""
        return self.watched_movies / self.catalog if self.catalog else float("nan")

    @property
    def exposure_gini(self) -> float:
        """Gini of recommendation exposure over the whole known catalog (never-recommended movies count as 0)."""
        counts = np.zeros(max(self.catalog, len(self.exposure)))
        counts[: len(self.exposure)] = list(self.exposure.values())
        return gini(counts)


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift of a window against a reference, and the window's feedback-loop indicators."""

    features: dict[str, FeatureDrift]
    current: WindowProfile
    skipped: dict[str, str] = field(default_factory=dict)  # feature → why it was not computed

    @property
    def strong(self) -> list[str]:
        """Features with PSI >= 0.25."""
        return [f for f, d in self.features.items() if d.psi >= PSI_STRONG]


MIN_SAMPLE = 100  # observations per window below which PSI is noise (an hour of a small team: a few ratings)


def compare(reference: WindowProfile, current: WindowProfile, min_sample: int = MIN_SAMPLE) -> DriftReport:
    """Drift of every feature of `current` against `reference`; a feature with an empty window, or fewer than
    `min_sample` observations in either window, is skipped, with why."""
    features: dict[str, FeatureDrift] = {}
    skipped: dict[str, str] = {}
    jobs = {
        "rating": lambda: compare_ratings(reference.ratings, current.ratings),
        "activity": lambda: compare_numeric("activity", reference.activity_sample(), current.activity_sample()),
        "genre": lambda: compare_categorical("genre", reference.genres, current.genres),
        "age": lambda: compare_categorical("age", reference.age, current.age),
        "gender": lambda: compare_categorical("gender", reference.gender, current.gender),
        "occupation": lambda: compare_categorical("occupation", reference.occupation, current.occupation),
    }
    for name, job in jobs.items():
        try:
            found = job()
        except DriftError as exc:
            skipped[name] = str(exc)
            logger.info("drift of %s not computed: %s", name, exc)
            continue
        if min(found.reference_n, found.current_n) < min_sample:
            skipped[name] = (
                f"too few observations for a stable PSI: {found.reference_n} in the reference, "
                f"{found.current_n} now (at least {min_sample} each)"
            )
            continue
        features[name] = found
    return DriftReport(features, current, skipped)


def compare_ratings(reference: Mapping[str, float], current: Mapping[str, float]) -> FeatureDrift:
    """Ratings 1..5 are both ordinal and categorical: PSI and chi-square per value, and KS on the values."""
    cat = compare_categorical("rating", reference, current)
    ref = np.repeat([float(k) for k in reference], [int(v) for v in reference.values()])
    cur = np.repeat([float(k) for k in current], [int(v) for v in current.values()])
    stat, p = ks(ref, cur)
    return FeatureDrift("rating", cat.psi, stat, p, cat.chi2_statistic, cat.chi2_pvalue, cat.reference_n, cat.current_n)


# One query, one scan of the window: every distribution comes back as (part, key, n) rows.
_AGE_CASE = (
    "CASE "
    + " ".join(f"WHEN u.age >= {lo} AND u.age < {hi} THEN '{name}'" for lo, hi, name in AGE_BUCKETS)
    + " ELSE 'unknown' END"
)
PROFILE_SQL = f"""
WITH w AS (SELECT user_id, time, seq, kind, movie_id, rating, status, recommendations, error, response_ms
           FROM events WHERE time >= $start AND time < $end),
starts AS (SELECT user_id, movie_id, min(time) AS time FROM w WHERE kind = 'watch' GROUP BY ALL),
recs AS (SELECT user_id, time, seq, recommendations,
                {good_answer_sql()} AS ok
         FROM w WHERE kind = 'recommendation'),
answered AS (SELECT user_id, time, recommendations FROM recs WHERE ok),
seen AS (SELECT s.movie_id, list_contains(a.recommendations, s.movie_id) AS hit
         FROM starts s ASOF LEFT JOIN answered a ON s.user_id = a.user_id AND s.time >= a.time),
nextreq AS (SELECT user_id, time, ok, recommendations,
                   lead(time) OVER (PARTITION BY user_id ORDER BY time, seq) AS next_time FROM recs),
picks AS (SELECT r.ok, list_contains(r.recommendations, s.movie_id)
                 AND (r.next_time IS NULL OR s.time < r.next_time) AS conv
          FROM nextreq r ASOF LEFT JOIN starts s ON r.user_id = s.user_id AND s.time >= r.time),
active AS (SELECT user_id, count(*) AS n FROM w GROUP BY user_id)
SELECT 'rating' AS part, rating::VARCHAR AS key, count(*) AS n FROM w WHERE kind = 'rate' GROUP BY ALL
UNION ALL SELECT 'activity', n::VARCHAR, count(*) FROM active GROUP BY ALL
UNION ALL SELECT 'genre', g, count(*) FROM (SELECT unnest(m.genres) AS g FROM starts s JOIN movies m USING (movie_id))
          GROUP BY ALL
UNION ALL SELECT 'age', {_AGE_CASE}, count(*) FROM active a LEFT JOIN users u USING (user_id) GROUP BY ALL
UNION ALL SELECT 'gender', coalesce(u.gender, 'unknown'), count(*) FROM active a LEFT JOIN users u USING (user_id)
          GROUP BY ALL
UNION ALL SELECT 'occupation', coalesce(u.occupation, 'unknown'), count(*) FROM active a
          LEFT JOIN users u USING (user_id) GROUP BY ALL
UNION ALL SELECT 'exposure', m, count(*) FROM (SELECT unnest(recommendations) AS m FROM answered) GROUP BY ALL
UNION ALL SELECT 'requests', ok::VARCHAR, count(*) FROM recs GROUP BY ALL
UNION ALL SELECT 'watches', coalesce(hit, false)::VARCHAR, count(*) FROM seen GROUP BY ALL
UNION ALL SELECT 'converted', 'true', count(*) FROM picks WHERE ok AND conv
UNION ALL SELECT 'watched_movies', '', count(DISTINCT movie_id) FROM starts
UNION ALL SELECT 'catalog', '', count(*) FROM movies
"""


def profile_from_rows(start: datetime, end: datetime, rows: Sequence[tuple[str, str | None, int]]) -> WindowProfile:
    """Assemble a `WindowProfile` from (part, key, n) rows of `PROFILE_SQL`."""
    p = WindowProfile(start, end)
    named = {
        "rating": p.ratings,
        "genre": p.genres,
        "age": p.age,
        "gender": p.gender,
        "occupation": p.occupation,
        "exposure": p.exposure,
    }
    for part, key, n in rows:
        n = int(n)
        if part in named:
            named[part][str(key)] = n
        elif part == "activity":
            p.activity[int(key)] = n
        elif part == "requests":
            p.requests += n
            p.answered += n if key == "true" else 0
        elif part == "watches":
            p.watches += n
            p.watches_recommended += n if key == "true" else 0
        elif part == "converted":
            p.converted = n
        elif part == "watched_movies":
            p.watched_movies = n
        elif part == "catalog":
            p.catalog = n
        else:
            raise DriftError(f"profile row part {part!r} is unknown (key {key!r}, n {n})")
    return p


def profile_window(store, start: datetime, end: datetime, budget_ms: int = REQUEST_BUDGET_MS) -> WindowProfile:
    """The distributions of events with time in [start, end), read from `store` in one query."""
    if end <= start:
        raise DriftError(f"window [{start}, {end}) is empty: end is not after start")
    rows = read_rows(store, PROFILE_SQL, {"start": start, "end": end, "budget": budget_ms})
    return profile_from_rows(start, end, rows)


def read_rows(store, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
    """Run read-only `sql` on the event store's connection under its lock (monitoring reads only)."""
    return store.read(sql, params)  # under the lock the ingest writer shares: never half a batch
