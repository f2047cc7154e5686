"""Reading ratings files for the published protocol: u.data and RecBole .inter, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.recommender.ratingsfile import RatingsFileError, read

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
