"""Liveness frames compared: copies of one picture by thumbnail, and capture times by their spread.

The check exists to stop a copy of a frame being sent as another frame (the service fails liveness
on identical frames); a false refusal costs a real applicant, so it refuses only what is clearly a
copy and sends everything else for the service to judge.

Each frame is decoded in grayscale at reduced scale (``draft``: libjpeg's scaled IDCT), to the
smallest scale whose long side is still at least THUMBNAIL_DECODE_SIDE (1/4 for 960 to 1280 px).
Two frames are compared (compare_thumbnails) on one grid whose long side is at most
THUMBNAIL_SIDE and at most half the smaller thumbnail's: both are resized to it with a triangle
filter (Pillow's BOX filter at a non-integer factor is no area average: a copy at 0.8x differed by
30 grey levels at the subject's edges), the second's grey levels are mapped onto the first's by
histogram matching (so exposure, contrast and tone curves do not count, clipping included), and the
difference is the mean absolute difference in grey levels. Below IDENTICAL_FRAME_THRESHOLD the
frames are copies. Frames whose shapes differ by more than _SHAPE_TOLERANCE are not copies.

Calibration (tests/images/test_frames_calibration.py, on frames made from three public-domain
photographs by tests/images/photo_frames.py), each frame prepared as prepare_faces would (long side
at most 1280 px; inputs 640x480, 1280x960 and 4032x3024): 209 copies score 0.71 at most, median
0.15 (by kind, the worst: re-encoded at quality 50 0.48, 95 0.14; resized x0.25 0.56, x0.37
0.64, x0.5 0.38, x0.8 0.58, x1.5 0.71; PNG 0.14; grayscale then RGB 0.07; metadata added or
stripped 0.03; brightness +10 % 0.60, -10 % 0.35; contrast +10 % 0.60, -10 % 0.34). 47 pairs of
real motion score 1.94 at least, median 4.0 (a subject moved by 0.5 % of the width on a plain
background: 2.31 at 640x480, 2.03 at 1280x960, 1.94 at 4032x3024; on a busy one 2.18 and more;
portraits cut with a 0.5 % shift, a 1 % zoom, a 0.5 degree turn or all three: 2.39 and more).
The threshold,
1.15, is 1.6x the worst copy and 1/1.7 of the least motion; the test keeps a 1.5x margin on both
sides. Re-encoding below quality 50, a shift or crop of a few pixels, or a bigger exposure change
may land either side: such a pair is sent and the service judges it. The check before issue 14
(32 px thumbnails normalised to zero mean and unit variance, threshold 0.085) refused a subject
moved by 4 % of the width at 12 MP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import attrs
from PIL import Image, ImageChops

from ..errors import ConfigurationError, FrameTimingError, IdenticalFramesError, ImageError
from ._decode import check_pixels, decode_error, open_image
from ._resize import target_size
from ._values import PreparedImage

THUMBNAIL_SIDE: Final = 128
"""Long side, in pixels, of the grid two frames are compared on."""
THUMBNAIL_DECODE_SIDE: Final = 240
"""A frame is decoded at the smallest scale whose long side is still at least this."""
IDENTICAL_FRAME_THRESHOLD: Final = 1.15
"""Mean absolute difference (grey levels, after matching exposure) under which two frames are
copies of one picture. Copies measured 0.71 at most, real motion 1.94 at least (see above)."""
MOVED_FRAME_DIFFERENCE: Final = 1.94
"""The least difference measured for real motion (0.5 % of the width), quoted in the error."""
_SHAPE_TOLERANCE: Final = 0.02  # aspect ratios further apart than this: not copies
_PAIRS: Final = ((0, 1), (1, 2), (0, 2))
_FILTER: Final = Image.Resampling.BILINEAR  # a triangle filter scaled to the reduction


@attrs.frozen
class Thumbnail:
    """A frame's grayscale thumbnail: ``size`` and row-major 8-bit ``pixels``."""

    size: tuple[int, int]
    pixels: bytes = attrs.field(repr=False)
    # Resized once per grid: one frame is compared with two others, usually on one grid.
    _grids: dict[tuple[int, int], Image.Image] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    def image(self) -> Image.Image:
        """The thumbnail as a Pillow ``L`` image."""
        return Image.frombytes("L", self.size, self.pixels)

    def on_grid(self, grid: tuple[int, int]) -> Image.Image:
        """The thumbnail resized to ``grid`` with the comparison's filter (cached; read-only)."""
        found = self._grids.get(grid)
        if found is None:
            found = self._grids[grid] = self.image().resize(grid, _FILTER)
        return found


@attrs.frozen
class FrameComparison:
    """How two frames compare: ``difference`` (None when their shapes differ), whether they are
    the same bytes, whether the check takes them for copies, and why, in words."""

    pair: tuple[int, int]
    difference: float | None
    same_bytes: bool
    grid: tuple[int, int] | None

    @property
    def copy(self) -> bool:
        """Whether the identical-frames check refuses this pair."""
        return self.same_bytes or (
            self.difference is not None and self.difference < IDENTICAL_FRAME_THRESHOLD
        )

    def explain(self) -> str:
        """One line: the measurement and the verdict, naming the frames by their API fields."""
        i, j = self.pair
        names = f"face_{i + 1} and face_{j + 1}"
        if self.same_bytes:
            return f"{names} are the same image (identical bytes): a copy"
        if self.difference is None or self.grid is None:
            return f"{names} differ in shape: not copies of one picture"
        verdict = (
            f"under {IDENTICAL_FRAME_THRESHOLD}: copies of one picture"
            if self.copy
            else f"at least {IDENTICAL_FRAME_THRESHOLD}: different pictures"
        )
        return (
            f"{names} differ by {self.difference:.2f} grey levels on average "
            f"({self.grid[0]}x{self.grid[1]} grayscale, exposure matched), {verdict}"
        )


def frame_difference(a: bytes, b: bytes) -> float:
    """Difference between two JPEG frames as the identical-frames check measures it.

    Blocking (decodes both). 0 for the same picture; below :data:`IDENTICAL_FRAME_THRESHOLD`
    counts as a copy; ``math.inf`` for frames of different shapes (never copies). Exposed for
    calibration and diagnostics. Raises :class:`~vlens_async.errors.ImageError` for bytes that
    are not a readable image.
    """
    difference, _ = compare_thumbnails(thumbnail(a), thumbnail(b))
    return math.inf if difference is None else difference


def compare_frames(frames: Sequence[bytes]) -> list[FrameComparison]:
    """Every pair of three JPEG frames compared as ``prepare_faces`` compares them.

    Blocking (decodes all three). For diagnostics (``vlens images --faces``): each comparison
    says its difference and verdict (:meth:`FrameComparison.explain`).
    """
    if len(frames) != 3:
        raise ConfigurationError(f"compare_frames needs 3 frames, got {len(frames)}")
    thumbs = [thumbnail(frame) for frame in frames]
    return [_compared(frames[i] == frames[j], (i, j), thumbs[i], thumbs[j]) for i, j in _PAIRS]


def check_identical(frames: Sequence[PreparedImage], thumbs: Sequence[Thumbnail]) -> None:
    """Raise IdenticalFramesError for the first pair of frames that are copies of one picture."""
    for i, j in _PAIRS:
        if frames[i].digest == frames[j].digest:
            raise IdenticalFramesError(
                f"face_{i + 1} and face_{j + 1} are the same image (identical bytes); "
                "liveness needs three frames of real motion",
                pair=(i, j),
                difference=0.0,
            )
    for i, j in _PAIRS:
        found = _compared(False, (i, j), thumbs[i], thumbs[j])
        if found.copy:
            raise IdenticalFramesError(
                f"{found.explain()} (a subject that moved by 0.5 % of the width measured "
                f"{MOVED_FRAME_DIFFERENCE} or more); liveness needs three frames of real motion",
                pair=(i, j),
                difference=found.difference,
            )


def _compared(
    same_bytes: bool, pair: tuple[int, int], a: Thumbnail, b: Thumbnail
) -> FrameComparison:
    if same_bytes:
        return FrameComparison(pair, 0.0, True, None)
    difference, grid = compare_thumbnails(a, b)
    return FrameComparison(pair, difference, False, grid)


def thumbnail(jpeg: bytes) -> Thumbnail:
    """A grayscale thumbnail of a JPEG (any image Pillow reads), decoded at reduced scale.

    ``draft`` decodes at the smallest DCT scale whose long side is still at least
    THUMBNAIL_DECODE_SIDE; libjpeg still walks every scan of the file to get there, so this is
    also the proof that a passed-through frame is readable. Unreadable bytes raise an ImageError.
    """
    im = open_image(jpeg)
    try:
        check_pixels(im.size)
        width, height = im.size
        scale = THUMBNAIL_DECODE_SIDE / max(width, height)
        im.draft("L", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
        grey = im.convert("L")
        return Thumbnail(grey.size, grey.tobytes())
    except ImageError:
        raise
    except Exception as exc:
        raise decode_error(exc) from exc
    finally:
        im.close()


def compare_thumbnails(a: Thumbnail, b: Thumbnail) -> tuple[float | None, tuple[int, int] | None]:
    """The mean absolute difference of two thumbnails on a common grid, exposure matched, and
    that grid; (None, None) for thumbnails of different shapes (not copies of one picture)."""
    (wa, ha), (wb, hb) = a.size, b.size
    if abs(wa * hb - wb * ha) > _SHAPE_TOLERANCE * max(wa * hb, wb * ha):
        return None, None
    # At most half the smaller thumbnail's side: both are then reduced at least 2x, through the
    # same filter in the scene's units, so a resized copy gives the same grid.
    side = max(1, min(THUMBNAIL_SIDE, max(a.size) // 2, max(b.size) // 2))
    grid = target_size(a.size, side)
    first, second = a.on_grid(grid), b.on_grid(grid)
    second = second.point(_matching_levels(first.histogram(), second.histogram()))
    counts = ImageChops.difference(first, second).histogram()
    return sum(level * n for level, n in enumerate(counts)) / sum(counts), grid


def _matching_levels(target: list[int], source: list[int]) -> list[int]:
    """A lookup table taking each grey level of ``source`` to the ``target`` level of the same
    rank (histogram matching: the middle of each source level's rank range)."""
    total_target, total_source = sum(target), sum(source)
    table: list[int] = []
    below = 0  # source pixels below the current level
    level, reached = 0, target[0]  # target level, and target pixels up to it
    for count in source:
        rank = (below + count / 2) / total_source * total_target
        while reached < rank and level < 255:
            level += 1
            reached += target[level]
        table.append(level)
        below += count
    return table


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
