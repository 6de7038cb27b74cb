"""The grain-preserving path: grainy JPEGs keep their luma at full resolution.

A reduced-scale IDCT aliases pixel-scale grain into the picture; grainy JPEGs (by bytes per
pixel) are instead decoded twice at once, luma at full size and chroma at reduced scale.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from tests.images.helpers import SIDE, bounded, spy_grain_path
from vlens_async import images
from vlens_async.errors import IdenticalFramesError, UnsupportedImageError
from vlens_async.images import (
    _grain,
    _pools,
    _quality,
    prepare_document_sync,
    prepare_faces_sync,
)
from vlens_async.samples import make_photo


def decode(data: bytes) -> Image.Image:
    """Decode fully, as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR of two RGB images of one size, in dB."""
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    mse = sum(stat.sum2) / (3 * a.width * a.height)
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


def reference(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Full decode, EXIF orientation applied, LANCZOS to ``size``."""
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
    return upright.resize(size, Image.Resampling.LANCZOS)


def cmyk(data: bytes) -> bytes:
    """The photo as a CMYK JPEG of the same grain."""
    out = io.BytesIO()
    decode(data).convert("CMYK").save(out, "JPEG", quality=90)
    return out.getvalue()


def rgb_coded(data: bytes) -> bytes:
    """The photo as a JPEG whose components are R, G and B (Adobe transform 0), not YCbCr."""
    out = io.BytesIO()
    decode(data).save(out, "JPEG", quality=90, keep_rgb=True)
    return out.getvalue()


# --- which path ---


def test_grainy_jpeg_takes_the_grain_path(monkeypatch: pytest.MonkeyPatch, grainy: bytes) -> None:
    """A grainy JPEG reduced more than 2x goes through the grain-preserving downscale."""
    calls = spy_grain_path(monkeypatch)
    p = prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert calls == [(SIDE, SIDE * 3 // 4)]
    assert (p.width, p.height) == (SIDE, SIDE * 3 // 4)
    assert p.size <= 200_000


@pytest.mark.parametrize(
    ("make", "max_side"),
    [
        (lambda grainy, clean: clean, SIDE),  # no grain: the 1/2-scale decode loses nothing
        (lambda grainy, clean: grainy, 1100),  # reduced less than 2x: no reduced-scale IDCT
        (lambda grainy, clean: grainy, 1000),  # the 1/2-scale decode lands on it: no resize
        (lambda grainy, clean: decode(grainy), SIDE),  # a caller's PIL image is never drafted
        (lambda grainy, clean: cmyk(grainy), SIDE),  # only YCbCr JPEGs have a luma to keep
    ],
    ids=["clean", "small-reduction", "exact-half", "pil-input", "cmyk"],
)
def test_other_inputs_keep_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
    grainy: bytes,
    clean: bytes,
    make: Callable[[bytes, bytes], object],
    max_side: int,
) -> None:
    """Everything else is prepared as before, and still fits."""
    calls = spy_grain_path(monkeypatch)
    image = make(grainy, clean)
    p = prepare_document_sync(image, max_bytes=400_000, max_side=max_side)  # type: ignore[arg-type]
    assert calls == []
    assert max(p.width, p.height) == max_side
    assert p.size <= 400_000


def test_rgb_coded_grainy_jpeg(monkeypatch: pytest.MonkeyPatch, grainy: bytes) -> None:
    """A grainy JPEG coded as RGB takes the grain path too, its colour converted from RGB."""
    # libjpeg will not hand out the colour of a JPEG coded as RGB as YCbCr.
    data = rgb_coded(grainy)
    with Image.open(io.BytesIO(data)) as im:
        assert im.info.get("adobe_transform") == 0
        assert not _grain._coded_as_ycbcr(im)
    calls = spy_grain_path(monkeypatch)
    p = prepare_document_sync(data, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1
    target = reference(data, (p.width, p.height))
    assert psnr(decode(p.data), target) > 30


def test_grainy_strip_a_few_pixels_high(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grainy strip whose output is lower than the luma band count still comes out whole."""
    strip = decode(make_photo(8000, 12, 3, hard=True))
    out = io.BytesIO()
    strip.save(out, "JPEG", quality=95)
    calls = spy_grain_path(monkeypatch)
    p = prepare_document_sync(out.getvalue(), max_bytes=50_000, max_side=1280)
    assert calls == [(1280, 2)]
    assert (p.width, p.height) == (1280, 2)


def test_extra_pictures_and_metadata_do_not_count_as_grain(
    monkeypatch: pytest.MonkeyPatch, clean: bytes
) -> None:
    """A grain-free MPO of three pictures, or one with a big ICC profile, keeps the fast path."""
    # Bytes per pixel counts the picture only.
    im = decode(clean)
    mpo, icc = io.BytesIO(), io.BytesIO()
    im.save(mpo, "MPO", save_all=True, append_images=[im, im], quality=95)
    im.save(icc, "JPEG", quality=95, icc_profile=bytes(range(256)) * 3000)
    calls = spy_grain_path(monkeypatch)
    for data in (mpo.getvalue(), icc.getvalue()):
        assert len(data) >= _grain._GRAIN_BYTES_PER_PIXEL * im.width * im.height
        p = prepare_document_sync(data, max_bytes=200_000, max_side=SIDE)
        assert p.size <= 200_000
    assert calls == []


# --- what it buys ---


def test_grain_path_is_closer_to_a_full_decode(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Against a full decode + LANCZOS the grain path beats the 1/2-scale decode by 1.5 dB+."""
    # Same budget for both, so the difference is the downscale (on the 12 MP hard photo: 2.9 dB
    # below the binary search with the 1/2-scale decode, 0.2 dB with the grain path).
    budget = 200_000
    kept = prepare_document_sync(grainy, max_bytes=budget, max_side=SIDE)
    monkeypatch.setattr(_grain, "_GRAIN_BYTES_PER_PIXEL", math.inf)
    halved = prepare_document_sync(grainy, max_bytes=budget, max_side=SIDE)
    target = reference(grainy, (kept.width, kept.height))
    kept_db, halved_db = psnr(decode(kept.data), target), psnr(decode(halved.data), target)
    assert kept_db >= halved_db + 1.5, (kept_db, halved_db)


def test_grain_output_is_a_plain_jpeg_at_its_reported_quality(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """The grain path gives a plain JFIF JPEG, without metadata, at its reported quality."""
    # The reported quality is the one its quantisation tables were made with.
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    out = io.BytesIO()
    decode(grainy).save(
        out, "JPEG", quality=92, exif=exif, icc_profile=b"\0" * 300, comment=b"Mona Lisa"
    )
    calls = spy_grain_path(monkeypatch)
    p = prepare_document_sync(out.getvalue(), max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1
    assert p.quality is not None
    with Image.open(io.BytesIO(p.data)) as got:
        assert got.format == "JPEG"
        assert got.mode == "RGB"
        assert "jfif" in got.info
        assert not {"exif", "icc_profile", "comment"} & set(got.info)
        tables = got.quantization  # type: ignore[attr-defined]
    assert b"PhoneMaker" not in p.data
    assert b"Mona Lisa" not in p.data
    fresh = io.BytesIO()
    decode(p.data).save(fresh, "JPEG", quality=p.quality)
    with Image.open(fresh) as again:
        assert again.quantization == tables  # type: ignore[attr-defined]


def test_grain_path_encodes_the_next_quality_early(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """With both cores its own, the grain path starts the quality above the estimate at once."""
    early: list[int] = []
    real = _quality._SizeModel.encode_early

    def spy(self: _quality._SizeModel, quality: int, pool: object) -> None:
        early.append(quality)
        real(self, quality, pool)  # type: ignore[arg-type]

    monkeypatch.setattr(_quality._SizeModel, "encode_early", spy)
    p = prepare_document_sync(grainy, max_bytes=80_000, max_side=SIDE)
    assert p.quality is not None
    assert p.quality < images.MAX_QUALITY
    assert len(early) == 1
    assert early[0] - 1 <= p.quality <= early[0]  # the estimate, or the one started early


def test_grain_path_turns_the_photo_upright(grainy: bytes) -> None:
    """EXIF orientation 6 on a grainy photo: the output is portrait and the upright picture."""
    # The wrong turn would be a different picture.
    im = decode(grainy)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, exif=exif)
    data = out.getvalue()
    assert len(data) >= _grain._GRAIN_BYTES_PER_PIXEL * im.width * im.height
    p = prepare_document_sync(data, max_bytes=300_000, max_side=SIDE)
    assert (p.width, p.height) == (SIDE * 3 // 4, SIDE)
    upright = reference(data, (p.width, p.height))
    assert psnr(decode(p.data), upright) > 30
    assert psnr(decode(p.data), upright.transpose(Image.Transpose.ROTATE_180)) < 20


# --- the bands and the threads ---


@pytest.mark.parametrize(
    ("source", "target", "exact"),
    [((1600, 1200), (640, 480), True), ((1800, 1350), (577, 433), False)],
    ids=["exact-scale", "odd-sizes"],
)
def test_luma_bands_match_one_resize(
    source: tuple[int, int], target: tuple[int, int], exact: bool
) -> None:
    """Bands taken by two threads add up to one BICUBIC resize."""
    # Bit for bit when band edges fall on exact source rows (4000x3000 -> 1280x960), else
    # within one level of rounding.
    count = source[0] * source[1]
    plane = Image.frombytes(
        "L", source, bytes((i * 7919 + (i >> 5) * 31) % 251 for i in range(count))
    )
    bands = _grain._LumaBands(plane, target)
    helper = threading.Thread(target=bands.work)
    helper.start()
    bands.ready()
    bands.work()
    helper.join(timeout=30)
    assert not helper.is_alive()
    whole = plane.resize(target, Image.Resampling.BICUBIC)
    banded = bands.result()
    if exact:
        assert banded.tobytes() == whole.tobytes()
    else:
        assert ImageChops.difference(banded, whole).getextrema()[1] <= 1  # type: ignore[operator]


def test_failed_luma_decode_releases_the_helper(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """A truncated grainy JPEG is a typed error, and its helper thread is released."""
    # Later grainy images are still prepared: no thread is left waiting.
    waited = threading.Event()

    def fake_chroma(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
        waited.set()
        plane = Image.new("L", target, 128)
        return plane, plane

    monkeypatch.setattr(_grain, "_chroma_planes", fake_chroma)
    cut = grainy[: len(grainy) * 2 // 3]
    with pytest.raises(UnsupportedImageError, match="truncated"):
        bounded(lambda: prepare_document_sync(cut, max_bytes=200_000, max_side=SIDE))
    assert waited.is_set()
    monkeypatch.undo()
    p = prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert p.size <= 200_000


def test_failed_chroma_decode_is_typed(monkeypatch: pytest.MonkeyPatch, grainy: bytes) -> None:
    """An error in the helper's decode surfaces as the preprocessor's typed error."""

    def broken(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
        raise OSError("broken data stream when reading image file")

    monkeypatch.setattr(_grain, "_chroma_planes", broken)
    with pytest.raises(UnsupportedImageError, match=r"\(OSError\)"):
        bounded(lambda: prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE))


def test_three_grainy_frames_share_the_helpers(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Three frames on the grain path at once share the helper pool without deadlock."""
    # Helpers run apart from the frame pool; the same frame thrice is still caught.
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (21, 22, 23)]
    prepared = bounded(
        lambda: prepare_faces_sync(*frames, max_bytes=150_000, max_side=SIDE, preserve_grain=True),
        seconds=120,
    )
    assert len(calls) == 3
    assert [(p.width, p.height) for p in prepared] == [(SIDE, SIDE * 3 // 4)] * 3
    assert all(p.size <= 150_000 for p in prepared)
    with pytest.raises(IdenticalFramesError):
        prepare_faces_sync(
            grainy, grainy, grainy, max_bytes=150_000, max_side=SIDE, preserve_grain=True
        )


def test_busy_helper_pool_does_not_hold_an_image(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """With every helper thread taken, an image decodes its colour itself, not queueing."""
    calls = spy_grain_path(monkeypatch)
    pool = _pools.helper_pool()
    release = threading.Event()
    blockers = [pool.submit(release.wait, 60) for _ in range(pool._max_workers)]
    try:
        p = bounded(lambda: prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE), 30)
    finally:
        release.set()
    for blocker in blockers:
        blocker.result(timeout=10)
    assert len(calls) == 1
    assert p.size <= 200_000
