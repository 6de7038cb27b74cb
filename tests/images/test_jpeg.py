"""Pass-through: metadata removed by walking JPEG markers, without re-encoding."""

from __future__ import annotations

import struct

import pytest
from PIL import ExifTags, Image

from tests.images.helpers import assert_compliant, decode, encode, photo
from vlens_async.config import DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE, FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import UnsupportedImageError
from vlens_async.images import _jpeg, prepare_document_sync


def gps_photo() -> bytes:
    """A small JPEG carrying camera and GPS EXIF, an ICC profile, XMP and a comment."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    exif[ExifTags.Base.Model] = "Model-X"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (30.0, 2.0, 15.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (31.0, 14.0, 0.0),
    }
    return photo(
        640,
        480,
        5,
        exif=exif,
        icc_profile=b"FAKE-ICC" * 20,
        comment=b"taken at home",
        xmp=b"<x:xmpmeta>GPS secret</x:xmpmeta>",
    )


SECRETS = (b"SecretCam", b"Model-X", b"FAKE-ICC", b"taken at home", b"GPS secret")


def segments(data: bytes) -> list[int]:
    """The marker bytes of the segments before the first scan."""
    found, pos = [], 2
    while data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        found.append(marker)
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return found


def app14(payload: bytes) -> bytes:
    """An APP14 segment carrying ``payload``."""
    return b"\xff\xee" + struct.pack(">H", len(payload) + 2) + payload


def test_gps_photo_passes_through_without_metadata() -> None:
    """A compliant photo with GPS EXIF passes through, pixels intact, with no metadata left."""
    data = gps_photo()
    assert all(s in data for s in SECRETS)
    p = assert_compliant(prepare_document_sync(data), FACE_MAX_BYTES, FACE_MAX_SIDE)
    assert p.passthrough
    assert p.quality is None
    assert not any(s in p.data for s in SECRETS)
    assert decode(p.data).tobytes() == decode(data).tobytes()


def test_gps_photo_reencoded_without_metadata() -> None:
    """A GPS photo that must be re-encoded (over the side limit) comes out without metadata."""
    data = gps_photo()
    p = assert_compliant(prepare_document_sync(data, max_side=400), FACE_MAX_BYTES, 400)
    assert not p.passthrough
    assert not any(s in p.data for s in SECRETS)


def test_strip_keeps_decoding_segments_only() -> None:
    """Stripping leaves SOI, JFIF, tables and frame; no APP1/APP2/COM; trailer cut off."""
    data = gps_photo() + b"VENDOR-TRAILER-with-secrets" * 10
    stripped = _jpeg.strip_metadata(data)
    kinds = segments(stripped)
    assert 0xE1 not in kinds
    assert 0xE2 not in kinds
    assert 0xFE not in kinds
    assert 0xDB in kinds
    assert 0xC4 in kinds
    assert 0xC0 in kinds
    assert stripped.endswith(b"\xff\xd9")
    assert b"VENDOR" not in stripped


def test_strip_rewrites_jfif_thumbnail() -> None:
    """An APP0 JFIF segment with an embedded thumbnail is rewritten without it."""
    base = encode(Image.new("RGB", (16, 16), (50, 60, 70)))
    thumb = bytes([255, 0, 0]) * 4
    body = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x02\x02" + thumb
    app0 = b"\xff\xe0" + struct.pack(">H", len(body) + 2) + body
    assert base[2:4] == b"\xff\xe0"
    old_len = int.from_bytes(base[4:6], "big")
    data = base[:2] + app0 + base[4 + old_len :]
    stripped = _jpeg.strip_metadata(data)
    assert stripped[2:6] == b"\xff\xe0\x00\x10"
    assert stripped[18:20] == b"\x00\x00"  # thumbnail 0x0
    assert decode(stripped).tobytes() == decode(data).tobytes()


def test_strip_keeps_adobe_segment() -> None:
    """The APP14 Adobe segment (colour transform) survives stripping."""
    data = encode(Image.new("CMYK", (16, 16), (0, 50, 100, 0)))
    assert 0xEE in segments(_jpeg.strip_metadata(data))


def test_strip_cuts_adobe_segment_to_what_decoders_read() -> None:
    """Bytes after the 12 that decoders read in an APP14 Adobe segment do not pass through."""
    base = photo(400, 300)
    adobe = b"Adobe\x00\x64\x00\x00\x00\x00\x01"
    data = base[:2] + app14(adobe + b"GPS 30.04N 31.23E Ahmed Mohamed") + base[2:]
    p = prepare_document_sync(data)
    assert p.passthrough
    assert b"Ahmed" not in p.data
    assert b"GPS" not in p.data
    assert app14(adobe) in p.data
    assert decode(p.data).tobytes() == decode(base).tobytes()


def test_junk_between_segments_is_reencoded_not_refused() -> None:
    """A compliant JPEG whose markers the stripper cannot walk, but decoders read, is re-encoded."""
    base = photo(400, 300)
    at = base.index(b"\xff\xdb")
    data = base[:at] + b"\x00\x00" + base[at:]  # libjpeg skips junk before a marker
    with pytest.raises(UnsupportedImageError):
        _jpeg.strip_metadata(data)
    p = assert_compliant(prepare_document_sync(data), DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)
    assert not p.passthrough
    assert (p.width, p.height) == (400, 300)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8",
        b"\xff\xd8\x00\x00",
        b"\xff\xd8\xff\xdb\x00",
        b"\xff\xd8\xff\xdb\x00\x43\x00",
        b"GIF8",
    ],
)
def test_strip_refuses_malformed(data: bytes) -> None:
    """Malformed or truncated marker streams are refused."""
    with pytest.raises(UnsupportedImageError):
        _jpeg.strip_metadata(data)
