"""Reading ratings files for the published protocol: u.data and RecBole .inter, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.recommender.errors import RatingsFileError
from movielab.recommender.training.ratingsfile import read

ROWS = [(196, 242, 3, 881250949), (186, 302, 3, 891717742), (196, 377, 1, 878887116), (22, 242, 5, 880606923)]


def _check(r) -> None:
    # users 22 < 186 < 196 and items "242" < "302" < "377" become dense indices in id order
    assert r.user.tolist() == [2, 1, 2, 0]
    assert r.item.tolist() == [0, 1, 2, 0]
    assert r.rating.tolist() == [3, 3, 1, 5]
    assert r.timestamp.dtype == np.int64 and r.timestamp[0] == 881250949


def test_reads_u_data_from_the_file_or_its_folder(tmp_path) -> None:
    (tmp_path / "u.data").write_text("".join("\t".join(map(str, row)) + "\n" for row in ROWS))
    _check(read(tmp_path / "u.data"))
    _check(read(tmp_path))


def test_reads_a_recbole_inter_file_by_its_header(tmp_path) -> None:
    header = "timestamp:float\tuser_id:token\titem_id:token\trating:float\n"  # columns found by name, any order
    body = "".join(f"{t}\t{u}\t{i}\t{r}\n" for u, i, r, t in ROWS)
    (tmp_path / "ml-100k.inter").write_text(header + body)
    _check(read(tmp_path))


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("u.data", "1\t2\t3\n", "has 3 columns"),
        ("u.data", "1\t2\tgood\t5\n", "not a number"),
        ("x.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n", "header lacks timestamp"),
    ],
)
def test_bad_files_are_errors_naming_the_file_and_the_reason(tmp_path, name, text, reason) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(RatingsFileError, match=reason) as err:
        read(tmp_path / name)
    assert name in str(err.value)


def test_a_folder_without_ratings_is_an_error(tmp_path) -> None:
    with pytest.raises(RatingsFileError, match="no u.data"):
        read(tmp_path)
    with pytest.raises(RatingsFileError, match="does not exist"):
        read(tmp_path / "missing.data")


def _ratings_file(path, rerated: bool) -> None:
    """20 users rating 4..10 of 30 movies (popular ones more often), plus 3 users of 5 ratings each.

    With `rerated`, each of the 3 also rated one of its movies a second time, earlier, with another value.
    """
    rng = np.random.default_rng(7)
    rows = []
    for user in range(1, 24):
        n = 5 if user > 20 else int(rng.integers(4, 11))
        movies = rng.choice(30, n, replace=False, p=np.linspace(2, 0.2, 30) / np.linspace(2, 0.2, 30).sum())
        rows += [(user, int(m) + 1, int(rng.integers(1, 6)), 880000000 + 1000 * user + k) for k, m in enumerate(movies)]
    if rerated:
        rows += [(user, next(r for r in rows if r[0] == user)[1], 1, 870000000 + user) for user in (21, 22, 23)]
    path.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))


def test_a_movie_rated_twice_keeps_the_latest_rating_and_says_so(tmp_path, caplog) -> None:
    from movielab.recommender.training.evaluate import ml100k_protocol
    from movielab.recommender.training.models import create

    _ratings_file(tmp_path / "twice.data", rerated=True)
    _ratings_file(tmp_path / "once.data", rerated=False)
    twice, once = read(tmp_path / "twice.data"), read(tmp_path / "once.data")
    assert (twice.merged, once.merged) == (3, 0) and "3 repeated (user, item) ratings merged" in caplog.text
    for name in ("user", "item", "rating", "timestamp"):
        assert np.array_equal(getattr(twice, name), getattr(once, name)), name

    def ndcg(r) -> float:
        rows = ml100k_protocol(
            r.user, r.item, r.rating, r.timestamp, lambda: [create("popularity")], seeds=(0,), latency_users=5
        )
        return rows[0].metrics["ndcg@10"]

    assert ndcg(twice) == ndcg(once) > 0


def test_recbole_tokens_are_text(tmp_path) -> None:
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (tmp_path / "a.inter").write_text(header + "1\t10\t4\t1\n01\t10\t5\t2\n1\t9\t3\t3\n")
    r = read(tmp_path / "a.inter")
    assert r.user.tolist() == [1, 0, 1]  # "01" and "1" are two users (text order: "01" < "1")
    assert r.item.tolist() == [1, 1, 0] and r.merged == 0
