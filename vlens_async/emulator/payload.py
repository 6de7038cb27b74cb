"""Request bodies: fast JSON parsing of multi-megabyte bodies and cheap image checks.

A liveness body is ~2.7 MB, almost all of it four base64 strings. Parsing it whole with orjson
copies every string into a Python ``str``; instead, when the body holds no backslash (so every
``"`` delimits a string), the long strings are cut out as ``bytes`` and only the small remainder
goes through orjson, which still validates the JSON structure. Bodies with escapes take the plain
orjson path.

Images are then checked without decoding them: the base64 alphabet and padding (400), the decoded
size computed from the length (5002), the format from the magic bytes (415) and the dimensions from
the JPEG/PNG header decoded from a short prefix (5003). Results are cached by (length, hash) so a
repeated image costs one hash.
"""

from __future__ import annotations

import binascii
from typing import Any, Final, NoReturn

import attrs
import orjson

from .cache import LruCache

__all__ = [
    "ImageData",
    "PayloadError",
    "check_image",
    "parse_body",
]

_BIG_STRING: Final = 1024  # strings at least this long are cut out of the body as bytes
_PLACEHOLDER_PREFIX: Final = "\x00big"
_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HEADER_PREFIXES: Final = (16_384, 131_072)  # base64 chars decoded to find the header, then all


class PayloadError(Exception):
    """A request body the emulator refuses: ``status`` and, for image limits, ``error_code``."""

    def __init__(
        self, status: int, message: str, *, error_code: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.field = field


@attrs.frozen(slots=True)
class ImageHeader:
    """What the cheap checks learned about an image (cached by key)."""

    fmt: str
    width: int
    height: int
    size: int


@attrs.frozen(slots=True)
class ImageData:
    """A checked image field: its base64 text, decoded size, format and dimensions."""

    field: str
    b64: bytes = attrs.field(repr=False)
    size: int
    fmt: str
    width: int
    height: int
    key: tuple[int, int]

    @property
    def extension(self) -> str:
        """File extension for the stored copy."""
        return "png" if self.fmt == "png" else "jpg"

    def decode(self) -> bytes:
        """The image bytes (decoding the whole base64 text)."""
        return binascii.a2b_base64(self.b64)


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``; long top-level strings come back as ASCII ``bytes``
    (unless the body holds a backslash anywhere: then everything is parsed by orjson as usual).

    Raises :class:`PayloadError` (400) for anything but a JSON object.
    """
    if not body.strip():
        raise PayloadError(400, "The request body is empty; a JSON object is expected.")
    if b"\\" in body:
        return _parse_plain(body)
    pieces: list[bytes] = []
    bigs: list[bytes] = []
    pos = search = 0
    find = body.find
    while True:
        start = find(b'"', search)
        if start < 0:
            break
        end = find(b'"', start + 1)
        if end < 0:
            break  # unterminated: orjson reports it below
        if end - start - 1 >= _BIG_STRING:
            pieces.append(body[pos:start])
            pieces.append(b'"\\u0000big%d"' % len(bigs))
            bigs.append(body[start + 1 : end])
            pos = end + 1
        search = end + 1
    if not bigs:
        return _parse_plain(body)
    pieces.append(body[pos:])
    data = _parse_plain(b"".join(pieces))
    restored = 0
    for key, value in data.items():
        if isinstance(value, str) and value.startswith(_PLACEHOLDER_PREFIX):
            data[key] = bigs[int(value[len(_PLACEHOLDER_PREFIX) :])]
            restored += 1
    if restored != len(bigs):
        return _parse_plain(body)  # a long string was nested or a key: take the plain path
    return data


def _parse_plain(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(400, f"The request body is not valid JSON ({exc.msg}).") from None
    if not isinstance(data, dict):
        raise PayloadError(400, "The request body must be a JSON object.")
    return data


def check_image(
    field: str,
    value: object,
    *,
    max_bytes: int,
    max_pixels: int,
    cache: LruCache[tuple[int, int], ImageHeader] | None = None,
) -> ImageData:
    """Validate one base64 image field without decoding its pixels.

    Raises :class:`PayloadError`: 400 (missing, not a string, bad base64), 415 (not JPEG/PNG or no
    readable header), or an ``error_code`` of 5002 (over ``max_bytes`` decoded) or 5003 (over
    ``max_pixels``).
    """
    b64 = _as_ascii(field, value)
    key = (len(b64), hash(b64))
    header = cache.get(key) if cache is not None else None
    if header is None:
        header = _inspect(field, b64, max_bytes)
        if cache is not None:
            cache.put(key, header)
    if header.size > max_bytes:
        raise PayloadError(
            422, f"The image in '{field}' is larger than 5 MB.", error_code=5002, field=field
        )
    if header.width * header.height > max_pixels:
        raise PayloadError(
            422,
            f"The image in '{field}' has more than 25 million pixels.",
            error_code=5003,
            field=field,
        )
    return ImageData(field, b64, header.size, header.fmt, header.width, header.height, key)


def _as_ascii(field: str, value: object) -> bytes:
    if value is None or value == "" or value == b"":
        raise PayloadError(400, f"The field '{field}' is required.", field=field)
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise PayloadError(400, f"'{field}' is not valid base64.", field=field) from None
    if not isinstance(value, bytes):
        raise PayloadError(400, f"'{field}' must be a base64 string.", field=field)
    if value.startswith(b"data:"):
        # Lenient: a data URL (data:image/jpeg;base64,...) is accepted as its payload.
        _, sep, value = value.partition(b",")
        if not sep:
            raise PayloadError(400, f"'{field}' is not valid base64.", field=field)
    return value


def _inspect(field: str, b64: bytes, max_bytes: int) -> ImageHeader:
    leftover = b64.translate(None, _B64_ALPHABET)
    if len(b64) % 4 or leftover not in (b"", b"=", b"==") or not b64.endswith(leftover):
        raise PayloadError(400, f"'{field}' is not valid base64.", field=field)
    size = len(b64) // 4 * 3 - len(leftover)
    if size > max_bytes:
        return ImageHeader("unknown", 0, 0, size)
    try:
        for limit in (*_HEADER_PREFIXES, len(b64)):
            prefix = binascii.a2b_base64(b64[:limit])
            found = _image_header(prefix, complete=limit >= len(b64))
            if found is not None:
                fmt, width, height = found
                return ImageHeader(fmt, width, height, size)
            if limit >= len(b64):
                break
    except _NotImageError:
        pass
    raise PayloadError(415, f"'{field}' is not a JPEG or PNG image.", field=field)


def _image_header(data: bytes, *, complete: bool) -> tuple[str, int, int] | None:
    """(format, width, height) or ``None`` when more bytes are needed (or it is not an image).

    Raises ``_NotImageError`` once it is certain the data is not a JPEG/PNG.
    """
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return _not_image() if complete or len(data) >= 24 else None
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(_JPEG_MAGIC):
        return _not_image()
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return _not_image()
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return _not_image()
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return "jpeg", width, height
        if length < 2:
            return _not_image()
        i += 2 + length
    return _not_image() if complete else None


class _NotImageError(Exception):
    pass


def _not_image() -> NoReturn:
    raise _NotImageError
