"""The image preprocessor on one image: corpus, inputs, pass-through, quality search, errors."""

from __future__ import annotations

import base64
import hashlib
import io
import random
import struct
import traceback
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageFile, ImageOps

from vlens_async import images
from vlens_async.config import (
    DOCUMENT_MAX_BYTES,
    DOCUMENT_MAX_SIDE,
    FACE_MAX_BYTES,
    FACE_MAX_SIDE,
)
from vlens_async.errors import (
    CompressionError,
    ConfigurationError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from vlens_async.images import (
    PreparedImage,
    load_image_bytes,
    prepare_document,
    prepare_document_sync,
)
from vlens_async.samples import make_photo

# --- helpers ---


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode ``im`` with Pillow."""
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    """Decode fully."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def halves(
    size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...], mode: str
) -> Image.Image:
    """An image whose left half is ``left`` and right half ``right``."""
    im = Image.new(mode, size, left)
    im.paste(Image.new(mode, (size[0] - size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return im


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    """Two colours within ``tol`` per channel (JPEG is lossy)."""
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def pixel(p: PreparedImage, xy: tuple[int, int]) -> tuple[int, ...]:
    """The RGB colour of the prepared JPEG at ``xy``."""
    value = decode(p.data).getpixel(xy)
    assert isinstance(value, tuple)
    return value


def assert_compliant(p: object, max_bytes: int, max_side: int) -> PreparedImage:
    """``p`` is a compliant, metadata-free RGB JPEG within the limits, with truthful fields."""
    assert isinstance(p, PreparedImage)
    assert p.data.startswith(b"\xff\xd8")
    assert len(p.data) <= max_bytes
    assert max(p.width, p.height) <= max_side
    assert p.digest == hashlib.sha256(p.data).hexdigest()
    im = decode(p.data)
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert im.size == (p.width, p.height)
    assert not im.getexif()
    for key in ("exif", "icc_profile", "xmp", "comment", "photoshop"):
        assert key not in im.info
    assert b"Exif\x00\x00" not in p.data
    assert (p.quality is None) == p.passthrough
    return p


def png_header(width: int, height: int, *, palette: bool = False) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` but whose IDAT holds a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    color_type = 3 if palette else 2
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", ihdr)]
    if palette:
        parts.append(chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff"))
    parts += [chunk(b"IDAT", zlib.compress(b"\x00" * 64)), chunk(b"IEND", b"")]
    return b"".join(parts)


def gif_header(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame declare ``width`` x ``height``."""
    screen = (
        b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    )
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b";"


def photo(width: int, height: int, seed: int = 1, **params: object) -> bytes:
    """A photo-like JPEG, optionally re-saved with Pillow parameters (EXIF, ICC...)."""
    data = make_photo(width, height, seed)
    return encode(decode(data), "JPEG", quality=90, **params) if params else data


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding fail, to prove a refusal happened on the header alone."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- the corpus: every case is a typed error or a compliant JPEG ---


def test_empty_bytes() -> None:
    """Empty input is refused as unsupported, saying it is empty."""
    with pytest.raises(UnsupportedImageError, match="empty"):
        prepare_document_sync(b"")


def test_random_bytes() -> None:
    """Random bytes are refused as not an image."""
    data = random.Random(4).randbytes(5000)
    with pytest.raises(UnsupportedImageError, match="not an image"):
        prepare_document_sync(data)


def test_truncated_jpeg_reencoded() -> None:
    """A truncated large JPEG (decoded to be downscaled) is refused as truncated."""
    data = make_photo(1600, 1200, 2)
    with pytest.raises(UnsupportedImageError, match="truncated"):
        prepare_document_sync(data[: len(data) // 2], max_side=1000)


def test_truncated_jpeg_passthrough() -> None:
    """A truncated JPEG that would otherwise pass through is refused as truncated."""
    data = make_photo(800, 600, 2)
    assert prepare_document_sync(data).passthrough
    with pytest.raises(UnsupportedImageError, match="truncated"):
        prepare_document_sync(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (png_header(100_000, 100_000), "PNG over Pillow's bomb error limit"),
        (png_header(10_000, 10_000, palette=True), "PNG in Pillow's bomb warning range"),
        (png_header(6000, 5000), "PNG just over 25 MP"),
        (gif_header(65535, 65535), "GIF declaring a 65535 px screen"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bomb_refused_from_header(data: bytes, what: str, no_decode: None) -> None:
    """A decompression bomb is refused from its header: no decode, no warning escapes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLargeError):
            prepare_document_sync(data)
    assert caught == [], what


def test_bomb_in_pil_input() -> None:
    """A PIL image over 25 MP is refused before any work."""
    im = Image.new("1", (6000, 5000))
    with pytest.raises(ImageTooLargeError, match="pixels"):
        prepare_document_sync(im)


def test_cmyk_jpeg() -> None:
    """A CMYK JPEG comes out as an RGB JPEG with its colours."""
    im = halves((300, 200), (0, 255, 255, 0), (255, 255, 0, 0), "CMYK")  # red | blue
    p = assert_compliant(prepare_document_sync(encode(im)), DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)
    assert not p.passthrough
    assert close(pixel(p, (40, 100)), (255, 0, 0), 20)
    assert close(pixel(p, (260, 100)), (0, 0, 255), 20)


def test_sixteen_bit_png() -> None:
    """A 16-bit grayscale PNG is scaled to 8 bits, not clipped to white."""
    values = [x * 65535 // 127 for x in range(128)] * 64
    im = Image.frombytes("I;16", (128, 64), struct.pack(f"<{len(values)}H", *values))
    data = encode(im, "PNG")
    assert decode(data).mode.startswith("I")
    p = assert_compliant(prepare_document_sync(data), DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)
    assert close(pixel(p, (64, 32)), (129, 129, 129), 6)
    assert close(pixel(p, (2, 32)), (4, 4, 4), 6)


def test_rgba_png_flattened_on_white() -> None:
    """Transparent pixels of an RGBA PNG become white; opaque ones keep their colour."""
    im = halves((200, 100), (255, 0, 0, 0), (0, 0, 255, 255), "RGBA")
    p = assert_compliant(prepare_document_sync(encode(im, "PNG")), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert close(pixel(p, (30, 50)), (255, 255, 255))
    assert close(pixel(p, (170, 50)), (0, 0, 255))


def test_la_png_flattened_on_white() -> None:
    """A grayscale-with-alpha PNG is flattened on white and made RGB."""
    im = halves((200, 100), (0, 0), (40, 255), "LA")
    p = assert_compliant(prepare_document_sync(encode(im, "PNG")), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert close(pixel(p, (30, 50)), (255, 255, 255))
    assert close(pixel(p, (170, 50)), (40, 40, 40))


@pytest.mark.parametrize(("mode", "key"), [("RGB", (0, 0, 0)), ("L", 0)])
def test_png_colour_key_flattened_on_white(mode: str, key: object) -> None:
    """A PNG whose tRNS chunk names a transparent colour (RGB or grey) gets white there."""
    im = Image.new(mode, (64, 64), key)  # type: ignore[arg-type]
    im.paste(Image.new(mode, (32, 64), 200 if mode == "L" else (200, 10, 10)), (32, 0))
    p = prepare_document_sync(encode(im, "PNG", transparency=key))
    assert close(pixel(p, (10, 32)), (255, 255, 255))
    assert close(pixel(p, (50, 32)), (200, 200, 200) if mode == "L" else (200, 10, 10))


def test_palette_gif() -> None:
    """A palette GIF keeps its colours."""
    im = halves((120, 80), (0, 160, 0), (250, 200, 0), "RGB").convert("P")
    p = assert_compliant(prepare_document_sync(encode(im, "GIF")), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert close(pixel(p, (20, 40)), (0, 160, 0), 16)
    assert close(pixel(p, (100, 40)), (250, 200, 0), 16)


def test_palette_png_with_transparency() -> None:
    """A palette PNG with a transparent index is flattened on white."""
    im = halves((120, 80), (0, 0, 0), (0, 0, 200), "RGB").convert("P")
    transparent = im.getpixel((10, 10))
    p = assert_compliant(
        prepare_document_sync(encode(im, "PNG", transparency=transparent)),
        FACE_MAX_BYTES,
        FACE_MAX_SIDE,
    )
    assert close(pixel(p, (20, 40)), (255, 255, 255))
    assert close(pixel(p, (100, 40)), (0, 0, 200))


def test_animated_gif_first_frame() -> None:
    """An animated GIF gives its first frame."""
    frames = [Image.new("RGB", (64, 64), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(decode(data), "n_frames", 1) == 2
    p = assert_compliant(prepare_document_sync(data), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert close(pixel(p, (32, 32)), (255, 0, 0), 16)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_photo_comes_out_upright(orientation: int) -> None:
    """A photo with an EXIF orientation is turned upright and loses the tag."""
    im = halves((300, 200), (255, 0, 0), (0, 0, 255), "RGB")
    im.paste(Image.new("RGB", (300, 20), (0, 200, 0)), (0, 0))  # a green top band
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    data = encode(im, exif=exif)
    expected = ImageOps.exif_transpose(decode(data))
    p = assert_compliant(prepare_document_sync(data), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert not p.passthrough
    assert (p.width, p.height) == expected.size
    for xy in ((5, 5), (p.width - 5, p.height - 5), (p.width // 4, p.height // 2)):
        want = expected.getpixel(xy)
        assert isinstance(want, tuple)
        assert close(pixel(p, xy), want, 24), xy


def test_exif_rotation_applied_after_downscale() -> None:
    """A rotated photo over the side limit is downscaled and turned upright."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    data = photo(1600, 1200, 3, exif=exif)
    p = assert_compliant(prepare_document_sync(data, max_side=1000), DOCUMENT_MAX_BYTES, 1000)
    assert (p.width, p.height) == (750, 1000)


def gps_photo() -> bytes:
    """A small JPEG carrying camera and GPS EXIF, an ICC profile, XMP and a comment."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    exif[ExifTags.Base.Model] = "Model-X"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (30.0, 2.0, 15.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (31.0, 14.0, 0.0),
    }
    return photo(
        640,
        480,
        5,
        exif=exif,
        icc_profile=b"FAKE-ICC" * 20,
        comment=b"taken at home",
        xmp=b"<x:xmpmeta>GPS secret</x:xmpmeta>",
    )


SECRETS = (b"SecretCam", b"Model-X", b"FAKE-ICC", b"taken at home", b"GPS secret")


def test_gps_photo_passes_through_without_metadata() -> None:
    """A compliant photo with GPS EXIF passes through, pixels intact, with no metadata left."""
    data = gps_photo()
    assert all(s in data for s in SECRETS)
    p = assert_compliant(prepare_document_sync(data), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert p.passthrough
    assert p.quality is None
    assert not any(s in p.data for s in SECRETS)
    assert decode(p.data).tobytes() == decode(data).tobytes()


def test_gps_photo_reencoded_without_metadata() -> None:
    """A GPS photo that must be re-encoded (over the side limit) comes out without metadata."""
    data = gps_photo()
    p = assert_compliant(prepare_document_sync(data, max_side=400), FACE_MAX_BYTES, 400)
    assert not p.passthrough
    assert not any(s in p.data for s in SECRETS)


def test_tiny_image() -> None:
    """A 1x1 image becomes a 1x1 JPEG."""
    p = assert_compliant(
        prepare_document_sync(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")),
        FACE_MAX_BYTES,
        FACE_MAX_SIDE,
    )
    assert (p.width, p.height) == (1, 1)


def test_text_file_renamed_jpg(tmp_path: Path) -> None:
    """A text file named .jpg is refused as text; the path is not in the message."""
    path = tmp_path / "ahmed-mohamed-id.jpg"
    path.write_text("name,national_id\nAhmed,29001011234567\n")
    with pytest.raises(UnsupportedImageError, match="text") as info:
        prepare_document_sync(path)
    assert "ahmed" not in str(info.value).lower()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x01\x02\x03" * 50, "not an image"),
    ],
)
def test_unidentified_reasons(data: bytes, reason: str) -> None:
    """Unreadable inputs name the reason: PDF, HEIC, unknown bytes."""
    with pytest.raises(UnsupportedImageError, match=reason):
        prepare_document_sync(data)


def test_unaccepted_format_refused() -> None:
    """A format Pillow reads but we do not accept (ICO) is refused as unsupported."""
    data = encode(Image.new("RGB", (32, 32), (1, 2, 3)), "ICO")
    with pytest.raises(UnsupportedImageError, match="unsupported"):
        prepare_document_sync(data)


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(Image.new("RGB", (50, 40), (10, 120, 200)), "WEBP"),
        lambda: encode(Image.new("RGB", (50, 40), (10, 120, 200)), "BMP"),
        lambda: encode(Image.new("RGB", (50, 40), (10, 120, 200)), "TIFF"),
        lambda: encode(Image.new("L", (50, 40), 77)),
        lambda: encode(Image.new("1", (50, 40), 1), "PNG"),
        lambda: encode(Image.new("F", (50, 40), 3.5), "TIFF"),
        lambda: encode(Image.new("RGB", (50, 40), (10, 120, 200)), progressive=True),
    ],
    ids=["webp", "bmp", "tiff", "gray-jpeg", "bilevel-png", "float-tiff", "progressive"],
)
def test_other_accepted_inputs(make: Callable[[], bytes]) -> None:
    """Other accepted formats and modes all come out as compliant RGB JPEGs."""
    assert_compliant(prepare_document_sync(make()), FACE_MAX_BYTES, FACE_MAX_SIDE)


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


# --- inputs ---


@pytest.fixture
def small_jpeg() -> bytes:
    """A compliant photo-like JPEG."""
    return make_photo(320, 240, 7)


def test_input_types_agree(tmp_path: Path, small_jpeg: bytes) -> None:
    """bytes, bytearray, memoryview, str and Path paths and file objects give the same result."""
    path = tmp_path / "img.jpg"
    path.write_bytes(small_jpeg)
    expected = prepare_document_sync(small_jpeg)
    with path.open("rb") as fh:
        from_file = prepare_document_sync(fh)
    results = [
        prepare_document_sync(bytearray(small_jpeg)),
        prepare_document_sync(memoryview(small_jpeg)),
        prepare_document_sync(str(path)),
        prepare_document_sync(path),
        prepare_document_sync(io.BytesIO(small_jpeg)),
        from_file,
    ]
    assert all(r == expected for r in results)
    assert expected.input_bytes == len(small_jpeg)


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


async def test_async_matches_sync(small_jpeg: bytes) -> None:
    """prepare_document equals the sync twin and returns a fitting PreparedImage as is."""
    p = await prepare_document(small_jpeg, max_side=300)
    assert p == prepare_document_sync(small_jpeg, max_side=300)
    assert await prepare_document(p, max_side=300) is p


def test_missing_file_is_unsupported(tmp_path: Path) -> None:
    """A missing file is a typed error whose message leaves the path out."""
    with pytest.raises(UnsupportedImageError, match="FileNotFoundError") as info:
        prepare_document_sync(tmp_path / "nadia-ibrahim.jpg")
    assert "nadia" not in str(info.value)


def test_text_mode_file_object(tmp_path: Path) -> None:
    """A file object opened in text mode is refused with a clear reason."""
    path = tmp_path / "x.jpg"
    path.write_text("hello")
    with path.open() as fh, pytest.raises(UnsupportedImageError, match="binary mode"):
        prepare_document_sync(fh)  # type: ignore[arg-type]


def test_wrong_type() -> None:
    """Something that is not an image input is a TypeError."""
    with pytest.raises(TypeError, match="int"):
        prepare_document_sync(42)  # type: ignore[arg-type]


def test_oversized_input_refused_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs over MAX_INPUT_BYTES are refused as too large."""
    monkeypatch.setattr(images, "MAX_INPUT_BYTES", 1000)
    with pytest.raises(ImageTooLargeError, match="over 1000 bytes"):
        prepare_document_sync(io.BytesIO(b"\xff" * 5000))


def test_unreadable_path_names_no_file(tmp_path: Path) -> None:
    """A missing file (or base64 taken for a path) is refused without its name anywhere.

    The OSError is not chained: its text carries the path, which a traceback would print.
    """
    name = "Ahmed_Mohamed_29001011234567.jpg"
    b64 = base64.b64encode(photo(64, 48)).decode()
    for path in (str(tmp_path / name), tmp_path / name, b64, "bad\x00path"):
        with pytest.raises(UnsupportedImageError, match="cannot read the image file") as info:
            prepare_document_sync(path)
        shown = "".join(traceback.format_exception(info.value))
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert "Ahmed" not in shown
        assert b64[:40] not in shown


def test_closed_file_object_is_typed() -> None:
    """A closed file object is an UnsupportedImageError, not a bare ValueError."""
    fh = io.BytesIO(photo(64, 48))
    fh.close()
    with pytest.raises(UnsupportedImageError, match="cannot read the file object"):
        prepare_document_sync(fh)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_bytes": 10}, "max_bytes"),
        ({"max_bytes": 1.5e6}, "max_bytes"),
        ({"max_side": 10}, "max_side"),
        ({"max_side": 100_000}, "largest side a JPEG can have"),
    ],
)
def test_bad_budget(kwargs: dict[str, object], match: str, small_jpeg: bytes) -> None:
    """Budgets that make no sense are a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=match):
        prepare_document_sync(small_jpeg, **kwargs)  # type: ignore[arg-type]


# --- load_image_bytes (preprocessing off) ---


def test_load_image_bytes(tmp_path: Path, small_jpeg: bytes) -> None:
    """load_image_bytes returns the input's bytes untouched, for every input type."""
    path = tmp_path / "a.jpg"
    path.write_bytes(small_jpeg)
    assert load_image_bytes(small_jpeg) == small_jpeg
    assert load_image_bytes(memoryview(small_jpeg)) == small_jpeg
    assert load_image_bytes(path) == small_jpeg
    assert load_image_bytes(io.BytesIO(small_jpeg)) == small_jpeg
    p = prepare_document_sync(small_jpeg, max_side=100)
    assert load_image_bytes(p) == p.data


def test_load_image_bytes_pil_is_lossless_png() -> None:
    """A PIL image is encoded as PNG, pixel for pixel; CMYK becomes RGB."""
    im = halves((20, 10), (1, 2, 3), (200, 100, 50), "RGB")
    data = load_image_bytes(im)
    assert decode(data).format == "PNG"
    assert decode(data).tobytes() == im.tobytes()
    assert decode(load_image_bytes(Image.new("CMYK", (4, 4)))).mode == "RGB"


def test_load_image_bytes_empty() -> None:
    """load_image_bytes refuses empty input."""
    with pytest.raises(UnsupportedImageError, match="empty"):
        load_image_bytes(b"")


# --- PreparedImage ---


def test_prepared_image_repr_hides_bytes(small_jpeg: bytes) -> None:
    """The repr shows sizes and a digest prefix, never the bytes."""
    p = prepare_document_sync(small_jpeg)
    text = repr(p)
    assert "b'" not in text
    assert "\\x" not in text
    assert f"size={p.size}" in text
    assert len(text) < 200


def test_prepared_image_fits(small_jpeg: bytes) -> None:
    """fits() checks both the byte budget and the side."""
    p = prepare_document_sync(small_jpeg)
    assert p.fits(p.size, max(p.width, p.height))
    assert not p.fits(p.size - 1, 10_000)
    assert not p.fits(10**9, max(p.width, p.height) - 1)


# --- pass-through: metadata removed by walking JPEG markers ---


def segments(data: bytes) -> list[int]:
    """The marker bytes of the segments before the first scan."""
    found, pos = [], 2
    while data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        found.append(marker)
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return found


def test_strip_keeps_decoding_segments_only() -> None:
    """Stripping leaves SOI, JFIF, tables and frame; no APP1/APP2/COM; trailer cut off."""
    data = gps_photo() + b"VENDOR-TRAILER-with-secrets" * 10
    stripped = images._strip_jpeg_metadata(data)
    kinds = segments(stripped)
    assert 0xE1 not in kinds
    assert 0xE2 not in kinds
    assert 0xFE not in kinds
    assert 0xDB in kinds
    assert 0xC4 in kinds
    assert 0xC0 in kinds
    assert stripped.endswith(b"\xff\xd9")
    assert b"VENDOR" not in stripped


def test_strip_rewrites_jfif_thumbnail() -> None:
    """An APP0 JFIF segment with an embedded thumbnail is rewritten without it."""
    base = encode(Image.new("RGB", (16, 16), (50, 60, 70)))
    thumb = bytes([255, 0, 0]) * 4
    body = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x02\x02" + thumb
    app0 = b"\xff\xe0" + struct.pack(">H", len(body) + 2) + body
    assert base[2:4] == b"\xff\xe0"
    old_len = int.from_bytes(base[4:6], "big")
    data = base[:2] + app0 + base[4 + old_len :]
    stripped = images._strip_jpeg_metadata(data)
    assert stripped[2:6] == b"\xff\xe0\x00\x10"
    assert stripped[18:20] == b"\x00\x00"  # thumbnail 0x0
    assert decode(stripped).tobytes() == decode(data).tobytes()


def test_strip_keeps_adobe_segment() -> None:
    """The APP14 Adobe segment (colour transform) survives stripping."""
    data = encode(Image.new("CMYK", (16, 16), (0, 50, 100, 0)))
    assert 0xEE in segments(images._strip_jpeg_metadata(data))


def app14(payload: bytes) -> bytes:
    """An APP14 segment carrying ``payload``."""
    return b"\xff\xee" + struct.pack(">H", len(payload) + 2) + payload


def test_strip_cuts_adobe_segment_to_what_decoders_read() -> None:
    """Bytes after the 12 that decoders read in an APP14 Adobe segment do not pass through."""
    base = photo(400, 300)
    adobe = b"Adobe\x00\x64\x00\x00\x00\x00\x01"
    data = base[:2] + app14(adobe + b"GPS 30.04N 31.23E Ahmed Mohamed") + base[2:]
    p = prepare_document_sync(data)
    assert p.passthrough
    assert b"Ahmed" not in p.data
    assert b"GPS" not in p.data
    assert app14(adobe) in p.data
    assert decode(p.data).tobytes() == decode(base).tobytes()


def test_junk_between_segments_is_reencoded_not_refused() -> None:
    """A compliant JPEG whose markers the stripper cannot walk, but decoders read, is re-encoded."""
    base = photo(400, 300)
    at = base.index(b"\xff\xdb")
    data = base[:at] + b"\x00\x00" + base[at:]  # libjpeg skips junk before a marker
    with pytest.raises(UnsupportedImageError):
        images._strip_jpeg_metadata(data)
    p = assert_compliant(prepare_document_sync(data), DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)
    assert not p.passthrough
    assert (p.width, p.height) == (400, 300)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8",
        b"\xff\xd8\x00\x00",
        b"\xff\xd8\xff\xdb\x00",
        b"\xff\xd8\xff\xdb\x00\x43\x00",
        b"GIF8",
    ],
)
def test_strip_refuses_malformed(data: bytes) -> None:
    """Malformed or truncated marker streams are refused."""
    with pytest.raises(UnsupportedImageError):
        images._strip_jpeg_metadata(data)


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


# --- quality search and limits ---


@pytest.fixture(scope="module")
def twelve_mp() -> dict[str, bytes]:
    """samples.make_photo 12 MP photos, normal and hard."""
    return {
        "normal": make_photo(4000, 3000, 11),
        "hard": make_photo(4000, 3000, 11, hard=True),
    }


@pytest.mark.parametrize("kind", ["normal", "hard"])
@pytest.mark.parametrize(
    ("max_bytes", "max_side"),
    [(FACE_MAX_BYTES, FACE_MAX_SIDE), (DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)],
    ids=["face", "document"],
)
def test_twelve_mp_within_limits(
    twelve_mp: dict[str, bytes], kind: str, max_bytes: int, max_side: int
) -> None:
    """A 12 MP photo and its hard variant come out under max_bytes and max_side, long side kept."""
    p = assert_compliant(
        prepare_document_sync(twelve_mp[kind], max_bytes=max_bytes, max_side=max_side),
        max_bytes,
        max_side,
    )
    assert (p.width, p.height) == (max_side, max_side * 3 // 4)
    assert p.quality is not None
    assert images.MIN_QUALITY <= p.quality <= images.MAX_QUALITY


def count_encodes(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> list[int]:
    """Record the quality of every full-size JPEG encode (stripe-sample encodes not counted)."""
    calls: list[int] = []
    real = images._encode

    def spy(im: Image.Image, quality: int) -> bytes:
        if im.size == size:
            calls.append(quality)
        return real(im, quality)

    monkeypatch.setattr(images, "_encode", spy)
    return calls


@pytest.mark.parametrize(
    ("seed", "hard", "position"),
    [
        (1, False, 0.2),
        (2, False, 0.55),
        (3, False, 0.9),
        (1, True, 0.3),
        (2, True, 0.7),
        (3, True, 0.95),
    ],
)
def test_quality_search_near_optimal_in_two_encodes(
    monkeypatch: pytest.MonkeyPatch, seed: int, hard: bool, position: float
) -> None:
    """The search finds (nearly) the highest fitting quality in at most two full encodes."""
    im = decode(make_photo(1280, 960, seed, hard=hard))
    low, high = (
        len(images._encode(im, images.MIN_QUALITY)),
        len(images._encode(im, images.MAX_QUALITY)),
    )
    budget = int(low * (high / low) ** position)
    optimum = next(
        q for q in range(images.MAX_QUALITY, 0, -1) if len(images._encode(im, q)) <= budget
    )
    calls = count_encodes(monkeypatch, im.size)
    found, _ = images._search_quality(im, budget)
    assert found is not None
    quality, data = found
    assert len(data) <= budget
    assert quality <= optimum
    # Near-optimal: within 2 steps, or on a plateau where the optimum is barely bigger.
    assert optimum - quality <= 2 or len(data) >= 0.85 * len(images._encode(im, optimum))
    assert len(calls) <= 2, calls


def test_fits_at_max_quality_in_one_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that fits at MAX_QUALITY costs exactly one full encode."""
    im = decode(make_photo(1280, 960, 6))
    calls = count_encodes(monkeypatch, im.size)
    found, _ = images._search_quality(im, FACE_MAX_BYTES)
    assert found is not None
    assert found[0] == images.MAX_QUALITY
    assert calls == [images.MAX_QUALITY]


def test_small_image_searched_directly() -> None:
    """An image too short to sample is searched with exact encodes and still fits."""
    im = decode(make_photo(400, 300, 2, hard=True))
    budget = len(images._encode(im, 70))
    found, _ = images._search_quality(im, budget)
    assert found is not None
    assert found[0] >= 70
    assert len(found[1]) <= budget


def test_tight_budget_shrinks_the_side() -> None:
    """When even MIN_QUALITY is too big, the side shrinks until it fits."""
    data = make_photo(1280, 960, 9, hard=True)
    p = assert_compliant(prepare_document_sync(data, max_bytes=25_000), 25_000, 1280)
    assert p.width < 1280


def test_impossible_budget_is_compression_error() -> None:
    """A budget nothing fits, even at the smallest side, is a CompressionError."""
    rng = random.Random(3)
    noise = Image.frombytes("RGB", (400, 400), rng.randbytes(400 * 400 * 3))
    with pytest.raises(CompressionError, match="cannot fit"):
        prepare_document_sync(noise, max_bytes=1024, max_side=400)


def test_big_factor_downscale_pre_reduces() -> None:
    """A large non-JPEG downscale is box-reduced first and still lands on the exact size."""
    im = Image.new("RGB", (3000, 2000), (10, 20, 30))
    out = images._downscale(im, (300, 200))
    assert out.size == (300, 200)
    assert close(tuple(out.getpixel((150, 100))), (10, 20, 30), 1)  # type: ignore[arg-type]
