"""Liveness frames compared: identical frames and capture times."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image, ImageChops, ImageEnhance

from vlens_async.errors import FrameTimingError, IdenticalFramesError, UnsupportedImageError
from vlens_async.images import IDENTICAL_FRAME_THRESHOLD, _prepare, frame_difference, prepare_faces
from vlens_async.samples import make_applicant, make_photo


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


# Copies the check must refuse. A shift or crop of a few pixels, or quality 40, is neither a copy
# nor clearly motion: such pairs are sent and the service judges them (see test_frames_calibration).
COPIES: dict[str, Callable[[bytes], bytes]] = {
    "reencoded-q60": reencoded,
    "reencoded-q50": lambda f: reencoded(f, 50),
    "brighter-5%": brighter,
    "darker-5%": lambda f: brighter(f, 0.95),
    "half-size": lambda f: resized(f, 0.5),
    "upscaled-1280": lambda f: resized(f, 1280 / 960),
}


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
    """A re-encoded, re-exposed or resized copy of frame 1 is refused."""
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
    assert min(real) > 1.5 * IDENTICAL_FRAME_THRESHOLD, sorted(real)[:3]
    assert max(copies) < IDENTICAL_FRAME_THRESHOLD / 1.5, sorted(copies)[-3:]


def test_real_motion_in_photos_is_different() -> None:
    """Crops of one scene 4 and 24 px apart (a hand-held camera moving) are different frames."""
    scene = load(make_photo(1000, 1300, 12))

    def view(dx: int) -> bytes:
        return jpeg(scene.crop((40 + dx, 40, 760 + dx, 1000)))

    assert frame_difference(view(0), view(24)) > IDENTICAL_FRAME_THRESHOLD
    assert frame_difference(view(0), view(4)) > IDENTICAL_FRAME_THRESHOLD  # 0.55 % of 720 px


def test_frame_difference_refuses_garbage() -> None:
    """frame_difference raises a typed error for bytes that are not an image."""
    with pytest.raises(UnsupportedImageError):
        frame_difference(b"not an image", b"\xff\xd8\xff")


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

    monkeypatch.setattr(_prepare, "_prepare_frame", refuse)
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
