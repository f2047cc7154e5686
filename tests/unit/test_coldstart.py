"""Cold start from self-descriptions: title and genre matching, the blend, the store's lists, serving them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from movielab.recommender.ingest.coldstart import BlendWeights, ColdStart, ColdStartList, blend
from movielab.recommender.ingest.matching import LexicalMatcher, Preferences, normalize
from movielab.recommender.ingest.worldapi import movie_info, user_info
from movielab.recommender.serving import app as serve
from movielab.recommender.serving.answers import AnswerTable
from movielab.recommender.serving.state import prune_coldstart, set_coldstart
from movielab.recommender.store.events import EventStore
from movielab.recommender.store.records import MovieInfo, UserInfo
from movielab.recommender.training.provenance import Provenance

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

MOVIES = [
    MovieInfo("the+usual+suspects+1995", 106, ("Crime", "Thriller"), "The Usual Suspects", 0.31, 1995),
    MovieInfo("toy+story+1995", 81, ("Animation", "Family", "Comedy"), "Toy Story", 0.45, 1995),
    MovieInfo("steal+big_+steal+little+1995", 100, ("Comedy",), "Steal Big, Steal Little", 0.05, 1995),
    MovieInfo("mr.+magoo+1997", 90, ("Comedy",), "Mr. Magoo", 0.04, 1997),
    MovieInfo("harold++kumar+go+to+white+castle+2004", 88, ("Comedy",), "Harold & Kumar Go to White Castle", 0.2, 2004),
    MovieInfo("romeo+and+juliet+1968", 138, ("Drama", "Romance"), "Romeo and Juliet", 0.06, 1968),
    MovieInfo("romeo+and+juliet+1996", 120, ("Drama", "Romance"), "Romeo and Juliet", 0.12, 1996),
    MovieInfo("les+misrables+1998", 134, ("Drama",), "Les Misérables", 0.10, 1998),
    MovieInfo("scream+1996", 111, ("Horror", "Mystery"), "Scream", 0.20, 1996),
    MovieInfo("heat+1995", 170, ("Action", "Crime"), "Heat", 0.25, 1995),
]
IDS = [m.movie_id for m in MOVIES]


@pytest.fixture(scope="module")
def matcher() -> LexicalMatcher:
    return LexicalMatcher(MOVIES)


def test_normalize_drops_case_accents_punctuation_and_a_leading_article() -> None:
    assert normalize("The Usual Suspects") == "usual suspects"
    assert normalize("Les Misérables!") == "les miserables"
    assert normalize("  A  Bug's   Life ") == "bugs life"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I love The Usual Suspects (1995).", ["the+usual+suspects+1995"]),
        ("usual suspcets", ["the+usual+suspects+1995"]),  # typo (swapped letters), no article, lower case
        (
            "Big fan of Comedy. Favorites: Toy Sory and Steal Big, Steal Little",
            ["toy+story+1995", "steal+big_+steal+little+1995"],
        ),
        ("I don't like Horror movies, e.g. Mr. Magoo", ["mr.+magoo+1997"]),  # "e.g." and the title's own full stop
        ("harold & kumar go to white castle and heat", ["harold++kumar+go+to+white+castle+2004", "heat+1995"]),
        ("anything like romeo and juliet (1968)", ["romeo+and+juliet+1968"]),  # "and" inside a title; the year picks
        ("romeo and juliet (1996) and les miserables", ["romeo+and+juliet+1996", "les+misrables+1998"]),
        ("pretty much anything", []),
        ("", []),
        ("good movies", []),
    ],
)
def test_titles_are_found_despite_typos_years_articles_and_case(matcher, text, expected) -> None:
    assert matcher.match(text)[0] == expected


def test_genres_are_found_by_name_and_alias_as_the_records_name_them(matcher) -> None:
    assert matcher.match("Mostly Sci-Fi and children's, not much else")[1] == ["Science Fiction", "Family"]
    assert matcher.match("horror and drama")[1] == ["Horror", "Drama"]
    assert matcher.match("horror and drama")[0] == []  # a genre is not a title


def test_a_movie_named_in_both_answers_counts_as_disliked(matcher) -> None:
    prefs = matcher.preferences("Toy Story and Heat, comedy", "heat was boring, horror")
    assert prefs == Preferences(("toy+story+1995",), ("heat+1995",), ("Comedy",), ("Horror",))


def test_blend_puts_liked_titles_first_drops_disliked_and_reorders_by_genre() -> None:
    genres = {m.movie_id: m.genres for m in MOVIES}
    fallback = ["scream+1996", "heat+1995", "toy+story+1995", "the+usual+suspects+1995", "mr.+magoo+1997"]
    prefs = Preferences(
        liked=("les+misrables+1998",), disliked=("heat+1995",), liked_genres=("Comedy",), disliked_genres=("Horror",)
    )
    got = blend(prefs, fallback, genres, n=10)
    assert got[0] == "les+misrables+1998"  # named, even though not in the fallback
    assert "heat+1995" not in got
    assert got.index("toy+story+1995") < got.index("the+usual+suspects+1995")  # comedy up
    assert got[-1] == "scream+1996"  # horror down from first place
    assert blend(Preferences(), fallback, genres, n=3) == fallback[:3]  # nothing said: the fallback as it is
    assert len(blend(prefs, fallback, genres, n=2)) == 2
    with pytest.raises(ValueError, match="n=0"):
        blend(prefs, fallback, genres, n=0)
    heavy = BlendWeights(liked_title=0.0, liked_genre=0.0, disliked_genre=0.0)
    assert blend(prefs, fallback, genres, n=10, weights=heavy)[0] == "scream+1996"


def test_build_uses_the_users_segment_and_says_what_made_the_list(matcher) -> None:
    fallback = {-1: IDS[:5], 5: ["scream+1996", "heat+1995", "toy+story+1995"]}  # segment 5: men aged 25-34
    cold = ColdStart(matcher, fallback, {m.movie_id: m.genres for m in MOVIES}, n=5)
    described = cold.build(UserInfo(7, 30, "M", "writer", "I love toy story", "scream"))
    assert described.movies[0] == "toy+story+1995" and "scream+1996" not in described.movies
    assert (described.matcher, described.fallback, described.liked, described.disliked) == (
        "lexical-v1",
        "segment:5",
        ("toy+story+1995",),
        ("scream+1996",),
    )
    silent = cold.build(UserInfo(8, None, None, None))  # a record from before 2026, no demographics
    assert (silent.movies, silent.matcher, silent.fallback) == (tuple(IDS[:5]), "none", "global")
    with pytest.raises(ValueError, match="global fallback"):
        ColdStart(matcher, {5: IDS}, {})


def test_records_carry_license_cost_year_and_self_descriptions() -> None:
    m = movie_info(
        {
            "id": "heat+1995",
            "runtime": 170,
            "genres": [{"id": 28, "name": "Action"}],
            "title": "Heat",
            "release_date": "1995-12-15",
            "license_cost": 0.2512,
        }
    )
    assert (m.license_cost, m.year) == (0.2512, 1995)
    old = movie_info({"id": "heat+1995", "runtime": "null", "title": "Heat", "release_date": "null"})
    assert (old.license_cost, old.year) == (None, None)  # an edition without costs, a missing date
    assert movie_info({"id": "x", "license_cost": "-1"}).license_cost is None
    assert movie_info({"id": "x", "license_cost": "nan"}).license_cost is None
    u = user_info({"user_id": 3, "age": 30, "gender": "F", "occupation": "writer", "likes": "", "dislikes": "x"})
    assert (u.likes, u.dislikes) == ("", "x")
    assert user_info({"user_id": 3}).likes is None


def test_the_store_keeps_costs_with_history_and_cold_start_lists() -> None:
    with EventStore() as store:
        store.add_records(movies=MOVIES[:2], users=[UserInfo(7, 30, "M", "writer", "heat", "")])
        assert store.movie_costs() == {"the+usual+suspects+1995": 0.31, "toy+story+1995": 0.45}
        assert store.user_record(7) == UserInfo(7, 30, "M", "writer", "heat", "")
        assert store.user_record(8) is None
        old = store.snapshot(store.create_snapshot("before", None, None).id)
        cheaper = MovieInfo("toy+story+1995", 81, ("Animation", "Family", "Comedy"), "Toy Story", 0.2, 1995)
        store.refresh_records(movies=[cheaper])
        assert store.movie_costs()["toy+story+1995"] == 0.2
        then = store.read(
            """SELECT license_cost FROM movie_history WHERE movie_id = 'toy+story+1995'
                             AND fetched_at <= $t AND replaced_at > $t""",
            {"t": old.created_at},
        )
        assert then == [(0.45,)]  # the snapshot still reads the cost it was taken with
        first = ColdStartList(7, ("heat+1995",), ("heat+1995",), (), ("Action",), "lexical-v1", "segment:5")
        assert store.save_coldstart([first]) == 1
        store.save_coldstart([ColdStartList(7, ("scream+1996",), (), (), (), "lexical-v1", "global")])
        assert store.coldstart_lists() == {7: (["scream+1996"], "lexical-v1")}  # the newer list replaces


class _Model:
    name = "fake"
    users = np.array([10], np.int64)
    items = IDS

    def recommend_rows(self, rows, n=20, exclude_seen=True):
        return np.tile(np.arange(min(n, len(IDS)), dtype=np.int32), (len(rows), 1))

    def fallback(self, segment):
        return IDS[::-1]


def test_serving_answers_a_new_user_from_the_cold_start_list_with_its_provenance() -> None:
    table = AnswerTable.build(_Model(), Provenance("fake", "3", "snap-1", "abc123", "2026-03-20T08:12:38"))
    app = serve.create_app(table)
    client = TestClient(app)
    assert client.get("/recommend/99").headers["x-model"].endswith("source=global; arm=champion")
    lists = [
        ColdStartList(99, ("heat+1995", "scream+1996"), ("heat+1995",), (), (), "lexical-v1", "segment:5"),
        ColdStartList(10, ("heat+1995",), (), (), (), "lexical-v1", "global"),
    ]
    assert set_coldstart(app, lists) == 2
    r = client.get("/recommend/99")
    assert r.text == "heat+1995,scream+1996"
    assert "source=coldstart; arm=champion; matcher=lexical-v1; fallback=segment:5" in r.headers["x-model"]
    assert client.get("/recommend/10").text == ",".join(IDS)  # the model knows user 10: its list wins
    assert 'recommend_requests_total{arm="champion",source="coldstart"} 1.0' in client.get("/metrics").text
    with pytest.raises(ValueError, match="user 5"):
        set_coldstart(app, [ColdStartList(5, ("bad id",), (), (), (), "lexical-v1", "global")])
    with pytest.raises(ValueError, match="not a header token"):
        set_coldstart(app, [ColdStartList(5, ("heat+1995",), (), (), (), "a; b", "global")])
    assert client.get("/recommend/5").headers["x-model"].endswith("source=global; arm=champion")


def test_a_version_that_knows_the_user_takes_over_and_the_list_is_dropped() -> None:
    table = AnswerTable.build(_Model(), Provenance("fake", "3", "snap-1", "abc123", "2026-03-20T08:12:38"))
    app = serve.create_app(table)
    set_coldstart(app, [ColdStartList(u, ("heat+1995",), (), (), (), "lexical-v1", "global") for u in (10, 11)])
    assert prune_coldstart(app) == 1  # user 10 is in the model
    assert set(app.state.coldstart) == {11}
