"""Photo-like pictures without any code: landscapes that compress like camera photos.

:func:`make_photo` serves benchmarks and size-budget tests; :func:`landscape_jpeg` also stands in
for the card sides of the ``not_a_card`` scenario.
"""

from __future__ import annotations

import random

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from vlens_async.samples._draw import Color, gradient, to_jpeg


def _fractal(rng: random.Random, size: tuple[int, int], octaves: range) -> Image.Image:
    """Multi-scale value noise (mode L, centred on 128): 2**octave random cells across each layer.

    Fine layers go in first, so each coarser layer halves the weight of all before it and the
    coarse structure dominates, as in natural images.
    """
    texture: Image.Image | None = None
    for octave in reversed(octaves):
        cells = (1 << octave, max(1, (1 << octave) * size[1] // size[0]))
        layer = Image.frombytes("L", cells, rng.randbytes(cells[0] * cells[1]))
        layer = layer.resize(size, Image.Resampling.BICUBIC)
        texture = layer if texture is None else Image.blend(texture, layer, 0.5)
    assert texture is not None
    return texture


def _landscape(width: int, height: int, key: str, hard: bool) -> Image.Image:
    """A landscape-like picture: sky, hills, sun, multi-scale texture, then grain at full size."""
    rng = random.Random(f"vlens-photo:{key}")
    small = (max(8, width // 4), max(8, height // 4))

    def color(lows: Color, highs: Color) -> Color:
        return (
            rng.randrange(lows[0], highs[0]),
            rng.randrange(lows[1], highs[1]),
            rng.randrange(lows[2], highs[2]),
        )

    sky = gradient(
        small, color((60, 120, 190), (140, 190, 250)), color((200, 200, 180), (250, 240, 230))
    )
    ground = gradient(
        small, color((60, 100, 30), (120, 160, 80)), color((40, 50, 20), (90, 90, 50))
    )
    ground_mask = Image.new("L", small, 0)
    d = ImageDraw.Draw(ground_mask)
    y = small[1] * rng.uniform(0.4, 0.65)
    points = [(0.0, float(small[1]))]
    step = max(1, small[0] // 64)
    for x in range(0, small[0] + step, step):
        y = min(small[1] * 0.9, max(small[1] * 0.2, y + rng.uniform(-1, 1) * step / 2))
        points.append((float(x), y))
    points.append((float(small[0]), float(small[1])))
    d.polygon(points, fill=255)
    image = Image.composite(ground, sky, ground_mask)
    d = ImageDraw.Draw(image)
    sx, sy, r = rng.uniform(0.1, 0.9) * small[0], rng.uniform(0.05, 0.3) * small[1], small[0] / 30
    d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 244, 210))
    trees = ImageDraw.Draw(ground_mask)
    for _ in range(rng.randint(3, 12)):  # trees along the horizon, textured like the grass
        tx, ty = points[rng.randrange(1, len(points) - 1)]
        tr = small[0] * rng.uniform(0.015, 0.05)
        crown = (tx - tr, ty - 2.2 * tr, tx + tr, ty + 0.3 * tr)
        d.ellipse(crown, fill=color((20, 50, 15), (60, 90, 40)))
        trees.ellipse(crown, fill=255)
    clouds = _fractal(rng, small, range(1, 5)).point(
        [128 + max(0, v - 128) * 3 // 4 for v in range(256)]
    )
    grass = _fractal(rng, small, range(3, 8)).point(
        [max(0, min(255, 128 + (v - 128) // 2)) for v in range(256)]
    )
    texture = Image.composite(grass, clouds, ground_mask)
    image = ImageChops.add(image, texture.convert("RGB"), 1.0, -128).filter(ImageFilter.BoxBlur(1))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    if hard:
        grain_size, spread = (width, height), 96
    else:
        grain_size, spread = (max(1, width // 2), max(1, height // 2)), 14
    grain = Image.frombytes("L", grain_size, rng.randbytes(grain_size[0] * grain_size[1]))
    grain = grain.point([128 - spread // 2 + v * spread // 256 for v in range(256)])
    if grain.size != image.size:
        grain = grain.resize(image.size, Image.Resampling.BILINEAR)
    return ImageChops.add(image, grain.convert("RGB"), 1.0, -128)


def landscape_jpeg(width: int, height: int, key: str, hard: bool) -> bytes:
    """The landscape of ``key`` at ``width`` x ``height``, as JPEG bytes."""
    return to_jpeg(_landscape(width, height, key, hard))


def make_photo(width: int, height: int, seed: int, hard: bool = False) -> bytes:
    """Return a photo-like JPEG of ``width`` x ``height`` pixels, deterministic for ``seed``.

    The picture is a landscape made of gradients, multi-scale texture and grain, so it compresses
    like a camera photo; ``hard=True`` adds strong full-resolution grain, which compresses badly
    (for testing size budgets). A 12 MP (4000x3000) photo takes well under a second. It carries no
    card or face code.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    return landscape_jpeg(width, height, f"{seed}:{int(hard)}", hard)
