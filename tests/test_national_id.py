"""National ID parsing and the OCR cross-checks."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlens_async.errors import InvalidNationalIdError
from vlens_async.national_id import (
    GOVERNORATES,
    CrossCheckFlag,
    cross_check,
    parse_national_id,
)

TODAY = dt.date(2026, 11, 21)


@attrs.frozen
class Front:
    id_number: str | None = None
    date_of_birth: dt.datetime | dt.date | None = None
    gender: str | None = None


@attrs.frozen
class Back:
    id_number: str | None = None
    gender: str | None = None
    id_expiry: dt.datetime | dt.date | None = None


@attrs.frozen
class Outcome:
    front: Front | None = None
    back: Back | None = None


def test_parse_reads_every_part() -> None:
    """Century, birth date, governorate, sequence and gender come out of the digits."""
    nid = parse_national_id("29901011234567")
    assert nid.century == 1900
    assert nid.birth_date == dt.date(1999, 1, 1)
    assert nid.governorate_code == "12"
    assert nid.governorate == "Dakahlia"
    assert nid.sequence == "3456"
    assert nid.gender == "F"
    assert parse_national_id("30502280112359").gender == "M"
    assert parse_national_id("30502280112359").birth_date == dt.date(2005, 2, 28)


def test_parse_accepts_arabic_indic_digits_and_spaces() -> None:
    """OCR output in Arabic-Indic digits with spaces parses to the same number."""
    assert parse_national_id("٢٩٩ ٠١٠١ ١٢٣٤٥٦٧").number == "29901011234567"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2990101123456", "14 digits"),
        ("299010112345678", "14 digits"),
        ("2990101123456x", "14 digits"),
        ("19901011234567", "century"),
        ("29913011234567", "birth date"),
        ("29902301234567", "birth date"),
        ("29901019934567", "governorate"),
        ("39901011234567", "future"),
    ],
)
def test_parse_rejects_with_reason_and_never_shows_number(value: str, reason: str) -> None:
    """Each malformed number is refused with its reason and without echoing the digits."""
    with pytest.raises(InvalidNationalIdError) as info:
        parse_national_id(value, today=TODAY)
    assert reason in info.value.reason
    assert value not in str(info.value)


def test_repr_masks_all_but_last_four() -> None:
    """The repr of a parsed number shows only its last 4 digits."""
    text = repr(parse_national_id("29901011234567"))
    assert "29901011234567" not in text
    assert text.endswith("4567')")


@given(
    birth=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2025, 12, 31)),
    gov=st.sampled_from(sorted(GOVERNORATES)),
    seq=st.integers(0, 9999),
    check=st.integers(0, 9),
)
def test_parse_round_trips_generated_numbers(
    birth: dt.date, gov: str, seq: int, check: int
) -> None:
    """Any number built from a valid date, governorate and sequence parses back to its parts."""
    century = "2" if birth.year < 2000 else "3"
    number = f"{century}{birth:%y%m%d}{gov}{seq:04d}{check}"
    nid = parse_national_id(number, today=TODAY)
    assert nid.birth_date == birth
    assert nid.governorate_code == gov
    assert nid.gender == ("M" if seq % 2 else "F")


def test_cross_check_clean_outcome_has_no_flags() -> None:
    """Consistent front and back data yield no flag."""
    outcome = Outcome(
        Front("29901011234567", dt.datetime(1999, 1, 1, tzinfo=dt.UTC), "F"),
        Back("29901011234567", "أنثى", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
    )
    assert cross_check(outcome, today=TODAY) == ()


def test_cross_check_flags_each_disagreement() -> None:
    """Birth date, gender, front/back number and expiry disagreements are all reported."""
    outcome = Outcome(
        Front("29901011234567", dt.date(1999, 2, 1), "Male"),
        Back("29901011234568", "ذكر", dt.date(2020, 1, 1)),
    )
    flags = cross_check(outcome, today=TODAY)
    assert set(flags) == {
        CrossCheckFlag.FRONT_BACK_ID_MISMATCH,
        CrossCheckFlag.BIRTH_DATE_MISMATCH,
        CrossCheckFlag.GENDER_MISMATCH,
        CrossCheckFlag.BACK_GENDER_MISMATCH,
        CrossCheckFlag.CARD_EXPIRED,
    }


def test_cross_check_flags_missing_and_invalid_numbers() -> None:
    """Extracted data without a number, or with an unparseable one, is flagged."""
    assert cross_check(Outcome(Front(None, None, "M")), today=TODAY) == (CrossCheckFlag.ID_MISSING,)
    assert cross_check(Outcome(Front("123", None, None)), today=TODAY) == (
        CrossCheckFlag.ID_INVALID,
    )
    assert cross_check(Outcome(), today=TODAY) == ()


@pytest.mark.parametrize(
    "noise",
    [
        "{}\n",
        "\t{}",
        "\u200f{}\u200f",
        "{}\u00a0",
        "299\u20130101\u20121234567",
        "2990101 1234567\r\n",
    ],
)
def test_parse_ignores_every_kind_of_separator(noise: str) -> None:
    """Whitespace, dashes and invisible right-to-left marks around or inside the number."""
    value = noise.format("29901011234567") if "{}" in noise else noise
    assert parse_national_id(value, today=TODAY).number == "29901011234567"


def test_cross_check_checks_each_side_against_a_usable_number() -> None:
    """An invalid front number still lets the back be checked against the back's number; a side
    without a number is flagged even when the other side has one."""
    flags = cross_check(Outcome(Front("123"), Back("29901011234567", "M")), today=TODAY)
    assert set(flags) == {
        CrossCheckFlag.FRONT_BACK_ID_MISMATCH,
        CrossCheckFlag.ID_INVALID,
        CrossCheckFlag.BACK_GENDER_MISMATCH,  # 29901011234567 is a woman's number
    }
    flags = cross_check(Outcome(Front(None), Back("29901011234567")), today=TODAY)
    assert flags == (CrossCheckFlag.ID_MISSING,)
    rtl = cross_check(Outcome(Front("\u200f29901011234567"), Back("29901011234567")), today=TODAY)
    assert rtl == ()


def test_cross_check_birth_date_sent_as_cairo_midnight_in_utc() -> None:
    """1999-01-01 at midnight in Cairo is 1998-12-31T22:00Z: the same birth date, no flag."""
    cairo_midnight = dt.datetime(1998, 12, 31, 22, 0, tzinfo=dt.UTC)
    front = Front("29901011234567", cairo_midnight, "F")
    assert cross_check(Outcome(front), today=TODAY) == ()
    day_before = dt.datetime(1998, 12, 31, 0, 0, tzinfo=dt.UTC)
    flags = cross_check(Outcome(Front("29901011234567", day_before, "F")), today=TODAY)
    assert flags == (CrossCheckFlag.BIRTH_DATE_MISMATCH,)
