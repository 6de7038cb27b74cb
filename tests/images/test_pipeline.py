"""One image: pass-through or re-encode, and nothing but a typed error or a compliant JPEG."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.images.helpers import assert_compliant, encode
from vlens_async.config import DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE
from vlens_async.errors import ImageError, UnsupportedImageError
from vlens_async.images import prepare_document_sync
from vlens_async.samples import make_photo


def test_truncated_jpeg_passthrough() -> None:
    """A truncated JPEG that would otherwise pass through is refused as truncated."""
    data = make_photo(800, 600, 2)
    assert prepare_document_sync(data).passthrough
    with pytest.raises(UnsupportedImageError, match="truncated"):
        prepare_document_sync(data[: len(data) * 2 // 3])


def test_compliant_but_over_budget_is_reencoded() -> None:
    """A JPEG within the side limit but over the byte budget is re-encoded under it."""
    data = make_photo(1200, 900, 8, hard=True)
    budget = len(data) // 2
    p = assert_compliant(prepare_document_sync(data, max_bytes=budget), budget, DOCUMENT_MAX_SIDE)
    assert not p.passthrough
    assert (p.width, p.height) == (1200, 900)


def test_cmyk_and_gray_jpegs_do_not_pass_through() -> None:
    """Only RGB JPEGs pass through; CMYK and grayscale are converted."""
    for mode, colour in (("CMYK", (0, 0, 0, 0)), ("L", 80)):
        p = prepare_document_sync(encode(Image.new(mode, (32, 32), colour)))
        assert not p.passthrough


def test_pil_input(small_jpeg: bytes) -> None:
    """A PIL image is encoded (never passed through) and left unchanged."""
    im = Image.open(io.BytesIO(small_jpeg))
    size, mode = im.size, im.mode
    p = assert_compliant(prepare_document_sync(im, max_side=200), DOCUMENT_MAX_BYTES, 200)
    assert not p.passthrough
    assert p.input_bytes == 0
    assert (im.size, im.mode) == (size, mode)


def test_prepared_image_passes_through_unchanged(small_jpeg: bytes) -> None:
    """A PreparedImage that fits is returned as the same object."""
    p = prepare_document_sync(small_jpeg)
    assert prepare_document_sync(p) is p


def test_prepared_image_over_new_limits_is_prepared_again() -> None:
    """A PreparedImage over this call's limits is prepared again from its JPEG."""
    p = prepare_document_sync(make_photo(1600, 1200, 4))
    again = assert_compliant(prepare_document_sync(p, max_side=640), DOCUMENT_MAX_BYTES, 640)
    assert again.input_bytes == p.size


# --- fuzzing: nothing but a typed error or a compliant JPEG ---


def outcome(data: bytes) -> None:
    """Prepare ``data``: a compliant JPEG or an ImageError, nothing else."""
    try:
        p = prepare_document_sync(data, max_bytes=200_000, max_side=800)
    except ImageError:
        return
    assert_compliant(p, 200_000, 800)


MAGIC = [
    b"",
    b"\xff\xd8\xff\xe0",
    b"\xff\xd8\xff\xdb",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]


_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(prefix=st.sampled_from(MAGIC), tail=st.binary(max_size=2048))
def test_fuzz_random_bytes(prefix: bytes, tail: bytes) -> None:
    """Random bytes, bare or behind a format's magic number, are a typed error or a JPEG."""
    outcome(prefix + tail)


_SEEDS = {
    "jpeg": encode(Image.new("RGB", (40, 30), (200, 30, 60)), quality=80),
    "png": encode(Image.new("RGBA", (40, 30), (200, 30, 60, 128)), "PNG"),
    "gif": encode(Image.new("P", (40, 30), 3), "GIF"),
}


@_FUZZ
@given(
    kind=st.sampled_from(sorted(_SEEDS)),
    cut=st.integers(min_value=1, max_value=10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
)
def test_fuzz_mutated_images(kind: str, cut: int, flips: list[tuple[int, int]]) -> None:
    """Valid small images, truncated and with bytes changed, are a typed error or a JPEG."""
    data = bytearray(_SEEDS[kind][:cut])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    outcome(bytes(data))
