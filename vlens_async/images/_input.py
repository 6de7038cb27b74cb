"""Reading an input's bytes (bytes-likes, paths, binary file objects) within a size cap.

Blocking: everything here runs in a worker thread. A path may name a person (bulk folders often
do), so no message here ever carries one.
"""

from __future__ import annotations

import errno
import io
import os
from typing import BinaryIO, Final

from PIL import Image

from ..errors import ImageTooLargeError, UnsupportedImageError
from ._values import ImageInput, PreparedImage

# Inputs bigger than this are refused before they are read into memory. A 25 MP image stored
# uncompressed (BMP, TIFF) is 75 MB, so this leaves room for every legitimate input.
MAX_INPUT_BYTES: Final = 128 * 1024 * 1024


def load_image_bytes(image: ImageInput) -> bytes:
    """Return the bytes of ``image`` as given, without preprocessing (blocking: use a thread).

    Used when preprocessing is switched off. A ``PreparedImage`` gives its JPEG, a
    ``PIL.Image.Image`` is encoded losslessly as PNG, paths and file objects are read.
    """
    if isinstance(image, PreparedImage):
        return image.data
    if isinstance(image, Image.Image):
        return _encode_png(image)
    return read_input(image)


def read_input(image: ImageInput) -> bytes:
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
    # Not chained: an OSError's text carries the path (or a base64 string taken for one).
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > MAX_INPUT_BYTES:
                raise ImageTooLargeError(f"the file is over {MAX_INPUT_BYTES} bytes")
            return fh.read(MAX_INPUT_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UnsupportedImageError(f"cannot read the image file ({os_reason(exc)})") from None


def _read_file(fh: BinaryIO) -> bytes:
    try:
        data = fh.read(MAX_INPUT_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a closed file
        raise UnsupportedImageError(f"cannot read the file object ({os_reason(exc)})") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UnsupportedImageError("the file object must be opened in binary mode")
    return bytes(data)


def os_reason(exc: Exception) -> str:
    """The kind of an I/O failure without its text (which names the file): its class and errno
    name. Shared with the queue worker, which words an unreadable image file the same way."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}, {errno.errorcode.get(exc.errno, exc.errno)}"
    return type(exc).__name__


def _encode_png(image: Image.Image) -> bytes:
    pixels = (
        image
        if image.mode in ("1", "L", "LA", "I;16", "P", "RGB", "RGBA")
        else image.convert("RGB")
    )
    out = io.BytesIO()
    pixels.save(out, "PNG")
    return out.getvalue()
