"""The readers (samples._readers): None for anything without a code, and never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.samples import applicant, client_copy
from vlens_async.samples import make_photo, read_card, read_face


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
