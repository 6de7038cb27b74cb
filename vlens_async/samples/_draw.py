"""Drawing helpers shared by cards, faces and photos: colours, gradients, grain, JPEG bytes."""

from __future__ import annotations

import functools
import io
import random
from typing import Final

from PIL import Image, ImageChops, ImageOps

from vlens_async.samples._layout import CARD_SIZE

Color = tuple[int, int, int]
_JPEG_QUALITY: Final = 90


@functools.lru_cache(maxsize=1)
def noise_tile() -> Image.Image:
    """A fixed RGB tile of fine noise centred on 128 (+-7), added to images as sensor grain.

    Pillow's ``effect_noise`` is not seedable, so the tile comes from a seeded ``random.Random``.
    """
    w, h = CARD_SIZE[0] + 100, CARD_SIZE[1] + 100
    rng = random.Random("vlens-noise")
    lut = [121 + (v * 15) // 256 for v in range(256)]
    bands = [Image.frombytes("L", (w, h), rng.randbytes(w * h)).point(lut) for _ in range(3)]
    return Image.merge("RGB", bands)


def add_grain(image: Image.Image, rng: random.Random) -> Image.Image:
    """Add sensor grain: a crop of the noise tile at a place ``rng`` picks."""
    tile = noise_tile()
    x = rng.randrange(tile.width - image.width + 1)
    y = rng.randrange(tile.height - image.height + 1)
    grain = tile.crop((x, y, x + image.width, y + image.height))
    return ImageChops.add(image, grain, 1.0, -128)


def gradient(size: tuple[int, int], top: Color, bottom: Color, angle: float = 0) -> Image.Image:
    """A smooth two-colour gradient, computed small and scaled up (cheap at any size)."""
    ramp = Image.linear_gradient("L").rotate(
        angle, resample=Image.Resampling.BILINEAR, expand=False
    )
    ramp = ImageOps.colorize(ramp.crop((32, 32, 224, 224)), top, bottom)
    return ramp.resize(size, Image.Resampling.BILINEAR)


def mix(a: Color, b: Color, t: float) -> Color:
    """The colour ``t`` of the way from ``a`` to ``b``."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def to_jpeg(image: Image.Image, quality: int = _JPEG_QUALITY) -> bytes:
    """Encode ``image`` as JPEG bytes."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
