"""The grain-preserving path: grainy JPEGs keep their luma at full resolution.

A reduced-scale IDCT aliases pixel-scale grain into the picture; grainy JPEGs (by bytes per
pixel) are instead decoded twice at once, luma at full size and chroma at reduced scale.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from vlens_async import images
from vlens_async.errors import IdenticalFramesError, UnsupportedImageError
from vlens_async.images import prepare_document_sync, prepare_faces_sync
from vlens_async.samples import make_photo

T = TypeVar("T")
SIDE = 640  # 2000x1500 inputs are reduced more than 2x: the grain path's condition


def decode(data: bytes) -> Image.Image:
    """Decode fully, as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR of two RGB images of one size, in dB."""
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    mse = sum(stat.sum2) / (3 * a.width * a.height)
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


@pytest.fixture(autouse=True)
def nothing_else_in_flight() -> None:
    """Whether an image is alone decides its path: wait for frames that an earlier test
    cancelled (they end on their own in their threads) before each test."""
    for _ in range(400):
        if images._in_flight == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{images._in_flight} images still counted in flight")


@pytest.fixture(scope="module")
def grainy() -> bytes:
    """A 2000x1500 photo with pixel-scale grain (0.55 bytes per pixel)."""
    return make_photo(2000, 1500, 4, hard=True)


@pytest.fixture(scope="module")
def clean() -> bytes:
    """A 2000x1500 photo without pixel-scale grain (0.13 bytes per pixel)."""
    return make_photo(2000, 1500, 4)


def spy_grain_path(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the target size of every grain-preserving downscale."""
    calls: list[tuple[int, int]] = []
    real = images._grain_preserving_downscale

    def spy(im: Image.Image, data: bytes, target: tuple[int, int]) -> Image.Image:
        calls.append(target)
        return real(im, data, target)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "_grain_preserving_downscale", spy)
    return calls


def bounded(call: Callable[[], T], seconds: float = 60) -> T:
    """Run ``call`` in a daemon thread and return its result or raise its error; a hang fails
    the test instead of hanging the run (a daemon thread is not joined at exit)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if failure:
        raise failure[0]
    return outcome[0]


def reference(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Full decode, EXIF orientation applied, LANCZOS to ``size``."""
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
    return upright.resize(size, Image.Resampling.LANCZOS)


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


def cmyk(data: bytes) -> bytes:
    """The photo as a CMYK JPEG of the same grain."""
    out = io.BytesIO()
    decode(data).convert("CMYK").save(out, "JPEG", quality=90)
    return out.getvalue()


# --- what it buys ---


def test_grain_path_is_closer_to_a_full_decode(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Against full decode + LANCZOS, the grain path beats the 1/2-scale decode by over 1.5 dB.

    Same budget for both, so the difference is the downscale (on the 12 MP hard photo: 2.9 dB
    below the binary search with the 1/2-scale decode, 0.2 dB with the grain path).
    """
    budget = 200_000
    kept = prepare_document_sync(grainy, max_bytes=budget, max_side=SIDE)
    monkeypatch.setattr(images, "_GRAIN_BYTES_PER_PIXEL", math.inf)
    halved = prepare_document_sync(grainy, max_bytes=budget, max_side=SIDE)
    target = reference(grainy, (kept.width, kept.height))
    kept_db, halved_db = psnr(decode(kept.data), target), psnr(decode(halved.data), target)
    assert kept_db >= halved_db + 1.5, (kept_db, halved_db)


def test_grain_output_is_a_plain_jpeg_at_its_reported_quality(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """The YCbCr encode is a baseline JFIF JPEG that decodes to RGB, without the input's EXIF,
    ICC profile or comment, and the reported quality is the one its quantisation tables were
    made with."""
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
    real = images._SizeModel.encode_early

    def spy(self: images._SizeModel, quality: int, pool: object) -> None:
        early.append(quality)
        real(self, quality, pool)  # type: ignore[arg-type]

    monkeypatch.setattr(images._SizeModel, "encode_early", spy)
    p = prepare_document_sync(grainy, max_bytes=80_000, max_side=SIDE)
    assert p.quality is not None
    assert p.quality < images.MAX_QUALITY
    assert len(early) == 1
    assert early[0] - 1 <= p.quality <= early[0]  # the estimate, or the one started early


def test_grain_path_turns_the_photo_upright(grainy: bytes) -> None:
    """EXIF orientation 6 on a grainy photo: the output is portrait and matches the upright
    reference (the wrong turn would be a different picture)."""
    im = decode(grainy)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, exif=exif)
    data = out.getvalue()
    assert len(data) >= images._GRAIN_BYTES_PER_PIXEL * im.width * im.height
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
    """Bands taken by two threads add up to one BICUBIC resize: bit for bit when band edges
    fall on exact source rows (4000x3000 -> 1280x960), else within one level of rounding."""
    count = source[0] * source[1]
    plane = Image.frombytes(
        "L", source, bytes((i * 7919 + (i >> 5) * 31) % 251 for i in range(count))
    )
    bands = images._LumaBands(plane, target)
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
    """A truncated grainy JPEG is a typed error; the helper waiting for the luma is released
    and later grainy images are still prepared (no thread left waiting)."""
    waited = threading.Event()

    def fake_chroma(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
        waited.set()
        plane = Image.new("L", target, 128)
        return plane, plane

    monkeypatch.setattr(images, "_chroma_planes", fake_chroma)
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

    monkeypatch.setattr(images, "_chroma_planes", broken)
    with pytest.raises(UnsupportedImageError, match=r"\(OSError\)"):
        bounded(lambda: prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE))


def test_grainy_image_among_others_keeps_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """The grain path takes a second core, so only an image prepared alone takes it: three
    frames at once, or an image while another is in flight, keep the 1/2-scale decode."""
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (21, 22, 23)]
    prepared = bounded(lambda: prepare_faces_sync(*frames, max_bytes=150_000, max_side=SIDE))
    assert [(p.width, p.height) for p in prepared] == [(SIDE, SIDE * 3 // 4)] * 3
    with images._preparing(1):  # another image in flight
        prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert calls == []
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1
    assert images._in_flight == 0


async def test_async_frames_count_as_in_flight(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """prepare_faces counts its three frames before any starts, and forgets them after, even
    when one fails."""
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (24, 25)]
    await images.prepare_faces(*frames, grainy, max_bytes=150_000, max_side=SIDE)
    assert calls == []
    with pytest.raises(UnsupportedImageError):
        await images.prepare_faces(*frames, b"not an image", max_bytes=150_000, max_side=SIDE)
    assert images._in_flight == 0


def test_three_grainy_frames_share_the_helpers(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Forced onto the grain path at once, three frames share the helper pool without
    deadlock (helpers run apart from the frame pool), and the same frame thrice is caught."""
    monkeypatch.setattr(images, "_alone", lambda: True)
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (21, 22, 23)]
    prepared = bounded(
        lambda: prepare_faces_sync(*frames, max_bytes=150_000, max_side=SIDE), seconds=120
    )
    assert len(calls) == 3
    assert [(p.width, p.height) for p in prepared] == [(SIDE, SIDE * 3 // 4)] * 3
    assert all(p.size <= 150_000 for p in prepared)
    with pytest.raises(IdenticalFramesError):
        prepare_faces_sync(grainy, grainy, grainy, max_bytes=150_000, max_side=SIDE)


def test_busy_helper_pool_does_not_hold_an_image(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """With every helper thread taken (other images' work), the image decodes its colour itself
    rather than waiting in the queue."""
    calls = spy_grain_path(monkeypatch)
    pool = images._helper_pool()
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


def rgb_coded(data: bytes) -> bytes:
    """The photo as a JPEG whose components are R, G and B (Adobe transform 0), not YCbCr."""
    out = io.BytesIO()
    decode(data).save(out, "JPEG", quality=90, keep_rgb=True)
    return out.getvalue()


def test_rgb_coded_grainy_jpeg(monkeypatch: pytest.MonkeyPatch, grainy: bytes) -> None:
    """A grainy JPEG coded as RGB takes the grain path too (libjpeg will not hand out its
    colour as YCbCr: it is decoded as RGB and converted)."""
    data = rgb_coded(grainy)
    with Image.open(io.BytesIO(data)) as im:
        assert im.info.get("adobe_transform") == 0
        assert not images._coded_as_ycbcr(im)
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
    """Bytes per pixel counts the picture only: a grain-free MPO of three pictures, or one with
    a large ICC profile, keeps the fast path."""
    im = decode(clean)
    mpo, icc = io.BytesIO(), io.BytesIO()
    im.save(mpo, "MPO", save_all=True, append_images=[im, im], quality=95)
    im.save(icc, "JPEG", quality=95, icc_profile=bytes(range(256)) * 3000)
    calls = spy_grain_path(monkeypatch)
    for data in (mpo.getvalue(), icc.getvalue()):
        assert len(data) >= images._GRAIN_BYTES_PER_PIXEL * im.width * im.height
        p = prepare_document_sync(data, max_bytes=200_000, max_side=SIDE)
        assert p.size <= 200_000
    assert calls == []


# --- the quality search ---


@pytest.mark.parametrize(("seed", "hard"), [(1, True), (2, True), (3, False), (5, True)])
@pytest.mark.parametrize("position", [0.35, 0.8, 0.97])
def test_early_encode_changes_nothing(seed: int, hard: bool, position: float) -> None:
    """With a spare pool the search returns the very same quality and bytes as without."""
    im = decode(make_photo(1280, 960, seed, hard=hard)).convert("YCbCr")
    low = len(images._encode(im, images.MIN_QUALITY))
    high = len(images._encode(im, images.MAX_QUALITY))
    budget = int(low * (high / low) ** position)
    with ThreadPoolExecutor(2) as spare:
        assert images._search_quality(im, budget, spare) == images._search_quality(im, budget)


@pytest.mark.parametrize(("seed", "quality"), [(1, 87), (2, 91), (3, 93)])
def test_corrected_guess_aims_at_the_budget(seed: int, quality: int) -> None:
    """The quality above the first encode is tried when predicted in the budget's last per cent.

    The budget is set so that ``quality + 1`` fills 99.5 % of it: the first estimate, which keeps
    a 1 % margin, lands on ``quality`` (filling well under 97 %), and the corrected guess, which
    aims at the budget itself, finds ``quality + 1``.
    """
    im = decode(make_photo(1280, 960, seed, hard=True))
    budget = int(len(images._encode(im, quality + 1)) / 0.995)
    assert len(images._encode(im, quality + 2)) > budget
    assert len(images._encode(im, quality)) < images._ACCEPT_FILL * budget
    found, _ = images._search_quality(im, budget)
    assert found is not None
    assert found[0] == quality + 1


def test_prefer_throughput_turns_the_grain_path_off(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Inside prefer_throughput() (nested, from another thread too) no image takes the grain
    path; after it, an image alone does again."""
    calls = spy_grain_path(monkeypatch)
    with images.prefer_throughput(), images.prefer_throughput():
        bounded(lambda: prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE))
    assert calls == []
    assert images._in_flight == 0
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1


async def test_cancelled_frames_still_count_until_they_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancelled prepare_faces (a deadline) leaves its frames running in their threads; they
    keep counting as in flight until each ends, so none of them, nor another image, takes the
    grain path meanwhile."""
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (31, 32, 33)]
    started = threading.Semaphore(0)
    real = images._prepare

    def slow(*args: object) -> object:
        started.release()
        time.sleep(0.3)  # the caller gives up while the frames are running
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "_prepare", slow)
    await drained()  # frames an earlier test cancelled may still be finishing
    task = asyncio.create_task(images.prepare_faces(*frames, max_bytes=150_000, max_side=SIDE))
    for _ in range(3):  # all three running (a frame not yet started would rightly be dropped)
        assert await asyncio.to_thread(started.acquire, True, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert images._in_flight == 3
    await drained()  # the frames end on their own, within seconds
    assert calls == []


async def drained(seconds: float = 20) -> None:
    """Wait until no image is counted in flight; fail after ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        if images._in_flight == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{images._in_flight} images still counted in flight")


def test_prefer_throughput_is_no_decorator() -> None:
    """Used as a decorator it would not cover a coroutine's run, so it is not one."""
    with pytest.raises(TypeError):
        images.prefer_throughput()(lambda: None)  # type: ignore[operator]


def test_count_never_goes_negative_and_resets_in_a_forked_child() -> None:
    """A block exited in a forked child that never entered it (or twice) leaves the count at 0;
    the fork hook forgets the parent's images in flight."""
    images._count(-5)
    assert images._in_flight == 0
    images._count(2)
    images._forget_pools()  # what the at-fork hook runs in the child
    assert images._in_flight == 0
