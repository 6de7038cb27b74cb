"""Tests for vlens_async.samples: synthetic applicants, their codes, and photo-like images."""

from __future__ import annotations

import functools
import io
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageStat

from vlens_async.samples import _card_code as cc
from vlens_async import samples
from vlens_async.errors import IdenticalFramesError
from vlens_async.images import prepare_document_sync, prepare_faces_sync
from vlens_async.samples import (
    SCENARIOS,
    Applicant,
    make_applicant,
    make_fields,
    make_photo,
    read_card,
    read_face,
)

CARD_SCENARIOS = [s for s in SCENARIOS if s != "not_a_card"]
GOVERNORATE_CODES = {value[1]: code for code, value in cc.GOVERNORATES.items()}


@functools.cache
def applicant(scenario: str, seed: int = 11) -> Applicant:
    """Build each applicant once per test session (generation takes about 0.1 s)."""
    return make_applicant(seed, scenario=scenario)


def client_copy(data: bytes, long_side: int = 1280, quality: int = 60) -> bytes:
    """What the client sends: scaled down to ``long_side`` (never up), re-encoded as JPEG."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        scale = long_side / max(img.size)
        if scale < 1:
            size = (round(img.width * scale), round(img.height * scale))
            img = img.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def as_png(data: bytes) -> bytes:
    """Re-encode an image as PNG."""
    with Image.open(io.BytesIO(data)) as img:
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def image_size(data: bytes) -> tuple[int, int, str | None]:
    """Size and format of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return img.width, img.height, img.format


# --- the interface ----------------------------------------------------------------------------


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


# --- the fields -------------------------------------------------------------------------------


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


# --- read_card -----------------------------------------------------------------------------------


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


def test_not_a_card_has_no_code() -> None:
    """The not_a_card scenario's front and back carry no card code."""
    a = applicant("not_a_card")
    assert read_card(a.front) is None
    assert read_card(a.back) is None
    assert read_card(client_copy(a.front)) is None


@pytest.mark.parametrize("seed", range(4))
def test_ordinary_photos_read_as_none(seed: int) -> None:
    """Photos without a code give None from read_card and read_face, full size and scaled."""
    photo = make_photo(1600, 1000, seed)
    portrait = make_photo(720, 960, seed, hard=seed % 2 == 0)
    for data in (photo, client_copy(photo), portrait, client_copy(portrait, 640)):
        assert read_card(data) is None
        assert read_face(data) is None


def test_codes_do_not_cross() -> None:
    """A face frame is not a card, and a card is not a face frame."""
    a = applicant("valid")
    assert read_card(a.faces[0]) is None
    assert read_face(a.front) is None
    assert read_face(a.back) is None


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2048))
def test_garbage_bytes_read_as_none(data: bytes) -> None:
    """Arbitrary bytes never raise: both readers return None."""
    assert read_card(data) is None
    assert read_face(data) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8\xff\xe0" + b"\x00" * 64,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        b"GIF89a\x01\x00\x01\x00",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    ],
    ids=["empty", "jpeg-header", "png-header", "gif-header", "eps-header"],
)
def test_broken_images_read_as_none(data: bytes) -> None:
    """Headers without image data, and empty input, read as None."""
    assert read_card(data) is None
    assert read_face(data) is None


def test_truncated_card_reads_as_none() -> None:
    """A card JPEG cut in half (the code is at the bottom) reads as None without raising."""
    front = applicant("valid").front
    assert read_card(front[: len(front) // 2]) is None


def test_readers_accept_bytearray_and_memoryview() -> None:
    """Readers take any bytes-like object."""
    a = applicant("valid")
    assert read_card(bytearray(a.front)) == read_card(a.front)
    assert read_face(memoryview(a.faces[0])) == read_face(a.faces[0])


# --- faces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["original", "client_1280_q60", "small_640_q60", "png"])
def test_read_face_round_trip(transform: str) -> None:
    """Each frame decodes to the card's person, its index and a distinct pose."""
    a = applicant("valid")
    convert = {
        "original": lambda b: b,
        "client_1280_q60": client_copy,
        "small_640_q60": lambda b: client_copy(b, 640, 60),
        "png": as_png,
    }[transform]
    readings = [read_face(convert(frame)) for frame in a.faces]
    assert all(r is not None for r in readings)
    assert [r.person_id for r in readings if r] == [a.fields.person_id] * 3
    assert [r.frame for r in readings if r] == [0, 1, 2]
    poses = {r.pose for r in readings if r}
    assert len(poses) == 3
    assert all(abs(p[0]) <= 24 and abs(p[1]) <= 24 and abs(p[2]) <= 3.0 for p in poses)


def test_valid_frames_differ_slightly() -> None:
    """Valid frames are different bytes but close pictures (small motion, same person)."""
    a = applicant("valid")
    assert len(set(a.faces)) == 3
    with Image.open(io.BytesIO(a.faces[0])) as f0, Image.open(io.BytesIO(a.faces[1])) as f1:
        diff = ImageStat.Stat(ImageChops.difference(f0.convert("L"), f1.convert("L"))).mean[0]
    assert 0.5 < diff < 25


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_valid_frames_pass_the_clients_identical_frame_check(seed: int) -> None:
    """The client's preprocessing accepts valid frames and rejects identical_frames."""
    prepare_faces_sync(*applicant("valid", seed).faces)
    with pytest.raises(IdenticalFramesError):
        prepare_faces_sync(*applicant("identical_frames", seed).faces)


def test_identical_frames_are_identical() -> None:
    """identical_frames repeats one frame's bytes three times."""
    a = applicant("identical_frames")
    assert a.faces[0] == a.faces[1] == a.faces[2]
    assert a.faces[0] == applicant("valid").faces[0]


def test_different_person_faces_belong_to_someone_else() -> None:
    """different_person frames carry another person id than the card (and look different)."""
    a = applicant("different_person")
    readings = [read_face(client_copy(f)) for f in a.faces]
    ids = {r.person_id for r in readings if r}
    assert len(ids) == 1
    assert a.fields.person_id not in ids
    assert a.faces[0] != applicant("valid").faces[0]


def test_card_photo_and_frames_share_a_person() -> None:
    """The valid applicant's frames carry the same person id as the card code."""
    a = applicant("valid")
    card, face = read_card(a.front), read_face(a.faces[2])
    assert card is not None
    assert face is not None
    assert card.fields.person_id == face.person_id == a.fields.person_id


# --- make_photo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (64, 48), (300, 2000), (1600, 1000)])
def test_make_photo_sizes(size: tuple[int, int]) -> None:
    """make_photo returns a JPEG of exactly the requested size."""
    assert image_size(make_photo(*size, seed=3)) == (*size, "JPEG")


def test_make_photo_12_megapixels() -> None:
    """A 12 MP (4000x3000) photo is made at the requested size."""
    assert image_size(make_photo(4000, 3000, 1)) == (4000, 3000, "JPEG")


def test_hard_photo_compresses_worse() -> None:
    """hard=True gives a photo whose JPEG is much larger than the ordinary one."""
    assert len(make_photo(800, 600, 1, hard=True)) > 2 * len(make_photo(800, 600, 1))


def test_make_photo_is_deterministic() -> None:
    """The same seed gives identical bytes; another seed a different photo."""
    assert make_photo(320, 240, 9) == make_photo(320, 240, 9)
    assert make_photo(320, 240, 9) != make_photo(320, 240, 10)
    assert make_photo(320, 240, 9) != make_photo(320, 240, 9, hard=True)


def test_make_photo_rejects_empty_sizes() -> None:
    """Zero or negative sizes raise ValueError."""
    with pytest.raises(ValueError, match="positive"):
        make_photo(0, 10, 1)
