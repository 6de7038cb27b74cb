"""Synthetic OCR and face reading, cached by image key, run in worker threads, within a budget.

The card and face codes are drawn by :mod:`vlens_async.samples`; its ``read_card`` / ``read_face``
do the decoding (they are the default readers, imported on first use). Results are cached by the
image key (length and hash of its base64 text), so a repeated image is read once. An image without a
face code gets a 16x16 grayscale thumbnail instead, decoded at reduced size (``Image.draft``), to
tell identical frames apart.

Decoding is the one costly thing a request can ask for (a 25 MP PNG takes about half a second of
CPU and over 100 MB while it is decoded), so :meth:`Readers.read_card` and :meth:`Readers.read_face`
decode only within a :class:`PixelBudget` (at most so many pixels in flight across all requests,
first come, first served) and only in the readers' own few threads: the C allocator keeps what a
thread once used for that thread, so decoding in any of the loop's default workers would leave
each of them holding a decode's worth of memory. Callers check everything that needs no pixels
before asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
from PIL import Image

from .cache import LruCache
from .config import Reader
from .identity import IdentityFields, from_card_fields
from .payload import ImageData, PayloadError

__all__ = ["CardInfo", "FaceInfo", "PixelBudget", "Readers"]

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


class PixelBudget:
    """At most ``capacity`` pixels being decoded at once, granted first come, first served.

    An image larger than the whole budget waits until nothing else is decoding, then runs alone.
    Lives on the event loop (not thread-safe); ``peak`` is the most pixels ever in flight.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def __len__(self) -> int:
        """Decodes waiting for their share."""
        return len(self._waiters)

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget for the block (waiting for it first)."""
        share = max(1, min(pixels, self.capacity))
        await self._acquire(share)
        try:
            yield
        finally:
            self.in_use -= share
            self._grant()

    async def _acquire(self, share: int) -> None:
        if not self._waiters and self.in_use + share <= self.capacity:
            self._take(share)
            return
        entry = (share, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.in_use -= share  # granted just as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            self._grant()
            raise

    def _take(self, share: int) -> None:
        self.in_use += share
        self.peak = max(self.peak, self.in_use)

    def _grant(self) -> None:
        """Wake waiters in order while the first one fits (ends: each pass pops one)."""
        while self._waiters and self.in_use + self._waiters[0][0] <= self.capacity:
            share, future = self._waiters.popleft()
            if future.done():
                continue  # cancelled while waiting
            self._take(share)
            future.set_result(None)


class Readers:
    """Card and face readers with a shared cache, a decode budget and their own threads.

    :meth:`card` and :meth:`face` are sync (call them in a thread); :meth:`read_card` and
    :meth:`read_face` answer from the cache or decode in one of ``threads`` worker threads within
    the budget. :meth:`close` lets the threads go.
    """

    def __init__(
        self,
        card_reader: Reader | None,
        face_reader: Reader | None,
        cache_size: int,
        budget: PixelBudget | None = None,
        threads: int = 2,
    ) -> None:
        self._card_reader = card_reader or _default_card_reader
        self._face_reader = face_reader or _default_face_reader
        self.cards: LruCache[tuple[int, int], CardInfo] = LruCache(cache_size)
        self.faces: LruCache[tuple[int, int], FaceInfo] = LruCache(cache_size)
        self.budget = budget if budget is not None else PixelBudget(2**62)
        # Threads start on first use and idle between decodes.
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="vlens-emulator-decode")

    def close(self) -> None:
        """Stop the decode threads once they finish what they are doing."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def read_card(self, image: ImageData) -> CardInfo:
        """:meth:`card` off the loop: cached, else decoded within the budget."""
        found = self.cards.get(image.key)
        if found is not None:
            return found
        async with self.budget.hold(image.width * image.height):
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self.card, image
            )

    async def read_face(self, image: ImageData) -> FaceInfo:
        """:meth:`face` off the loop: cached, else decoded within the budget."""
        found = self.faces.get(image.key)
        if found is not None:
            return found
        async with self.budget.hold(image.width * image.height):
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self.face, image
            )

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
