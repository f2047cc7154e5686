"""Demographic vocabularies: ml-100k occupations in the ML-1M vocabulary, and time zones by ZIP code.

Time-zone rule (standard time, no daylight saving; hours from UTC):
- US ZIP codes by their first digit: 0–4 → -5 (Eastern), 5–7 → -6 (Central), 8 → -7 (Mountain),
  9 → -8 (Pacific). This is a coarse rule: ZIP areas straddle zones, and Alaska/Hawaii (99x, 967–968)
  are counted as Pacific.
- Canadian postal codes (ml-100k has a few, e.g. "T8H1N", "V3N4P") by their first letter:
  A B C E G H J K L M N P → -5 (Atlantic/Newfoundland/Quebec/Ontario folded into Eastern),
  R S → -6 (Manitoba, Saskatchewan), T → -7 (Alberta), V → -8 (British Columbia).
- Anything else (empty, other letters, non-ASCII) → -5, the most populous zone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from movielab.world.data.errors import DataError
from movielab.world.data.types import OCCUPATIONS

OCCUPATION_INDEX: dict[str, int] = {name: i for i, name in enumerate(OCCUPATIONS)}

# ml-100k's 21 occupation names → the ML-1M vocabulary; "student" is split by age (see ml1m_occupation).
ML100K_OCCUPATIONS: dict[str, str] = {
    "administrator": "clerical/admin",
    "artist": "artist",
    "doctor": "doctor/health care",
    "educator": "academic/educator",
    "engineer": "technician/engineer",
    "entertainment": "artist",
    "executive": "executive/managerial",
    "healthcare": "doctor/health care",
    "homemaker": "homemaker",
    "lawyer": "lawyer",
    "librarian": "academic/educator",
    "marketing": "sales/marketing",
    "none": "unemployed",
    "other": "other or not specified",
    "programmer": "programmer",
    "retired": "retired",
    "salesman": "sales/marketing",
    "scientist": "scientist",
    "student": "college/grad student",
    "technician": "technician/engineer",
    "writer": "writer",
}
K12_AGE_LIMIT = 18  # an ml-100k "student" younger than this is a "K-12 student"

TIME_ZONES: dict[int, str] = {-5: "US/Eastern", -6: "US/Central", -7: "US/Mountain", -8: "US/Pacific"}
DEFAULT_UTC_OFFSET = -5

_US_BY_DIGIT = {"0": -5, "1": -5, "2": -5, "3": -5, "4": -5, "5": -6, "6": -6, "7": -6, "8": -7, "9": -8}
_CANADA_BY_LETTER = {**dict.fromkeys("ABCEGHJKLMNP", -5), "R": -6, "S": -6, "T": -7, "V": -8}


def _offset_table() -> np.ndarray:
    table = np.full(128, DEFAULT_UTC_OFFSET, dtype=np.int8)
    for ch, offset in {**_US_BY_DIGIT, **_CANADA_BY_LETTER}.items():
        table[ord(ch)] = offset
        table[ord(ch.lower())] = offset
    return table


_OFFSETS_BY_CHAR = _offset_table()


def ml1m_occupation(name: str, age: int) -> int:
    """Return the ML-1M occupation code (index into OCCUPATIONS) of an ml-100k occupation name."""
    try:
        mapped = ML100K_OCCUPATIONS[name.strip().lower()]
    except KeyError:
        raise DataError(f"unknown ml-100k occupation {name!r}; expected one of {sorted(ML100K_OCCUPATIONS)}") from None
    if mapped == "college/grad student" and age < K12_AGE_LIMIT:
        mapped = "K-12 student"
    return OCCUPATION_INDEX[mapped]


def utc_offset_for_zip(zip_code: str) -> int:
    """Return the standard UTC offset in hours for a US ZIP or Canadian postal code (rule in the module doc)."""
    if not zip_code:
        return DEFAULT_UTC_OFFSET
    code = ord(zip_code[0])
    return int(_OFFSETS_BY_CHAR[code]) if code < 128 else DEFAULT_UTC_OFFSET


def utc_offsets(zip_codes: Sequence[str]) -> np.ndarray:
    """Return the int8 UTC offsets of many ZIP codes at once (same rule as utc_offset_for_zip)."""
    if len(zip_codes) == 0:
        return np.zeros(0, dtype=np.int8)
    # dtype "U1" keeps only the first character; an empty code becomes "" whose code point reads as 0.
    first = np.asarray(zip_codes, dtype="U1").view(np.uint32)
    out = np.full(first.shape, DEFAULT_UTC_OFFSET, dtype=np.int8)
    ascii_mask = first < 128
    out[ascii_mask] = _OFFSETS_BY_CHAR[first[ascii_mask]]
    return out


def time_zone_name(offset: int) -> str:
    """Return the display label of a UTC offset, e.g. "US/Eastern"; other offsets read like "UTC-4"."""
    return TIME_ZONES.get(int(offset), f"UTC{int(offset):+d}")
