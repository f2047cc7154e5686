"""The running world: consistency, determinism, the funnel's effects, the feedback loop."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.contract import RateEvent, RecommendationEvent, WatchEvent, parse_line
from movielab.world.audit import audit
from movielab.world.behavior import BehaviorParams
from movielab.world.bootstrap import build_world, familiarity, run_until
from movielab.world.config import WorldConfig
from movielab.world.recs import FixedService, RandomService
from movielab.world.sinks import MemorySink


def _run(universe, service=None, users=3000, hours=8.0, seed=0, arrivals=0.002, edition="current"):
    config = WorldConfig(
        users=users, days=hours / 24, seed=seed, arrivals_per_day=arrivals, allow_download=False, edition=edition
    )
    sink, journal = MemorySink(), []
    world, _ = build_world(config, universe=universe, sink=sink, journal=journal, service=service)
    stats = world.run(until=run_until(config))
    return world, stats, sink, journal


@pytest.fixture(scope="module")
def run(universe):
    return _run(universe, arrivals=0.05)


def test_stream_passes_every_consistency_rule(run, universe) -> None:
    world, stats, sink, journal = run
    assert len(sink.lines) > 50_000
    assert audit(sink.lines, journal, world.pop.size, set(universe.catalog.slug)) == []


def test_stream_shape(run) -> None:
    world, stats, sink, journal = run
    kinds = {k: v for k, v in stats.lines.items()}
    assert kinds["watch"] / sum(kinds.values()) > 0.95
    assert kinds["account"] > 0 and kinds["rate"] > 0
    assert {e[0] for e in journal} == {"session", "start", "resume", "seek"}  # all behaviours occur
    assert sink.keys == [parse_line(line).user_id for line in sink.lines[:2000]] + sink.keys[2000:]
    ratings = [e.rating for e in map(parse_line, sink.lines) if isinstance(e, RateEvent)]
    assert set(ratings) <= set(range(1, 11)) and len(set(ratings)) >= 8  # the current (2026) edition: 1..10 stars


@pytest.mark.parametrize(("name", "stars", "digits"), [("2019", 5, 6), ("2024", 5, 9), ("2026", 10, 9)])
def test_each_edition_writes_its_rating_scale_and_stamp_precision(universe, name, stars, digits) -> None:
    _, stats, sink, _ = _run(
        universe, FixedService(list(range(20)), universe.catalog.slug), users=2000, hours=4.0, edition=name
    )
    events = [parse_line(line) for line in sink.lines]
    ratings = {e.rating for e in events if isinstance(e, RateEvent)}
    assert ratings <= set(range(1, stars + 1)) and max(ratings) == stars and len(stats.rating_hist) == stars + 1
    recs = [line for line in sink.lines if "recommendation request" in line]
    assert recs and all(len(line.split(",", 1)[0].split(".")[1]) == digits for line in recs)
    watch = next(line for line in sink.lines if "/data/m/" in line)
    assert "." not in watch.split(",", 1)[0]  # watch lines carry whole seconds


def test_new_accounts_come_before_their_users_other_lines(run) -> None:
    _, _, sink, _ = run
    first: dict[int, str] = {}
    for line in sink.lines:
        uid = int(line.split(",", 2)[1])
        first.setdefault(uid, line)
    created = [u for u, line in first.items() if line.endswith("/create_account")]
    assert created and all(u > 3000 for u in created)
    assert all(first[u].endswith("/create_account") for u in first if u > 3000)


def test_audit_detects_broken_streams(run, universe) -> None:
    world, _, sink, journal = run
    slugs = set(universe.catalog.slug)
    i = next(i for i, line in enumerate(sink.lines) if "/data/m/" in line and line.endswith("/5.mpg"))
    gap = sink.lines[:i] + [sink.lines[i].replace("/5.mpg", "/6.mpg")] + sink.lines[i + 1 :]
    assert any(v.rule == "minutes ascend" for v in audit(gap, journal, world.pop.size, slugs))
    bogus_rate = sink.lines + ["2026-03-20T23:00:00,1,GET /rate/some+movie+nobody+watched+1990=4"]
    rules = {v.rule for v in audit(bogus_rate, journal, world.pop.size, slugs | {"some+movie+nobody+watched+1990"})}
    assert "rate only started movies" in rules
    unknown = sink.lines + [f"2026-03-20T23:00:00,{world.pop.size + 5},GET /create_account"]
    assert {v.rule for v in audit(unknown, journal, world.pop.size, slugs)} == {"known user"}
    back = sink.lines + [sink.lines[0].replace("2026-03-20T", "2026-03-19T")]
    assert "time order" in {v.rule for v in audit(back, journal, world.pop.size, slugs)}


def test_same_seed_same_stream_and_another_seed_another(universe) -> None:
    a = _run(universe, users=1000, hours=3, seed=5)[2].lines
    b = _run(universe, users=1000, hours=3, seed=5)[2].lines
    c = _run(universe, users=1000, hours=3, seed=6)[2].lines
    assert a == b and a != c


def test_recommendations_change_what_users_watch(universe) -> None:
    catalog = universe.catalog
    # Twenty well-liked but rarely browsed movies: shown to everyone, they get picked.
    liked = np.argsort(-(universe.taste.item_bias - 0.002 * catalog.vote_count))[:20]
    world, stats, sink, journal = _run(universe, service=FixedService(liked, catalog.slug), users=3000, hours=8)
    assert audit(sink.lines, journal, world.pop.size, set(catalog.slug)) == []
    assert stats.requests_ok == stats.sessions
    assert stats.picked_recommended / stats.viewings > 0.2
    base = _run(universe, users=3000, hours=8)[1]
    assert stats.viewings_per_movie[liked].sum() > 5 * base.viewings_per_movie[liked].sum()
    lines = [parse_line(x) for x in sink.lines if "recommendation request" in x][:10]
    assert all(isinstance(e, RecommendationEvent) and e.ok and len(e.recommendations) == 20 for e in lines)


def test_random_recommendations_are_picked_less_than_good_ones(universe) -> None:
    catalog = universe.catalog
    appeal = universe.taste.item_bias + familiarity(catalog, BehaviorParams())
    liked = np.argsort(-appeal)[:20]
    good = _run(universe, service=FixedService(liked, catalog.slug), users=2000, hours=6)[1]
    rand = _run(universe, service=RandomService(catalog.slug, seed=1), users=2000, hours=6)[1]
    assert good.picked_recommended / good.sessions > 2 * rand.picked_recommended / rand.sessions


def test_watching_pulls_taste_towards_the_movie(universe) -> None:
    config = WorldConfig(users=2000, days=0.25, arrivals_per_day=0, allow_download=False)
    world, _ = build_world(config, universe=universe)
    before = world.pop.taste[:2000].copy()
    starts = []
    orig = world.viewings.append

    def spy(**cols):
        starts.append((cols["user"].copy(), cols["movie"].copy()))
        orig(**cols)

    world.viewings.append = spy  # type: ignore[method-assign]
    world.run(until=run_until(config))
    users = np.concatenate([u for u, _ in starts])
    movies = np.concatenate([m for _, m in starts])
    first = np.unique(users, return_index=True)[1]
    users, movies = users[first], movies[first]
    q = universe.taste.item_factors[movies]
    d_before = np.linalg.norm(before[users] - q, axis=1)
    d_after = np.linalg.norm(world.pop.taste[users] - q, axis=1)
    moved = ~np.isclose(d_before, d_after)
    assert moved.sum() > 100 and np.mean(d_after[moved] < d_before[moved]) > 0.8
    untouched = np.setdiff1d(np.arange(2000), users)
    assert np.array_equal(world.pop.taste[untouched], before[untouched])


def test_viewings_start_after_their_request(run) -> None:
    _, _, sink, _ = run
    last_request: dict[int, object] = {}
    for line in sink.lines[:100_000]:
        ev = parse_line(line)
        if isinstance(ev, RecommendationEvent):
            last_request[ev.user_id] = ev.time
        elif isinstance(ev, WatchEvent) and ev.minute == 1 and ev.user_id in last_request:
            assert ev.time > last_request[ev.user_id]


def _starts_and_ratings(universe, params: BehaviorParams, hours: float = 36.0):
    """Heavy watchers all shown the same 20 movies, so that re-picking favourites would be easy."""
    config = WorldConfig(users=300, days=hours / 24, seed=5, arrivals_per_day=0.0, allow_download=False)
    sink, journal = MemorySink(), []
    service = FixedService(list(range(20)), universe.catalog.slug)
    world, _ = build_world(config, universe=universe, sink=sink, journal=journal, service=service, params=params)
    world.pop.activity[:] = 30.0  # sessions a day
    world.pop.binge[:] = 0.9
    world.run(until=run_until(config))
    starts = [(e[2], e[3]) for e in journal if e[0] == "start"]
    ratings = [(e.user_id, e.movie_id) for e in map(parse_line, sink.lines) if isinstance(e, RateEvent)]
    return world, starts, ratings


def test_a_user_never_picks_a_movie_again_and_rates_each_pair_at_most_once(universe) -> None:
    world, starts, ratings = _starts_and_ratings(universe, BehaviorParams())
    per_user = np.bincount([u for u, _ in starts])
    assert len(starts) > 3000 and per_user.max() > 8  # users watched more than the old 8-movie window
    assert len(set(starts)) == len(starts)  # no (user, movie) pair started twice (resuming is not starting)
    assert len(ratings) > 300 and len(set(ratings)) == len(ratings)  # and none rated twice
    assert set(ratings) <= set(starts)
    rows = np.array([u - 1 for u, _ in starts])
    slug_row = {s: i for i, s in enumerate(universe.catalog.slug)}
    assert world.has_seen(rows, np.array([slug_row[m] for _, m in starts])).all()


def test_beyond_its_memory_a_user_takes_movies_sharing_a_watched_ones_bit_as_seen(universe) -> None:
    world, starts, ratings = _starts_and_ratings(universe, BehaviorParams(seen_bits=64), hours=12.0)
    slug_row = {s: i for i, s in enumerate(universe.catalog.slug)}
    assert len(universe.catalog.slug) > 64 and world.seen.shape[1] == 1  # one 64-bit word per user
    assert len(set(starts)) == len(starts) and len(set(ratings)) == len(ratings)
    bits: dict[int, set[int]] = {}
    for u, m in starts:  # a second movie on a watched movie's bit (row % 64) reads as seen: never picked
        bit = slug_row[m] % 64
        assert bit not in bits.setdefault(u, set()), (u, m)
        bits[u].add(bit)
    u, m = starts[0][0] - 1, slug_row[starts[0][1]]
    assert world.has_seen(np.array([u, u]), np.array([m, m + 64])).all()
    unseen = next(b for b in range(64) if b not in bits[u + 1])
    assert not world.has_seen(np.array([u]), np.array([unseen]))[0]


def test_the_watched_movie_memory_needs_a_whole_word() -> None:
    from movielab.world.behavior import seen_bits

    assert seen_bits(1682, 2048) == 1728 and seen_bits(27_000, 2048) == 2048 and seen_bits(10, 2048) == 64
    with pytest.raises(ValueError, match="seen_bits=32"):
        seen_bits(1682, 32)
