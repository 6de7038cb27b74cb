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

from tests.images.helpers import spy_grain_path
from vlens_async.images import _colour, prepare_document_sync
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


def _para_srgb() -> bytes:
    """The sRGB transfer curve as an ICC parametric curve (function 3)."""
    args = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return b"para" + bytes(4) + struct.pack(">HH", 3, 0) + b"".join(_s15(a) for a in args)


def _gamma(value: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(value * 256)) + bytes(2)


ADOBE_RGB = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))
SRGB = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def build_profile(tags: list[tuple[bytes, bytes]], space: bytes = b"RGB ") -> bytes:
    """An ICC v2 display profile with ``tags``."""
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntr"
        + space
        + b"XYZ "
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


def matrix_profile(
    name: str,
    primaries: tuple[tuple[float, float, float], ...] = ADOBE_RGB,
    curve: bytes | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """A matrix/TRC RGB profile: ``primaries`` (D50-adapted colorants), one ``curve`` for all
    three channels (gamma 2.2 by default)."""
    curve = curve if curve is not None else _gamma(2.2)
    red, green, blue = primaries
    return build_profile(
        [
            (b"desc", _desc(name)),
            (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(*red)),
            (b"gXYZ", _xyz(*green)),
            (b"bXYZ", _xyz(*blue)),
            (b"rTRC", curve),
            (b"gTRC", curve),
            (b"bTRC", curve),
            *(extra or []),
        ]
    )


def wide_gamut_profile(name: str = "Wide RGB (test)") -> bytes:
    """Adobe RGB (1998) primaries adapted to D50, gamma 2.2."""
    return matrix_profile(name)


def huge_lut() -> bytes:
    """An A2B0 lookup table declaring a 255-point 3D grid it does not carry (a few hundred
    bytes that would make LittleCMS allocate about 500 MB)."""
    header = b"mft2" + bytes(4) + bytes([3, 15, 255, 0])
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return header + identity + struct.pack(">HH", 2, 2) + bytes(12)


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
    """A wide-gamut JPEG comes out in sRGB without its profile, even one small enough to pass."""
    # Passed through, its pixels would change colour once the profile is gone.
    icc = wide_gamut_profile()
    p = prepare_document_sync(flat_jpeg(size, icc), max_bytes=500_000, max_side=max_side)
    assert not p.passthrough
    assert near(mean_colour(p.data), in_srgb(GREEN, icc))


def test_grainy_wide_gamut_photo_is_converted_on_the_grain_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The grain-preserving path converts too."""
    calls = spy_grain_path(monkeypatch)
    icc = wide_gamut_profile()
    with Image.open(io.BytesIO(make_photo(2000, 1500, 4, hard=True))) as photo:
        pixels = photo.convert("RGB")
    out = io.BytesIO()
    pixels.save(out, "JPEG", quality=92, icc_profile=icc)
    plain = prepare_document_sync(pixels, max_bytes=300_000, max_side=640)
    p = prepare_document_sync(out.getvalue(), max_bytes=300_000, max_side=640, preserve_grain=True)
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
    """An unreadable or non-RGB profile is ignored: the pixels count as sRGB and pass through."""
    p = prepare_document_sync(flat_jpeg((640, 480), icc), max_bytes=500_000, max_side=1280)
    assert p.passthrough
    assert near(mean_colour(p.data), GREEN, 2)


def test_caller_pil_image_with_a_profile_is_converted_and_left_alone() -> None:
    """A caller's PIL image with a wide-gamut profile comes out in sRGB, the image unchanged."""
    icc = wide_gamut_profile()
    im = Image.new("RGB", (800, 600), GREEN)
    im.info["icc_profile"] = icc
    p = prepare_document_sync(im, max_bytes=500_000, max_side=640)
    assert near(mean_colour(p.data), in_srgb(GREEN, icc))
    assert im.getpixel((0, 0)) == GREEN
    assert im.info["icc_profile"] == icc


def cmyk_jpeg(icc: bytes | None) -> bytes:
    """A flat dark-teal CMYK JPEG, with ``icc`` if given."""
    out = io.BytesIO()
    params: dict[str, object] = {"quality": 95}
    if icc is not None:
        params["icc_profile"] = icc
    Image.new("CMYK", (400, 300), (180, 40, 90, 60)).save(out, "JPEG", **params)
    return out.getvalue()


def test_cmyk_profiles_are_not_applied() -> None:
    """A CMYK JPEG is converted by Pillow's formula whatever profile it carries."""
    # CMYK profiles are lookup tables: large untrusted input for LittleCMS.
    plain = prepare_document_sync(cmyk_jpeg(None), max_bytes=500_000, max_side=1280)
    labelled = prepare_document_sync(cmyk_jpeg(wide_gamut_profile()), max_bytes=500_000)
    assert mean_colour(labelled.data) == mean_colour(plain.data)
    assert not near(mean_colour(plain.data), (255, 255, 255), 30)  # a colour, not white


def never_converted(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every profile handed to LittleCMS for a transform."""
    calls: list[object] = []
    real = _colour._convert

    def spy(im: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
        calls.append(profile)
        return real(im, profile)

    monkeypatch.setattr(_colour, "_convert", spy)
    return calls


@pytest.mark.parametrize(
    "icc",
    [
        matrix_profile("lookup table", extra=[(b"A2B0", huge_lut())]),
        matrix_profile("long curve", curve=b"curv" + bytes(4) + struct.pack(">I", 2**30)),
        matrix_profile("unknown curve type", curve=b"sf32" + bytes(12)),
        matrix_profile("bad parametric", curve=b"para" + bytes(4) + struct.pack(">HH", 9, 0)),
        build_profile([(b"desc", _desc("no colorants"))]),
        wide_gamut_profile()[:-40],  # a tag running past the end
    ],
    ids=["lookup-table", "long-curve", "unknown-curve", "bad-para", "no-colorants", "cut-short"],
)
def test_profiles_littlecms_should_not_parse_are_never_handed_to_it(
    monkeypatch: pytest.MonkeyPatch, icc: bytes
) -> None:
    """Only a well-formed matrix/TRC RGB profile reaches LittleCMS; others count as sRGB."""
    # A lookup table, a curve declaring a billion entries, tags running off the end.
    calls = never_converted(monkeypatch)
    p = prepare_document_sync(flat_jpeg((640, 480), icc), max_bytes=500_000, max_side=1280)
    assert calls == []
    assert p.passthrough
    assert near(mean_colour(p.data), GREEN, 2)


@pytest.mark.parametrize("name", ["c2", "IEC 61966-2.1 Default RGB colour space - sRGB"])
def test_srgb_under_another_name_passes_through(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """sRGB is recognised by what the profile does, not its name (Facebook's compact "c2")."""
    icc = matrix_profile(name, primaries=SRGB, curve=_para_srgb())
    _colour._srgb_verdicts.clear()
    calls = never_converted(monkeypatch)
    for _ in range(2):
        p = prepare_document_sync(flat_jpeg((640, 480), icc), max_bytes=500_000)
        assert p.passthrough
    assert len(calls) == 1  # the verdict is kept for the next image with this profile


@pytest.mark.parametrize(
    ("name", "primaries", "curve"),
    [("sRGB-like wide gamut", ADOBE_RGB, _para_srgb()), ("Linear sRGB", SRGB, _gamma(1.0))],
)
def test_profile_named_srgb_that_is_not_is_converted(
    name: str, primaries: tuple[tuple[float, float, float], ...], curve: bytes
) -> None:
    """A name containing "sRGB" proves nothing: a wide-gamut or linear profile is converted."""
    icc = matrix_profile(name, primaries=primaries, curve=curve)
    p = prepare_document_sync(flat_jpeg((640, 480), icc), max_bytes=500_000)
    assert not p.passthrough
    assert near(mean_colour(p.data), in_srgb(GREEN, icc))
    assert not near(mean_colour(p.data), GREEN, 10)


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_png_with_alpha_or_palette_is_converted(mode: str) -> None:
    """A wide-gamut profile on an RGBA or palette PNG applies too (after flattening)."""
    icc = wide_gamut_profile()
    rgb = Image.new("RGB", (300, 200), GREEN)
    im = rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)
    out = io.BytesIO()
    im.save(out, "PNG", icc_profile=icc)
    p = prepare_document_sync(out.getvalue(), max_bytes=500_000)
    assert near(mean_colour(p.data), in_srgb(GREEN, icc))


def test_mangled_but_readable_profile_still_converts() -> None:
    """Bytes changed where LittleCMS does not look (the description) leave a working profile."""
    icc = bytearray(wide_gamut_profile("Wide RGB (test)"))
    at = bytes(icc).index(b"Wide RGB")
    icc[at : at + 4] = b"XXXX"
    p = prepare_document_sync(flat_jpeg((640, 480), bytes(icc)), max_bytes=500_000)
    assert near(mean_colour(p.data), in_srgb(GREEN, bytes(icc)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=12
    ),
    cut=st.none() | st.integers(min_value=0, max_value=10_000),
)
def test_fuzz_mangled_profiles_never_escape(flips: list[tuple[int, int]], cut: int | None) -> None:
    """A profile with bytes flipped or cut still gives a compliant JPEG, converted or not."""
    icc = bytearray(wide_gamut_profile())
    for position, value in flips:
        icc[position % len(icc)] = value
    if cut is not None:
        icc = icc[: max(1, cut % (len(icc) + 1))]
    data = flat_jpeg((96, 64), bytes(icc))
    p = prepare_document_sync(data, max_bytes=500_000, max_side=1280)
    assert (p.width, p.height) == (96, 64)
    with Image.open(io.BytesIO(p.data)) as out:
        assert out.format == "JPEG"
        assert "icc_profile" not in out.info
