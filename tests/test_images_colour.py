"""Colour profiles: pixels described by a non-sRGB ICC profile are converted to sRGB.

The profile is stripped with the other metadata, and the service reads pixels as sRGB; so a Display
P3 or Adobe RGB photo must have its pixels converted first, or its colours shift. The wide-gamut
profile here is built by the test (a matrix/TRC ICC v2 profile with Adobe RGB (1998) primaries),
so no profile file is needed.
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageStat

from vlens_async import images
from vlens_async.images import prepare_document_sync
from vlens_async.samples import make_photo

GREEN = (60, 180, 60)  # saturated enough for the gamuts to differ, inside both


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    body = b"desc" + bytes(4) + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(8 + 3 + 67)
    return body + bytes(-len(body) % 4)


def wide_gamut_profile(name: str = "Wide RGB (test)") -> bytes:
    """An ICC v2 RGB profile: Adobe RGB (1998) primaries adapted to D50, gamma 2.2."""
    gamma = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)) + bytes(2)
    tags = [
        (b"desc", _desc(name)),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", _xyz(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", _xyz(0.1492, 0.0632, 0.7446)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
        (b"cprt", b"text" + bytes(4) + b"none\0" + bytes(3)),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def srgb_profile() -> bytes:
    """LittleCMS's built-in sRGB profile, serialised."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def in_srgb(colour: tuple[int, int, int], icc: bytes) -> tuple[int, ...]:
    """What ``colour``, described by ``icc``, is in sRGB (LittleCMS, as the reference)."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    out = ImageCms.profileToProfile(Image.new("RGB", (1, 1), colour), source, srgb)
    assert out is not None
    value = out.getpixel((0, 0))
    assert isinstance(value, tuple)
    return value


def flat_jpeg(
    size: tuple[int, int], icc: bytes | None, colour: tuple[int, int, int] = GREEN
) -> bytes:
    """A flat ``colour`` JPEG carrying ``icc``."""
    out = io.BytesIO()
    params: dict[str, object] = {"quality": 95}
    if icc is not None:
        params["icc_profile"] = icc
    Image.new("RGB", size, colour).save(out, "JPEG", **params)
    return out.getvalue()


def mean_colour(data: bytes) -> tuple[float, ...]:
    """The mean RGB of a JPEG."""
    with Image.open(io.BytesIO(data)) as im:
        assert "icc_profile" not in im.info
        return tuple(ImageStat.Stat(im.convert("RGB")).mean)


def near(a: tuple[float, ...], b: tuple[float, ...], tolerance: float = 3) -> bool:
    """Colours within ``tolerance`` per channel."""
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_the_test_profile_is_wide_gamut() -> None:
    """The profile reads, is RGB, and moves GREEN well away from itself in sRGB."""
    converted = in_srgb(GREEN, wide_gamut_profile())
    assert not near(converted, GREEN, 20)
    assert near(in_srgb((128, 128, 128), wide_gamut_profile()), (128, 128, 128), 2)


@pytest.mark.parametrize(
    ("size", "max_side"),
    [((640, 480), 1280), ((2600, 1950), 1280)],
    ids=["compliant-size", "downscaled"],
)
def test_wide_gamut_pixels_are_converted_to_srgb(size: tuple[int, int], max_side: int) -> None:
    """A wide-gamut JPEG comes out in sRGB, without its profile, even when it was small enough
    to pass through (its pixels would change colour once the profile is gone)."""
    icc = wide_gamut_profile()
    p = prepare_document_sync(flat_jpeg(size, icc), max_bytes=500_000, max_side=max_side)
    assert not p.passthrough
    assert near(mean_colour(p.data), in_srgb(GREEN, icc))


def test_grainy_wide_gamut_photo_is_converted_on_the_grain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The grain-preserving path converts too."""
    monkeypatch.setattr(images, "_alone", lambda: True)  # whatever earlier tests left running
    calls: list[object] = []
    real = images._grain_preserving_downscale

    def spy(im: Image.Image, data: bytes, target: tuple[int, int]) -> Image.Image:
        calls.append(target)
        return real(im, data, target)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "_grain_preserving_downscale", spy)
    icc = wide_gamut_profile()
    with Image.open(io.BytesIO(make_photo(2000, 1500, 4, hard=True))) as photo:
        pixels = photo.convert("RGB")
    out = io.BytesIO()
    pixels.save(out, "JPEG", quality=92, icc_profile=icc)
    plain = prepare_document_sync(pixels, max_bytes=300_000, max_side=640)
    p = prepare_document_sync(out.getvalue(), max_bytes=300_000, max_side=640)
    assert len(calls) == 1
    # The grain's mean is what the colours do: grey-ish greens get more saturated in sRGB.
    shifted, unshifted = mean_colour(p.data), mean_colour(plain.data)
    assert not near(shifted, unshifted, 1.5)


def test_srgb_profile_passes_through_unchanged() -> None:
    """A JPEG that declares sRGB is already what the service reads: it passes through."""
    data = flat_jpeg((640, 480), srgb_profile())
    p = prepare_document_sync(data, max_bytes=500_000, max_side=1280)
    assert p.passthrough
    assert near(mean_colour(p.data), GREEN, 2)


@pytest.mark.parametrize(
    "icc",
    [
        b"not a profile at all" * 10,
        ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes(),
    ],
    ids=["unreadable", "not-rgb"],
)
def test_unusable_profile_is_ignored(icc: bytes) -> None:
    """A profile LittleCMS cannot read, or one for another colour space, is dropped as before:
    the pixels are taken as sRGB and a compliant JPEG passes through."""
    p = prepare_document_sync(flat_jpeg((640, 480), icc), max_bytes=500_000, max_side=1280)
    assert p.passthrough
    assert near(mean_colour(p.data), GREEN, 2)


def test_caller_pil_image_with_a_profile_is_converted_and_left_alone() -> None:
    """A caller's PIL image carrying a wide-gamut profile comes out in sRGB; the image itself is
    not changed."""
    icc = wide_gamut_profile()
    im = Image.new("RGB", (800, 600), GREEN)
    im.info["icc_profile"] = icc
    p = prepare_document_sync(im, max_bytes=500_000, max_side=640)
    assert near(mean_colour(p.data), in_srgb(GREEN, icc))
    assert im.getpixel((0, 0)) == GREEN
    assert im.info["icc_profile"] == icc


def test_cmyk_with_an_rgb_profile_falls_back_to_the_plain_conversion() -> None:
    """A CMYK JPEG whose profile is RGB (mislabelled) is converted as if it had none."""
    cmyk = Image.new("CMYK", (400, 300), (0, 0, 0, 0))  # white
    out = io.BytesIO()
    cmyk.save(out, "JPEG", quality=95, icc_profile=wide_gamut_profile())
    p = prepare_document_sync(out.getvalue(), max_bytes=500_000, max_side=1280)
    assert near(mean_colour(p.data), (255, 255, 255), 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=12
    ),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_fuzz_mangled_profiles_never_escape(flips: list[tuple[int, int]], cut: int) -> None:
    """A profile with bytes flipped or cut (untrusted input, parsed by LittleCMS) still gives a
    compliant JPEG: converted, or ignored as unreadable."""
    icc = bytearray(wide_gamut_profile())
    for position, value in flips:
        icc[position % len(icc)] = value
    data = flat_jpeg((96, 64), bytes(icc[: max(1, cut % (len(icc) + 1))]))
    p = prepare_document_sync(data, max_bytes=500_000, max_side=1280)
    assert (p.width, p.height) == (96, 64)
    with Image.open(io.BytesIO(p.data)) as out:
        assert out.format == "JPEG"
        assert "icc_profile" not in out.info
