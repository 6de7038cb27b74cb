"""JPEG metadata stripping for the pass-through: a marker walk over the bytes, no re-encoding."""

from __future__ import annotations

import re
from typing import Final

from ..errors import UnsupportedImageError

# JPEG APPn segments kept by the pass-through: APP0 JFIF (rewritten without its thumbnail) and
# APP14 Adobe (it tells decoders whether the three components are RGB or YCbCr). All other APPn
# (EXIF, XMP, ICC, maker notes, MPF) and COM are metadata and are dropped.
_APP0: Final = 0xE0
_APP14: Final = 0xEE
_ADOBE_LENGTH: Final = 12  # "Adobe", version, two flag words, colour transform
_COM: Final = 0xFE
_SOS: Final = 0xDA
_EOI: Final = 0xD9
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero or RSTn.
_NEXT_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_SCAN_WINDOW: Final = 256 * 1024


def strip_metadata(data: bytes) -> bytes:
    """Return the JPEG without metadata segments, by walking its markers; no re-encoding.

    Keeps every segment a decoder needs (tables, frame, scans, restart intervals), APP0 JFIF
    without its thumbnail and APP14 Adobe; drops other APPn (EXIF, XMP, ICC, MPF, maker notes)
    and COM, and anything after the end-of-image marker (second MPO pictures, vendor trailers).
    Raises UnsupportedImageError for a truncated or malformed stream.
    """
    return strip_and_skeleton(data)[0]


def strip_and_skeleton(data: bytes) -> tuple[bytes, bytes]:
    """:func:`strip_metadata`'s result, and the same stream without its entropy-coded data.

    The skeleton keeps every table, frame and scan header and the end-of-image marker, and no
    pixel data: decoding it makes libjpeg check every header it would use (a damaged Huffman or
    quantisation table, a scan naming a missing table) in a fraction of a millisecond, and it
    decodes to grey. One walk makes both.
    """
    if not data.startswith(b"\xff\xd8"):
        raise UnsupportedImageError("corrupt JPEG: no start-of-image marker")
    out = [b"\xff\xd8"]
    skeleton = [b"\xff\xd8"]
    pos, end = 2, len(data)
    while True:
        marker, pos = _read_marker(data, pos)
        if marker == _EOI:
            out.append(b"\xff\xd9")
            skeleton.append(b"\xff\xd9")
            return b"".join(out), b"".join(skeleton)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            out.append(bytes((0xFF, marker)))
            skeleton.append(bytes((0xFF, marker)))
            continue
        if marker == 0x00 or pos + 2 > end:
            raise UnsupportedImageError("corrupt or truncated JPEG")
        seg_end = pos + int.from_bytes(data[pos : pos + 2], "big")
        if seg_end > end or seg_end < pos + 2:
            raise UnsupportedImageError("truncated image data")
        if marker == _SOS:
            found = _next_marker(data, seg_end)
            if found < 0:
                raise UnsupportedImageError("truncated image data")
            out.append(data[pos - 2 : found])
            skeleton.append(data[pos - 2 : seg_end])  # the scan's header, not its data
            pos = found
            continue
        kept = _kept_segment(marker, data[pos + 2 : seg_end])
        if kept is None:
            out.append(data[pos - 2 : seg_end])
            skeleton.append(data[pos - 2 : seg_end])
        elif kept:
            out.append(kept)
            skeleton.append(kept)
        pos = seg_end


def _read_marker(data: bytes, pos: int) -> tuple[int, int]:
    """The marker at ``pos`` (after any fill bytes) and the position after it."""
    end = len(data)
    if pos >= end:
        raise UnsupportedImageError("truncated image data")
    if data[pos] != 0xFF:
        raise UnsupportedImageError("corrupt JPEG: expected a marker")
    while pos < end and data[pos] == 0xFF:  # fill bytes
        pos += 1
    if pos >= end:
        raise UnsupportedImageError("truncated image data")
    return data[pos], pos + 1


def _next_marker(data: bytes, start: int) -> int:
    """Position of the next marker in entropy-coded data, or -1.

    Searched in windows so another thread can take the GIL between them (a regex search holds
    it for its whole run: about 0.7 ms per MB).
    """
    end = len(data)
    while start < end:
        stop = min(start + _SCAN_WINDOW, end)
        # One byte of overlap: a 0xFF at the window's end pairs with the byte after it.
        found = _NEXT_MARKER.search(data, start, min(stop + 1, end))
        if found is not None:
            return found.start()
        start = stop
    return -1


def _kept_segment(marker: int, payload: bytes) -> bytes | None:
    """None keeps the segment as is, b"" drops it, other bytes replace it."""
    if marker == _APP0:
        if payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            # Version, units and density stay; the embedded thumbnail goes.
            return b"\xff\xe0\x00\x10" + payload[:12] + b"\x00\x00"
        return b""
    if marker == _APP14:
        if payload.startswith(b"Adobe") and len(payload) >= _ADOBE_LENGTH:
            # Decoders read 12 bytes (the colour transform is the last); the rest could carry text.
            return b"\xff\xee\x00\x0e" + payload[:_ADOBE_LENGTH]
        return b""
    if 0xE0 <= marker <= 0xEF or marker == _COM:
        return b""
    return None
