"""The session funnel, vectorized over every user acting in the same tick.

Choice: recommended movies and a popularity-weighted sample of others compete by
true score + Gumbel noise + a bonus for being recommended (more for higher ranks);
a user leaves when no candidate beats the outside option. Watching: a viewing is
completed with a probability rising with the true score, otherwise stops at a minute
drawn towards the start; minutes may be rewound or skipped. Ratings are missing not
at random (strong opinions are rated more often). Watching pulls taste towards the
movie: the feedback loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BehaviorParams:
    """Knobs of the funnel; defaults are tuned so ratings, popularity and personal choice match MovieLens."""

    browse_sample: int = 20  # movies a user finds without recommendations
    popularity_power: float = 0.5  # sampling weight = (rating count + 1) ** power
    choice_noise: float = 0.5  # scale of the Gumbel noise on scores: users know roughly what they will like
    # What one watches is far more personal than how one rates it (on ml-100k, EASE predicts which movies a user
    # rates twice as well as popularity does, while p·q explains little of the rating values): the user-specific
    # part of the true score (p·q) weighs this much more in the choice than in the rating.
    taste_weight: float = 4.0
    familiarity: float = 0.2  # utility per tenfold of a movie's rating count: known titles appeal more
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
    # The taste model is fitted to ratings of movies people had already chosen to watch; the world's
    # own choice selects on taste again, so ratings are shifted back to keep MovieLens's mean.
    rating_shift: float = -0.5
    taste_step: float = 0.03  # feedback loop: taste moves this share towards a fully watched movie
    recent_window: int = 8  # recently watched movies are not picked again


def gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel noise (float32)."""
    return -np.log(-np.log(rng.random(shape, dtype=np.float32) + 1e-12) + 1e-12)


def rec_rank_bonus(n_slots: int, bonus: float) -> np.ndarray:
    """Bonus by rank 0..n_slots-1: full at the top, half at rank 20."""
    return (bonus / (1.0 + np.arange(n_slots) / 20.0)).astype(np.float32)


def choose(
    true_scores: np.ndarray, is_rec_bonus: np.ndarray, valid: np.ndarray, params: BehaviorParams,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """Index of the chosen candidate per row, or -1 for leaving; rows are sessions, columns candidates."""
    util = true_scores + is_rec_bonus + params.choice_noise * gumbel(rng, true_scores.shape)
    util = np.where(valid, util, -np.inf)
    best = np.argmax(util, axis=1)
    best_u = util[np.arange(len(best)), best]
    outside = params.outside_option + params.choice_noise * gumbel(rng, best_u.shape)
    return np.where(best_u > outside, best, -1)


def plan_stop(
    true_score: np.ndarray, start_minute: np.ndarray, runtime: np.ndarray, params: BehaviorParams,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
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
    true_score: np.ndarray, user_mean: np.ndarray, watched: np.ndarray, completed: np.ndarray,
    recommended: np.ndarray, noise_std: float, params: BehaviorParams, rng: np.random.Generator, scale: int = 5,
) -> np.ndarray:  # fmt: skip
    """Rating 1..`scale` per ended viewing (5 or 10 stars, by edition), 0 where the user does not rate.

    The opinion is drawn on MovieLens's 1..5 scale (the truth is fitted to it); a 10-star edition maps
    it linearly onto 1..10 before rounding, so 1 → 1, 3 → 5.5, 5 → 10.

    Missing not at random: the further a movie is from what the user usually thinks of
    movies (`user_mean`), the likelier a rating.
    """
    p = params.rate_base + params.rate_slope * np.abs(true_score - user_mean)
    eligible = completed | (watched >= params.rate_min_minutes)
    rates = eligible & (rng.random(len(true_score)) < np.clip(p, 0, 0.95))
    value = (true_score + params.rating_shift + noise_std * rng.standard_normal(len(true_score))
             + params.rating_rec_bonus * recommended)
    if scale != 5:
        value = 1 + (value - 1) * (scale - 1) / 4
    return np.where(rates, np.clip(np.rint(value), 1, scale), 0).astype(np.int8)
