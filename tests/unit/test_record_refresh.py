"""The ingest's record fetcher refreshes stored user and movie details from the world API when they age."""

from __future__ import annotations

import time

from movielab.recommender.ingest.users import UserFetcher
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo


class FakeApi:
    """The world API as the fetcher uses it: bulk lookups answering from dicts, recording `fresh`."""

    def __init__(self, users: dict[int, UserInfo], movies: dict[str, MovieInfo]) -> None:
        self.users_known, self.movies_known = users, movies
        self.calls: list[tuple[str, tuple, bool]] = []

    def users(self, ids, fresh: bool = False):
        ids = list(ids)
        self.calls.append(("users", tuple(ids), fresh))
        return {i: self.users_known[i] for i in ids if i in self.users_known}, {
            i for i in ids if i not in self.users_known
        }

    def movies(self, ids, fresh: bool = False):
        ids = list(ids)
        self.calls.append(("movies", tuple(ids), fresh))
        known = {i: self.movies_known[i] for i in ids if i in self.movies_known}
        return known, {i for i in ids if i not in self.movies_known}

    def close(self) -> None:
        pass


def _wait(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_aged_records_are_fetched_again_changed_ones_replaced_and_unknown_ones_kept() -> None:
    with EventStore(None) as store:
        store.add_records(
            users=[UserInfo(1, 30, "F", "writer"), UserInfo(2, 20, "M", "artist")],
            movies=[MovieInfo("a+2000", 100, ("Drama",), "A")],
        )
        # the world now says user 1 is 31, user 2 is gone, movie a+2000 lasts 95 minutes
        api = FakeApi({1: UserInfo(1, 31, "F", "writer")}, {"a+2000": MovieInfo("a+2000", 95, ("Drama",), "A")})
        fetcher = UserFetcher(store, api, refresh_after=0.0, refresh_every=3600.0)
        fetcher.start()
        try:
            _wait(lambda: fetcher.refreshed >= 2)
        finally:
            fetcher.stop()
        assert all(fresh for _, _, fresh in api.calls)  # past any cache: the point is to ask again
        assert sorted(store.read("SELECT user_id, age FROM users")) == [(1, 31), (2, 20)]  # user 2 kept as it was
        assert store.read("SELECT runtime FROM movies") == [(95,)]
        asked = [(kind, sorted(ids)) for kind, ids, _ in api.calls]
        assert asked == [("users", [1, 2]), ("movies", ["a+2000"])]  # once per period, not in a loop


def test_no_refresh_when_turned_off_or_records_are_young() -> None:
    with EventStore(None) as store:
        store.add_records(users=[UserInfo(1, 30, "F", "writer")])
        for refresh_after in (None, 3600.0):
            api = FakeApi({1: UserInfo(1, 99, "F", "writer")}, {})
            fetcher = UserFetcher(store, api, refresh_after=refresh_after)
            fetcher.start()
            assert fetcher.drain(5.0)
            time.sleep(0.2)
            fetcher.stop()
            assert api.calls == [] and store.read("SELECT age FROM users") == [(30,)]
