"""The session funnel, vectorized over every user acting in the same tick.

Discovery: without recommendations users find movies mostly through their own taste
(taste neighbourhoods of the catalog), partly through popularity. Choice: recommended
movies and the movies found compete by true score (its personal part weighted up) +
familiarity + Gumbel noise + a bonus for being recommended (more for higher ranks);
a user leaves when no candidate beats the outside option. Watching: a viewing is
completed with a probability rising with the true score, otherwise stops at a minute
drawn towards the start; minutes may be rewound or skipped. Ratings are missing not
at random (strong opinions are rated more often), and a movie is rated once, when the user is done
with it (not at a pause). A movie watched is not picked again. Watching pulls taste towards the
movie: the feedback loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BehaviorParams:
    """Knobs of the funnel; each fitted one names the figure it was fitted to (`movielab world fidelity`).

    Fitted on ml-100k's users simulated to their real interaction counts, under the published protocol
    (NDCG@10 on ml-100k: popularity 0.215, item-kNN 0.358, ALS 0.427, EASE 0.443; top-10% share 0.427,
    Gini 0.629; ratings 1–5★ 6.1/11.4/27.1/34.2/21.2%, mean 3.53). Re-checked once users stopped re-watching
    (`seen_bits`; seeds 0–4): NDCG@10 0.239/0.317/0.366/0.379, top-10% share 0.420, Gini 0.635, all within
    the targets, so only the rating knobs were re-fitted.
    """

    browse_sample: int = 20  # movies a user finds without recommendations
    # Sampling weight = (rating count + 1) ** power, globally and within a neighbourhood: fitted to the top-10%
    # share and Gini of interactions per movie, with `familiarity` to popularity's NDCG@10.
    popularity_power: float = 0.6
    # Users find movies through their own taste: this share of browse candidates comes from a taste neighbourhood
    # (the rest from popularity alone). With `taste_temperature`, fitted to item-kNN/ALS/EASE's NDCG@10 and
    # EASE/popularity = 2.05 (a single popularity-weighted pool gave 1.11: everyone found the same movies).
    taste_share: float = 0.85
    taste_clusters: int = 48  # taste neighbourhoods (k-means over item factors and genres)
    taste_temperature: float = 8.0  # how sharply a user's taste picks neighbourhoods (per unit of taste · centroid)
    choice_noise: float = 0.5  # scale of the Gumbel noise on scores: users know roughly what they will like
    # What one watches is far more personal than how one rates it (on ml-100k, EASE predicts which movies a user
    # rates twice as well as popularity does, while p·q explains little of the rating values): the user-specific
    # part of the true score (p·q) weighs this much more in the choice than in the rating.
    taste_weight: float = 4.0
    familiarity: float = 0.3  # utility per tenfold of a movie's rating count (fitted: popularity's NDCG@10)
    attention_decay: float = 0.85  # the k-th recommendation (from 0) is looked at with probability decay**k
    rec_bonus: float = 0.2  # utility bonus for the top-ranked recommendation, falling with rank
    outside_option: float = 3.6  # utility of leaving (in stars)
    browse_seconds: float = 25.0  # mean time between the answer and pressing play
    complete_base: float = 0.1  # logit of completing at an average (3.5 star) movie
    complete_slope: float = 1.6  # logit change per star of true score
    seek_back_p: float = 0.004  # per minute: rewind 1..10 minutes
    seek_forward_p: float = 0.002  # per minute: skip 2..15 minutes ahead
    pause_p: float = 0.55  # an early stop is paused (to resume later) with this probability
    resume_p: float = 0.7  # a user with a paused movie resumes it at the next session
    rate_base: float = 0.12  # rating probability at a lukewarm opinion
    rate_slope: float = 0.4  # extra rating probability per star away from the user's usual opinion
    rate_min_minutes: int = 3  # no rating for viewings shorter than this (unless completed)
    rating_rec_bonus: float = 0.1  # recommended movies are rated a little higher
    # Stretch of the true score around the user's mean opinion in a rating (the fitted p·q explains little of
    # a rating's value). `rating_spread`, `rating_noise` and `rating_shift` are fitted together on each
    # (user, movie) pair's one rating, ml-100k's users simulated to their real counts (seed 0, 28,786
    # ratings): histogram 6.1/10.8/27.4/34.9/20.9% (real 6.1/11.4/27.1/34.2/21.2%), mean 3.54 (3.53).
    # (Fitted before on ratings that were mostly re-watches, 2.6/0.7/−1.72 gave first ratings 1★ 10.5%,
    # 5★ 9.7%, mean 3.11.)
    rating_spread: float = 2.4
    rating_noise: float = 0.8  # scale of the truth's residual noise in a rating (fitted with rating_spread)
    # The taste model is fitted to ratings of movies people had already chosen to watch; the world's
    # own choice selects on taste again, so ratings are shifted back: fitted to MovieLens's mean (3.53).
    rating_shift: float = -1.14
    taste_step: float = 0.03  # feedback loop: taste moves this share towards a fully watched movie
    # Memory of watched movies per user, in bits (a bitset over movie row % bits; 64 bytes per 512 bits):
    # a watched movie is never picked again (MovieLens has one rating per pair; streaming re-watches are
    # rare). Catalogs up to this size are remembered exactly (ml-100k's 1,682 movies); a larger one shares
    # bits, so some unwatched movies read as seen (at 27,000 movies, a user who has watched n movies skips
    # about 1 − exp(−n/2048) of the catalog: 4.8% at n = 100). 256 bytes per user: 256 MB at 1M users.
    seen_bits: int = 2048


@dataclass(frozen=True)
class Discovery:
    """How users find movies without recommendations: through their own tastes, not only what is popular.

    Movies are grouped into taste neighbourhoods (k-means over the hidden item factors and the genre
    flags). A browse candidate is found through taste with probability `taste_share`: a neighbourhood is
    drawn with probability ∝ its total popularity weight × exp(`temperature` · taste · centroid), then a
    movie in it ∝ its popularity weight; otherwise a movie is drawn ∝ its popularity weight from the whole
    catalog. Sampling is two `searchsorted` calls on one concatenated CDF, vectorized over sessions.
    """

    centroids: np.ndarray  # float32 (n_clusters, k): mean item factors of each neighbourhood
    log_weight: np.ndarray  # float32 (n_clusters,): log of each neighbourhood's share of popularity weight
    order: np.ndarray  # int32 (n_movies,): movie rows grouped by neighbourhood
    cluster_cdf: np.ndarray  # float64 (n_movies,): neighbourhood index + cumulative weight share within it
    global_cdf: np.ndarray  # float64 (n_movies,): cumulative weight share over the catalog (rows in order)
    taste_share: float
    temperature: float

    @classmethod
    def build(
        cls,
        item_factors: np.ndarray,
        genres: np.ndarray,
        weights: np.ndarray,
        n_clusters: int,
        taste_share: float,
        temperature: float,
        seed: int = 0,
    ) -> Discovery:
        """Cluster the catalog (Lloyd's k-means, 15 rounds) and precompute the sampling tables."""
        q = np.asarray(item_factors, np.float32)
        w = np.asarray(weights, np.float64)
        if len(q) != len(w) or len(genres) != len(w) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("discovery needs one non-negative popularity weight, factor row and genre row per movie")
        x = np.hstack([q / max(float(q.std()), 1e-6), np.asarray(genres, np.float32)])
        k = max(1, min(n_clusters, len(x)))
        rng = np.random.default_rng([seed, 3])
        centers = x[rng.choice(len(x), k, replace=False)]
        for _ in range(15):
            d = (x * x).sum(1)[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
            label = np.argmin(d, axis=1)
            for c in range(k):
                members = label == c
                if members.any():
                    centers[c] = x[members].mean(0)
        order = np.argsort(label, kind="stable").astype(np.int32)
        lab, wo = label[order], w[order] + 1e-12
        tot = np.bincount(lab, weights=wo, minlength=k)
        cs = np.cumsum(wo)
        before = np.concatenate([[0.0], cs])[np.searchsorted(lab, np.arange(k))]  # weight before each cluster
        cluster_cdf = lab + (cs - before[lab]) / tot[lab]
        centroids = np.stack(
            [q[order][lab == c].mean(0) if (lab == c).any() else np.zeros(q.shape[1], np.float32) for c in range(k)]
        ).astype(np.float32)
        log_weight = np.where(tot > 0, np.log(np.maximum(tot, 1e-300) / tot.sum()), -np.inf).astype(np.float32)
        gcdf = np.cumsum(w) / w.sum()
        return cls(centroids, log_weight, order, cluster_cdf, gcdf, float(taste_share), float(temperature))

    def sample(self, taste: np.ndarray, n_per: int, rng: np.random.Generator) -> np.ndarray:
        """Movie rows (n_users, n_per) found by users with these taste vectors (n_users, k)."""
        n = len(taste)
        # einsum, not `@`: a BLAS call per tick wakes BLAS threads that then spin against the simulation (−25% events/s)
        logits = self.log_weight[None, :] + self.temperature * np.einsum("nk,ck->nc", taste, self.centroids)
        logits -= logits.max(axis=1, keepdims=True)
        cdf = np.cumsum(np.exp(logits), axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random((n, n_per))
        cluster = np.minimum((cdf[:, None, :] < u[:, :, None]).sum(axis=2), cdf.shape[1] - 1)
        by_taste = np.searchsorted(self.cluster_cdf, cluster + rng.random((n, n_per)))
        by_taste = self.order[np.minimum(by_taste, len(self.order) - 1)]
        anywhere = np.searchsorted(self.global_cdf, rng.random((n, n_per)))
        anywhere = np.minimum(anywhere, len(self.global_cdf) - 1)
        return np.where(rng.random((n, n_per)) < self.taste_share, by_taste, anywhere).astype(np.int32)


def seen_bits(n_movies: int, limit: int) -> int:
    """Bits of a user's watched-movie memory: the catalog size, or `limit`, rounded up to whole 64-bit words.

    Raises ValueError for a limit below 64 bits.
    """
    if limit < 64:
        raise ValueError(f"the watched-movie memory needs at least 64 bits, got seen_bits={limit}")
    return 64 * -(-min(max(n_movies, 1), limit) // 64)


def gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel noise (float32)."""
    return -np.log(-np.log(rng.random(shape, dtype=np.float32) + 1e-12) + 1e-12)


def rec_rank_bonus(n_slots: int, bonus: float) -> np.ndarray:
    """Bonus by rank 0..n_slots-1: full at the top, half at rank 20."""
    return (bonus / (1.0 + np.arange(n_slots) / 20.0)).astype(np.float32)


def choose(
    true_scores: np.ndarray,
    is_rec_bonus: np.ndarray,
    valid: np.ndarray,
    params: BehaviorParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Index of the chosen candidate per row, or -1 for leaving; rows are sessions, columns candidates."""
    util = true_scores + is_rec_bonus + params.choice_noise * gumbel(rng, true_scores.shape)
    util = np.where(valid, util, -np.inf)
    best = np.argmax(util, axis=1)
    best_u = util[np.arange(len(best)), best]
    outside = params.outside_option + params.choice_noise * gumbel(rng, best_u.shape)
    return np.where(best_u > outside, best, -1)


def plan_stop(
    true_score: np.ndarray,
    start_minute: np.ndarray,
    runtime: np.ndarray,
    params: BehaviorParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Last minute each viewing will watch: the runtime if completed, else an earlier minute."""
    logit = params.complete_base + params.complete_slope * (true_score - 3.5)
    complete = rng.random(len(true_score)) < 1.0 / (1.0 + np.exp(-logit))
    remaining = np.maximum(runtime - start_minute, 0)
    early = start_minute + np.floor(remaining * rng.beta(0.8, 1.6, len(true_score))).astype(np.int32)
    return np.where(complete, runtime, np.minimum(early, runtime)).astype(np.int32)


def seek(minute: np.ndarray, params: BehaviorParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Next minute after each emitted one, with rare rewinds/skips; also a mask of which rows sought."""
    u = rng.random(len(minute))
    back = u < params.seek_back_p
    fwd = (u >= params.seek_back_p) & (u < params.seek_back_p + params.seek_forward_p)
    nxt = minute + 1
    if back.any():
        nxt[back] = np.maximum(1, minute[back] - rng.integers(1, 11, int(back.sum())))
    if fwd.any():
        nxt[fwd] = minute[fwd] + rng.integers(2, 16, int(fwd.sum()))
    return nxt, back | fwd


def rate(
    true_score: np.ndarray,
    user_mean: np.ndarray,
    watched: np.ndarray,
    completed: np.ndarray,
    recommended: np.ndarray,
    noise_std: float,
    params: BehaviorParams,
    rng: np.random.Generator,
    scale: int = 5,
) -> np.ndarray:
    """Rating 1..`scale` per ended viewing (5 or 10 stars, by edition), 0 where the user does not rate.

    The opinion is drawn on MovieLens's 1..5 scale (the truth is fitted to it); a 10-star edition maps
    it linearly onto 1..10 before rounding, so 1 → 1, 3 → 5.5, 5 → 10.

    Missing not at random: the further a movie is from what the user usually thinks of
    movies (`user_mean`), the likelier a rating.
    """
    p = params.rate_base + params.rate_slope * np.abs(true_score - user_mean)
    eligible = completed | (watched >= params.rate_min_minutes)
    rates = eligible & (rng.random(len(true_score)) < np.clip(p, 0, 0.95))
    value = rating_value(true_score, user_mean, recommended, noise_std, params, rng)
    if scale != 5:  # a 10-star edition: the same opinion, mapped linearly onto its scale
        value = 1 + (value - 1) * (scale - 1) / 4
    return np.where(rates, np.clip(np.rint(value), 1, scale), 0).astype(np.int8)


def rating_value(
    true_score: np.ndarray,
    user_mean: np.ndarray,
    recommended: np.ndarray,
    noise_std: float,
    params: BehaviorParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """The continuous opinion behind a rating, on the 1..5 star scale (unrounded, unclipped; float64).

    The one place ratings are drawn: `rate` rounds and clips it to 1..5 stars, or maps it onto 1..10
    for a 10-star edition. Opinion = user's mean + spread × (true score − user's mean) + shift
    + Gaussian noise (rating_noise × the truth's residual std) + a small bonus when the movie was recommended.
    """
    stretched = user_mean + params.rating_spread * (true_score - user_mean)
    noise = params.rating_noise * noise_std * rng.standard_normal(len(true_score))
    return stretched + params.rating_shift + noise + params.rating_rec_bonus * recommended
