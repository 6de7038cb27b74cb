"""Liveness frames compared: identical frames by thumbnail, and capture times by their spread.

Each prepared frame is reduced to a THUMBNAIL_SIDE square grayscale thumbnail; its outer ring is
dropped (a shifted or cropped copy differs most there) and the rest normalised to zero mean and
unit standard deviation, so exposure and contrast changes do not count. Two frames whose mean
absolute difference is below IDENTICAL_FRAME_THRESHOLD are the same frame. Calibration on
samples.make_applicant faces (seeds 0-149, scenarios valid, different_person and
aml_watchlisted: 1350 frame pairs, 720x960): real pairs score 0.127 at least (median 0.26);
copies of a frame score at most 0.021 re-encoded at quality 60 or 40, 0.058 shifted by 2 px in x
and y, 0.057 cropped by 2 px, 0.043 with brightness +-5 % or contrast +10 %, 0.047 at half size
and 0.027 upscaled to 1280 px. The threshold sits between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from PIL import Image

from ..errors import ConfigurationError, FrameTimingError, IdenticalFramesError, ImageError
from ._decode import check_pixels, decode_error, open_image
from ._values import PreparedImage

THUMBNAIL_SIDE: Final = 32
_THUMBNAIL_RING: Final = 1
IDENTICAL_FRAME_THRESHOLD: Final = 0.085
_PAIRS: Final = ((0, 1), (1, 2), (0, 2))


def frame_difference(a: bytes, b: bytes) -> float:
    """Difference between two JPEG frames as the identical-frame check measures it.

    Blocking (decodes both). 0 for the same picture; below :data:`IDENTICAL_FRAME_THRESHOLD`
    counts as identical. Exposed for calibration and diagnostics. Raises
    :class:`~vlens_async.errors.ImageError` for bytes that are not a readable image.
    """
    return _normalised_difference(_normalised(thumbnail(a)), _normalised(thumbnail(b)))


def check_identical(frames: Sequence[PreparedImage], thumbs: Sequence[bytes]) -> None:
    """Raise IdenticalFramesError for the first pair of frames that is the same picture."""
    for i, j in _PAIRS:
        if frames[i].digest == frames[j].digest:
            raise IdenticalFramesError(
                f"face_{i + 1} and face_{j + 1} are the same image", pair=(i, j), difference=0.0
            )
    normalised = [_normalised(thumb) for thumb in thumbs]  # once per frame, not per pair
    for i, j in _PAIRS:
        difference = _normalised_difference(normalised[i], normalised[j])
        if difference < IDENTICAL_FRAME_THRESHOLD:
            raise IdenticalFramesError(
                f"face_{i + 1} and face_{j + 1} are nearly identical "
                f"(difference {difference:.3f} < {IDENTICAL_FRAME_THRESHOLD}); "
                "liveness needs three frames of real motion",
                pair=(i, j),
                difference=difference,
            )


def thumbnail(jpeg: bytes) -> bytes:
    """A THUMBNAIL_SIDE square grayscale thumbnail of a JPEG, decoded at reduced scale.

    ``draft`` decodes at the smallest DCT scale still at least THUMBNAIL_SIDE on each side, so
    copies of one frame at different resolutions give nearly the same thumbnail. Unreadable
    bytes raise an ImageError like everything else here.
    """
    im = open_image(jpeg)
    try:
        check_pixels(im.size)
        im.draft("L", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        small = im.convert("L").resize(
            (THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        return small.tobytes()
    except ImageError:
        raise
    except Exception as exc:
        raise decode_error(exc) from exc
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


def _normalised_difference(za: list[float], zb: list[float]) -> float:
    return sum(abs(x - y) for x, y in zip(za, zb, strict=True)) / len(za)


# --- capture times ---


def check_timing(capture_times: Sequence[float | datetime] | None, max_spread: float) -> None:
    """Refuse a bad ``max_spread``, and capture times spread over it (FrameTimingError)."""
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
