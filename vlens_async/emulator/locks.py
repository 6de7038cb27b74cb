"""Per-key asyncio locks that exist only while someone holds or waits for them.

The verify steps of one transaction must check and record atomically, but recording awaits (image
storage may spill to disk), so the event loop alone does not serialise them. One lock per
transaction id does; dropping it when its last user leaves keeps memory bounded by the requests in
flight, not by the transactions ever seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import attrs

__all__ = ["KeyedLocks"]


@attrs.define
class _Entry:
    lock: asyncio.Lock = attrs.Factory(asyncio.Lock)
    users: int = 0  # holders and waiters


class KeyedLocks:
    """One :class:`asyncio.Lock` per key, made on first use and dropped when no one needs it."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the block (waiting for earlier holders first)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            # Also reached by a waiter cancelled before it got the lock.
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
