"""One image, input to PreparedImage: a compliant JPEG passes through, anything else is re-encoded.

Blocking: runs in a worker thread. Every Pillow exception met on the way becomes a typed
:class:`~vlens_async.errors.ImageError` at this one boundary.
"""

from __future__ import annotations

import threading
from typing import Final

from PIL import Image

from ..errors import ImageError
from ._colour import colour_profile, to_srgb
from ._decode import check_pixels, decode_error, decoded_rgb, open_image, orientation, upright
from ._frames import Thumbnail, thumbnail
from ._grain import grain_preserved
from ._input import read_input
from ._jpeg import strip_and_skeleton
from ._pools import helper_pool
from ._quality import compress
from ._resize import target_size
from ._values import ImageInput, PreparedImage, prepared

# Loading (and reading the EXIF of) a caller's PIL image mutates it; one thread at a time.
_CALLER_IMAGE_LOCK: Final = threading.Lock()


def prepare_image(
    image: ImageInput, max_bytes: int, max_side: int, *, preserve_grain: bool, frame: bool = False
) -> tuple[PreparedImage, Thumbnail | None]:
    """The prepared image, and its thumbnail when it is a liveness ``frame`` passed through.

    ``preserve_grain`` (resolved by the caller, never looked up here) lets a grainy JPEG take the
    grain-preserving path: the output depends on the input and the arguments only. ``frame``
    asks for the thumbnail of a passed-through JPEG (its decode is then also the proof that the
    file is readable); a re-encoded image gets none here (the caller thumbnails the output).
    """
    if isinstance(image, PreparedImage):
        if image.fits(max_bytes, max_side):
            return image, None
        return _prepare_bytes(image.data, max_bytes, max_side, preserve_grain, frame)
    if isinstance(image, Image.Image):
        return _prepare_pil(image, max_bytes, max_side), None
    return _prepare_bytes(read_input(image), max_bytes, max_side, preserve_grain, frame)


def _prepare_bytes(
    data: bytes, max_bytes: int, max_side: int, preserve_grain: bool, frame: bool
) -> tuple[PreparedImage, Thumbnail | None]:
    im = open_image(data)
    try:
        check_pixels(im.size)
        turn = orientation(im)
        if _may_pass_through(im, turn, max_side):
            passed = _pass_through(data, im.size, max_bytes, frame)
            if passed is not None:
                return passed
        return _reencode(im, turn, data, max_bytes, max_side, preserve_grain), None
    except ImageError:
        raise
    except Exception as exc:  # Pillow's decoders raise many types; one boundary converts them
        raise decode_error(exc) from exc
    finally:
        im.close()


def _may_pass_through(im: Image.Image, turn: int, max_side: int) -> bool:
    return (
        im.format in ("JPEG", "MPO")
        and im.mode == "RGB"
        and turn == 1
        and max(im.size) <= max_side
        and colour_profile(im) is None  # its pixels would change colour without the profile
    )


def _pass_through(
    data: bytes, size: tuple[int, int], max_bytes: int, frame: bool
) -> tuple[PreparedImage, Thumbnail | None] | None:
    """The compliant JPEG without its metadata, or None when it must be re-encoded instead.

    The proof that it is readable: the marker walk follows every segment and the entropy-coded
    data of every scan to the end-of-image marker, and libjpeg decodes the stream's skeleton
    (every table and scan header, no pixel data), so a truncated or cut file, or one whose
    markers or tables are damaged, never passes. Measured on a compliant 1600x1000 scan with 1
    to 20 random bytes changed, 400 copies in its scan data and 400 in its headers: everything
    libjpeg's 1/8-scale decode refused (63 and 317) this refused too, and 7 more (libjpeg only
    warns about damaged entropy-coded data, and decodes it). A liveness ``frame`` is decoded at
    reduced scale anyway, for the identical-frames thumbnail. Decoding a document only to prove
    it readable cost 3.3 ms per 370 KB scan, more than all the rest of a compliant applicant.
    A JPEG whose segments the walk cannot follow (junk between segments, which decoders skip)
    is re-encoded rather than refused: that decode refuses a truly broken file.
    """
    try:
        stripped, skeleton = strip_and_skeleton(data)
        if len(stripped) > max_bytes:
            return None
        small = thumbnail(stripped) if frame else None
        if small is None:
            _decode_headers(skeleton)
    except ImageError:
        return None
    return prepared(stripped, size, None, len(data), passthrough=True), small


def _decode_headers(skeleton: bytes) -> None:
    """Let libjpeg check every table and scan header of the stream (ImageError if it cannot):
    the skeleton has no pixel data, so it decodes to grey at 1/8 scale in about 0.2 ms."""
    im = open_image(skeleton)
    try:
        im.draft("L", (1, 1))
        im.load()
    except Exception as exc:
        raise decode_error(exc) from exc
    finally:
        im.close()


def _prepare_pil(image: Image.Image, max_bytes: int, max_side: int) -> PreparedImage:
    check_pixels(image.size)
    try:
        # The caller's image may be lazily loaded and passed more than once (the same object as
        # two frames, or to concurrent calls): loading it from two threads at once corrupts it.
        with _CALLER_IMAGE_LOCK:
            image.load()
            turn = orientation(image)
        # Loaded, it is only read from here on; decoded already, it has no grain path to take.
        return _reencode(image, turn, None, max_bytes, max_side, preserve_grain=False)
    except ImageError:
        raise
    except Exception as exc:
        raise decode_error(exc) from exc


def _reencode(
    im: Image.Image,
    turn: int,
    data: bytes | None,
    max_bytes: int,
    max_side: int,
    preserve_grain: bool,
) -> PreparedImage:
    """Decode, convert, downscale, turn upright and compress.

    ``data`` is the encoded input ``im`` was opened from, or None for a caller's
    ``PIL.Image.Image``: that one is never drafted, changed or encoded itself (``save`` would
    read its ``encoderinfo`` and ``info["comment"]``).
    """
    target = target_size(im.size, max_side)
    profile = colour_profile(im)  # read before a draft changes the mode
    # The option first: deciding whether a JPEG is grainy may walk its markers.
    kept = grain_preserved(im, data, target) if preserve_grain else None  # YCbCr, encoded as is
    if kept is not None:
        pixels = kept if profile is None else to_srgb(kept.convert("RGB"), profile)
    else:
        pixels = decoded_rgb(im, target, profile, drafted=data is not None)
    pixels = upright(pixels, turn)
    if pixels is im and data is None:
        pixels = im.copy()
    pixels.info = {}  # no comment, EXIF or ICC profile can ride along into the encoder
    # The grain-preserving path was given a second core: it may encode a second quality early.
    spare = helper_pool() if kept is not None else None
    data_out, quality, size = compress(pixels, max_bytes, spare)
    input_bytes = 0 if data is None else len(data)
    return prepared(data_out, size, quality, input_bytes, passthrough=False)
