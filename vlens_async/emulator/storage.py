"""The image store behind GetStepImage: bounded in memory, optionally spilling to a folder.

Images are kept as the base64 text they arrived in (GetStepImage answers with base64, so nothing is
decoded or re-encoded on the hot path). When a cap (bytes or count) is exceeded the oldest images
are evicted: dropped, or, with a spill folder, written there as decoded image files (in a thread)
and read back on demand.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["ImageStore"]

_Key = tuple[str, str]


class ImageStore:
    """Images per (transaction id, file name); all methods run on the event loop thread."""

    def __init__(
        self,
        *,
        max_bytes: int | None,
        max_count: int | None,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._memory: OrderedDict[_Key, bytes] = OrderedDict()
        self._spilled: dict[_Key, Path] = {}
        self._bytes = 0
        self._stale: list[Path] = []
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._memory) + len(self._spilled)

    @property
    def memory_bytes(self) -> int:
        """Bytes of base64 text held in memory."""
        return self._bytes

    def stats(self) -> dict[str, Any]:
        """Counts for the control API."""
        return {
            "in_memory": len(self._memory),
            "memory_bytes": self._bytes,
            "spilled": len(self._spilled),
            "evicted": self.evicted,
            "max_bytes": self.max_bytes,
            "max_count": self.max_count,
        }

    async def put(self, transaction_id: str, name: str, b64: bytes) -> None:
        """Store (or replace) an image, then evict the oldest beyond the caps."""
        key = (transaction_id, name)
        self._discard(key)
        self._memory[key] = b64
        self._bytes += len(b64)
        await self._enforce_caps()

    def remove(self, transaction_id: str, name: str) -> None:
        """Forget one image (a rescanned step whose file name changed)."""
        self._discard((transaction_id, name))

    async def get(self, transaction_id: str, name: str) -> bytes | None:
        """The base64 text of an image, or ``None`` when unknown or evicted."""
        key = (transaction_id, name)
        found = self._memory.get(key)
        if found is not None:
            return found
        path = self._spilled.get(key)
        if path is None:
            return None
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None
        return binascii.b2a_base64(raw, newline=False)

    def names(self, transaction_id: str) -> set[str]:
        """File names stored for a transaction (in memory or spilled)."""
        keys = [*self._memory, *self._spilled]
        return {name for tx, name in keys if tx == transaction_id}

    async def drop_transaction(self, transaction_id: str) -> None:
        """Forget every image of an evicted transaction."""
        for key in [k for k in self._memory if k[0] == transaction_id]:
            self._discard(key)
        paths = [self._spilled.pop(k) for k in list(self._spilled) if k[0] == transaction_id]
        if paths:
            await asyncio.to_thread(_unlink_all, paths)

    async def clear(self) -> None:
        """Forget everything, deleting the files this store spilled."""
        paths = [*self._spilled.values(), *self._stale]
        self._stale = []
        self._memory.clear()
        self._spilled.clear()
        self._bytes = 0
        self.evicted = 0
        if paths:
            await asyncio.to_thread(_unlink_all, paths)

    def _discard(self, key: _Key) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        path = self._spilled.pop(key, None)
        if path is not None:
            # Rare (a rescan of a spilled step): deleted in clear(), never on the loop thread.
            self._stale.append(path)

    def _over_cap(self) -> bool:
        if self.max_count is not None and len(self._memory) > self.max_count:
            return True
        return self.max_bytes is not None and self._bytes > self.max_bytes

    async def _enforce_caps(self) -> None:
        victims: list[tuple[_Key, bytes]] = []
        while self._memory and self._over_cap():
            key, data = self._memory.popitem(last=False)
            self._bytes -= len(data)
            victims.append((key, data))
        if not victims:
            return
        if self.spill_dir is None:
            self.evicted += len(victims)
            return
        spill_dir = self.spill_dir
        paths = await asyncio.to_thread(_spill, spill_dir, victims)
        self._spilled.update(paths)


def _spill(spill_dir: Path, victims: list[tuple[_Key, bytes]]) -> dict[_Key, Path]:
    written: dict[_Key, Path] = {}
    for (tx, name), data in victims:
        folder = spill_dir / tx
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(binascii.a2b_base64(data))
        written[(tx, name)] = path
    return written


def _unlink_all(paths: list[Path]) -> None:
    folders = {p.parent for p in paths}
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in folders:
        # Only folders we created and emptied; never anything else in the spill directory.
        with contextlib.suppress(OSError):
            folder.rmdir()
