"""Readers of the MovieLens file formats (GroupLens ml-100k/ml-1m/ml-latest, RecBole's ml-100k copy).

Each reader returns a `MovieLensData`; every malformed line raises `DataFormatError` naming the file
and the line. Ratings are parsed with pyarrow (ml-25m has 25M lines); the small movie and user files
are parsed line by line, which also gives exact line numbers for free.

Input is not taken as it comes:
- Text files GroupLens ships in latin-1 (u.item, u.user, movies.dat, users.dat) are often re-saved as
  UTF-8; each is decoded as UTF-8 first, then latin-1, and text that still reads as UTF-8 decoded as
  latin-1 (`MisÃ©rables`) is refused with the line: mojibake never becomes a title.
- RecBole `:token` ids are text; an id that is not a plain integer (`01`) is refused, since read as a
  number it would silently merge with `1`.
- A user who rated a movie twice keeps the latest rating of the pair; how many were merged is logged.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from movielab.contract.slug import split_title_year
from movielab.world.data.demographics import ml1m_occupation
from movielab.world.data.errors import DataError, DataFormatError
from movielab.world.data.types import GENDERS, GENRES, OCCUPATIONS, MovieLensData, Movies, Ratings, Users

logger = logging.getLogger(__name__)

SUPPORTED_DATASETS: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-latest-small", "ml-25m")
GENRE_INDEX: dict[str, int] = {name: i for i, name in enumerate(GENRES)}
# ml-latest renamed "Children's" and added genres outside the ML-100k vocabulary, which count as none.
_LATEST_GENRES: dict[str, int | None] = {**GENRE_INDEX, "Children": 3, "IMAX": None, "(no genres listed)": None}
_RECBOLE_GENRES: dict[str, int | None] = {**GENRE_INDEX, "unknown": None}
_VIDEO_MARKER = re.compile(r"\s*\(V\)\s*$")  # ml-100k marks a few direct-to-video titles "(1995) (V)"
_RATING_COLUMNS = ("user", "movie", "rating", "timestamp")
_RECBOLE_HEADERS = {
    "inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
}

_MovieRow = tuple[int, str, int, list[int]]  # source id, title without year, year (0 = unknown), genres
_UserRow = tuple[int, int, int, int, str]  # source id, age, gender, occupation code, zip code
_Table = tuple[list[Any], int]  # parsed rows and the line number of the first one


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise DataError(f"{path} is missing: {folder} does not hold a complete MovieLens data set")
    return path


# UTF-8 of é, ü, ’ … read as latin-1 or cp1252: "Ã" or "Â" (or "â" before "€") then a character of 0x80..0xBF
# (or its cp1252 look-alike). Real titles do not have these pairs; re-saved files do.
_MOJIBAKE = re.compile(
    "[\u00c2\u00c3][\u0080-\u00bf\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc]|\u00e2\u20ac"
)
AUTO = "utf-8, else latin-1"  # the encoding argument of `_lines` that detects it


def _lines(path: Path, encoding: str) -> list[str]:
    """The file's lines; `encoding` AUTO tries UTF-8, then latin-1. Mojibake is a DataFormatError at its line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8" if encoding == AUTO else encoding)
    except UnicodeDecodeError as exc:
        if encoding != AUTO:
            raise DataFormatError(path, raw[: exc.start].count(b"\n") + 1, f"not valid {encoding}") from None
        text = raw.decode("latin-1")  # every byte is a latin-1 character: this cannot fail
    bad = _MOJIBAKE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise DataFormatError(
            path,
            line,
            f"{bad.group()!r} is UTF-8 text decoded with a wrong encoding (mojibake); "
            "the file was re-saved badly: restore the original download",
        )
    # split on "\n" only: str.splitlines would also split latin-1 text on \x85 and friends.
    lines = [line.rstrip("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _check_header(path: Path, first: str | None, expected: str | None) -> int:
    """Raise unless the file's first line is `expected`; return the number of the first data line."""
    if expected is None:
        return 1
    if first is None or first.strip() != expected:
        raise DataFormatError(path, 1, f"expected the header {expected!r}, got {first or 'an empty file'!r}")
    return 2


def _table(path: Path, encoding: str, parse: Callable[[str], Any], header: str | None = None) -> _Table:
    """Parse every line of a small file with `parse`; a ValueError becomes a DataFormatError at that line."""
    lines = _lines(path, encoding)
    first_line = _check_header(path, lines[0] if lines else None, header)
    rows = []
    for lineno, line in enumerate(lines[first_line - 1 :], first_line):
        try:
            rows.append(parse(line))
        except (ValueError, DataError) as exc:
            raise DataFormatError(path, lineno, str(exc)) from None
    return rows, first_line


def _fields(line: str, sep: str, count: int) -> list[str]:
    fields = line.split(sep)
    if len(fields) != count:
        raise ValueError(f"expected {count} fields separated by {sep!r}, got {len(fields)}")
    return fields


def _num(value: str, what: str, kind: type = int) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not {'an integer' if kind is int else 'a number'}") from None


_PLAIN_ID = re.compile(r"0|[1-9][0-9]{0,17}")


def _id(value: str, what: str) -> int:
    """An id that must be a plain integer: `01` is refused (as text it is another id than `1`)."""
    if not _PLAIN_ID.fullmatch(value):
        plain = value.isascii() and value.isdigit()
        raise ValueError(
            f"{what} {value!r} is not "
            + ("a plain integer (a token like '01' is not the id 1)" if plain else "an integer")
        )
    return int(value)


def _genre_list(names: list[str], vocabulary: dict[str, int | None]) -> list[int]:
    unknown = [name for name in names if name not in vocabulary]
    if unknown:
        raise ValueError(f"unknown genre {unknown[0]!r}")
    return [i for i in (vocabulary[name] for name in names) if i is not None]


def _title_year(raw: str) -> tuple[str, int]:
    title, year = split_title_year(_VIDEO_MARKER.sub("", raw))
    return title, year or 0


def _gender(value: str) -> int:
    if value not in GENDERS:
        raise ValueError(f"gender {value!r} is not one of {GENDERS}")
    return GENDERS.index(value)


def _check_unique(path: Path, table: _Table, what: str) -> None:
    rows, first_line = table
    seen: dict[int, int] = {}
    for lineno, row in enumerate(rows, first_line):
        if row[0] in seen:
            raise DataFormatError(path, lineno, f"{what} id {row[0]} appears twice (first on line {seen[row[0]]})")
        seen[row[0]] = lineno


def _movies(path: Path, table: _Table) -> Movies:
    _check_unique(path, table, "movie")
    rows = table[0]
    genres = np.zeros((len(rows), len(GENRES)), dtype=bool)
    for i, row in enumerate(rows):
        genres[i, row[3]] = True
    return Movies(
        source_id=np.array([r[0] for r in rows], dtype=np.int64),
        title=[r[1] for r in rows],
        year=np.array([r[2] for r in rows], dtype=np.int16),
        genres=genres,
    )


def _users(path: Path, table: _Table) -> Users:
    _check_unique(path, table, "user")
    ids, ages, genders, occupations, zips = zip(*table[0], strict=False) if table[0] else ((),) * 5
    return Users(
        source_id=np.array(ids, dtype=np.int64),
        age=np.array(ages, dtype=np.int16),
        gender=np.array(genders, dtype=np.uint8),
        occupation=np.array(occupations, dtype=np.uint8),
        zip_code=list(zips),
    )


def _read_ratings(path: Path, sep: str, header: str | None) -> tuple[dict[str, np.ndarray], int]:
    """Parse a ratings file (user, movie, rating, timestamp) with pyarrow; returns columns and first data line."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        first_line = _check_header(path, handle.readline().rstrip("\r\n") if header else None, header)
    source: Any = path
    if sep == "::":  # pyarrow wants a one-character delimiter
        source = io.BytesIO(path.read_bytes().replace(b"::", b"\t"))
    tokens = header == _RECBOLE_HEADERS["inter"]  # RecBole ids are `:token`, text: checked, then numbers
    id_type = pa.string() if tokens else pa.int64()
    types = {"user": id_type, "movie": id_type, "rating": pa.float64(), "timestamp": pa.float64()}
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=list(_RATING_COLUMNS), skip_rows=first_line - 1),
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if sep == "::" else sep, quote_char=False, ignore_empty_lines=False
            ),  # keeps row i on line first_line + i
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=[]),
        )
    except pa.ArrowException as exc:
        raise _diagnose_ratings(path, sep, first_line, str(exc)) from None
    if tokens:
        table = _token_ids(table, path, first_line)
    cols = {name: table.column(name).to_numpy() for name in _RATING_COLUMNS}
    for name, ok, reason in (
        ("rating", (cols["rating"] >= 0.5) & (cols["rating"] <= 5.0), "is outside 0.5..5"),
        ("timestamp", np.isfinite(cols["timestamp"]) & (cols["timestamp"] >= 0), "is not a unix time"),
    ):
        if not ok.all():
            i = int(np.argmin(ok))
            raise DataFormatError(path, first_line + i, f"{name} {cols[name][i]} {reason}")
    return cols, first_line


def _token_ids(table: pa.Table, path: Path, first_line: int) -> pa.Table:
    """User and movie token columns as int64, refusing a token that is not a plain integer (`01`)."""
    for name, what in (("user", "user id"), ("movie", "item id")):
        column = table.column(name)
        plain = pc.match_substring_regex(column, f"^(?:{_PLAIN_ID.pattern})$").to_numpy(zero_copy_only=False)
        if not plain.all():
            i = int(np.argmin(plain))
            raise DataFormatError(
                path,
                first_line + i,
                f"{what} {column[i].as_py()!r} is not a plain integer (a token like '01' is not the id 1)",
            )
        table = table.set_column(table.schema.get_field_index(name), name, pc.cast(column, pa.int64()))
    return table


def _diagnose_ratings(path: Path, sep: str, first_line: int, arrow_reason: str) -> DataFormatError:
    """Find the first bad line of a ratings file that pyarrow refused (slow; only runs on errors)."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        for lineno, line in enumerate(handle, 1):
            if lineno < first_line:
                continue
            try:
                user, movie, rating, timestamp = _fields(line.rstrip("\r\n"), sep, 4)
                _num(user, "user id"), _num(movie, "movie id")
                _num(rating, "rating", float), _num(timestamp, "timestamp", float)
            except ValueError as exc:
                return DataFormatError(path, lineno, str(exc))
    return DataFormatError(path, None, arrow_reason)


def _row_index(ids: np.ndarray, known: np.ndarray, path: Path, first_line: int, what: str) -> np.ndarray:
    """Map ids to row indices of `known`; an unknown id is a DataFormatError naming its line."""
    if len(known) and known.min() >= 0 and known.max() < (1 << 26):  # a lookup table beats searchsorted 3x
        table = np.full(int(known.max()) + 2, -1, dtype=np.int64)  # the last slot stands for "out of range"
        table[known] = np.arange(len(known))
        index = table[np.where((ids >= 0) & (ids < len(table) - 1), ids, len(table) - 1)]
    else:
        order = np.argsort(known, kind="stable")
        pos = np.minimum(np.searchsorted(known[order], ids), max(len(known) - 1, 0))
        index = np.where(known[order][pos] == ids, order[pos], -1) if len(known) else np.full(len(ids), -1)
    if (index < 0).any():
        i = int(np.argmax(index < 0))
        raise DataFormatError(path, first_line + i, f"{what} id {ids[i]} is not in the {what}s file")
    return index.astype(np.int32)


def _dense_index(ids: np.ndarray) -> tuple[int, np.ndarray]:
    """Renumber ids densely 0..n-1 in id order; returns (n, indices)."""
    if len(ids) and ids.min() >= 0 and ids.max() < (1 << 26):  # a lookup table beats sorting 25M ids
        present = np.zeros(int(ids.max()) + 1, dtype=bool)
        present[ids] = True
        table = np.cumsum(present, dtype=np.int64) - 1
        return int(present.sum()), table[ids].astype(np.int32)
    unique, inverse = np.unique(ids, return_inverse=True)
    return len(unique), inverse.astype(np.int32)


def _data(
    name: str, folder: Path, movies: Movies, users: Users | None, path: Path, sep: str, header: str | None = None
) -> MovieLensData:
    """Read the ratings file `path` against movies (and users) and assemble the data set."""
    cols, first_line = _read_ratings(path, sep, header)
    movie = _row_index(cols["movie"], movies.source_id, path, first_line, "movie")
    if users is not None:
        n_users, user = len(users), _row_index(cols["user"], users.source_id, path, first_line, "user")
    else:
        n_users, user = _dense_index(cols["user"])
    keep = _latest_per_pair(user, movie, cols["timestamp"])
    if len(keep) < len(user):
        logger.warning(
            "%s: %d repeated (user, movie) ratings merged into the latest of their pair", path, len(user) - len(keep)
        )
    ratings = Ratings(
        user=user[keep],
        movie=movie[keep],
        rating=cols["rating"][keep].astype(np.float32),
        timestamp=cols["timestamp"][keep].astype(np.int64),
    )
    logger.info("loaded %s from %s: %d users, %d movies, %d ratings", name, folder, n_users, len(movies), len(ratings))
    return MovieLensData(
        name=name, movies=movies, ratings=ratings, users=users, n_users=n_users, source=f"folder {folder}"
    )


def _latest_per_pair(user: np.ndarray, movie: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Sorted row indices keeping the latest rating of each (user, movie) pair (the later line on equal times).

    A pair kept twice would be in train and test of a split: the held-out movie is already seen.
    """
    key = user.astype(np.int64) << 32 | movie.astype(np.int64)
    order = np.lexsort((np.arange(len(key)), time, key))
    last = np.ones(len(order), bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    return np.sort(order[last])


def _ml100k_user(sep: str) -> Callable[[str], _UserRow]:
    def parse(line: str) -> _UserRow:
        uid, age, gender, occupation, zip_code = _fields(line, sep, 5)
        years = _num(age, "age")
        return _id(uid, "user id"), years, _gender(gender), ml1m_occupation(occupation, years), zip_code

    return parse


def _ml100k_native_movie(line: str) -> _MovieRow:
    fields = _fields(line, "|", 24)
    flags = fields[5:]
    if any(flag not in ("0", "1") for flag in flags):
        raise ValueError(f"genre flags must be 0 or 1, got {'|'.join(flags)!r}")
    genres = [i - 1 for i, flag in enumerate(flags) if flag == "1" and i > 0]  # flag 0 is "unknown"
    return (_id(fields[0], "movie id"), *_title_year(fields[1]), genres)


def _ml100k_recbole_movie(line: str) -> _MovieRow:
    item_id, title, year, classes = _fields(line, "\t", 4)
    if title == "unkonwn":  # RecBole's spelling of movie 267's title "unknown"; keep its slug the same
        title = "unknown"
    if re.fullmatch(r"\d{4}", year):
        title, year_value = split_title_year(title)[0], int(year)
    elif year in ("", "unknown", "unkonwn", "V"):  # RecBole took "(V)" of "… (1995) (V)" for a year
        title, year_value = _title_year(title)
    else:
        raise ValueError(f"release year {year!r} is not a year")
    return _id(item_id, "item id"), title, year_value, _genre_list(classes.split(), _RECBOLE_GENRES)


def _ml1m_movie(line: str) -> _MovieRow:
    movie_id, title, genres = _fields(line, "::", 3)
    return (_id(movie_id, "movie id"), *_title_year(title), _genre_list(genres.split("|"), GENRE_INDEX))


def _ml1m_user(line: str) -> _UserRow:
    uid, gender, age, occupation, zip_code = _fields(line, "::", 5)
    code = _num(occupation, "occupation")
    if not 0 <= code < len(OCCUPATIONS):
        raise ValueError(f"occupation code {code} is outside 0..{len(OCCUPATIONS) - 1}")
    return _id(uid, "user id"), _num(age, "age"), _gender(gender), code, zip_code


def _latest_movies(path: Path) -> Movies:
    lines = _lines(path, "utf-8")
    _check_header(path, lines[0] if lines else None, "movieId,title,genres")
    reader = csv.reader(io.StringIO("\n".join(lines[1:])))  # csv handles titles quoted for their commas
    rows = []
    try:
        for row in reader:  # reader.line_num counts physical lines, so numbering survives quoted newlines
            if len(row) != 3:
                raise ValueError(f"expected 3 comma-separated fields, got {len(row)}")
            genres = _genre_list(row[2].split("|"), _LATEST_GENRES)
            rows.append((_id(row[0], "movie id"), *_title_year(row[1]), genres))
    except (ValueError, csv.Error) as exc:
        raise DataFormatError(path, reader.line_num + 1, str(exc)) from None
    return _movies(path, (rows, 2))


def load_ml100k_native(folder: Path | str) -> MovieLensData:
    """Load GroupLens' ml-100k files (u.data, u.item, u.user) from `folder`."""
    folder = Path(folder)
    item_path, user_path, data_path = (_require(folder, f) for f in ("u.item", "u.user", "u.data"))
    movies = _movies(item_path, _table(item_path, AUTO, _ml100k_native_movie))
    users = _users(user_path, _table(user_path, AUTO, _ml100k_user("|")))
    return _data("ml-100k", folder, movies, users, data_path, "\t")


def load_ml100k_recbole(folder: Path | str) -> MovieLensData:
    """Load RecBole's atomic copy of ml-100k (ml-100k.inter/.item/.user) from `folder`."""
    folder = Path(folder)
    item_path, user_path, inter_path = (_require(folder, f"ml-100k.{ext}") for ext in ("item", "user", "inter"))
    movies = _movies(item_path, _table(item_path, "utf-8", _ml100k_recbole_movie, _RECBOLE_HEADERS["item"]))
    users = _users(user_path, _table(user_path, "utf-8", _ml100k_user("\t"), _RECBOLE_HEADERS["user"]))
    return _data("ml-100k", folder, movies, users, inter_path, "\t", _RECBOLE_HEADERS["inter"])


def load_ml1m(folder: Path | str) -> MovieLensData:
    """Load GroupLens' ml-1m files (ratings.dat, users.dat, movies.dat; latin-1, "::"-separated) from `folder`."""
    folder = Path(folder)
    movie_path, user_path, rating_path = (_require(folder, f) for f in ("movies.dat", "users.dat", "ratings.dat"))
    movies = _movies(movie_path, _table(movie_path, AUTO, _ml1m_movie))
    users = _users(user_path, _table(user_path, AUTO, _ml1m_user))
    return _data("ml-1m", folder, movies, users, rating_path, "::")


def load_ml_latest(folder: Path | str, name: str = "ml-latest-small") -> MovieLensData:
    """Load an ml-latest-style folder (movies.csv, ratings.csv: ml-latest-small, ml-25m); it has no users file."""
    folder = Path(folder)
    movie_path, rating_path = _require(folder, "movies.csv"), _require(folder, "ratings.csv")
    return _data(name, folder, _latest_movies(movie_path), None, rating_path, ",", "userId,movieId,rating,timestamp")


def load_movielens(name: str, folder: Path | str) -> MovieLensData:
    """Load the MovieLens data set `name` (one of SUPPORTED_DATASETS) from `folder`."""
    folder = Path(folder)
    if name == "ml-100k":
        if (folder / "u.data").is_file():
            return load_ml100k_native(folder)
        if (folder / "ml-100k.inter").is_file():
            return load_ml100k_recbole(folder)
        raise DataError(f"{folder} holds no ml-100k: expected u.data/u.item/u.user or ml-100k.inter/.item/.user")
    if name == "ml-1m":
        return load_ml1m(folder)
    if name in ("ml-latest-small", "ml-25m"):
        return load_ml_latest(folder, name)
    raise DataError(f"unknown MovieLens data set {name!r}; supported: {', '.join(SUPPORTED_DATASETS)}")
