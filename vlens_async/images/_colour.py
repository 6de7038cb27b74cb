"""Colour profiles: pixels an embedded ICC profile describes, converted to sRGB.

Phones embed Display P3 and cameras Adobe RGB; the service, like most decoders, reads pixels as
sRGB, and the profile is stripped with the other metadata. So the pixels are converted first, or
their colours shift. The profile is untrusted input for LittleCMS: only a well-formed matrix/TRC
RGB profile is ever handed to it.
"""

from __future__ import annotations

import hashlib
import io
import struct
from typing import Final

from PIL import Image, ImageCms

_PROFILED_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"})
_MAX_PROFILE_BYTES: Final = 256 * 1024  # matrix/TRC profiles are a few KB (1024-entry curves: 7 KB)
_MAX_CURVE_ENTRIES: Final = 4096
_PARAMETRIC_ARGUMENTS: Final = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}  # ICC parametricCurveType

# Colours whose conversion tells an sRGB profile, whatever its name ("c2", "IEC 61966-2.1
# Default RGB colour space - sRGB"), from a wide-gamut or linear one named "sRGB"-something.
_PROBE_COLOURS: Final = (
    (0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255),
    (200, 100, 50), (60, 180, 60), (40, 60, 200), (230, 230, 20),
)  # fmt: skip
_SRGB_TOLERANCE: Final = 2  # levels per channel
_srgb_verdicts: dict[bytes, bool] = {}  # by SHA-256 of the profile: phones send the same few
_SRGB_VERDICTS_KEPT: Final = 64

_CMS_ERRORS: Final = (OSError, ValueError, TypeError, ImageCms.PyCMSError)


def colour_profile(im: Image.Image) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile when the pixels must be converted to sRGB, else None.

    Only a matrix/TRC RGB profile (what photos carry) is applied, after a check of its structure
    (_matrix_trc), since a lookup table profile of a few hundred bytes can make LittleCMS allocate
    half a gigabyte. None for no profile, one that is sRGB in effect (_acts_as_srgb, whatever its
    name), anything else, or one LittleCMS cannot use: those pixels are taken as sRGB, as they
    would be anyway.
    """
    icc = im.info.get("icc_profile")
    if not icc or not isinstance(icc, bytes) or im.mode not in _PROFILED_MODES:
        return None
    if not _matrix_trc(icc):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except _CMS_ERRORS:
        return None
    return None if _acts_as_srgb(icc, profile) else profile


def to_srgb(im: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """RGB ``im``, as ``profile`` describes it, converted to sRGB (unchanged if that fails)."""
    try:
        return _convert(im, profile)
    except _CMS_ERRORS:
        return im  # taken as sRGB, as without a profile


def _matrix_trc(icc: bytes) -> bool:
    """Whether ``icc`` is a well-formed matrix/TRC RGB profile with no lookup tables.

    Every tag must lie inside the profile; the colorants must be XYZ and the three curves small
    tables or parametric curves, the only tags LittleCMS reads to build the transform.
    """
    if not 132 <= len(icc) <= _MAX_PROFILE_BYTES or icc[16:20] != b"RGB " or icc[36:40] != b"acsp":
        return False
    (count,) = struct.unpack_from(">I", icc, 128)
    if count > 64 or 132 + 12 * count > len(icc):
        return False
    tags: dict[bytes, bytes] = {}
    for index in range(count):
        signature, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * index)
        if offset + size > len(icc) or size < 8:
            return False
        tags[signature] = icc[offset : offset + size]
    if any(signature[:3] in (b"A2B", b"B2A", b"D2B", b"B2D") for signature in tags):
        return False  # lookup tables: LittleCMS would use them instead of the matrix
    colorants = (tags.get(name, b"") for name in (b"rXYZ", b"gXYZ", b"bXYZ"))
    if not all(body[:4] == b"XYZ " and len(body) >= 20 for body in colorants):
        return False
    return all(_small_curve(tags.get(name, b"")) for name in (b"rTRC", b"gTRC", b"bTRC"))


def _small_curve(body: bytes) -> bool:
    if body[:4] == b"curv" and len(body) >= 12:
        entries = int(struct.unpack_from(">I", body, 8)[0])
        return entries <= _MAX_CURVE_ENTRIES and len(body) >= 12 + 2 * entries
    if body[:4] == b"para" and len(body) >= 12:
        arguments = _PARAMETRIC_ARGUMENTS.get(int(struct.unpack_from(">H", body, 8)[0]))
        return arguments is not None and len(body) >= 12 + 4 * arguments
    return False


def _acts_as_srgb(icc: bytes, profile: ImageCms.ImageCmsProfile) -> bool:
    """Whether converting through ``profile`` to sRGB leaves every probe colour as it was.

    Raises nothing: a profile LittleCMS cannot build a transform for counts as sRGB (unusable).
    """
    key = hashlib.sha256(icc).digest()
    verdict = _srgb_verdicts.get(key)
    if verdict is None:
        verdict = _probe(profile)
        if len(_srgb_verdicts) >= _SRGB_VERDICTS_KEPT:
            _srgb_verdicts.clear()  # a handful of profiles in practice; no LRU needed
        _srgb_verdicts[key] = verdict
    return verdict


def _probe(profile: ImageCms.ImageCmsProfile) -> bool:
    """Whether ``profile`` leaves every probe colour as it was; True when LittleCMS cannot build
    the transform (an unusable profile is taken as sRGB)."""
    probe = Image.frombytes(
        "RGB", (len(_PROBE_COLOURS), 1), bytes(v for colour in _PROBE_COLOURS for v in colour)
    )
    try:
        converted = _convert(probe, profile)
    except _CMS_ERRORS:
        return True
    pairs = zip(probe.tobytes(), converted.tobytes(), strict=True)
    return all(abs(a - b) <= _SRGB_TOLERANCE for a, b in pairs)


def _convert(im: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    # A fresh sRGB profile and transform per call: LittleCMS handles are not for sharing across
    # threads (building one takes about a millisecond).
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    converted = ImageCms.profileToProfile(im, profile, srgb, outputMode="RGB")
    assert converted is not None  # not in place
    return converted
