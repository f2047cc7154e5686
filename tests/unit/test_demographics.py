"""Occupation mapping and ZIP-code time zones."""

from __future__ import annotations

import numpy as np
import pytest

from movielab.world.data.demographics import (
    ML100K_OCCUPATIONS,
    OCCUPATION_INDEX,
    TIME_ZONES,
    ml1m_occupation,
    time_zone_name,
    utc_offset_for_zip,
    utc_offsets,
)
from movielab.world.data.errors import DataError
from movielab.world.data.types import OCCUPATIONS


def test_occupation_index_inverts_the_vocabulary():
    assert [OCCUPATION_INDEX[name] for name in OCCUPATIONS] == list(range(len(OCCUPATIONS)))


def test_every_ml100k_occupation_maps_into_the_ml1m_vocabulary():
    assert len(ML100K_OCCUPATIONS) == 21
    assert set(ML100K_OCCUPATIONS.values()) <= set(OCCUPATIONS)


@pytest.mark.parametrize(
    ("name", "age", "expected"),
    [
        ("administrator", 40, "clerical/admin"),
        ("entertainment", 30, "artist"),
        ("healthcare", 30, "doctor/health care"),
        ("librarian", 50, "academic/educator"),
        ("none", 30, "unemployed"),
        ("other", 30, "other or not specified"),
        ("salesman", 30, "sales/marketing"),
        ("student", 17, "K-12 student"),
        ("student", 18, "college/grad student"),
        ("Programmer", 25, "programmer"),
    ],
)
def test_ml1m_occupation(name, age, expected):
    assert OCCUPATIONS[ml1m_occupation(name, age)] == expected


def test_unknown_occupation_is_named():
    with pytest.raises(DataError, match="unknown ml-100k occupation 'astronaut'"):
        ml1m_occupation("astronaut", 30)


@pytest.mark.parametrize(
    ("zip_code", "offset"),
    [
        ("02139", -5),
        ("10003", -5),
        ("30303", -5),
        ("48103", -5),
        ("55117", -6),
        ("60615", -6),
        ("73034", -6),
        ("85711", -7),
        ("94043", -8),
        ("98101-1234", -8),
        ("T8H1N", -7),
        ("V3N4P", -8),
        ("R3T5K", -6),
        ("M4J2K", -5),
        ("E2A4H", -5),
        ("Y1A6B", -5),
        ("", -5),
        ("É1", -5),
        ("v3n4p", -8),
    ],
)
def test_utc_offset_for_zip(zip_code, offset):
    assert utc_offset_for_zip(zip_code) == offset


def test_utc_offsets_matches_the_scalar_rule():
    codes = ["02139", "55117", "85711", "94043", "T8H1N", "V3N4P", "S4P", "", "É1", "Q1"]
    offsets = utc_offsets(codes)
    assert offsets.dtype == np.int8
    assert offsets.tolist() == [utc_offset_for_zip(c) for c in codes]
    assert utc_offsets([]).shape == (0,)


def test_time_zone_names():
    assert TIME_ZONES[-5] == "US/Eastern" and TIME_ZONES[-8] == "US/Pacific"
    assert time_zone_name(-6) == "US/Central" and time_zone_name(-4) == "UTC-4"
