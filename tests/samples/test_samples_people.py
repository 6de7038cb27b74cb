"""The fields (samples._people): consistent national IDs, plausible dates, both languages."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.samples import applicant
from vlens_async.samples import SCENARIOS, make_fields
from vlens_async.samples import _card_code as cc

GOVERNORATE_CODES = {value[1]: code for code, value in cc.GOVERNORATES.items()}


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(min_value=-(2**40), max_value=2**40), scenario=st.sampled_from(SCENARIOS))
def test_national_id_is_consistent(seed: int, scenario: str) -> None:
    """The 14-digit number encodes the birth date, gender parity and governorate code."""
    f = make_fields(seed, scenario=scenario)
    n = f.national_id
    assert len(n) == 14
    assert n.isdigit()
    century = {"2": 1900, "3": 2000}[n[0]]
    assert date(century + int(n[1:3]), int(n[3:5]), int(n[5:7])) == f.date_of_birth
    assert int(n[7:9]) == GOVERNORATE_CODES[f.govern_english]
    assert f.govern == cc.GOVERNORATES[int(n[7:9])][0]
    assert (int(n[12]) % 2 == 1) == (f.gender == "M")
    assert f.person_id & 1 == (f.gender == "M")


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), scenario=st.sampled_from(SCENARIOS))
def test_dates_are_plausible(seed: int, scenario: str) -> None:
    """Cards are issued at 16 or later and expire 7 years after release; only `expired` is past."""
    f = make_fields(seed, scenario=scenario)
    assert f.release_date >= f.date_of_birth.replace(year=f.date_of_birth.year + 16, day=1)
    years = f.expiry_date.year - f.release_date.year
    assert years == 7
    if scenario == "expired":
        assert f.expiry_date < date.today()
    else:
        assert f.expiry_date > date.today()


def test_fields_have_both_languages() -> None:
    """Names, address, job, marital status and religion come in Arabic and English."""
    f = applicant("valid").fields
    arabic = (f.first_name, f.last_names, f.address, f.govern, f.city, f.district, f.job,
              f.marital_status, f.religion)  # fmt: skip
    assert all(any("\u0600" <= ch <= "\u06ff" for ch in text) for text in arabic)
    english = (f.first_name_english, f.last_names_english, f.address_english, f.govern_english,
               f.job_english, f.marital_status_english, f.religion_english)  # fmt: skip
    assert all(text.isascii() and text for text in english)
    assert f.name == f"{f.first_name} {f.last_names}"
    assert f.name_english.startswith(f.first_name_english)
    assert len(f.last_names.split()) >= 3
    assert f.id_key.startswith("FC")
    assert len(f.id_key) == 10
