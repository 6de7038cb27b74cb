"""The package's interface and make_applicant: names, scenarios, sizes, determinism, reprs."""

from __future__ import annotations

import pytest

from tests.helpers.samples import applicant, image_size
from vlens_async import samples
from vlens_async.samples import SCENARIOS, make_applicant, make_fields, read_card


def test_all_is_sorted_and_public() -> None:
    """`__all__` is sorted (isort style, as ruff's RUF022 wants) and every name in it exists."""

    def isort_key(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(samples.__all__) == sorted(samples.__all__, key=isort_key)
    assert all(hasattr(samples, name) for name in samples.__all__)


def test_scenarios_are_the_contract() -> None:
    """SCENARIOS lists exactly the eight scenarios of the contract, in order."""
    assert SCENARIOS == (
        "valid",
        "expired",
        "back_of_other_card",
        "aml_watchlisted",
        "photocopy",
        "identical_frames",
        "different_person",
        "not_a_card",
    )


def test_unknown_scenario_is_rejected() -> None:
    """An unknown scenario raises ValueError naming the valid ones."""
    with pytest.raises(ValueError, match="expired"):
        make_applicant(1, scenario="nope")
    with pytest.raises(ValueError, match="unknown scenario"):
        make_fields(1, scenario="nope")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_images_are_jpegs_of_the_promised_sizes(scenario: str) -> None:
    """Card sides are 1600x1000 JPEGs and face frames 720x960 JPEGs, in every scenario."""
    a = applicant(scenario)
    assert image_size(a.front) == (1600, 1000, "JPEG")
    assert image_size(a.back) == (1600, 1000, "JPEG")
    assert [image_size(f) for f in a.faces] == [(720, 960, "JPEG")] * 3


def test_same_seed_gives_identical_bytes() -> None:
    """Generation is deterministic: the same seed and scenario give byte-identical output."""
    again = make_applicant(11, scenario="valid")
    assert again == applicant("valid")
    assert make_applicant(11, scenario="photocopy").front == applicant("photocopy").front


def test_different_seeds_give_different_applicants() -> None:
    """Two seeds give different cards, faces and national IDs."""
    a, b = applicant("valid"), applicant("valid", 12)
    assert a.front != b.front
    assert a.faces[0] != b.faces[0]
    assert a.fields.national_id != b.fields.national_id


def test_make_fields_matches_make_applicant() -> None:
    """make_fields returns exactly the fields make_applicant carries, for every scenario."""
    for scenario in SCENARIOS:
        assert make_fields(11, scenario=scenario) == applicant(scenario).fields


def test_reprs_hide_personal_data_and_bytes() -> None:
    """Reprs show the last 4 digits of the national ID only, no names, no image bytes."""
    a = applicant("valid")
    reading = read_card(a.front)
    assert reading is not None
    for text in (repr(a), repr(a.fields), repr(reading)):
        assert a.fields.national_id not in text
        assert a.fields.national_id[-4:] in text
        for secret in (a.fields.first_name, a.fields.first_name_english, a.fields.address):
            assert secret not in text
        assert "\\x" not in text
        assert len(text) < 400
