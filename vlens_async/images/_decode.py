"""Untrusted bytes to pixels: the header read and checked before any decode, then RGB pixels.

Opening reads the header only, so a decompression bomb or an image over the pixel budget is
refused before anything is decoded. Pillow's many exception types become our typed errors here.
The fast path's decode (reduced scale for a JPEG, the modes Pillow resizes well, alpha flattened
on white, sRGB) and the EXIF orientation live here too.
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import Final

from PIL import Image, ImageCms, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from ..config import MAX_IMAGE_PIXELS
from ..errors import ImageError, ImageTooLargeError, UnsupportedImageError
from ._colour import to_srgb
from ._resize import downscale

# Pillow plugins we let parse untrusted bytes. Fewer parsers, less attack surface; EPS in
# particular would run Ghostscript. Phones and scanners produce these. (Multi-picture JPEGs from
# phones open through the JPEG plugin and report the format "MPO".)
ACCEPTED_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

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


def open_image(data: bytes) -> Image.Image:
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
        raise decode_error(exc) from exc


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


def decode_error(exc: BaseException) -> ImageError:
    """The typed error for an exception Pillow raised while reading an image."""
    if isinstance(exc, MemoryError):
        return ImageTooLargeError("not enough memory to decode the image")
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return UnsupportedImageError("truncated image data")
    return UnsupportedImageError(f"corrupt or unreadable image data ({type(exc).__name__})")


def check_pixels(size: tuple[int, int]) -> None:
    """Refuse an image without pixels, or with more than MAX_IMAGE_PIXELS."""
    width, height = size
    if width < 1 or height < 1:
        raise UnsupportedImageError("the image has no pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"{width}x{height} is {width * height} pixels; at most {MAX_IMAGE_PIXELS} are allowed"
        )


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 to 8); 1 when absent, unknown or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not sink an otherwise good image
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` turned as its EXIF ``orientation`` says (``im`` itself for orientation 1)."""
    for op in _TRANSPOSE.get(orientation, ()):
        im = im.transpose(op)
    return im


def decoded_rgb(
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
        pixels = downscale(pixels, target)
    pixels = _to_rgb(pixels)
    # The profile is applied after the downscale: the same colours, on fewer pixels.
    return pixels if profile is None else to_srgb(pixels, profile)


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
