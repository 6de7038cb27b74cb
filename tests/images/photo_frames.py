"""Liveness frames made from real photographs, and copies of them, for the identical-frames check.

The photographs in ``tests/images/data`` come from scikit-image's ``skimage.data`` (saved once as
JPEG at quality 95, so the tests need no scikit-image): ``astronaut`` (Eileen Collins, NASA, public
domain), ``coffee`` (Rachel Michetti, CC0) and ``chelsea`` (Stefan van der Walt, CC0).

Two kinds of frames:

- :func:`portrait_frame`: a portrait cut from a photograph, as a hand-held camera sees it, with a
  shift, zoom and rotation of the whole view (the person and the camera both move a little).
- :func:`moved_subject_frame`: a still background (plain, or a busy photograph) and a subject (the
  astronaut's head and shoulders, cut out by an ellipse) moved by a fraction of the frame width:
  the smallest motion a real burst shows.

And the copies the check must refuse (:data:`COPIES`): re-encoded, resized, PNG, grayscale then
RGB, metadata added or stripped, brightness and contrast changed.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

DATA = Path(__file__).parent / "data"
PHOTOS = ("astronaut", "coffee", "chelsea")
# The astronaut's head and shoulders in the 512x512 photograph (left, top, right, bottom).
_SUBJECT_BOX = (120, 10, 380, 330)


@functools.cache
def photo(name: str) -> Image.Image:
    """One of the photographs, decoded (cached: treat it as read-only)."""
    with Image.open(DATA / f"{name}.jpg") as im:
        return im.convert("RGB")


def jpeg(im: Image.Image, quality: int = 90, **options: object) -> bytes:
    """``im`` encoded as JPEG."""
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, **options)
    return out.getvalue()


def load(data: bytes) -> Image.Image:
    """Decode fully, as RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def portrait_frame(
    name: str,
    size: tuple[int, int],
    *,
    shift: tuple[float, float] = (0.0, 0.0),
    zoom: float = 1.0,
    angle: float = 0.0,
) -> Image.Image:
    """A ``size`` view of photograph ``name``: its central 80 %, moved by ``shift`` (fractions of
    the frame width), magnified by ``zoom`` and turned by ``angle`` degrees about the centre."""
    src = photo(name)
    width, height = size
    # Source pixels per output pixel: the view spans 80 % of the photograph's limiting side.
    scale = 0.8 * min(src.width / width, src.height / height) / zoom
    theta = math.radians(angle)
    cos, sin = math.cos(theta) * scale, math.sin(theta) * scale
    cx = src.width / 2 + shift[0] * width * scale
    cy = src.height / 2 + shift[1] * width * scale
    # Output (x, y) -> source (a x + b y + c, d x + e y + f), rotated about the view's centre.
    a, b, d, e = cos, -sin, sin, cos
    c = cx - a * width / 2 - b * height / 2
    f = cy - d * width / 2 - e * height / 2
    return src.transform(size, Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BICUBIC)


def background(kind: str, size: tuple[int, int]) -> Image.Image:
    """A still background: ``plain`` (one flat colour) or ``busy`` (the coffee photograph)."""
    if kind == "plain":
        return Image.new("RGB", size, (196, 202, 208))
    return photo("coffee").resize(size, Image.Resampling.BICUBIC)


@functools.cache
def _subject(height: int) -> tuple[Image.Image, Image.Image]:
    """The subject at ``height`` pixels, and its soft elliptical mask."""
    cut = photo("astronaut").crop(_SUBJECT_BOX)
    width = round(cut.width * height / cut.height)
    subject = cut.resize((width, height), Image.Resampling.BICUBIC)
    mask = Image.new("L", subject.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, width - 1, height - 1), fill=255)
    return subject, mask.filter(ImageFilter.GaussianBlur(max(1, height // 200)))


def moved_subject_frame(kind: str, size: tuple[int, int], moved: float) -> Image.Image:
    """The subject (60 % of the frame's height) on a still ``kind`` background, moved right by
    ``moved`` of the frame width (rounded up to whole pixels) from the centre."""
    frame = background(kind, size)
    subject, mask = _subject(round(size[1] * 0.6))
    dx = math.ceil(moved * size[0])
    left = (size[0] - subject.width) // 2 + dx
    top = (size[1] - subject.height) // 2
    frame.paste(subject, (left, top), mask)
    return frame


# --- copies ---


def _reencoded(quality: int) -> Callable[[bytes], bytes]:
    return lambda data: jpeg(load(data), quality)


def _resized(factor: float) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        im = load(data)
        # Upscaled no further than 24 MP: the preprocessor refuses more than 25.
        factor_ = min(factor, math.sqrt(24e6 / (im.width * im.height)))
        size = (max(1, round(im.width * factor_)), max(1, round(im.height * factor_)))
        return jpeg(im.resize(size, Image.Resampling.LANCZOS), 90)

    return make


def _png(data: bytes) -> bytes:
    out = io.BytesIO()
    load(data).save(out, "PNG")
    return out.getvalue()


def _grey_then_rgb(data: bytes) -> bytes:
    return jpeg(load(data).convert("L").convert("RGB"), 92)


def _with_metadata(data: bytes) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Another Camera"  # Make
    exif[0x0132] = "2026:01:01 10:00:00"  # DateTime
    # The same entropy-coded picture, with an EXIF segment and a comment spliced in after SOI.
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        out = io.BytesIO()
        im.save(out, "JPEG", quality="keep", exif=exif.tobytes(), comment=b"copied")
    return out.getvalue()


def _stripped(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.save(out, "JPEG", quality="keep")  # no EXIF, ICC or comment carried over
    return out.getvalue()


def _enhanced(kind: str, factor: float) -> Callable[[bytes], bytes]:
    enhancers = {"brightness": ImageEnhance.Brightness, "contrast": ImageEnhance.Contrast}

    def make(data: bytes) -> bytes:
        return jpeg(enhancers[kind](load(data)).enhance(factor), 90)

    return make


COPIES: dict[str, Callable[[bytes], bytes]] = {
    "same-bytes": lambda data: data,
    **{f"reencoded-q{q}": _reencoded(q) for q in (50, 60, 75, 90, 95)},
    **{f"resized-x{f}": _resized(f) for f in (0.25, 0.37, 0.5, 0.8, 1.5, 3.15)},
    "png": _png,
    "grey-then-rgb": _grey_then_rgb,
    "metadata-added": _with_metadata,
    "metadata-stripped": _stripped,
    **{
        f"{kind}{sign}10%": _enhanced(kind, 1 + int(sign + "1") * 0.1)
        for kind in ("brightness", "contrast")
        for sign in "+-"
    },
}
"""Every kind of copy the check must refuse, by name: a function from frame bytes to copy bytes."""
