"""The event store: idempotent appends, immutable hashed snapshots, derived views with known answers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from batches import lines_batch

from movielab.contract import account_line, rate_line, recommendation_line, watch_line
from movielab.recommender.errors import SnapshotConflict, UnknownSnapshot
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo, segment_of
from movielab.recommender.training.data import TrainingData

T0 = datetime(2026, 3, 20, 8, 0, 0)
A, B, C = "a+2000", "b+2001", "c+2002"


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def watching(user: int, movie: str, minutes: list[int], start: datetime) -> list[str]:
    """One watch line a minute, in order."""
    return [watch_line(stamp(start + timedelta(minutes=i)), user, movie, m) for i, m in enumerate(minutes)]


@pytest.fixture
def store():
    with EventStore(None) as s:
        yield s


def known_events() -> list[str]:
    """User 1 watches 30 distinct minutes of A (100 min) with a rewind and rates it 3 then 5; user 2 only rates B,
    then watches all of B twice over; user 3 watches 60 minutes of C, whose runtime is unknown."""
    lines = watching(1, A, list(range(1, 21)) + list(range(11, 31)), T0)  # minutes 1..20, rewind to 11..30
    lines += [rate_line(stamp(T0 + timedelta(hours=1)), 1, A, 3), rate_line(stamp(T0 + timedelta(hours=2)), 1, A, 5)]
    lines += [rate_line(stamp(T0 + timedelta(minutes=5)), 2, B, 4)]
    lines += watching(2, B, list(range(1, 91)) + list(range(1, 11)), T0 + timedelta(minutes=10))
    lines += watching(3, C, list(range(1, 61)), T0)
    lines += [account_line(stamp(T0), 4)]
    return lines


def fill(store: EventStore) -> None:
    movies = [MovieInfo(A, 100, ("Drama",), "A"), MovieInfo(B, 90, (), "B"), MovieInfo(C, None, (), "C")]
    store.add_records(movies=movies, users=[UserInfo(1, 30, "F", "writer"), UserInfo(2, 20, "M", "artist")])
    store.append(lines_batch(known_events()))


# --- appends ---------------------------------------------------------------------------------------
def test_append_is_idempotent(store: EventStore) -> None:
    b = lines_batch(watching(1, A, [1, 2, 3], T0), quarantine=[(3, b"garbage", "malformed", "expected …")])
    first = store.append(b)
    keys, counts = store.event_keys(), store.counts()
    again = store.append(b)
    assert (first.events, first.quarantined) == (3, 1)
    assert (again.events, again.quarantined) == (0, 0)
    assert store.event_keys() == keys == [("movielog1", 0, 0), ("movielog1", 0, 1), ("movielog1", 0, 2)]
    assert store.counts() == counts
    assert store.committed_offsets() == {("movielog1", 0): 4}


def test_a_replayed_line_is_never_moved_between_events_and_quarantine(store: EventStore) -> None:
    store.append(lines_batch([], quarantine=[(0, b"x", "unknown_movie", "movie 'a+2000' is unknown")]))
    store.append(lines_batch(watching(1, A, [1, 2], T0)))  # offsets 0 and 1; 0 was quarantined already
    assert store.event_keys() == [("movielog1", 0, 1)]
    assert store.quarantine_counts() == {"unknown_movie": 1}


def test_committed_offsets_per_partition_count_quarantined_lines(store: EventStore) -> None:
    store.append(lines_batch(watching(1, A, [1, 2], T0), first=10, partition=0))
    store.append(lines_batch(watching(2, A, [1], T0), first=0, partition=1, quarantine=[(1, b"?", "malformed", "r")]))
    assert store.committed_offsets() == {("movielog1", 0): 12, ("movielog1", 1): 2}
    assert store.latest_times() == {("movielog1", 0): T0 + timedelta(minutes=1), ("movielog1", 1): T0}


def test_quarantine_keeps_line_and_reason(store: EventStore) -> None:
    store.append(
        lines_batch([], quarantine=[(0, b"\xff\xfe", "malformed", "not UTF-8"), (1, b"l", "bad_time", "1970")])
    )
    assert store.quarantine_counts() == {"bad_time": 1, "malformed": 1}
    assert store.quarantined("malformed") == [("movielog1", 0, 0, b"\xff\xfe", "malformed", "not UTF-8")]


def test_counts(store: EventStore) -> None:
    fill(store)
    counts = store.counts()
    assert counts["events"] == len(known_events())
    assert (counts["events.watch"], counts["events.rate"], counts["events.account"]) == (200, 3, 1)
    assert (counts["users"], counts["movies"], counts["quarantine"]) == (2, 3, 0)


# --- snapshots ---------------------------------------------------------------------------------------
def test_snapshot_is_immutable(store: EventStore) -> None:
    fill(store)
    snap = store.create_snapshot("day1", T0, T0 + timedelta(days=1))
    sessions = store.watch_sessions(snap)
    late = watching(1, B, [1, 2, 3], T0 + timedelta(hours=3))  # inside the window, appended afterwards
    store.append(lines_batch(late, first=1000))
    assert store.snapshot("day1") == snap and store.snapshot(snap.id) == snap
    assert store.watch_sessions("day1").equals(sessions)
    assert store.verify_snapshot("day1")
    assert TrainingData.from_snapshot(store, "day1").watched.nnz == 3  # user 1 × B is not in it
    later = store.create_snapshot("day1-again", T0, T0 + timedelta(days=1))
    assert later.rows == snap.rows + 3 and later.content_hash != snap.content_hash


def test_snapshot_id_is_the_hash_prefix_and_the_window_filters(store: EventStore) -> None:
    fill(store)
    snap = store.create_snapshot("first-hour", T0, T0 + timedelta(hours=1))
    assert snap.id == snap.content_hash[:16] and len(snap.content_hash) == 64
    assert snap.rows == sum(1 for line in known_events() if line < stamp(T0 + timedelta(hours=1)))


def test_snapshot_hash_is_stable_and_content_sensitive() -> None:
    lines = known_events()
    with EventStore(None) as one, EventStore(None) as two, EventStore(None) as three:
        one.append(lines_batch(lines))
        two.append(lines_batch(lines[100:], first=100))  # other batches, other order: same content
        two.append(lines_batch(lines[:100]))
        changed = [line.replace("=5", "=4") for line in lines]
        three.append(lines_batch(changed))
        h1, h2, h3 = (s.create_snapshot("all", None, None).content_hash for s in (one, two, three))
    assert h1 == h2
    assert h3 != h1


def test_snapshot_names_and_conflicts(store: EventStore) -> None:
    fill(store)
    snap = store.create_snapshot("all", None, None)
    assert store.create_snapshot("all", None, None) == snap  # same name, same content
    assert store.create_snapshot("other", None, None) == snap  # same content: the same snapshot
    store.append(lines_batch(watching(5, A, [1], T0), first=500))
    with pytest.raises(SnapshotConflict, match="'all'"):
        store.create_snapshot("all", None, None)
    with pytest.raises(UnknownSnapshot, match="'nope'"):
        store.snapshot("nope")
    with pytest.raises(ValueError, match="not after"):
        store.create_snapshot("backwards", T0, T0)
    assert [s.name for s in store.snapshots()] == ["all"]


def test_snapshot_survives_reopening(tmp_path) -> None:
    path = tmp_path / "events.duckdb"
    with EventStore(path) as s:
        fill(s)
        snap = s.create_snapshot("all", None, None)
    with EventStore(path) as s:
        assert s.snapshot("all") == snap and s.verify_snapshot(snap.id)
        s.append(lines_batch(watching(9, A, [1], T0), first=999))
        assert s.event_keys()[-1] == ("movielog1", 0, 999)
        assert s.create_snapshot("more", None, None).max_seq == snap.max_seq + 1


# --- derived views -------------------------------------------------------------------------------------
def test_watch_sessions(store: EventStore, caplog) -> None:
    fill(store)
    with caplog.at_level(logging.WARNING):
        rows = {
            (r["user_id"], r["movie_id"]): r
            for r in store.watch_sessions(store.create_snapshot("s", None, None)).to_pylist()
        }
    one = rows[(1, A)]
    assert (one["minutes"], one["max_minute"], one["runtime"]) == (30, 30, 100)
    assert one["completion"] == pytest.approx(0.30)
    assert (one["first_time"], one["last_time"]) == (T0, T0 + timedelta(minutes=39))
    assert rows[(2, B)]["completion"] == 1.0 and rows[(2, B)]["minutes"] == 90
    assert rows[(3, C)]["runtime"] is None and rows[(3, C)]["completion"] == pytest.approx(60 / 120)
    assert "without a known runtime" in caplog.text


def test_ratings_latest_wins(store: EventStore) -> None:
    fill(store)
    # Two ratings at the same second: the later ingested one wins.
    same = stamp(T0 + timedelta(hours=5))
    store.append(lines_batch([rate_line(same, 2, A, 1), rate_line(same, 2, A, 2)], first=900))
    rows = {
        (r["user_id"], r["movie_id"]): r["rating"]
        for r in store.ratings(store.create_snapshot("s", None, None)).to_pylist()
    }
    assert rows == {(1, A): 5, (2, B): 4, (2, A): 2}


def test_requests_with_outcome_and_pick(store: EventStore) -> None:
    us = "%Y-%m-%dT%H:%M:%S.%f"
    lines = [
        recommendation_line(T0.strftime(us), 7, "t:8082", 200, f"{B}, {A}", 12),
        watch_line(stamp(T0 + timedelta(seconds=5)), 7, A, 1),
        recommendation_line(
            (T0 + timedelta(hours=1)).strftime(us), 7, "t:8082", 0, "Request timeout to t:8082 after 600 ms", 601
        ),
        recommendation_line((T0 + timedelta(hours=2)).strftime(us), 7, "t:8082", 200, f"{B}", 3),
        watch_line(stamp(T0 + timedelta(hours=2, seconds=9)), 7, C, 1),
    ]
    store.append(lines_batch(lines))
    rows = store.requests(store.create_snapshot("s", None, None)).to_pylist()
    assert [(r["outcome"], r["ok"], r["picked"], r["picked_recommended"]) for r in rows] == [
        ("ok", True, A, True),
        ("no_answer", False, None, False),
        ("ok", True, C, False),
    ]
    assert rows[0]["recommendations"] == [B, A] and rows[1]["error"].startswith("Request timeout")
    assert [r["response_ms"] for r in rows] == [12, 601, 3]


def test_training_data_known_answer(store: EventStore) -> None:
    fill(store)
    snap = store.create_snapshot("train", None, None)
    data = TrainingData.from_snapshot(store, snap)
    assert data.users.tolist() == [1, 2, 3] and data.items == [A, B, C] and data.snapshot_id == snap.id
    assert data.watched.toarray() == pytest.approx(np.array([[0.3, 0, 0], [0, 1.0, 0], [0, 0, 0.5]]))
    assert data.ratings.toarray().tolist() == [[5, 0, 0], [0, 4, 0], [0, 0, 0]]
    last = {(0, 0): T0 + timedelta(hours=2), (1, 1): T0 + timedelta(minutes=109), (2, 2): T0 + timedelta(minutes=59)}
    assert data.times.nnz == 3
    for (row, col), t in last.items():  # the last interaction: a rating or a watched minute
        assert data.times[row, col] == (t - datetime(1970, 1, 1)).total_seconds()
    assert data.segment.tolist() == [
        int(segment_of(np.array([30]), np.array([0]))[0]),
        int(segment_of(np.array([20]), np.array([1]))[0]),
        -1,
    ]


def test_training_data_reads_users_as_of_the_snapshot(store: EventStore) -> None:
    fill(store)
    snap = store.create_snapshot("before-user-3", None, None)
    store.add_records(users=[UserInfo(3, 40, "F", "other")])
    assert TrainingData.from_snapshot(store, snap).segment.tolist()[2] == -1  # user 3's record came after the snapshot
    store.append(lines_batch(watching(3, A, [1], T0), first=700))
    assert TrainingData.from_snapshot(store, store.create_snapshot("after", None, None)).segment.tolist()[2] >= 0


def test_empty_snapshot_gives_empty_training_data(store: EventStore) -> None:
    snap = store.create_snapshot("empty", None, None)
    data = TrainingData.from_snapshot(store, snap)
    assert snap.rows == 0 and data.watched.shape == (0, 0)


# --- refreshed user and movie records ------------------------------------------------------------
def test_a_refresh_replaces_changed_details_and_snapshots_keep_the_old_ones(store: EventStore) -> None:
    fill(store)
    before = store.create_snapshot("before-refresh", None, None)
    old_segment = TrainingData.from_snapshot(store, before).segment.tolist()
    # user 1 turns 60; movie A turns out to last 30 minutes (user 1's 30 distinct minutes complete it)
    store.refresh_records(
        users=[UserInfo(1, 60, "F", "retired"), UserInfo(2, 20, "M", "artist")],
        movies=[MovieInfo(A, 30, ("Drama",), "A")],
    )
    # Snapshots are content-addressed by their events: the same events would give back `before` itself.
    store.append(lines_batch([account_line(stamp(T0), 5)], first=900))
    after = store.create_snapshot("after-refresh", None, None)
    assert (
        TrainingData.from_snapshot(store, before).segment.tolist() == old_segment
    )  # a snapshot reads what it was taken with
    assert TrainingData.from_snapshot(store, after).segment.tolist()[0] == segment_of(np.array([60]), np.array([0]))[0]
    assert TrainingData.from_snapshot(store, after).segment.tolist()[0] != old_segment[0]
    sessions = {(r["user_id"], r["movie_id"]): r["completion"] for r in store.watch_sessions(after).to_pylist()}
    old_sessions = {(r["user_id"], r["movie_id"]): r["completion"] for r in store.watch_sessions(before).to_pylist()}
    assert sessions[(1, A)] == 1.0 and old_sessions[(1, A)] == pytest.approx(0.3)
    assert store.read("SELECT count(*) FROM users")[0][0] == 2  # one current record per id
    assert store.read("SELECT user_id, age FROM user_history") == [(1, 30)]  # unchanged user 2 made no history


def test_stale_records_are_the_oldest_unchecked_and_a_refresh_or_check_makes_them_fresh(store: EventStore) -> None:
    fill(store)
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    assert store.stale_records("users", later) == [1, 2]
    assert sorted(store.stale_records("movies", later)) == [A, B, C]
    assert store.stale_records("users", datetime(2000, 1, 1)) == []  # nothing fetched that long ago
    checked = datetime.now(UTC).replace(tzinfo=None)
    store.refresh_records(users=[UserInfo(1, 30, "F", "writer")])  # unchanged: only checked
    store.mark_checked("movies", [B])  # e.g. the API no longer knows it: asked, kept as it was
    assert store.stale_records("users", checked) == [2]
    assert sorted(store.stale_records("movies", checked)) == [A, C]
    assert store.stale_records("users", later, limit=1) == [2]  # oldest check first: user 2 was never asked again
    with pytest.raises(ValueError, match="record kind 'ratings' is unknown"):
        store.stale_records("ratings", later)
