"""Reading the codes back: :func:`read_card` and :func:`read_face`, the emulator's synthetic OCR.

Both decode untrusted bytes, so they open only common image formats, refuse huge images, and turn
any failure into ``None``.
"""

from __future__ import annotations

import io
from typing import Final, Literal

import attrs
from PIL import Image

from vlens_async.samples import _card_code as cc
from vlens_async.samples._layout import BACK_CODE, CARD_SIZE, FACE_CODE, FACE_SIZE, FRONT_CODE
from vlens_async.samples._people import ApplicantFields, fields_from_payload

# Long side, in pixels, at which codes are read: cells stay >= 7 px on a 1280 px card.
_READ_SIDE: Final = 400
_MAX_READ_PIXELS: Final = 50_000_000
# Only these Pillow parsers see untrusted bytes (EPS, for one, would start Ghostscript).
_READ_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


@attrs.frozen(repr=False)
class CardReading:
    """What :func:`read_card` found: the side, the fields, and flags.

    ``flags`` may hold ``"photocopy"`` (spoofing) and ``"aml_watchlisted"``.
    """

    side: Literal["front", "back"]
    fields: ApplicantFields
    flags: frozenset[str]

    def __repr__(self) -> str:
        return (
            f"CardReading(side={self.side!r}, flags={sorted(self.flags)!r}, fields={self.fields!r})"
        )


@attrs.frozen
class FaceReading:
    """What :func:`read_face` found: whose face, and the frame's pose.

    ``pose`` is ``(dx, dy, rotation_degrees, light)``: the frame's shift in pixels (at 720x960),
    tilt and relative brightness change. Three frames of one capture share ``person_id`` and
    differ in ``pose``; ``frame`` is the frame's index in its capture (0-2).
    """

    person_id: int
    pose: tuple[float, float, float, float]
    frame: int = 0


def _rel(box: tuple[int, int, int, int], size: tuple[int, int]) -> cc.Box:
    """``box`` as fractions of ``size``, so it finds the code in a scaled copy too."""
    return (box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1])


_FRONT_REL: Final = _rel(FRONT_CODE, CARD_SIZE)
_BACK_REL: Final = _rel(BACK_CODE, CARD_SIZE)
_FACE_REL: Final = _rel(FACE_CODE, FACE_SIZE)


def _load_grey(data: bytes | bytearray | memoryview) -> Image.Image:
    """Decode ``data`` to a small greyscale image, letting libjpeg scale it down while decoding."""
    with Image.open(io.BytesIO(data), formats=_READ_FORMATS) as img:
        if img.width * img.height > _MAX_READ_PIXELS:
            raise ValueError("too large to read")
        long_side = max(img.size)
        if img.format == "JPEG" and long_side > _READ_SIDE:
            img.draft(
                "L", (img.width * _READ_SIDE // long_side, img.height * _READ_SIDE // long_side)
            )
        grey = img.convert("L")
    factor = max(grey.size) // _READ_SIDE
    return grey.reduce(factor) if factor >= 2 else grey


def _card_reading(payload: cc.CardPayload | None) -> CardReading | None:
    """The reading of a decoded card payload; None when it is missing or names no valid card."""
    fields = None if payload is None else fields_from_payload(payload)
    if payload is None or fields is None:
        return None
    flags = {"photocopy"} if payload.photocopy else set()
    if payload.aml:
        flags.add("aml_watchlisted")
    return CardReading(
        side="back" if payload.side else "front",
        fields=fields,
        flags=frozenset(flags),
    )


def read_card(image: bytes | bytearray | memoryview) -> CardReading | None:
    """Decode the card code of a card image from :func:`make_applicant`.

    Works on the original JPEG, on a copy scaled down (to 1280 px, say) and re-encoded at JPEG
    quality 60, and on the photocopy variant. Returns ``None`` for any image without a card code and
    for bytes that are not an image; it never raises. Takes a few milliseconds (the JPEG is decoded
    at reduced size).
    """
    try:
        grey = _load_grey(image)
        for box in (_FRONT_REL, _BACK_REL):
            for bits in cc.read_grid(grey, box, cc.CARD_GRID):
                reading = _card_reading(cc.unpack_card(bits))
                if reading is not None:
                    return reading
    except Exception:  # garbage in, None out: the emulator treats it as "no card code"
        return None
    return None


def _face_reading(payload: cc.FacePayload) -> FaceReading:
    """The reading of a decoded face payload: tenths of a degree and percent become floats."""
    return FaceReading(
        person_id=payload.person_id,
        pose=(
            float(payload.dx),
            float(payload.dy),
            payload.rotation / 10,
            payload.light / 100,
        ),
        frame=payload.frame,
    )


def read_face(image: bytes | bytearray | memoryview) -> FaceReading | None:
    """Decode the face code of a frame from :func:`make_applicant` (person and pose).

    Survives scaling and JPEG quality 60 like :func:`read_card`; ``None`` for any other image or
    for bytes that are not an image; never raises.
    """
    try:
        grey = _load_grey(image)
        for bits in cc.read_grid(grey, _FACE_REL, cc.FACE_GRID):
            payload = cc.unpack_face(bits)
            if payload is not None:
                return _face_reading(payload)
    except Exception:  # garbage in, None out
        return None
    return None
