"""Card sides (samples._cards): their codes survive client copies; photocopies are grey."""

from __future__ import annotations

import io
from datetime import date

import pytest
from PIL import Image, ImageChops, ImageStat

from tests.helpers.samples import CARD_SCENARIOS, applicant, as_png, client_copy
from vlens_async.images import prepare_document_sync
from vlens_async.samples import read_card


@pytest.mark.parametrize("scenario", CARD_SCENARIOS)
@pytest.mark.parametrize("transform", ["original", "client_1280_q60", "small_800_q50"])
def test_read_card_round_trip(scenario: str, transform: str) -> None:
    """read_card recovers side, fields and flags from the original and from client-like copies."""
    a = applicant(scenario)
    convert = {
        "original": lambda b: b,
        "client_1280_q60": client_copy,
        "png": as_png,
        "small_800_q50": lambda b: client_copy(b, 800, 50),
    }[transform]
    front, back = read_card(convert(a.front)), read_card(convert(a.back))
    assert front is not None
    assert back is not None
    assert (front.side, back.side) == ("front", "back")
    assert front.fields == a.fields
    expected = {"photocopy": {"photocopy"}, "aml_watchlisted": {"aml_watchlisted"}}
    assert front.flags == back.flags == frozenset(expected.get(scenario, set()))
    if scenario == "back_of_other_card":
        assert back.fields.national_id != a.fields.national_id
        assert back.fields.person_id != a.fields.person_id
    else:
        assert back.fields == a.fields


@pytest.mark.parametrize("max_side", [2000, 1280, 800])
def test_read_card_after_client_preprocessing(max_side: int) -> None:
    """Cards prepared by the client's own prepare_document_sync still decode."""
    a = applicant("photocopy")
    for side, data in (("front", a.front), ("back", a.back)):
        reading = read_card(prepare_document_sync(data, max_side=max_side).data)
        assert reading is not None
        assert reading.side == side
        assert reading.fields == a.fields


@pytest.mark.parametrize("scenario", ["valid", "photocopy"])
def test_read_card_from_png(scenario: str) -> None:
    """read_card also decodes a PNG copy of a card (no JPEG draft shortcut)."""
    a = applicant(scenario)
    reading = read_card(as_png(a.front))
    assert reading is not None
    assert reading.fields == a.fields


def test_expired_card_reads_as_expired() -> None:
    """The expired card's decoded expiry date is in the past, the valid one's in the future."""
    expired = read_card(client_copy(applicant("expired").back))
    valid = read_card(client_copy(applicant("valid").back))
    assert expired is not None
    assert valid is not None
    assert expired.fields.expiry_date < date.today() < valid.fields.expiry_date


def test_photocopy_is_grey() -> None:
    """The photocopy scenario's card has (almost) no colour, unlike the valid card."""

    def colourfulness(data: bytes) -> float:
        with Image.open(io.BytesIO(data)) as img:
            r, g, _ = img.convert("RGB").split()
            return ImageStat.Stat(ImageChops.difference(r, g)).mean[0]

    assert colourfulness(applicant("photocopy").front) < 1
    assert colourfulness(applicant("valid").front) > 3
