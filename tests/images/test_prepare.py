"""The entry points: one document, three frames concurrently, off the event loop."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from datetime import datetime

import pytest
from PIL import Image

from vlens_async.config import FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import (
    ConfigurationError,
    IdenticalFramesError,
    ImageError,
    UnsupportedImageError,
)
from vlens_async.images import (
    PreparedFaces,
    PreparedImage,
    _quality,
    prepare_document,
    prepare_document_sync,
    prepare_faces,
    prepare_faces_sync,
)
from vlens_async.samples import make_photo


async def test_async_matches_sync(small_jpeg: bytes) -> None:
    """prepare_document equals the sync twin and returns a fitting PreparedImage as is."""
    p = await prepare_document(small_jpeg, max_side=300)
    assert p == prepare_document_sync(small_jpeg, max_side=300)
    assert await prepare_document(p, max_side=300) is p


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


# --- three frames ---


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


async def test_bad_frame_named_lowest_first(
    applicants: dict[int, tuple[bytes, bytes, bytes]],
) -> None:
    """A frame that cannot be prepared raises its typed error, named by its API field."""
    f1, _, _ = applicants[0]
    with pytest.raises(UnsupportedImageError, match=r"^face_2: empty"):
        await prepare_faces(f1, b"", b"not an image at all")
    with pytest.raises(ImageError, match=r"^face_3: "):
        prepare_faces_sync(f1, applicants[0][1], b"\xff\xd8\xff")


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
    real_encode = _quality._encode

    def spy(im: Image.Image, quality: int) -> bytes:
        threads.add(threading.get_ident())
        return real_encode(im, quality)

    monkeypatch.setattr(_quality, "_encode", spy)
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
    """One lazily loaded PIL image as three frames: identical frames, the image unharmed."""
    # The three threads would otherwise load it at once, which corrupts it (a bogus "truncated"
    # error, and wrong pixels left in the caller's image).
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
