"""Liveness frames: concurrent preparation, identical-frame and timing checks, a free event loop."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image, ImageChops, ImageEnhance

from vlens_async import images
from vlens_async.config import FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import (
    ConfigurationError,
    FrameTimingError,
    IdenticalFramesError,
    ImageError,
    UnsupportedImageError,
)
from vlens_async.images import (
    IDENTICAL_FRAME_THRESHOLD,
    PreparedFaces,
    PreparedImage,
    frame_difference,
    prepare_document,
    prepare_faces,
    prepare_faces_sync,
)
from vlens_async.samples import make_applicant, make_photo

# --- helpers: copies of a frame that must count as the same frame ---


def load(data: bytes) -> Image.Image:
    """Decode fully."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    """Encode as JPEG."""
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def reencoded(frame: bytes, quality: int = 60) -> bytes:
    """The frame decoded and saved again at a lower quality."""
    return jpeg(load(frame), quality)


def shifted(frame: bytes, dx: int = 2, dy: int = 2) -> bytes:
    """The frame moved by a few pixels (wrapping at the edges)."""
    return jpeg(ImageChops.offset(load(frame), dx, dy))


def cropped(frame: bytes, px: int = 2) -> bytes:
    """The frame with ``px`` pixels cut from its top and left."""
    im = load(frame)
    return jpeg(im.crop((px, px, im.width, im.height)))


def brighter(frame: bytes, gain: float = 1.05) -> bytes:
    """The frame with its exposure changed."""
    return jpeg(ImageEnhance.Brightness(load(frame)).enhance(gain))


def resized(frame: bytes, scale: float) -> bytes:
    """The frame at another resolution."""
    im = load(frame)
    size = (round(im.width * scale), round(im.height * scale))
    return jpeg(im.resize(size, Image.Resampling.LANCZOS), 85)


COPIES: dict[str, Callable[[bytes], bytes]] = {
    "reencoded-q60": reencoded,
    "reencoded-q40": lambda f: reencoded(f, 40),
    "shifted-2px-xy": shifted,
    "shifted-2px-x": lambda f: shifted(f, -2, 0),
    "cropped-2px": cropped,
    "brighter-5%": brighter,
    "darker-5%": lambda f: brighter(f, 0.95),
    "half-size": lambda f: resized(f, 0.5),
    "upscaled-1280": lambda f: resized(f, 1280 / 960),
}

CALIBRATION_SEEDS = range(8)


@pytest.fixture(scope="module")
def applicants() -> dict[int, tuple[bytes, bytes, bytes]]:
    """samples.make_applicant face frames for the calibration seeds."""
    return {seed: make_applicant(seed).faces for seed in CALIBRATION_SEEDS}


# --- preparation ---


async def test_valid_frames_prepared(applicants: dict[int, tuple[bytes, bytes, bytes]]) -> None:
    """Three real frames come back as compliant, distinct PreparedImages in order."""
    faces = applicants[0]
    prepared = await prepare_faces(*faces)
    assert isinstance(prepared, PreparedFaces)
    assert len(prepared) == 3
    assert [p.input_bytes for p in prepared] == [len(f) for f in faces]
    for frame in prepared:
        assert frame.size <= FACE_MAX_BYTES
        assert max(frame.width, frame.height) <= FACE_MAX_SIDE
    assert len({p.digest for p in prepared}) == 3


async def test_sync_twin_matches(applicants: dict[int, tuple[bytes, bytes, bytes]]) -> None:
    """prepare_faces_sync gives the same frames as prepare_faces."""
    faces = applicants[1]
    assert prepare_faces_sync(*faces) == await prepare_faces(*faces)


async def test_large_frames_downscaled() -> None:
    """Frames over the limits come out within them."""
    frames = [make_photo(1600, 1200, seed) for seed in (1, 2, 3)]
    prepared = await prepare_faces(*frames, max_bytes=150_000, max_side=800)
    for frame in prepared:
        assert frame.size <= 150_000
        assert (frame.width, frame.height) == (800, 600)


async def test_prepared_faces_inputs_pass_through(
    applicants: dict[int, tuple[bytes, bytes, bytes]],
) -> None:
    """PreparedImage frames are reused as they are and still checked."""
    prepared = await prepare_faces(*applicants[2])
    again = await prepare_faces(*prepared)
    assert all(a is b for a, b in zip(again, prepared, strict=True))
    with pytest.raises(IdenticalFramesError):
        await prepare_faces(prepared[0], prepared[1], prepared[0])


def test_prepared_faces_behaves_like_a_tuple(
    applicants: dict[int, tuple[bytes, bytes, bytes]],
) -> None:
    """PreparedFaces indexes, slices, iterates and refuses anything but three frames."""
    faces = prepare_faces_sync(*applicants[3])
    assert faces[0] is faces.frames[0]
    assert faces[-1] is faces.frames[2]
    assert faces[1:] == faces.frames[1:]
    assert list(faces) == list(faces.frames)
    assert "b'" not in repr(faces)
    with pytest.raises(ConfigurationError, match="exactly three"):
        PreparedFaces(faces.frames[:2])
    with pytest.raises(ConfigurationError, match="exactly three"):
        PreparedFaces((faces[0], faces[1], b"x"))  # type: ignore[arg-type]


async def test_bad_frame_named_lowest_first(
    applicants: dict[int, tuple[bytes, bytes, bytes]],
) -> None:
    """A frame that cannot be prepared raises its typed error, named by its API field."""
    f1, _, _ = applicants[0]
    with pytest.raises(UnsupportedImageError, match=r"^face_2: empty"):
        await prepare_faces(f1, b"", b"not an image at all")
    with pytest.raises(ImageError, match=r"^face_3: "):
        prepare_faces_sync(f1, applicants[0][1], b"\xff\xd8\xff")


# --- identical frames ---


async def test_same_bytes_three_times() -> None:
    """The identical_frames scenario (one frame three times) is refused on the digest."""
    faces = make_applicant(5, scenario="identical_frames").faces
    with pytest.raises(IdenticalFramesError) as info:
        await prepare_faces(*faces)
    assert info.value.pair == (0, 1)
    assert info.value.difference == 0.0
    assert "face_1 and face_2" in str(info.value)


@pytest.mark.parametrize("copy", sorted(COPIES))
async def test_copy_of_a_frame_is_identical(
    applicants: dict[int, tuple[bytes, bytes, bytes]], copy: str
) -> None:
    """A re-encoded, shifted, cropped, re-exposed or resized copy of frame 1 is refused."""
    f1, f2, _ = applicants[4]
    with pytest.raises(IdenticalFramesError) as info:
        await prepare_faces(f1, f2, COPIES[copy](f1))
    assert info.value.pair == (0, 2)
    assert info.value.difference is not None
    assert info.value.difference < IDENTICAL_FRAME_THRESHOLD


def test_threshold_calibrated_on_samples(applicants: dict[int, tuple[bytes, bytes, bytes]]) -> None:
    """On samples' frames, real pairs and copies fall either side of the threshold, with margin."""
    real = [
        frame_difference(faces[i], faces[j])
        for faces in applicants.values()
        for i, j in ((0, 1), (1, 2), (0, 2))
    ]
    copies = [
        frame_difference(frame, make(frame))
        for faces in applicants.values()
        for frame in faces[:1]
        for make in COPIES.values()
    ]
    assert min(real) > 1.2 * IDENTICAL_FRAME_THRESHOLD, sorted(real)[:3]
    assert max(copies) < IDENTICAL_FRAME_THRESHOLD / 1.2, sorted(copies)[-3:]


def test_real_motion_in_photos_is_different() -> None:
    """Two crops of one scene 24 px apart (a hand-held camera moving) are different frames."""
    scene = load(make_photo(1000, 1300, 12))

    def view(dx: int) -> bytes:
        return jpeg(scene.crop((40 + dx, 40, 760 + dx, 1000)))

    assert frame_difference(view(0), view(24)) > IDENTICAL_FRAME_THRESHOLD
    assert frame_difference(view(0), view(2)) < IDENTICAL_FRAME_THRESHOLD


def test_frame_difference_refuses_garbage() -> None:
    """frame_difference raises a typed error for bytes that are not an image."""
    with pytest.raises(UnsupportedImageError):
        frame_difference(b"not an image", b"\xff\xd8\xff")


async def test_handmade_prepared_image_with_bad_data(
    applicants: dict[int, tuple[bytes, bytes, bytes]],
) -> None:
    """A PreparedImage built by hand around garbage is a typed error, not a Pillow exception."""
    fake = PreparedImage(
        data=b"garbage",
        width=10,
        height=10,
        quality=90,
        input_bytes=7,
        digest="0",
        passthrough=False,
    )
    f1, f2, _ = applicants[0]
    with pytest.raises(UnsupportedImageError, match=r"^face_3: "):
        await prepare_faces(f1, f2, fake)


def test_flat_frames_are_identical() -> None:
    """Blank frames have no structure to tell apart: they are identical."""
    grey = jpeg(Image.new("RGB", (64, 64), (128, 128, 128)))
    lighter = jpeg(Image.new("RGB", (64, 64), (140, 140, 140)))
    assert frame_difference(grey, lighter) == pytest.approx(0.0)


# --- capture times ---


@pytest.mark.parametrize(
    "times",
    [
        (0.0, 0.2, 0.7),
        (10.0, 9.3, 9.9),
        tuple(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in (0, 0.1, 0.6)),
    ],
)
async def test_frames_too_far_apart(
    monkeypatch: pytest.MonkeyPatch, times: Sequence[float | datetime]
) -> None:
    """A capture spread over max_spread raises FrameTimingError before any image work."""

    def refuse(*args: object) -> None:
        raise AssertionError("images were prepared")

    monkeypatch.setattr(images, "_prepare_frame", refuse)
    with pytest.raises(FrameTimingError) as info:
        await prepare_faces(b"a", b"b", b"c", capture_times=times)
    assert info.value.spread > 0.5


async def test_frames_within_spread(applicants: dict[int, tuple[bytes, bytes, bytes]]) -> None:
    """Capture times within max_spread (seconds or datetimes) are accepted."""
    faces = applicants[6]
    await prepare_faces(*faces, capture_times=(1.0, 1.2, 1.45))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = [start + timedelta(seconds=s) for s in (0.3, 0.0, 0.1)]
    await prepare_faces(*faces, capture_times=stamps)
    await prepare_faces(*faces, capture_times=(0.0, 0.9, 0.5), max_spread=1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capture_times": (0.0, 0.1)}, "3 values"),
        ({"capture_times": (0.0, datetime(2026, 1, 1), 0.1)}, "capture_times"),
        ({"capture_times": ("a", "b", "c")}, "capture_times"),
        ({"capture_times": (0.0, float("nan"), 0.1)}, "capture_times"),
        ({"max_spread": 0}, "max_spread"),
        ({"capture_times": (0.0, 100.0, 200.0), "max_spread": float("nan")}, "max_spread"),
        ({"max_spread": float("inf")}, "max_spread"),
        ({"max_spread": "0.5"}, "max_spread"),
        ({"max_spread": True}, "max_spread"),
        ({"max_bytes": 100}, "max_bytes"),
    ],
)
async def test_bad_frame_options(kwargs: dict[str, object], match: str) -> None:
    """Malformed capture times and limits are a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=match):
        await prepare_faces(b"a", b"b", b"c", **kwargs)  # type: ignore[arg-type]


# --- the event loop stays free ---


async def test_event_loop_free_while_preparing_twelve_mp_frames(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Three 12 MP frames are decoded and encoded off the loop while a ticker keeps running."""
    frames = [make_photo(4000, 3000, seed) for seed in (21, 22, 23)]
    main = threading.get_ident()
    threads: set[int] = set()
    real_encode = images._encode

    def spy(im: Image.Image, quality: int) -> bytes:
        threads.add(threading.get_ident())
        return real_encode(im, quality)

    monkeypatch.setattr(images, "_encode", spy)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        prepared = await prepare_faces(*frames)
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await tick
    assert all(isinstance(p, PreparedImage) and p.width == FACE_MAX_SIDE for p in prepared)
    assert threads
    assert main not in threads
    figures = {
        "prepare_ms": round(elapsed * 1000, 1),
        "ticks": len(gaps),
        "max_loop_gap_ms": round(max(gaps, default=0.0) * 1000, 2),
    }
    request.node.user_properties.extend(figures.items())
    print(f"three 12 MP frames: {figures}")  # shown with -rP; timing targets live in benchmarks


# --- a caller's PIL image shared between threads ---


def test_one_unloaded_pil_image_as_three_frames() -> None:
    """The same lazily loaded PIL image as three frames: identical frames, the image unharmed.

    The three threads would otherwise load it at once, which corrupts it (a bogus "truncated"
    error, and wrong pixels left in the caller's image).
    """
    data = make_photo(1600, 1200, 5)
    expected = Image.open(io.BytesIO(data))
    expected.load()
    for _ in range(3):
        im = Image.open(io.BytesIO(data))  # not loaded yet
        with pytest.raises(IdenticalFramesError):
            prepare_faces_sync(im, im, im)
        assert im.tobytes() == expected.tobytes()


async def test_one_unloaded_pil_image_in_concurrent_calls() -> None:
    """Two concurrent preparations of one unloaded PIL image both succeed."""
    data = make_photo(1600, 1200, 6)
    for _ in range(3):
        im = Image.open(io.BytesIO(data))
        a, b = await asyncio.gather(
            prepare_document(im, max_side=1000), prepare_document(im, max_side=800)
        )
        assert (a.width, b.width) == (1000, 800)


def test_sync_twin_reuses_its_threads(
    monkeypatch: pytest.MonkeyPatch, applicants: dict[int, tuple[bytes, bytes, bytes]]
) -> None:
    """prepare_faces_sync runs frames on threads started once, not three new ones per call.

    Thread objects, not idents (an ident is reused once its thread has ended): with new threads
    per call, every call would add at least one thread never seen before.
    """
    seen: set[threading.Thread] = set()
    real = images._prepare_frame

    def spy(*args: object) -> object:
        seen.add(threading.current_thread())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "_prepare_frame", spy)
    pool_size = images._frame_pool()._max_workers
    for _ in range(pool_size + 2):
        prepare_faces_sync(*applicants[6])
    assert threading.current_thread() not in seen
    assert len(seen) <= pool_size
