"""Helpers for the samples tests: cached applicants and the copies a client would send."""

from __future__ import annotations

import functools
import io

from PIL import Image

from vlens_async.samples import SCENARIOS, Applicant, make_applicant

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
