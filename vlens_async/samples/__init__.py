"""Synthetic applicants: Egyptian ID card images, face frames, and the fields they carry.

:func:`make_applicant` draws the front and back of a national ID card (about 1600x1000 JPEG, Arabic
and English fields, a face photo) and three face frames of the same synthetic person (720x960 JPEG,
with the small shifts, tilts and lighting changes a camera gives), together with the ground truth,
:class:`ApplicantFields`. Everything is deterministic: the same seed gives identical bytes.

A scenario, chosen by the cards and frames themselves, drives the emulator's verdict (see
:data:`SCENARIOS`). Each card carries its fields in a coarse 2D code (big black and white cells with
a CRC), which :func:`read_card` decodes, also after the client scaled the image to 1280 px and
re-encoded it at JPEG quality 60; face frames carry a smaller code read by :func:`read_face`. Both
return ``None`` for any other image, and never raise.

:func:`make_photo` makes photo-like JPEGs of any size (gradients, texture, noise) for benchmarks.

Example::

    applicant = make_applicant(7, scenario="expired")
    reading = read_card(applicant.front)
    assert reading is not None and reading.fields == applicant.fields

Inside: ``_people`` (fields, national IDs, scenarios), ``_card_code`` (tables and the 2D code),
``_layout`` (sizes and code boxes), ``_draw`` (shared drawing helpers), ``_cards``, ``_faces``,
``_photos`` (the pictures), ``_applicant`` (scenario to pictures) and ``_readers``.
"""

from __future__ import annotations

from vlens_async.samples._applicant import Applicant, make_applicant
from vlens_async.samples._layout import CARD_SIZE as CARD_SIZE
from vlens_async.samples._layout import FACE_SIZE as FACE_SIZE
from vlens_async.samples._people import SCENARIOS, ApplicantFields, make_fields
from vlens_async.samples._photos import make_photo
from vlens_async.samples._readers import CardReading, FaceReading, read_card, read_face

__all__ = [
    "SCENARIOS",
    "Applicant",
    "ApplicantFields",
    "CardReading",
    "FaceReading",
    "make_applicant",
    "make_fields",
    "make_photo",
    "read_card",
    "read_face",
]
