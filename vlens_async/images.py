"""Image preprocessing: every upload acceptable before it leaves the machine.

Phone photos are 3 to 6 MB and 12 MP; the service refuses over 5 MB or 25 MP, the OCR wants under
3 MB, and liveness frames should stay under 500 KB. :func:`prepare_document` and
:func:`prepare_faces` turn any accepted input into a compliant JPEG:

1. Read the input (bytes, a path, a binary file object, a ``PIL.Image.Image`` or an already
   :class:`PreparedImage`) in a worker thread, refusing more than :data:`MAX_INPUT_BYTES`.
2. Read only the header and refuse a decompression bomb or more than
   :data:`~vlens_async.config.MAX_IMAGE_PIXELS` pixels *before* anything is decoded
   (:class:`~vlens_async.errors.ImageTooLargeError`). What Pillow cannot read, empty or truncated
   input, text, PDF or HEIC raise :class:`~vlens_async.errors.UnsupportedImageError` with a reason.
3. A JPEG that already complies (within the byte budget and the side limit, plain RGB, no EXIF
   rotation to apply, no colour profile but sRGB) passes through without re-encoding: its
   metadata segments (EXIF, XMP, ICC, comments, maker notes, trailers after the image) are cut
   out of the byte stream.
4. Anything else is decoded at reduced scale when it is a JPEG (``draft``: the DCT does most of
   the downscale for free), converted to RGB (CMYK, palette, 16-bit, grayscale; alpha is
   flattened on white; pixels a non-sRGB ICC profile describes are converted to sRGB, as the
   profile is stripped), downscaled so its long side is at most ``max_side``, turned upright from
   its EXIF orientation, and encoded at the highest quality that fits ``max_bytes``: a cheap
   sample of the image (one MCU row in eight) predicts the size at every quality (the estimate),
   one full encode checks it and usually fits, a second corrected by the first's error fixes a
   miss (the correction), then a bisection, then a smaller side, and finally
   :class:`~vlens_async.errors.CompressionError`. The output never carries metadata.
   A grainy JPEG (sensor noise: many bytes per pixel), prepared while no other image is, keeps
   its luma at full resolution instead: the reduced-scale IDCT would alias its grain (2.9 dB of
   PSNR on a grainy 12 MP photo), so a second thread decodes the colour at reduced scale while
   this one decodes the luma, and both share the luma's downscale (same wall time, 1.7x the CPU).

Liveness frames are prepared concurrently in threads, then compared: identical bytes, or
thumbnails that differ by less than :data:`IDENTICAL_FRAME_THRESHOLD` after brightness
normalisation, raise :class:`~vlens_async.errors.IdenticalFramesError` naming the pair; capture
times further apart than ``max_spread`` raise :class:`~vlens_async.errors.FrameTimingError`.

Everything that touches Pillow or the file system runs in a worker thread (``asyncio.to_thread``);
the coroutines only wait. The ``*_sync`` twins run the same code in the calling thread (and the
three frames in a small thread pool) for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import math
import os
import re
import struct
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import BinaryIO, Final, TypeAlias, overload

import attrs
from PIL import Image, ImageCms, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from .config import (
    DOCUMENT_MAX_BYTES,
    DOCUMENT_MAX_SIDE,
    FACE_MAX_BYTES,
    FACE_MAX_SIDE,
    MAX_FRAME_SPREAD_SECONDS,
    MAX_IMAGE_PIXELS,
)
from .errors import (
    CompressionError,
    ConfigurationError,
    FrameTimingError,
    IdenticalFramesError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "IDENTICAL_FRAME_THRESHOLD",
    "MAX_INPUT_BYTES",
    "MAX_QUALITY",
    "MIN_QUALITY",
    "MIN_SIDE",
    "THUMBNAIL_SIDE",
    "ImageInput",
    "PreparedFaces",
    "PreparedImage",
    "capture_spread",
    "frame_difference",
    "load_image_bytes",
    "prefer_throughput",
    "prepare_document",
    "prepare_document_sync",
    "prepare_faces",
    "prepare_faces_sync",
]

# --- limits and tuning, each a named constant ---

# Inputs bigger than this are refused before they are read into memory. A 25 MP image stored
# uncompressed (BMP, TIFF) is 75 MB, so this leaves room for every legitimate input.
MAX_INPUT_BYTES: Final = 128 * 1024 * 1024

# Pillow plugins we let parse untrusted bytes. Fewer parsers, less attack surface; EPS in
# particular would run Ghostscript. Phones and scanners produce these. (Multi-picture JPEGs from
# phones open through the JPEG plugin and report the format "MPO".)
ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# JPEG quality range searched. Above 95 Pillow's encoder only grows the file; below 40 artefacts
# hurt OCR and face matching more than a smaller side does, so we shrink the side instead.
MAX_QUALITY: Final = 95
MIN_QUALITY: Final = 40

# The smallest long side we shrink to before giving up with CompressionError.
MIN_SIDE: Final = 320

# The smallest budgets a caller may ask for: below these no photo is usable.
_MIN_MAX_BYTES: Final = 1024
_MIN_MAX_SIDE: Final = 16
_JPEG_MAX_SIDE: Final = 65_500  # libjpeg's JPEG_MAX_DIMENSION

# Quality search. With Pillow's default (fixed) Huffman tables a JPEG's size is, to within a few
# per cent, the sum of the sizes of its 16-pixel MCU rows. So a "sample" image made of one stripe in
# _SAMPLE_EVERY predicts the full size at any quality for 1/_SAMPLE_EVERY of the cost (measured on
# photos: median error -0.4 %, 95 % within -3.4 %..+1.2 %). The sample picks the highest quality
# predicted to fill at most _TARGET_FILL of the budget (the estimate); one full encode checks it;
# when that misses, the measured/predicted ratio corrects the prediction for one more encode (the
# correction); then a bisection between the best fitting and the lowest failing quality. A result
# that fills _ACCEPT_FILL of the budget, or whose next quality is predicted not to fit, is kept.
# Images too short to sample are searched directly (their encodes are cheap). Measured over 650
# searches (samples.make_photo images of 960-2000 px, normal and hard, budgets across each one's
# range): 92 % took one full encode and the rest two; 85 % found the exact optimum, 98 % came
# within two quality steps of it.
_STRIPE: Final = 16  # an MCU row with 4:2:0 subsampling
_SAMPLE_EVERY: Final = 8
_MIN_SAMPLED_HEIGHT: Final = _STRIPE * _SAMPLE_EVERY * 3
_JPEG_OVERHEAD: Final = 600  # bytes of headers and tables, not proportional to the area
_TARGET_FILL: Final = 0.99
_ACCEPT_FILL: Final = 0.97
_CORRECTIONS: Final = 2  # full encodes guided by the prediction before bisecting
_MAX_ENCODES: Final = 9  # full encodes per side; bisection over 40..95 needs at most 6
_SHRINK_MARGIN: Final = 0.92  # aim under the budget when shrinking the side
_MAX_SHRINK: Final = 0.9  # shrink by at least 10 % per round

# Identical-frame detection. Each prepared frame is reduced to a THUMBNAIL_SIDE square grayscale
# thumbnail; its outer ring is dropped (a shifted or cropped copy differs most there) and the rest
# normalised to zero mean and unit standard deviation, so exposure and contrast changes do not
# count. Two frames whose mean absolute difference is below IDENTICAL_FRAME_THRESHOLD are the same
# frame. Calibration on samples.make_applicant faces (seeds 0-149, scenarios valid,
# different_person and aml_watchlisted: 1350 frame pairs, 720x960): real pairs score 0.127 at
# least (median 0.26); copies of a frame score at most 0.021 re-encoded at quality 60 or 40,
# 0.058 shifted by 2 px in x and y, 0.057 cropped by 2 px, 0.043 with brightness +-5 % or
# contrast +10 %, 0.047 at half size and 0.027 upscaled to 1280 px. The threshold sits between.
THUMBNAIL_SIDE: Final = 32
_THUMBNAIL_RING: Final = 1
IDENTICAL_FRAME_THRESHOLD: Final = 0.085

# Resampling filter for the downscale after ``draft``: on 12 MP photos at quality 95 the output is
# 0.1 dB (PSNR) below LANCZOS and the resize 30 % faster.
_RESAMPLE: Final = Image.Resampling.BICUBIC
_REDUCING_GAP: Final = 3.0  # non-JPEG inputs: integer box reduction first, then BICUBIC

# Grainy JPEGs keep their luma at full resolution. libjpeg's reduced-scale IDCT works block by
# block: pixel-scale grain (sensor noise, film grain) leaks across the cut and aliases into the
# picture. On samples.make_photo's hard 12 MP photo (grain of +-48) the 1/2-scale decode lands
# 2.9 dB (PSNR) below a full decode + LANCZOS downscale. A JPEG of at least
# _GRAIN_BYTES_PER_PIXEL (sharp, noisy content costs bytes; the normal 12 MP sample has 0.13,
# the hard one 0.55, bench_flow's noisy phone-size inputs 0.45-0.55) is instead decoded twice at
# once: luma alone at full size, BICUBIC-downscaled in bands shared by two threads, and colour
# at reduced scale (the encoder halves chroma anyway). That costs about 1.7x the CPU of the
# 1/2-scale path, for the same wall time on an otherwise idle pair of cores, and lands within
# 0.5 dB of the full decode. Grain-free photos lose nothing to the 1/2-scale path (0.4 dB) and
# keep it. Only when the image is reduced more than 2x, the 1/2-scale decode does not land on the
# size (see _grainy) and no other image is being prepared (see _alone).
_GRAIN_BYTES_PER_PIXEL: Final = 0.3

# JPEG APPn segments kept by the pass-through: APP0 JFIF (rewritten without its thumbnail) and
# APP14 Adobe (it tells decoders whether the three components are RGB or YCbCr). All other APPn
# (EXIF, XMP, ICC, maker notes, MPF) and COM are metadata and are dropped.
_APP0: Final = 0xE0
_APP14: Final = 0xEE
_ADOBE_LENGTH: Final = 12  # "Adobe", version, two flag words, colour transform
_COM: Final = 0xFE
_SOS: Final = 0xDA
_EOI: Final = 0xD9
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero or RSTn.
_NEXT_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_SCAN_WINDOW: Final = 256 * 1024

_ORIENTATION_TAG: Final = 0x0112
_TRANSPOSE: Final[dict[int, tuple[Image.Transpose, ...]]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
_WHITE: Final = (255, 255, 255)

# ``warnings.catch_warnings`` swaps process-wide state; serialise our uses of it.
_WARNINGS_LOCK: Final = threading.Lock()
# Loading (and reading the EXIF of) a caller's PIL image mutates it; one thread at a time.
_CALLER_IMAGE_LOCK: Final = threading.Lock()


# --- public values ---


@attrs.frozen
class PreparedImage:
    """A JPEG ready to upload, with what the preprocessor did to it.

    ``data`` is the JPEG, ``width`` and ``height`` its dimensions, ``quality`` the JPEG quality it
    was encoded at (``None`` when the input passed through without re-encoding, ``passthrough``
    true), ``input_bytes`` the size of the input (0 for a ``PIL.Image.Image``) and ``digest`` the
    SHA-256 hex digest of ``data``. The repr never shows the bytes. Passing a ``PreparedImage``
    back to a ``prepare_*`` function returns it unchanged when it fits that call's limits.
    """

    data: bytes
    width: int
    height: int
    quality: int | None
    input_bytes: int
    digest: str
    passthrough: bool

    @property
    def size(self) -> int:
        """Length of :attr:`data` in bytes."""
        return len(self.data)

    def fits(self, max_bytes: int, max_side: int) -> bool:
        """Whether this image is within ``max_bytes`` and ``max_side``."""
        return self.size <= max_bytes and max(self.width, self.height) <= max_side

    def __repr__(self) -> str:
        return (
            f"PreparedImage(width={self.width}, height={self.height}, size={self.size}, "
            f"quality={self.quality}, input_bytes={self.input_bytes}, "
            f"digest={self.digest[:12]!r}, passthrough={self.passthrough})"
        )


def _three_frames(
    value: Iterable[PreparedImage],
) -> tuple[PreparedImage, PreparedImage, PreparedImage]:
    frames = tuple(value)
    if len(frames) != 3 or not all(isinstance(f, PreparedImage) for f in frames):
        raise ConfigurationError("PreparedFaces needs exactly three PreparedImage frames")
    return frames[0], frames[1], frames[2]


@attrs.frozen
class PreparedFaces:
    """Three liveness frames, prepared and checked; iterable and indexable like a tuple."""

    frames: tuple[PreparedImage, PreparedImage, PreparedImage] = attrs.field(
        converter=_three_frames
    )

    def __iter__(self) -> Iterator[PreparedImage]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, index: int) -> PreparedImage: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[PreparedImage, ...]: ...

    def __getitem__(self, index: int | slice) -> PreparedImage | tuple[PreparedImage, ...]:
        return self.frames[index]


ImageInput: TypeAlias = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | Image.Image | PreparedImage
)
"""Everything the preprocessor and the client accept as an image."""


# --- the async API ---


async def prepare_document(
    image: ImageInput, *, max_bytes: int = DOCUMENT_MAX_BYTES, max_side: int = DOCUMENT_MAX_SIDE
) -> PreparedImage:
    """Prepare an ID card side for upload: a JPEG under ``max_bytes`` and ``max_side`` pixels.

    Runs in a worker thread. Raises :class:`~vlens_async.errors.UnsupportedImageError`,
    :class:`~vlens_async.errors.ImageTooLargeError` or
    :class:`~vlens_async.errors.CompressionError`.
    """
    _check_budget(max_bytes, max_side)
    if isinstance(image, PreparedImage) and image.fits(max_bytes, max_side):
        return image
    return await asyncio.to_thread(
        prepare_document_sync, image, max_bytes=max_bytes, max_side=max_side
    )


async def prepare_faces(
    f1: ImageInput,
    f2: ImageInput,
    f3: ImageInput,
    *,
    max_bytes: int = FACE_MAX_BYTES,
    max_side: int = FACE_MAX_SIDE,
    capture_times: Sequence[float | datetime] | None = None,
    max_spread: float = MAX_FRAME_SPREAD_SECONDS,
) -> PreparedFaces:
    """Prepare three liveness frames concurrently, each a JPEG under ``max_bytes``/``max_side``.

    ``capture_times`` (three ``float`` seconds or three ``datetime``) spread over ``max_spread``
    raises :class:`~vlens_async.errors.FrameTimingError` before any work. Two identical or nearly
    identical frames raise :class:`~vlens_async.errors.IdenticalFramesError` naming the pair. A
    frame that cannot be prepared raises the error of the lowest-numbered failing frame, its
    reason prefixed with the API field name (``face_2: ...``).
    """
    _check_budget(max_bytes, max_side)
    _check_timing(capture_times, max_spread)
    frames = (f1, f2, f3)
    counted = _CountedFrames(len(frames))
    try:
        outcomes = await asyncio.gather(
            *(
                asyncio.to_thread(counted.run, i, f, max_bytes, max_side)
                for i, f in enumerate(frames)
            ),
            return_exceptions=True,
        )
    finally:
        counted.drop_unstarted()  # cancelled: frames already running still count until they end
    # The thumbnail comparison is pure Python (about a millisecond): off the loop too.
    return await asyncio.to_thread(_collect_faces, outcomes)


# --- the sync twins ---


def prepare_document_sync(
    image: ImageInput, *, max_bytes: int = DOCUMENT_MAX_BYTES, max_side: int = DOCUMENT_MAX_SIDE
) -> PreparedImage:
    """Blocking twin of :func:`prepare_document`, for scripts: never call it on an event loop."""
    _check_budget(max_bytes, max_side)
    with _preparing(1):
        return _prepare(image, max_bytes, max_side)[0]


def prepare_faces_sync(
    f1: ImageInput,
    f2: ImageInput,
    f3: ImageInput,
    *,
    max_bytes: int = FACE_MAX_BYTES,
    max_side: int = FACE_MAX_SIDE,
    capture_times: Sequence[float | datetime] | None = None,
    max_spread: float = MAX_FRAME_SPREAD_SECONDS,
) -> PreparedFaces:
    """Blocking twin of :func:`prepare_faces` (frames still run concurrently, in a thread pool)."""
    _check_budget(max_bytes, max_side)
    _check_timing(capture_times, max_spread)
    pool = _frame_pool()
    outcomes: list[tuple[PreparedImage, bytes] | BaseException] = []
    counted = _CountedFrames(3)
    try:
        futures = [
            pool.submit(counted.run, i, f, max_bytes, max_side) for i, f in enumerate((f1, f2, f3))
        ]
        for future in futures:
            exc = future.exception()
            outcomes.append(exc if exc is not None else future.result())
    finally:
        counted.drop_unstarted()
    return _collect_faces(outcomes)


# Images being prepared in this process. The grain-preserving path takes a second core, so an
# image takes it only when nothing else is being prepared: with other images in flight every
# core already has work, and its 1.7x CPU would slow them all (three grainy frames at once took
# 115 ms longer, and verify() with them 114 ms longer). A grainy image may therefore come out
# slightly different alone and alongside others; both are within the limits.
_in_flight = 0
_in_flight_lock: Final = threading.Lock()


def _count(delta: int) -> None:
    global _in_flight
    with _in_flight_lock:
        _in_flight = max(0, _in_flight + delta)  # never below 0, even after a fork mid-block


class _Counted:
    """Counts ``count`` images in flight for the duration of a ``with`` block (and only a
    ``with`` block: unlike contextlib's, it is no decorator, which would not cover a coroutine).
    """

    def __init__(self, images: int) -> None:
        self._images = images

    def __enter__(self) -> None:
        _count(self._images)

    def __exit__(self, *exc: object) -> None:
        _count(-self._images)


def _preparing(count: int) -> _Counted:
    return _Counted(count)


class _CountedFrames:
    """Liveness frames counted in flight from before any starts (so each sees the others) until
    each ends, or is dropped unstarted when its caller gives up; a frame still running after a
    cancellation keeps counting."""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._unstarted = set(range(count))
        _count(count)

    def run(
        self, index: int, image: ImageInput, max_bytes: int, max_side: int
    ) -> tuple[PreparedImage, bytes]:
        """Prepare frame ``index`` (in a worker thread) unless it was dropped."""
        with self._lock:
            if index not in self._unstarted:
                raise RuntimeError("frame dropped before it started")  # nobody awaits it
            self._unstarted.discard(index)
        try:
            return _prepare_frame(image, index, max_bytes, max_side)
        finally:
            _count(-1)

    def drop_unstarted(self) -> None:
        """Stop counting the frames that never started (all have, after a normal return)."""
        with self._lock:
            dropped = len(self._unstarted)
            self._unstarted.clear()
        _count(-dropped)


def _alone() -> bool:
    """Whether this is the only image being prepared in the process."""
    return _in_flight <= 1


def prefer_throughput() -> contextlib.AbstractContextManager[None]:
    """A ``with`` block inside which every image in the process is prepared for throughput.

    An image prepared while no other is takes the grain-preserving path when it is a grainy JPEG
    (full-resolution luma, with a second thread: the same wall time for 1.7x the CPU). Inside this
    block it never does, as if another image were always in flight. A bulk job holds it for its
    whole run (its spare core belongs to the event loop); hold it in a service whose cores are
    busy with other requests. Nestable, and usable from any thread or coroutine (``with``, not as
    a decorator).
    """
    return _Counted(1)


class _LazyPool:
    """A thread pool started on first use, and forgotten in a forked child (which inherits the
    executor but not its threads)."""

    def __init__(self, least: int, name: str) -> None:
        self._least = least
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(self._least, os.cpu_count() or 1), thread_name_prefix=self._name
                )
            return self._executor

    def forget(self) -> None:
        self._executor = None
        self._lock = threading.Lock()  # a child may inherit it held


# The sync twin's worker threads, started once: a bulk job calls it for every applicant, and
# starting three threads per call cost more CPU than checking three compliant frames. One per
# core (three at least), so concurrent callers on a big machine are not held to three frames.
_frame_pool: Final = _LazyPool(3, "vlens-images")
# Threads that help one image along (the grain-preserving path's second decode and band). Kept
# apart from the frame pool: a frame waits on its helper, so sharing one pool could deadlock.
_helper_pool: Final = _LazyPool(2, "vlens-images-helper")


def _forget_pools() -> None:
    # A forked child also drops the images the parent's other threads were preparing.
    global _in_flight
    _frame_pool.forget()
    _helper_pool.forget()
    _in_flight = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def load_image_bytes(image: ImageInput) -> bytes:
    """Return the bytes of ``image`` as given, without preprocessing (blocking: use a thread).

    Used when preprocessing is switched off. A ``PreparedImage`` gives its JPEG, a
    ``PIL.Image.Image`` is encoded losslessly as PNG, paths and file objects are read.
    """
    if isinstance(image, PreparedImage):
        return image.data
    if isinstance(image, Image.Image):
        return _encode_png(image)
    return _read_input(image)


def frame_difference(a: bytes, b: bytes) -> float:
    """Difference between two JPEG frames as the identical-frame check measures it.

    Blocking (decodes both). 0 for the same picture; below :data:`IDENTICAL_FRAME_THRESHOLD`
    counts as identical. Exposed for calibration and diagnostics. Raises
    :class:`~vlens_async.errors.ImageError` for bytes that are not a readable image.
    """
    return _thumbnail_difference(_thumbnail(a), _thumbnail(b))


# --- argument checks ---


def _check_budget(max_bytes: int, max_side: int) -> None:
    if not isinstance(max_bytes, int) or max_bytes < _MIN_MAX_BYTES:
        raise ConfigurationError(
            f"max_bytes must be an int of at least {_MIN_MAX_BYTES}, got {max_bytes!r}"
        )
    if not isinstance(max_side, int) or not _MIN_MAX_SIDE <= max_side <= _JPEG_MAX_SIDE:
        raise ConfigurationError(
            f"max_side must be an int from {_MIN_MAX_SIDE} to {_JPEG_MAX_SIDE} (the largest side "
            f"a JPEG can have), got {max_side!r}"
        )


def _check_timing(capture_times: Sequence[float | datetime] | None, max_spread: float) -> None:
    if (
        not isinstance(max_spread, int | float)
        or isinstance(max_spread, bool)
        or not math.isfinite(max_spread)  # NaN would compare false and switch the check off
        or max_spread <= 0
    ):
        raise ConfigurationError(f"max_spread must be a positive number, got {max_spread!r}")
    if capture_times is None:
        return
    spread = capture_spread(capture_times)
    if spread > max_spread:
        raise FrameTimingError(
            f"the frames were captured {spread:.3f} s apart; at most {max_spread} s is allowed",
            spread=spread,
        )


def capture_spread(capture_times: Sequence[float | datetime]) -> float:
    """Seconds between the first and the last of three capture times (floats or datetimes).

    Raises :class:`~vlens_async.errors.ConfigurationError` for anything but three finite numbers
    or three comparable datetimes.
    """
    times = list(capture_times)
    if len(times) != 3:
        raise ConfigurationError(f"capture_times needs 3 values, got {len(times)}")
    try:
        return _spread(times)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            "capture_times must be three numbers of seconds or three comparable datetimes"
        ) from exc


def _spread(times: Sequence[float | datetime]) -> float:
    stamps = [t for t in times if isinstance(t, datetime)]
    if stamps:
        if len(stamps) != len(times):
            raise TypeError("mixed datetimes and numbers")
        return (max(stamps) - min(stamps)).total_seconds()
    seconds = [float(t) for t in times]  # type: ignore[arg-type]  # no datetimes left
    if not all(math.isfinite(t) for t in seconds):
        raise ValueError("capture times must be finite")
    return max(seconds) - min(seconds)


# --- frames ---


def _prepare_frame(
    image: ImageInput, index: int, max_bytes: int, max_side: int
) -> tuple[PreparedImage, bytes]:
    try:
        prepared, thumbnail = _prepare(image, max_bytes, max_side)
        return prepared, thumbnail if thumbnail is not None else _thumbnail(prepared.data)
    except (IdenticalFramesError, FrameTimingError):  # pragma: no cover - not raised per frame
        raise
    except ImageError as exc:
        raise type(exc)(f"face_{index + 1}: {exc.reason}") from exc


def _collect_faces(
    outcomes: Sequence[tuple[PreparedImage, bytes] | BaseException],
) -> PreparedFaces:
    # The lowest-numbered failure wins, so the error does not depend on thread timing.
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    _check_identical([p for p, _ in done], [t for _, t in done])
    return PreparedFaces((done[0][0], done[1][0], done[2][0]))


def _check_identical(frames: Sequence[PreparedImage], thumbs: Sequence[bytes]) -> None:
    for i, j in ((0, 1), (1, 2), (0, 2)):
        if frames[i].digest == frames[j].digest:
            raise IdenticalFramesError(
                f"face_{i + 1} and face_{j + 1} are the same image", pair=(i, j), difference=0.0
            )
    normalised = [_normalised(thumb) for thumb in thumbs]  # once per frame, not per pair
    for i, j in ((0, 1), (1, 2), (0, 2)):
        difference = _normalised_difference(normalised[i], normalised[j])
        if difference < IDENTICAL_FRAME_THRESHOLD:
            raise IdenticalFramesError(
                f"face_{i + 1} and face_{j + 1} are nearly identical "
                f"(difference {difference:.3f} < {IDENTICAL_FRAME_THRESHOLD}); "
                "liveness needs three frames of real motion",
                pair=(i, j),
                difference=difference,
            )


def _thumbnail(jpeg: bytes) -> bytes:
    """A THUMBNAIL_SIDE square grayscale thumbnail of a JPEG, decoded at reduced scale.

    ``draft`` decodes at the smallest DCT scale still at least THUMBNAIL_SIDE on each side, so
    copies of one frame at different resolutions give nearly the same thumbnail. Unreadable
    bytes raise an ImageError like everything else here.
    """
    im = _open(jpeg)
    try:
        _check_pixels(im.size)
        im.draft("L", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        small = im.convert("L").resize(
            (THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        return small.tobytes()
    except ImageError:
        raise
    except Exception as exc:
        raise _decode_error(exc) from exc
    finally:
        im.close()


def _normalised(thumb: bytes) -> list[float]:
    """The thumbnail without its outer ring, as zero-mean, unit-variance values."""
    side, ring = THUMBNAIL_SIDE, _THUMBNAIL_RING
    # The ring is where a shifted or cropped copy differs most (pixels enter and leave there).
    pixels = b"".join(
        thumb[y * side + ring : (y + 1) * side - ring] for y in range(ring, side - ring)
    )
    n = len(pixels)
    mean = sum(pixels) / n
    var = max(sum(p * p for p in pixels) / n - mean * mean, 0.0)
    # A flat frame has no contrast to normalise; 1 grey level keeps it flat instead of noisy.
    std = max(math.sqrt(var), 1.0)
    return [(p - mean) / std for p in pixels]


def _thumbnail_difference(a: bytes, b: bytes) -> float:
    return _normalised_difference(_normalised(a), _normalised(b))


def _normalised_difference(za: list[float], zb: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(za, zb, strict=True)) / len(za)


# --- one image ---


def _prepare(
    image: ImageInput, max_bytes: int, max_side: int
) -> tuple[PreparedImage, bytes | None]:
    """The prepared image, and its thumbnail when the work produced one anyway."""
    if isinstance(image, PreparedImage):
        if image.fits(max_bytes, max_side):
            return image, None
        return _prepare_bytes(image.data, max_bytes, max_side)
    if isinstance(image, Image.Image):
        return _prepare_pil(image, max_bytes, max_side), None
    return _prepare_bytes(_read_input(image), max_bytes, max_side)


def _read_input(image: ImageInput) -> bytes:
    """The raw bytes of a bytes-like, path or binary file input, within MAX_INPUT_BYTES."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
    elif isinstance(image, str | os.PathLike):
        data = _read_path(image)
    elif hasattr(image, "read") and not isinstance(image, Image.Image | PreparedImage):
        data = _read_file(image)
    else:
        raise TypeError(
            "an image must be bytes, a path, a binary file object, a PIL image or a "
            f"PreparedImage, not {type(image).__name__}"
        )
    if not data:
        raise UnsupportedImageError("empty input: no image data")
    if len(data) > MAX_INPUT_BYTES:
        raise ImageTooLargeError(f"the input is over {MAX_INPUT_BYTES} bytes")
    return data


def _read_path(path: str | os.PathLike[str]) -> bytes:
    # The path itself may name a person (bulk folders often do), so it is never in a message.
    # Not chained either: an OSError's text carries the path (or a base64 string taken for one).
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > MAX_INPUT_BYTES:
                raise ImageTooLargeError(f"the file is over {MAX_INPUT_BYTES} bytes")
            return fh.read(MAX_INPUT_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UnsupportedImageError(f"cannot read the image file ({_os_reason(exc)})") from None


def _os_reason(exc: Exception) -> str:
    """The kind of an I/O failure without its text (which names the file)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}, {errno.errorcode.get(exc.errno, exc.errno)}"
    return type(exc).__name__


def _read_file(fh: BinaryIO) -> bytes:
    try:
        data = fh.read(MAX_INPUT_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a closed file
        raise UnsupportedImageError(f"cannot read the file object ({_os_reason(exc)})") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UnsupportedImageError("the file object must be opened in binary mode")
    return bytes(data)


def _prepare_bytes(
    data: bytes, max_bytes: int, max_side: int
) -> tuple[PreparedImage, bytes | None]:
    im = _open(data)
    try:
        _check_pixels(im.size)
        orientation = _orientation(im)
        if _may_pass_through(im, orientation, max_side):
            passed = _pass_through(data, im.size, max_bytes)
            if passed is not None:
                return passed
        return _reencode(im, orientation, data, max_bytes, max_side), None
    except ImageError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types; one boundary converts them
        raise _decode_error(exc) from exc
    finally:
        im.close()


def _pass_through(
    data: bytes, size: tuple[int, int], max_bytes: int
) -> tuple[PreparedImage, bytes] | None:
    """The compliant JPEG without its metadata, or None when it must be re-encoded instead.

    A JPEG whose segments the marker walk cannot follow (junk between segments, which decoders
    skip) is re-encoded rather than refused.
    """
    try:
        stripped = _strip_jpeg_metadata(data)
        if len(stripped) > max_bytes:
            return None
        # Decoding at 1/8 scale proves the scan data is readable (a marker walk cannot) and
        # gives the identical-frame thumbnail for free.
        thumbnail = _thumbnail(stripped)
    except ImageError:
        return None
    return _prepared(stripped, size, None, len(data), passthrough=True), thumbnail


def _prepare_pil(image: Image.Image, max_bytes: int, max_side: int) -> PreparedImage:
    _check_pixels(image.size)
    try:
        # The caller's image may be lazily loaded and passed more than once (the same object as
        # two frames, or to concurrent calls): loading it from two threads at once corrupts it.
        with _CALLER_IMAGE_LOCK:
            image.load()
            orientation = _orientation(image)
        # Loaded, it is only read from here on.
        return _reencode(image, orientation, None, max_bytes, max_side)
    except ImageError:
        raise
    except Exception as exc:
        raise _decode_error(exc) from exc


def _open(data: bytes) -> Image.Image:
    """Read the header only. Pillow's bomb warning and error become ImageTooLargeError."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # A DecompressionBombWarning must neither leak to the caller nor let a bomb through.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            "decompression bomb: the header declares far more pixels than allowed"
        ) from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError(_unidentified_reason(data)) from exc
    except Exception as exc:
        raise _decode_error(exc) from exc


def _unidentified_reason(data: bytes) -> str:
    head = data[:512]
    if head.startswith(b"%PDF"):
        return "a PDF is not an image; send a JPEG or PNG scan"
    if head[4:8] == b"ftyp":
        return "HEIC/HEIF/AVIF images are not supported; convert to JPEG"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "not an image: the input is text"
    return "not an image: unrecognised or unsupported format"


def _decode_error(exc: BaseException) -> ImageError:
    if isinstance(exc, MemoryError):
        return ImageTooLargeError("not enough memory to decode the image")
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return UnsupportedImageError("truncated image data")
    return UnsupportedImageError(f"corrupt or unreadable image data ({type(exc).__name__})")


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise UnsupportedImageError("the image has no pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"{width}x{height} is {width * height} pixels; at most {MAX_IMAGE_PIXELS} are allowed"
        )


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not sink an otherwise good image
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _may_pass_through(im: Image.Image, orientation: int, max_side: int) -> bool:
    return (
        im.format in ("JPEG", "MPO")
        and im.mode == "RGB"
        and orientation == 1
        and max(im.size) <= max_side
        and _colour_profile(im) is None  # its pixels would change colour without the profile
    )


def _prepared(
    data: bytes, size: tuple[int, int], quality: int | None, input_bytes: int, *, passthrough: bool
) -> PreparedImage:
    return PreparedImage(
        data=data,
        width=size[0],
        height=size[1],
        quality=quality,
        input_bytes=input_bytes,
        digest=hashlib.sha256(data).hexdigest(),
        passthrough=passthrough,
    )


# --- decode, convert, downscale ---


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    long_side = max(width, height)
    if long_side <= max_side:
        return size
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def _reencode(
    im: Image.Image, orientation: int, data: bytes | None, max_bytes: int, max_side: int
) -> PreparedImage:
    """Decode, convert, downscale, turn upright and compress.

    ``data`` is the encoded input ``im`` was opened from, or None for a caller's
    ``PIL.Image.Image``: that one is never drafted, changed or encoded itself (``save`` would
    read its ``encoderinfo`` and ``info["comment"]``).
    """
    target = _target_size(im.size, max_side)
    profile = _colour_profile(im)  # read before a draft changes the mode
    kept = _grain_kept(im, data, target)  # YCbCr, encoded as it is
    if kept is not None:
        pixels = kept if profile is None else _to_srgb(kept.convert("RGB"), profile)
    else:
        pixels = _decoded_rgb(im, target, profile, drafted=data is not None)
    for op in _TRANSPOSE.get(orientation, ()):
        pixels = pixels.transpose(op)
    if pixels is im and data is None:
        pixels = im.copy()
    pixels.info = {}  # no comment, EXIF or ICC profile can ride along into the encoder
    # The grain-preserving path has both cores to itself: it may encode a second quality early.
    spare = _helper_pool() if kept is not None else None
    data_out, quality, size = _compress(pixels, max_bytes, spare)
    input_bytes = 0 if data is None else len(data)
    return _prepared(data_out, size, quality, input_bytes, passthrough=False)


def _grain_kept(im: Image.Image, data: bytes | None, target: tuple[int, int]) -> Image.Image | None:
    """The grain-preserving downscale, when this image takes that path (_grainy, _alone)."""
    if data is None or not isinstance(im, JpegImageFile):
        return None
    if not _alone() or not _grainy(im, data, target):  # alone first: _grainy may walk markers
        return None
    return _grain_preserving_downscale(im, data, target)


def _decoded_rgb(
    im: Image.Image,
    target: tuple[int, int],
    profile: ImageCms.ImageCmsProfile | None,
    *,
    drafted: bool,
) -> Image.Image:
    """``im`` as sRGB at ``target``; a JPEG we own is decoded at reduced scale when it can be."""
    if drafted and target != im.size and isinstance(im, JpegImageFile):
        # libjpeg scales by 1/2, 1/4 or 1/8 inside the IDCT, never below the target size.
        im.draft(None, target)
    im.load()
    pixels = _normalise_mode(im)
    if pixels.size != target:
        pixels = _downscale(pixels, target)
    pixels = _to_rgb(pixels)
    # The profile is applied after the downscale: the same colours, on fewer pixels.
    return pixels if profile is None else _to_srgb(pixels, profile)


def _colour_profile(im: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile when the pixels must be converted to sRGB, else None.

    Phones embed Display P3 and cameras Adobe RGB; the service, like most decoders, reads pixels
    as sRGB, and the profile is stripped with the other metadata. Only a matrix/TRC RGB profile
    (what photos carry) is applied, after a check of its structure (_matrix_trc), since a lookup
    table profile of a few hundred bytes can make LittleCMS allocate half a gigabyte. None for
    no profile, one that is sRGB in effect (_acts_as_srgb, whatever its name), anything else, or
    one LittleCMS cannot use: those pixels are taken as sRGB, as they would be anyway.
    """
    icc = im.info.get("icc_profile")
    if not icc or not isinstance(icc, bytes) or im.mode not in _PROFILED_MODES:
        return None
    if not _matrix_trc(icc):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None
    return None if _acts_as_srgb(icc, profile) else profile


_PROFILED_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})
_MAX_PROFILE_BYTES: Final = 256 * 1024  # matrix/TRC profiles are a few KB (1024-entry curves: 7 KB)
_MAX_CURVE_ENTRIES: Final = 4096
_PARAMETRIC_ARGUMENTS: Final = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}  # ICC parametricCurveType


def _matrix_trc(icc: bytes) -> bool:
    """Whether ``icc`` is a well-formed matrix/TRC RGB profile with no lookup tables.

    Every tag must lie inside the profile; the colorants must be XYZ and the three curves small
    tables or parametric curves, the only tags LittleCMS reads to build the transform.
    """
    if not 132 <= len(icc) <= _MAX_PROFILE_BYTES or icc[16:20] != b"RGB " or icc[36:40] != b"acsp":
        return False
    (count,) = struct.unpack_from(">I", icc, 128)
    if count > 64 or 132 + 12 * count > len(icc):
        return False
    tags: dict[bytes, bytes] = {}
    for index in range(count):
        signature, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * index)
        if offset + size > len(icc) or size < 8:
            return False
        tags[signature] = icc[offset : offset + size]
    if any(signature[:3] in (b"A2B", b"B2A", b"D2B", b"B2D") for signature in tags):
        return False  # lookup tables: LittleCMS would use them instead of the matrix
    colorants = (tags.get(name, b"") for name in (b"rXYZ", b"gXYZ", b"bXYZ"))
    if not all(body[:4] == b"XYZ " and len(body) >= 20 for body in colorants):
        return False
    return all(_small_curve(tags.get(name, b"")) for name in (b"rTRC", b"gTRC", b"bTRC"))


def _small_curve(body: bytes) -> bool:
    if body[:4] == b"curv" and len(body) >= 12:
        entries = int(struct.unpack_from(">I", body, 8)[0])
        return entries <= _MAX_CURVE_ENTRIES and len(body) >= 12 + 2 * entries
    if body[:4] == b"para" and len(body) >= 12:
        arguments = _PARAMETRIC_ARGUMENTS.get(int(struct.unpack_from(">H", body, 8)[0]))
        return arguments is not None and len(body) >= 12 + 4 * arguments
    return False


# Colours whose conversion tells an sRGB profile, whatever its name ("c2", "IEC 61966-2.1
# Default RGB colour space - sRGB"), from a wide-gamut or linear one named "sRGB"-something.
_PROBE_COLOURS: Final = (
    (0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
    (200, 100, 50), (60, 180, 60), (40, 60, 200), (230, 230, 20),
)  # fmt: skip
_SRGB_TOLERANCE: Final = 2  # levels per channel
_srgb_verdicts: dict[bytes, bool] = {}  # by SHA-256 of the profile: phones send the same few
_SRGB_VERDICTS_KEPT: Final = 64


def _acts_as_srgb(icc: bytes, profile: ImageCms.ImageCmsProfile) -> bool:
    """Whether converting through ``profile`` to sRGB leaves every probe colour as it was.

    Raises nothing: a profile LittleCMS cannot build a transform for counts as sRGB (unusable).
    """
    key = hashlib.sha256(icc).digest()
    verdict = _srgb_verdicts.get(key)
    if verdict is None:
        probe = Image.frombytes(
            "RGB", (len(_PROBE_COLOURS), 1), bytes(v for colour in _PROBE_COLOURS for v in colour)
        )
        try:
            converted = _convert(probe, profile)
        except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
            verdict = True
        else:
            pairs = zip(probe.tobytes(), converted.tobytes(), strict=True)
            verdict = all(abs(a - b) <= _SRGB_TOLERANCE for a, b in pairs)
        if len(_srgb_verdicts) >= _SRGB_VERDICTS_KEPT:
            _srgb_verdicts.clear()  # a handful of profiles in practice; no LRU needed
        _srgb_verdicts[key] = verdict
    return verdict


def _convert(im: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    # A fresh sRGB profile and transform per call: LittleCMS handles are not for sharing across
    # threads (building one takes about a millisecond).
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    converted = ImageCms.profileToProfile(im, profile, srgb, outputMode="RGB")
    assert converted is not None  # not in place
    return converted


def _to_srgb(im: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """RGB ``im``, as ``profile`` describes it, converted to sRGB (unchanged if that fails)."""
    try:
        return _convert(im, profile)
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return im  # taken as sRGB, as without a profile


def _grainy(im: JpegImageFile, data: bytes, target: tuple[int, int]) -> bool:
    """Whether this JPEG is worth the grain-preserving path (see _GRAIN_BYTES_PER_PIXEL).

    Not when the reduced-scale decode alone makes the size (a 4000x3000 photo to a 2000 px
    document): its aliasing is then at its worst (luma 32 dB against a full decode + LANCZOS,
    41 dB with full-size luma), but there is no resize for the second thread to take over, so
    two decodes would make the image slower (117 ms against 78 ms), and ``verify()`` waits for
    its front. Fidelity here would cost wall time; elsewhere it costs only CPU.
    """
    width, height = im.size
    least = _GRAIN_BYTES_PER_PIXEL * width * height
    if im.mode != "RGB" or width < 2 * target[0] or height < 2 * target[1] or len(data) < least:
        return False
    if _lands_on(im.size, target):
        return False  # the reduced-scale decode alone makes the size: faster than two decodes
    # Count the picture only: not EXIF thumbnails, ICC or XMP, nor an MPO's other pictures
    # (the marker walk takes 3 ms on a 6.6 MB photo, so only likely candidates pay for it).
    try:
        return len(_strip_jpeg_metadata(data)) >= least
    except ImageError:
        return True  # a marker walk that fails says nothing about grain


def _lands_on(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether libjpeg's 1/2, 1/4 or 1/8 scale gives ``target`` exactly (as draft picks it)."""
    scale = min(size[0] // target[0], size[1] // target[1])
    for s in (8, 4, 2, 1):
        if scale >= s:
            return ((size[0] + s - 1) // s, (size[1] + s - 1) // s) == target
    return False


def _grain_preserving_downscale(
    im: JpegImageFile, data: bytes, target: tuple[int, int]
) -> Image.Image:
    """YCbCr at ``target``: luma from a full-size decode, chroma from a reduced-scale one.

    The two decodes run at once, this thread's and a helper's; then both downscale the luma,
    band by band, whichever is free first taking the next (the decodes do not always end
    together, and a third thread would only compete for the same two cores).
    """
    luma = _LumaBands(im, target)
    helper = _helper_pool().submit(_chroma_then_bands, data, target, luma)
    try:
        im.draft("L", None)  # luma only: no chroma IDCT, upsampling or colour conversion
        im.load()
        luma.ready()
        luma.work()
    finally:
        luma.abandon_if_unready()  # the helper must never wait for a decode that failed
        # Still queued behind other images' helpers (a busy pool): do its share here instead.
        if not helper.cancel():
            wait([helper])
    cb, cr = _chroma_planes(data, target) if helper.cancelled() else helper.result()
    return Image.merge("YCbCr", (luma.result(), cb, cr))


def _coded_as_ycbcr(im: Image.Image) -> bool:
    """Whether libjpeg reads this 3-component JPEG as YCbCr (its rules: JFIF, then Adobe's
    transform flag, then the component ids, 'R', 'G', 'B' meaning RGB)."""
    if "jfif" in im.info:
        return True
    if "adobe" in im.info:
        return im.info.get("adobe_transform") != 0
    ids = tuple(layer[0] for layer in getattr(im, "layer", ()))
    return ids != (82, 71, 66)


class _LumaBands:
    """The downscale of a decoded luma plane, in horizontal bands taken by whichever thread asks.

    Pillow clips the filter's support at the image's edges, not the box's, so the bands equal
    one resize: bit for bit when band edges fall on whole source rows (4000x3000 to 1280x960),
    else within one level of rounding. The GIL is released while each band runs.
    """

    _COUNT: Final = 4

    def __init__(self, im: Image.Image, target: tuple[int, int]) -> None:
        self._im = im
        self._target = target
        height = target[1]
        self._count = min(self._COUNT, height)  # no empty band for a strip a few pixels high
        self._edges = [height * i // self._count for i in range(self._count + 1)]
        self._next = 0
        self._lock = threading.Lock()
        self._decoded = threading.Event()
        self._ok = False
        self._parts: dict[int, Image.Image] = {}

    def ready(self) -> None:
        """The luma is decoded: bands may be taken."""
        self._ok = True
        self._decoded.set()

    def abandon_if_unready(self) -> None:
        """Release a waiting helper when the decode failed."""
        self._decoded.set()

    def work(self) -> None:
        """Resize bands until none is left (returns at once when the decode failed)."""
        self._decoded.wait()
        while self._ok:
            with self._lock:
                index = self._next
                self._next += 1
            if index >= self._count:
                return
            self._parts[index] = self._band(index)

    def _band(self, index: int) -> Image.Image:
        top, bottom = self._edges[index], self._edges[index + 1]
        scale = self._im.height / self._target[1]
        box = (0.0, top * scale, float(self._im.width), bottom * scale)
        return self._im.resize((self._target[0], bottom - top), _RESAMPLE, box=box)

    def result(self) -> Image.Image:
        """The whole downscaled plane (once every ``work`` call has returned)."""
        out = Image.new(self._im.mode, self._target)
        for index in range(self._count):
            out.paste(self._parts[index], (0, self._edges[index]))
        return out


def _chroma_then_bands(
    data: bytes, target: tuple[int, int], luma: _LumaBands
) -> tuple[Image.Image, Image.Image]:
    """The helper's share: Cb and Cr at ``target``, then luma bands."""
    planes = _chroma_planes(data, target)
    luma.work()
    return planes


def _chroma_planes(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Cb and Cr at ``target``, from a decode at about a quarter of it (1/8 scale for 12 MP).

    The encoder averages chroma over 2x2 pixels, so little of what a larger decode keeps
    would survive; each halving saves 4-7 ms on a grainy 12 MP photo.
    """
    with Image.open(io.BytesIO(data), formats=("JPEG", "MPO")) as im:
        # libjpeg hands out YCbCr only for a JPEG coded as YCbCr; one coded as RGB is decoded
        # as RGB and converted (its clipping costs 0.2 dB on the hard photo, so not always).
        size = (max(1, target[0] // 4), max(1, target[1] // 4))
        im.draft("YCbCr" if _coded_as_ycbcr(im) else None, size)
        im.load()
        _, cb, cr = (im if im.mode == "YCbCr" else im.convert("YCbCr")).split()
    bilinear = Image.Resampling.BILINEAR
    return cb.resize(target, bilinear), cr.resize(target, bilinear)


def _downscale(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to ``size``: integer box pre-reduction for big factors, then BICUBIC.

    One thread per image: splitting a resize into parallel bands made a lone image 14 ms
    faster on 2 cores, but three frames then took 2.4x one instead of 1.7x, and a busy
    server gains nothing from it (every core already has an image).
    """
    factor = int(min(im.width / size[0], im.height / size[1]) / _REDUCING_GAP)
    if factor >= 2:  # what Pillow's reducing_gap does
        im = im.reduce(factor)
    return im.resize(size, _RESAMPLE)


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Convert to L, LA, RGB or RGBA, the modes Pillow resizes well (with alpha premultiplied)."""
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" in im.info:
        # A PNG tRNS colour key: that colour is transparent and must come out white too.
        return im.convert("LA" if mode == "L" else "RGBA")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB")
    if mode in ("RGBa", "RGBX"):
        return im.convert("RGBA" if mode == "RGBa" else "RGB")
    if mode == "La":
        return im.convert("LA")
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16") or mode == "I":
        # Pillow's I;16 -> L conversion clips at 255; scale the 16-bit range down instead.
        return im.convert("I").point(lambda v: v / 257).convert("L")
    if mode == "F":
        low, high = im.getextrema()
        span = float(high) - float(low) or 1.0  # type: ignore[arg-type]
        return im.point(lambda v: (v - low) * (255.0 / span)).convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


# --- compress ---


def _encode(im: Image.Image, quality: int) -> bytes:
    """Encode as JPEG into a scratch file rather than a BytesIO.

    Pillow releases the GIL while it encodes into a real file descriptor, but holds it for the
    whole encode into a BytesIO (measured: the event loop thread stalled 38 ms at p99 while
    another thread encoded 1280 px JPEGs into BytesIO, 4.5 ms into a file).
    """
    with _scratch_file() as fh:
        im.save(fh, "JPEG", quality=quality)
        fd = fh.fileno()
        size = os.lseek(fd, 0, os.SEEK_END)  # Pillow wrote through the descriptor
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while size > 0:
            chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def _scratch_file() -> BinaryIO:
    """An anonymous file: in memory where the OS allows (Linux memfd), else a temporary file."""
    if hasattr(os, "memfd_create"):
        return open(os.memfd_create("vlens-jpeg", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


def _compress(
    im: Image.Image, max_bytes: int, spare: ThreadPoolExecutor | None = None
) -> tuple[bytes, int, tuple[int, int]]:
    """Highest quality under ``max_bytes``; a smaller side when even MIN_QUALITY is too big.

    With a ``spare`` pool, the quality above the estimate is encoded there at the same time.
    """
    while True:
        found, smallest = _search_quality(im, max_bytes, spare)
        if found is not None:
            quality, data = found
            return data, quality, im.size
        factor = min(_MAX_SHRINK, math.sqrt(max_bytes / smallest) * _SHRINK_MARGIN)
        size = (max(1, int(im.width * factor)), max(1, int(im.height * factor)))
        if max(size) < MIN_SIDE:
            raise CompressionError(
                f"cannot fit {max_bytes} bytes even at quality {MIN_QUALITY} and a side of "
                f"{max(im.size)} px"
            )
        im = _downscale(im, size)


class _SizeModel:
    """Full encodes of one image, cached, and their sizes predicted from a stripe sample."""

    def __init__(self, im: Image.Image) -> None:
        self.im = im
        self.encoded: dict[int, bytes] = {}
        self._pending: dict[int, Future[bytes]] = {}
        self._sampled: dict[int, float] = {}
        self._sample: Image.Image | None = None
        self._factor = 1.0
        if im.height >= _MIN_SAMPLED_HEIGHT:
            tops = range(0, im.height - _STRIPE + 1, _STRIPE * _SAMPLE_EVERY)
            sample = Image.new(im.mode, (im.width, _STRIPE * len(tops)))
            for i, top in enumerate(tops):
                sample.paste(im.crop((0, top, im.width, top + _STRIPE)), (0, i * _STRIPE))
            self._sample = sample
            self._factor = im.height / sample.height

    @property
    def exact(self) -> bool:
        """Whether predictions are full encodes (the image is too short to sample)."""
        return self._sample is None

    def encode(self, quality: int) -> bytes:
        """The full JPEG at ``quality``."""
        if quality not in self.encoded:
            pending = self._pending.pop(quality, None)
            self.encoded[quality] = (
                pending.result() if pending is not None else _encode(self.im, quality)
            )
        return self.encoded[quality]

    def encode_early(self, quality: int, pool: ThreadPoolExecutor) -> None:
        """Start the full encode at ``quality`` on ``pool``; ``encode`` collects it."""
        if quality not in self.encoded and quality not in self._pending:
            # Its own Image object: save() keeps its options on the image (encoderinfo), so two
            # threads saving one object at once swap qualities.
            self._pending[quality] = pool.submit(_encode, self.im.copy(), quality)

    def settle(self) -> None:
        """Wait for encodes started early and nobody collected (they read ``im``)."""
        for pending in self._pending.values():
            pending.cancel()
        wait(self._pending.values())
        self._pending.clear()

    def sampled(self, quality: int) -> float:
        """The full size at ``quality`` as the sample predicts it (exact when unsampled)."""
        if self._sample is None:
            return len(self.encode(quality))
        if quality not in self._sampled:
            measured = len(_encode(self._sample, quality))
            self._sampled[quality] = _JPEG_OVERHEAD + (measured - _JPEG_OVERHEAD) * self._factor
        return self._sampled[quality]

    def highest_fitting(self, low: int, high: int, limit: float, ratio: float = 1.0) -> int | None:
        """The highest quality in ``low..high`` whose predicted size times ``ratio`` fits."""
        if low > high or self.sampled(low) * ratio > limit:
            return None
        if self.sampled(high) * ratio <= limit:
            return high
        while high - low > 1:  # sampled(low) fits, sampled(high) does not
            mid = (low + high) // 2
            if self.sampled(mid) * ratio <= limit:
                low = mid
            else:
                high = mid
        return low


def _search_quality(
    im: Image.Image, max_bytes: int, spare: ThreadPoolExecutor | None = None
) -> tuple[tuple[int, bytes] | None, int]:
    """Return ((quality, jpeg) or None when even MIN_QUALITY is too big, smallest size seen).

    The estimate from the stripe sample, one full encode, a corrected guess when needed, then
    bisection; see the constants above. With a ``spare`` pool the quality above the estimate,
    the usual correction when the estimate's margin was too careful, is encoded alongside it.
    """
    model = _SizeModel(im)
    try:
        return _searched(model, max_bytes, spare)
    finally:
        model.settle()


def _searched(
    model: _SizeModel, max_bytes: int, spare: ThreadPoolExecutor | None
) -> tuple[tuple[int, bytes] | None, int]:
    # Aim a little under the budget when predicting from the sample; exact sizes need no margin.
    target = max_bytes if model.exact else max_bytes * _TARGET_FILL
    quality = model.highest_fitting(MIN_QUALITY, MAX_QUALITY, target) or MIN_QUALITY
    if spare is not None and quality < MAX_QUALITY:
        model.encode_early(quality + 1, spare)
    best: int | None = None
    for attempt in range(_MAX_ENCODES):
        size = len(model.encode(quality))
        if size <= max_bytes and (best is None or quality > best):
            best = quality
        low = best if best is not None else MIN_QUALITY - 1
        failing = [q for q, data in model.encoded.items() if len(data) > max_bytes]
        high = min(failing, default=MAX_QUALITY + 1)
        if high - low <= 1:
            break
        if best is not None and len(model.encoded[best]) >= _ACCEPT_FILL * max_bytes:
            break
        if attempt < _CORRECTIONS:
            # Scale every prediction by how far off this one was.
            ratio = size / model.sampled(quality)
            # Corrected predictions are close enough to aim at the budget itself: a quality
            # predicted in its last per cent (cut by the estimate's margin) is worth an encode.
            guess = model.highest_fitting(low + 1, high - 1, max_bytes, ratio)
            if guess is None and best is not None:
                break  # nothing above the best is expected to fit
            quality = guess if guess is not None else low + 1
        else:
            quality = (low + high) // 2
    found = (best, model.encoded[best]) if best is not None else None
    return found, min(len(data) for data in model.encoded.values())


def _encode_png(image: Image.Image) -> bytes:
    pixels = (
        image
        if image.mode in ("1", "L", "LA", "I;16", "P", "RGB", "RGBA")
        else image.convert("RGB")
    )
    out = io.BytesIO()
    pixels.save(out, "PNG")
    return out.getvalue()


# --- JPEG metadata stripping (pass-through) ---


def _strip_jpeg_metadata(data: bytes) -> bytes:
    """Return the JPEG without metadata segments, by walking its markers; no re-encoding.

    Keeps every segment a decoder needs (tables, frame, scans, restart intervals), APP0 JFIF
    without its thumbnail and APP14 Adobe; drops other APPn (EXIF, XMP, ICC, MPF, maker notes)
    and COM, and anything after the end-of-image marker (second MPO pictures, vendor trailers).
    Raises UnsupportedImageError for a truncated or malformed stream.
    """
    if not data.startswith(b"\xff\xd8"):
        raise UnsupportedImageError("corrupt JPEG: no start-of-image marker")
    out = [b"\xff\xd8"]
    pos, end = 2, len(data)
    while True:
        if pos >= end:
            raise UnsupportedImageError("truncated image data")
        if data[pos] != 0xFF:
            raise UnsupportedImageError("corrupt JPEG: expected a marker")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            raise UnsupportedImageError("truncated image data")
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            out.append(bytes((0xFF, marker)))
            continue
        if marker == 0x00 or pos + 2 > end:
            raise UnsupportedImageError("corrupt or truncated JPEG")
        seg_end = pos + int.from_bytes(data[pos : pos + 2], "big")
        if seg_end > end or seg_end < pos + 2:
            raise UnsupportedImageError("truncated image data")
        if marker == _SOS:
            found = _next_marker(data, seg_end)
            if found < 0:
                raise UnsupportedImageError("truncated image data")
            out.append(data[pos - 2 : found])
            pos = found
            continue
        kept = _kept_segment(marker, data[pos + 2 : seg_end])
        if kept is None:
            out.append(data[pos - 2 : seg_end])
        elif kept:
            out.append(kept)
        pos = seg_end


def _next_marker(data: bytes, start: int) -> int:
    """Position of the next marker in entropy-coded data, or -1.

    Searched in windows so another thread can take the GIL between them (a regex search holds
    it for its whole run: about 0.7 ms per MB).
    """
    end = len(data)
    while start < end:
        stop = min(start + _SCAN_WINDOW, end)
        # One byte of overlap: a 0xFF at the window's end pairs with the byte after it.
        found = _NEXT_MARKER.search(data, start, min(stop + 1, end))
        if found is not None:
            return found.start()
        start = stop
    return -1


def _kept_segment(marker: int, payload: bytes) -> bytes | None:
    """None keeps the segment as is, b"" drops it, other bytes replace it."""
    if marker == _APP0:
        if payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            # Version, units and density stay; the embedded thumbnail goes.
            return b"\xff\xe0\x00\x10" + payload[:12] + b"\x00\x00"
        return b""
    if marker == _APP14:
        if payload.startswith(b"Adobe") and len(payload) >= _ADOBE_LENGTH:
            # Decoders read 12 bytes (the colour transform is the last); the rest could carry text.
            return b"\xff\xee\x00\x0e" + payload[:_ADOBE_LENGTH]
        return b""
    if 0xE0 <= marker <= 0xEF or marker == _COM:
        return b""
    return None
