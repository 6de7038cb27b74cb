"""Helpers for the samples tests: cached applicants and the copies a client would send; what of
an applicant counts as personal data, for the tests that scan logs, traces and files for it."""

from __future__ import annotations

import functools
import io

from PIL import Image

from vlens_async.samples import SCENARIOS, Applicant, ApplicantFields, make_applicant

CARD_SCENARIOS = [s for s in SCENARIOS if s != "not_a_card"]


@functools.cache
def applicant(scenario: str, seed: int = 11) -> Applicant:
    """Build each applicant once per test session (generation takes about 0.1 s)."""
    return make_applicant(seed, scenario=scenario)


def client_copy(data: bytes, long_side: int = 1280, quality: int = 60) -> bytes:
    """What the client sends: scaled down to ``long_side`` (never up), re-encoded as JPEG."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        scale = long_side / max(img.size)
        if scale < 1:
            size = (round(img.width * scale), round(img.height * scale))
            img = img.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def as_png(data: bytes) -> bytes:
    """Re-encode an image as PNG."""
    with Image.open(io.BytesIO(data)) as img:
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def image_size(data: bytes) -> tuple[int, int, str | None]:
    """Size and format of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return img.width, img.height, img.format


def personal_values(fields: ApplicantFields) -> list[str]:
    """What must never be logged, traced or stored of this applicant: the names (each, and the
    full English name), the addresses, the national ID and all of it but its last 4 digits, and
    the birth date (ISO and as printed, day/month/year)."""
    values = [
        fields.first_name,
        fields.last_names,
        fields.first_name_english,
        fields.last_names_english,
        f"{fields.first_name_english} {fields.last_names_english}",
        fields.address,
        fields.address_english,
        fields.national_id,
        fields.national_id[:-4],
        fields.date_of_birth.isoformat(),
        fields.date_of_birth.strftime("%d/%m/%Y"),
    ]
    return [v for v in values if v.strip()]
