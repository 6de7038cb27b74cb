"""Synthetic OCR and face reading, cached by image key, run in worker threads.

The card and face codes are drawn by :mod:`vlens_async.samples`; its ``read_card`` / ``read_face``
do the decoding (they are the default readers, imported on first use). Results are cached by the
image key (length and hash of its base64 text), so a repeated image is read once. An image without a
face code gets a 16x16 grayscale thumbnail instead, decoded at reduced size (``Image.draft``), to
tell identical frames apart.
"""

from __future__ import annotations

import io
from typing import Any

import attrs
from PIL import Image

from .cache import LruCache
from .config import Reader
from .identity import IdentityFields, from_card_fields
from .payload import ImageData, PayloadError

__all__ = ["CardInfo", "FaceInfo", "Readers"]

_THUMB = (16, 16)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@attrs.frozen(slots=True)
class CardInfo:
    """A card reading: ``fields`` is ``None`` when the image carries no card code."""

    fields: IdentityFields | None
    side: str | None = None
    flags: frozenset[str] = frozenset()


@attrs.frozen(slots=True)
class FaceInfo:
    """A face reading: ``person_id``/``pose`` from the face code, or a thumbnail without one."""

    person_id: int | None
    pose: tuple[float, ...] | None
    thumb: bytes | None = attrs.field(default=None, repr=False)


def _default_card_reader(data: bytes) -> Any:
    from vlens_async import samples  # lazy: samples imports Pillow drawing code

    return samples.read_card(data)


def _default_face_reader(data: bytes) -> Any:
    from vlens_async import samples

    return samples.read_face(data)


class Readers:
    """Card and face readers with a shared cache; every method is sync (call it in a thread)."""

    def __init__(
        self, card_reader: Reader | None, face_reader: Reader | None, cache_size: int
    ) -> None:
        self._card_reader = card_reader or _default_card_reader
        self._face_reader = face_reader or _default_face_reader
        self.cards: LruCache[tuple[int, int], CardInfo] = LruCache(cache_size)
        self.faces: LruCache[tuple[int, int], FaceInfo] = LruCache(cache_size)

    def clear(self) -> None:
        """Forget every cached reading."""
        self.cards.clear()
        self.faces.clear()

    def card(self, image: ImageData) -> CardInfo:
        """Read the card code of ``image`` (cached)."""
        found = self.cards.get(image.key)
        if found is not None:
            return found
        data = image.decode()
        try:
            reading = self._card_reader(data)
        except _DECODE_ERRORS:
            raise PayloadError(
                415, f"'{image.field}' cannot be decoded as an image.", field=image.field
            ) from None
        info = _card_info(reading)
        self.cards.put(image.key, info)
        return info

    def face(self, image: ImageData) -> FaceInfo:
        """Read the face code of ``image``, or make its thumbnail (cached)."""
        found = self.faces.get(image.key)
        if found is not None:
            return found
        data = image.decode()
        try:
            reading = self._face_reader(data)
            if reading is None:
                info = FaceInfo(None, None, _thumbnail(data))
            else:
                pose = getattr(reading, "pose", None)
                info = FaceInfo(
                    int(reading.person_id),
                    tuple(float(p) for p in pose) if pose is not None else None,
                )
        except _DECODE_ERRORS:
            raise PayloadError(
                415, f"'{image.field}' cannot be decoded as an image.", field=image.field
            ) from None
        self.faces.put(image.key, info)
        return info


def _card_info(reading: Any) -> CardInfo:
    if reading is None:
        return CardInfo(None)
    fields = from_card_fields(reading.fields)
    side = str(getattr(reading, "side", "") or "") or None
    flags = frozenset(str(f) for f in (getattr(reading, "flags", None) or ()))
    return CardInfo(fields, side, flags)


def _thumbnail(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("L", (_THUMB[0] * 4, _THUMB[1] * 4))  # JPEG: decode at 1/2..1/8 scale
        return im.convert("L").resize(_THUMB, Image.Resampling.BILINEAR).tobytes()
