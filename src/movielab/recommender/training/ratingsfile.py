"""Ratings files for the published offline protocol: MovieLens `u.data` or a RecBole `.inter` file.

The recommender never imports the world, so it reads these two well-known formats itself:
`u.data` is `user<TAB>item<TAB>rating<TAB>timestamp` without a header; a RecBole atomic `.inter`
file has a header naming typed columns (`user_id:token`, `item_id:token`, `rating:float`,
`timestamp:float`). Ids come back as dense indices 0..n-1 in id order (numeric ids by value), since
the protocol needs matrix rows. RecBole `:token` columns are text: `01` and `1` are two users.

A user who rated a movie twice keeps only the latest rating of the pair (`Ratings.merged` says how
many rows were merged, and it is logged): a pair kept twice lands in train and test of a split, and
the held-out movie, already seen, can never be recommended.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from movielab.recommender.errors import RatingsFileError
from movielab.recommender.training.data import latest_per_pair

logger = logging.getLogger(__name__)

_RECBOLE = {"user_id": "user", "item_id": "item", "rating": "rating", "timestamp": "timestamp"}


@dataclass(frozen=True)
class Ratings:
    """One row per rating: dense user and item indices, the rating and its unix time."""

    user: np.ndarray  # int64, 0..n_users-1
    item: np.ndarray  # int64, 0..n_items-1
    rating: np.ndarray  # float32
    timestamp: np.ndarray  # int64 unix seconds
    merged: int = 0  # rows of the file merged into a later rating of the same (user, item) pair


def find(path: Path | str) -> Path:
    """The ratings file itself, given it or a folder holding `u.data` or one `*.inter` file."""
    path = Path(path)
    if path.is_dir():
        found = [path / "u.data"] if (path / "u.data").is_file() else sorted(path.glob("*.inter"))
        if len(found) != 1:
            raise RatingsFileError(path, "folder holds no u.data and not exactly one *.inter file")
        path = found[0]
    if not path.is_file():
        raise RatingsFileError(path, "does not exist")
    return path


def read(path: Path | str) -> Ratings:
    """Read `u.data` or a RecBole `.inter` file (or a folder holding one)."""
    path = find(path)
    recbole = path.suffix == ".inter"
    try:
        # RecBole's `:token` type is text: read as numbers, users "01" and "1" would merge
        tokens = _token_columns(path) if recbole else []
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(autogenerate_column_names=not recbole),
            parse_options=pacsv.ParseOptions(delimiter="\t"),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in tokens}),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise RatingsFileError(path, f"is not tab-separated ratings: {exc}") from None
    if recbole:
        names = {c.partition(":")[0]: c for c in table.column_names}
        missing = [k for k in _RECBOLE if k not in names]
        if missing:
            raise RatingsFileError(path, f"header lacks {', '.join(missing)} (has {', '.join(table.column_names)})")
        cols = {new: table.column(names[old]) for old, new in _RECBOLE.items()}
    else:
        if table.num_columns != 4:
            raise RatingsFileError(path, f"has {table.num_columns} columns, u.data has 4 (user item rating time)")
        cols = dict(zip(_RECBOLE.values(), table.columns, strict=True))
    if table.num_rows == 0:
        raise RatingsFileError(path, "has no ratings")
    try:
        user = _dense(cols["user"])
        item = _dense(cols["item"])
        rating = cols["rating"].to_numpy().astype(np.float32)
        stamp = cols["timestamp"].to_numpy().astype(np.int64)
    except (ValueError, TypeError, pa.ArrowInvalid) as exc:
        raise RatingsFileError(path, f"has a value that is not a number where one is needed: {exc}") from None
    if np.isnan(rating).any():
        raise RatingsFileError(path, "has empty or non-numeric ratings")
    keep = latest_per_pair(user, item, stamp)
    merged = len(user) - len(keep)
    if merged:
        logger.warning(
            "ratings file %s: %d repeated (user, item) ratings merged into the latest of their pair", path, merged
        )
    return Ratings(user[keep].astype(np.int64), item[keep].astype(np.int64), rating[keep], stamp[keep], merged)


def _token_columns(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    return [c for c in header if c.endswith(":token")]


_CANONICAL_INT = re.compile(r"0|[1-9][0-9]{0,17}")


def _dense(column: pa.ChunkedArray) -> np.ndarray:
    """Dense indices in id order: by value where every id is a plain integer, else as text ("01" ≠ "1")."""
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind in "iu":
        return np.unique(values, return_inverse=True)[1]
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    if all(_CANONICAL_INT.fullmatch(v) for v in uniq.tolist()):
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(uniq.astype(np.int64), kind="stable")] = np.arange(len(uniq))
        inverse = rank[inverse]
    return inverse
