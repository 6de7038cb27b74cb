"""The entry points: one document, or three liveness frames prepared concurrently and checked.

The coroutines only wait: the work runs in worker threads (``asyncio.to_thread``). The ``*_sync``
twins run the same code in the calling thread, and the three frames in a small thread pool. Each
entry point resolves ``preserve_grain`` once, in its caller's thread or task, and hands the
result to the threads it uses (see _throughput).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from ..config import (
    DOCUMENT_MAX_BYTES,
    DOCUMENT_MAX_SIDE,
    FACE_MAX_BYTES,
    FACE_MAX_SIDE,
    MAX_FRAME_SPREAD_SECONDS,
)
from ..errors import ConfigurationError, FrameTimingError, IdenticalFramesError, ImageError
from ._frames import Thumbnail, check_identical, check_timing, thumbnail
from ._pipeline import prepare_image
from ._pools import frame_pool
from ._throughput import resolve_preserve_grain
from ._values import ImageInput, PreparedFaces, PreparedImage

# The smallest budgets a caller may ask for: below these no photo is usable.
_MIN_MAX_BYTES: Final = 1024
_MIN_MAX_SIDE: Final = 16
_JPEG_MAX_SIDE: Final = 65_500  # libjpeg's JPEG_MAX_DIMENSION

_Outcome = tuple[PreparedImage, Thumbnail] | BaseException


async def prepare_document(
    image: ImageInput,
    *,
    max_bytes: int = DOCUMENT_MAX_BYTES,
    max_side: int = DOCUMENT_MAX_SIDE,
    preserve_grain: bool | None = None,
) -> PreparedImage:
    """Prepare an ID card side for upload: a JPEG under ``max_bytes`` and ``max_side`` pixels.

    Runs in a worker thread. ``preserve_grain`` lets a grainy JPEG reduced more than 2x keep its
    luma at full resolution (a second thread: the same wall time for 1.7x the CPU); None means
    True, or False inside :func:`~vlens_async.images.prefer_throughput`. The output depends only
    on the input and the options. Raises :class:`~vlens_async.errors.UnsupportedImageError`,
    :class:`~vlens_async.errors.ImageTooLargeError` or
    :class:`~vlens_async.errors.CompressionError`.
    """
    _check_budget(max_bytes, max_side)
    grain = resolve_preserve_grain(preserve_grain, faces=False)
    if isinstance(image, PreparedImage) and image.fits(max_bytes, max_side):
        return image
    return await asyncio.to_thread(
        prepare_document_sync, image, max_bytes=max_bytes, max_side=max_side, preserve_grain=grain
    )


def prepare_document_sync(
    image: ImageInput,
    *,
    max_bytes: int = DOCUMENT_MAX_BYTES,
    max_side: int = DOCUMENT_MAX_SIDE,
    preserve_grain: bool | None = None,
) -> PreparedImage:
    """Blocking twin of :func:`prepare_document`, for scripts: never call it on an event loop.

    ``preserve_grain`` None is resolved in the calling thread, as :func:`prepare_document` does.
    """
    _check_budget(max_bytes, max_side)
    grain = resolve_preserve_grain(preserve_grain, faces=False)
    return prepare_image(image, max_bytes, max_side, preserve_grain=grain)[0]


async def prepare_faces(
    f1: ImageInput,
    f2: ImageInput,
    f3: ImageInput,
    *,
    max_bytes: int = FACE_MAX_BYTES,
    max_side: int = FACE_MAX_SIDE,
    capture_times: Sequence[float | datetime] | None = None,
    max_spread: float = MAX_FRAME_SPREAD_SECONDS,
    preserve_grain: bool | None = None,
) -> PreparedFaces:
    """Prepare three liveness frames concurrently, each a JPEG under ``max_bytes``/``max_side``.

    ``capture_times`` (three ``float`` seconds or three ``datetime``) spread over ``max_spread``
    raises :class:`~vlens_async.errors.FrameTimingError` before any work. Two identical or nearly
    identical frames raise :class:`~vlens_async.errors.IdenticalFramesError` naming the pair. A
    frame that cannot be prepared raises the error of the lowest-numbered failing frame, its
    reason prefixed with the API field name (``face_2: ...``). ``preserve_grain`` is as for
    :func:`prepare_document`, but None means False: the three frames already use every core.
    """
    _check_budget(max_bytes, max_side)
    check_timing(capture_times, max_spread)
    grain = resolve_preserve_grain(preserve_grain, faces=True)
    outcomes = await asyncio.gather(
        *(
            asyncio.to_thread(_prepare_frame, f, i, max_bytes, max_side, grain)
            for i, f in enumerate((f1, f2, f3))
        ),
        return_exceptions=True,
    )
    # The thumbnail comparison (Pillow, about 0.3 ms) runs off the loop too.
    return await asyncio.to_thread(_collect_faces, outcomes)


def prepare_faces_sync(
    f1: ImageInput,
    f2: ImageInput,
    f3: ImageInput,
    *,
    max_bytes: int = FACE_MAX_BYTES,
    max_side: int = FACE_MAX_SIDE,
    capture_times: Sequence[float | datetime] | None = None,
    max_spread: float = MAX_FRAME_SPREAD_SECONDS,
    preserve_grain: bool | None = None,
) -> PreparedFaces:
    """Blocking twin of :func:`prepare_faces` (frames still run concurrently, in a thread pool).

    ``preserve_grain`` None is resolved in the calling thread and handed to the pool's threads.
    """
    _check_budget(max_bytes, max_side)
    check_timing(capture_times, max_spread)
    grain = resolve_preserve_grain(preserve_grain, faces=True)
    pool = frame_pool()
    futures = [
        pool.submit(_prepare_frame, f, i, max_bytes, max_side, grain)
        for i, f in enumerate((f1, f2, f3))
    ]
    outcomes: list[_Outcome] = []
    for future in futures:
        exc = future.exception()
        outcomes.append(exc if exc is not None else future.result())
    return _collect_faces(outcomes)


def _prepare_frame(
    image: ImageInput, index: int, max_bytes: int, max_side: int, preserve_grain: bool
) -> tuple[PreparedImage, Thumbnail]:
    """The prepared frame and its thumbnail; a failure named by the frame's API field."""
    try:
        prepared, small = prepare_image(
            image, max_bytes, max_side, preserve_grain=preserve_grain, frame=True
        )
        return prepared, small if small is not None else thumbnail(prepared.data)
    except (IdenticalFramesError, FrameTimingError):  # pragma: no cover - not raised per frame
        raise
    except ImageError as exc:
        raise type(exc)(f"face_{index + 1}: {exc.reason}") from exc


def _collect_faces(outcomes: Sequence[_Outcome]) -> PreparedFaces:
    # The lowest-numbered failure wins, so the error does not depend on thread timing.
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    check_identical([p for p, _ in done], [t for _, t in done])
    return PreparedFaces((done[0][0], done[1][0], done[2][0]))


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
