"""Opening and decoding: the corpus of odd inputs, header checks, modes, orientation."""

from __future__ import annotations

import random
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageFile, ImageOps

from tests.images.helpers import assert_compliant, close, decode, encode, halves, photo, pixel
from vlens_async.config import DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE, FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import ImageTooLargeError, UnsupportedImageError
from vlens_async.images import prepare_document_sync
from vlens_async.samples import make_photo


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


@pytest.fixture
def no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding fail, to prove a refusal happened on the header alone."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- the corpus: every case is a typed error or a compliant JPEG ---


def test_truncated_jpeg_reencoded() -> None:
    """A truncated large JPEG (decoded to be downscaled) is refused as truncated."""
    data = make_photo(1600, 1200, 2)
    with pytest.raises(UnsupportedImageError, match="truncated"):
        prepare_document_sync(data[: len(data) // 2], max_side=1000)


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


@pytest.mark.parametrize(
    ("mode", "transparent", "opaque", "expected"),
    [
        ("RGBA", (255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 255)),
        ("LA", (0, 0), (40, 255), (40, 40, 40)),
    ],
)
def test_png_with_alpha_flattened_on_white(
    mode: str, transparent: tuple[int, ...], opaque: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    """Transparent pixels of an RGBA or LA PNG become white; opaque ones keep their colour."""
    im = halves((200, 100), transparent, opaque, mode)
    p = assert_compliant(prepare_document_sync(encode(im, "PNG")), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert close(pixel(p, (30, 50)), (255, 255, 255))
    assert close(pixel(p, (170, 50)), expected)


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
        (b"", "empty"),
        (random.Random(4).randbytes(5000), "not an image"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "PDF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x01\x02\x03" * 50, "not an image"),
    ],
    ids=["empty", "random", "pdf", "heic", "unknown"],
)
def test_unidentified_reasons(data: bytes, reason: str) -> None:
    """Unreadable inputs name the reason: empty, random bytes, PDF, HEIC, unknown bytes."""
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
