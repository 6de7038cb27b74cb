"""Geometry: the size an image is brought to, and the one downscale filter every path shares."""

from __future__ import annotations

from typing import Final

from PIL import Image

# Resampling filter for the downscale after ``draft``: on 12 MP photos at quality 95 the output is
# 0.1 dB (PSNR) below LANCZOS and the resize 30 % faster.
RESAMPLE: Final = Image.Resampling.BICUBIC
_REDUCING_GAP: Final = 3.0  # non-JPEG inputs: integer box reduction first, then BICUBIC


def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled so that its long side is at most ``max_side`` (unchanged if it is)."""
    width, height = size
    long_side = max(width, height)
    if long_side <= max_side:
        return size
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to ``size``: integer box pre-reduction for big factors, then BICUBIC.

    One thread per image: splitting a resize into parallel bands made a lone image 14 ms
    faster on 2 cores, but three frames then took 2.4x one instead of 1.7x, and a busy
    server gains nothing from it (every core already has an image).
    """
    factor = int(min(im.width / size[0], im.height / size[1]) / _REDUCING_GAP)
    if factor >= 2:  # what Pillow's reducing_gap does
        im = im.reduce(factor)
    return im.resize(size, RESAMPLE)
