"""The hidden taste model: biased latent factors fitted to real ratings.

score(user, movie) = mu + b_user + b_movie + p_user · q_movie, fitted by alternating
least squares on explicit ratings. Synthetic users draw (p, b) conditioned on their
demographics (a ridge regression of the fitted users' factors on age bucket, gender
and occupation, plus Gaussian residuals with the fitted covariance), so demographics
carry signal. Synthetic movies draw (q, b) conditioned on their genres the same way.
Nothing here leaves the world except through what users do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from movielab import errors
from movielab.world.data.types import GENDERS, GENRES, OCCUPATIONS, Ratings
from movielab.world.errors import WorldError

logger = logging.getLogger(__name__)

AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # ML-1M bucket edges: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+


class ModelFitError(WorldError, errors.ModelFitError):
    """The taste model could not be fitted (NaN factors, empty data)."""


@dataclass(frozen=True)
class Factors:
    """Fitted biased factors: rows of `user_*` / `item_*` follow the rating matrix."""

    mu: float
    user_factors: np.ndarray  # float32 (n_users, k)
    user_bias: np.ndarray  # float32 (n_users,)
    item_factors: np.ndarray  # float32 (n_items, k)
    item_bias: np.ndarray  # float32 (n_items,)
    noise_std: float  # residual std of the ratings the model was fitted to

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (unclipped) for pairs of user and item rows."""
        dot = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
        return self.mu + self.user_bias[users] + self.item_bias[items] + dot


def _solve_rows(
    indptr: np.ndarray, cols: np.ndarray, target: np.ndarray, other: np.ndarray, reg: float, reg_bias: float
) -> np.ndarray:
    """Ridge-solve [factors, bias] for every row of a CSR rating matrix against fixed `other` factors."""
    n_rows, k1 = len(indptr) - 1, other.shape[1] + 1
    aug = np.hstack([other, np.ones((other.shape[0], 1))])
    penalty = np.full(k1, reg)
    penalty[-1] = reg_bias
    counts = np.diff(indptr)
    # Row Gram matrices as one sparse product: (rows x others, 0/1) @ (others x k1*k1 outer products).
    seen = sp.csr_matrix((np.ones(len(cols)), cols, indptr), shape=(n_rows, other.shape[0]))
    outer = (aug[:, :, None] * aug[:, None, :]).reshape(other.shape[0], -1)
    gram = (seen @ outer).reshape(n_rows, k1, k1) + np.diag(penalty)[None] * np.maximum(counts, 1)[:, None, None]
    rhs = sp.csr_matrix((target, cols, indptr), shape=seen.shape) @ aug
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def fit_factors(
    ratings: Ratings,
    n_users: int,
    n_items: int,
    k: int = 16,
    reg: float = 0.12,
    reg_bias: float = 0.02,
    iterations: int = 12,
    seed: int = 0,
) -> Factors:
    """Fit biased latent factors to explicit ratings by ALS (regularisation scaled by each row's count)."""
    if len(ratings) == 0:
        raise ModelFitError("cannot fit the taste model to zero ratings")
    rng = np.random.default_rng(seed)
    r = ratings.rating.astype(np.float64)
    mu = float(r.mean())
    by_user = sp.csr_matrix((np.arange(len(r)), (ratings.user, ratings.movie)), shape=(n_users, n_items))
    by_item = by_user.T.tocsr()
    u_order, i_order = by_user.data, by_item.data  # rating row ids in CSR order
    p = rng.normal(0, 0.1, (n_users, k))
    q = rng.normal(0, 0.1, (n_items, k))
    bu = np.zeros(n_users)
    bi = np.zeros(n_items)
    for _ in range(iterations):
        sol = _solve_rows(by_user.indptr, by_user.indices, r[u_order] - mu - bi[by_user.indices], q, reg, reg_bias)
        p, bu = sol[:, :-1], sol[:, -1]
        sol = _solve_rows(by_item.indptr, by_item.indices, r[i_order] - mu - bu[by_item.indices], p, reg, reg_bias)
        q, bi = sol[:, :-1], sol[:, -1]
    pred = mu + bu[ratings.user] + bi[ratings.movie] + np.einsum("ij,ij->i", p[ratings.user], q[ratings.movie])
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ModelFitError("taste model diverged: factors contain NaN or inf")
    noise = float(np.sqrt(np.mean((r - pred) ** 2)))
    return Factors(mu, p.astype(np.float32), bu.astype(np.float32), q.astype(np.float32), bi.astype(np.float32), noise)


def heldout_rmse(ratings: Ratings, n_users: int, n_items: int, seed: int = 0, **fit_args: float) -> float:
    """RMSE on a random 10% of the ratings after fitting on the other 90% (predictions clipped to 1..5)."""
    rng = np.random.default_rng(seed)
    test = rng.random(len(ratings)) < 0.1
    train = Ratings(*(a[~test] for a in (ratings.user, ratings.movie, ratings.rating, ratings.timestamp)))
    f = fit_factors(train, n_users, n_items, seed=seed, **fit_args)
    pred = np.clip(f.predict(ratings.user[test], ratings.movie[test]), 1, 5)
    return float(np.sqrt(np.mean((pred - ratings.rating[test]) ** 2)))


def age_bucket(age: np.ndarray) -> np.ndarray:
    """ML-1M age bucket index 0..6 of ages in years."""
    return np.searchsorted(np.asarray(AGE_BUCKETS), np.asarray(age), side="right").astype(np.int8)


def demographic_features(age: np.ndarray, gender: np.ndarray, occupation: np.ndarray) -> np.ndarray:
    """One-hot design matrix [1, age bucket, gender, occupation] for the taste regression."""
    n = len(age)
    n_cols = 1 + len(AGE_BUCKETS) + 1 + len(GENDERS) + len(OCCUPATIONS)
    x = np.zeros((n, n_cols), dtype=np.float32)
    x[:, 0] = 1
    rows = np.arange(n)
    x[rows, 1 + age_bucket(age)] = 1
    x[rows, 1 + len(AGE_BUCKETS) + 1 + gender] = 1
    x[rows, 1 + len(AGE_BUCKETS) + 1 + len(GENDERS) + occupation] = 1
    return x


@dataclass(frozen=True)
class ConditionalGaussian:
    """y ~ N(x @ weights, residual covariance): draws latent vectors conditioned on features."""

    weights: np.ndarray  # (n_features, d)
    chol: np.ndarray  # (d, d) lower Cholesky factor of the residual covariance

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> ConditionalGaussian:
        """Ridge-regress y on x and keep the residual covariance."""
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        gram = x64.T @ x64 + ridge * np.eye(x.shape[1])
        w = np.linalg.solve(gram, x64.T @ y64)
        resid = y64 - x64 @ w
        cov = np.cov(resid, rowvar=False) + 1e-6 * np.eye(y.shape[1])
        return cls(w.astype(np.float32), np.linalg.cholesky(cov).astype(np.float32))

    def draw(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one vector per row of x (float32)."""
        z = rng.standard_normal((x.shape[0], self.chol.shape[0]), dtype=np.float32)
        return x @ self.weights + z @ self.chol.T


@dataclass(frozen=True)
class TasteModel:
    """The hidden ground truth of the world: item factors and how to draw users."""

    mu: float
    item_factors: np.ndarray  # float32 (n_movies, k) for the whole catalog
    item_bias: np.ndarray  # float32 (n_movies,)
    users_given_demographics: ConditionalGaussian  # draws [p, b] from demographic features
    noise_std: float
    real_factors: Factors  # the fit to the real users, kept for fidelity checks

    @property
    def k(self) -> int:
        """Number of latent dimensions."""
        return self.item_factors.shape[1]

    def draw_users(self, age: np.ndarray, gender: np.ndarray, occupation: np.ndarray, rng: np.random.Generator):
        """Draw (taste vectors, biases) for users with these demographics."""
        out = np.empty((len(age), self.k + 1), dtype=np.float32)
        step = 200_000  # bounds the temporary design matrix
        for s in range(0, len(age), step):
            x = demographic_features(age[s : s + step], gender[s : s + step], occupation[s : s + step])
            out[s : s + step] = self.users_given_demographics.draw(x, rng)
        return np.ascontiguousarray(out[:, :-1]), np.ascontiguousarray(out[:, -1])


def genre_features(genres: np.ndarray) -> np.ndarray:
    """Design matrix [1, genre flags] for the movie-factor regression."""
    return np.hstack([np.ones((genres.shape[0], 1), dtype=np.float32), genres.astype(np.float32)])


def build_taste_model(
    factors: Factors,
    real_genres: np.ndarray,
    catalog_genres: np.ndarray,
    age: np.ndarray | None,
    gender: np.ndarray | None,
    occupation: np.ndarray | None,
    seed: int = 0,
) -> TasteModel:
    """Extend fitted factors to a (possibly larger) catalog and learn how to draw users.

    Rows of `catalog_genres` beyond the real movies get factors drawn given their genres.
    Without demographics (ml-latest), users are drawn from the unconditional distribution.
    """
    rng = np.random.default_rng([seed, 1])
    n_real = factors.item_factors.shape[0]
    if real_genres.shape[0] != n_real or catalog_genres.shape[1] != len(GENRES):
        raise ValueError("genre matrices do not match the fitted movies and the GENRES vocabulary")
    items = np.hstack([factors.item_factors, factors.item_bias[:, None]])
    extra = catalog_genres.shape[0] - n_real
    if extra > 0:
        movie_model = ConditionalGaussian.fit(genre_features(real_genres), items)
        items = np.vstack([items, movie_model.draw(genre_features(catalog_genres[n_real:]), rng)])
    users = np.hstack([factors.user_factors, factors.user_bias[:, None]])
    if age is not None and gender is not None and occupation is not None:
        x = demographic_features(age, gender, occupation)
    else:
        x = np.ones((users.shape[0], 1), dtype=np.float32)
    user_model = ConditionalGaussian.fit(x, users)
    if x.shape[1] == 1:  # no demographics: same weights for every feature row layout
        w = np.zeros((demographic_features(np.zeros(1), np.zeros(1, int), np.zeros(1, int)).shape[1], users.shape[1]))
        w[0] = user_model.weights[0]
        user_model = ConditionalGaussian(w.astype(np.float32), user_model.chol)
    return TasteModel(
        mu=factors.mu,
        item_factors=np.ascontiguousarray(items[:, :-1], dtype=np.float32),
        item_bias=np.ascontiguousarray(items[:, -1], dtype=np.float32),
        users_given_demographics=user_model,
        noise_std=factors.noise_std,
        real_factors=factors,
    )
