"""Each user's verification kept between requests: one SQLite row per user, through aiosqlite.

A row holds the transaction id, the transaction's snapshot (``Transaction.snapshot()``: plain
JSON without images or personal data) and, while liveness still needs it, the ID front as it was
sent: a snapshot keeps no images, and ``Transaction.restore(..., id_front=...)`` needs the front
to finish liveness. The front is national ID data: it is dropped as soon as the transaction is
completed or failed, and every row goes once it has been idle for ``retention``.

One verification per user at a time, even with several worker processes:

- the row's primary key makes the transaction id the user's only one (a second insert is a
  no-op, and both requests read the winner's id);
- a lease on the row (taken in a ``BEGIN IMMEDIATE`` transaction) lets one request at a time work
  on it; a request that finds it taken by another process gets :class:`Busy`;
- within a process an :class:`asyncio.Lock` per user queues the second request behind the first
  instead, so a double submit finds the step done and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from vlens_async import PreparedImage, Transaction, VlensClient
from vlens_async.flow import FlowState

__all__ = ["Busy", "KycStore", "UserRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kyc_transaction (
    user_key       TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    snapshot       TEXT,
    id_front       BLOB,
    lease_owner    TEXT,
    lease_until    REAL NOT NULL DEFAULT 0,
    updated_at     REAL NOT NULL
)
"""
_FINISHED = (FlowState.COMPLETED, FlowState.FAILED)


class Busy(Exception):
    """Another process is working on this user's verification right now."""


class UserRecord:
    """One user's stored verification, held (leased) for the duration of a request."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        user_key: str,
        transaction_id: str,
        snapshot: dict[str, Any] | None,
        id_front: bytes | None,
    ) -> None:
        self._db = db
        self._user_key = user_key
        self.transaction_id = transaction_id
        self._snapshot = snapshot
        self._id_front = id_front

    def load(self, client: VlensClient) -> Transaction:
        """The user's transaction on ``client``: restored from its snapshot, or new."""
        if self._snapshot is None:
            return client.transaction(self.transaction_id)
        return Transaction.restore(client, self._snapshot, id_front=self._id_front)

    async def save(self, tx: Transaction) -> None:
        """Store ``tx``'s snapshot, and its ID front while liveness may still need it."""
        front = None if tx.state in _FINISHED else _image_bytes(tx.front_image)
        self._snapshot = tx.snapshot()
        await self._db.execute(
            "UPDATE kyc_transaction SET snapshot = ?, id_front = ?, updated_at = ?"
            " WHERE user_key = ?",
            (json.dumps(self._snapshot), front, time.time(), self._user_key),
        )

    async def start_over(self) -> None:
        """Replace the verification with a new one (a new transaction id, nothing sent)."""
        self.transaction_id, self._snapshot, self._id_front = str(uuid.uuid4()), None, None
        await self._db.execute(
            "UPDATE kyc_transaction SET transaction_id = ?, snapshot = NULL, id_front = NULL,"
            " updated_at = ? WHERE user_key = ?",
            (self.transaction_id, time.time(), self._user_key),
        )


class KycStore:
    """The SQLite file at ``path`` holding every user's verification (see the module docstring).

    Use as ``async with KycStore(path) as store``; ``retention`` (seconds idle) bounds how long a
    row is kept, ``lease_seconds`` how long a crashed request can keep a row from others.
    """

    def __init__(
        self, path: str, *, retention: float = 24 * 3600, lease_seconds: float = 120
    ) -> None:
        self._path = path
        self._retention = retention
        self._lease_seconds = lease_seconds
        self._db: aiosqlite.Connection | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __aenter__(self) -> KycStore:
        # Autocommit mode: each statement commits unless inside an explicit BEGIN.
        self._db = await aiosqlite.connect(self._path, timeout=5, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode = WAL")
        # Deleted content (an ID front once liveness is done) is overwritten, not left behind.
        await self._db.execute("PRAGMA secure_delete = ON")
        await self._db.execute(_SCHEMA)
        await self.purge()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open: use 'async with KycStore(...)'")
        return self._db

    @asynccontextmanager
    async def hold(self, user_key: str) -> AsyncIterator[UserRecord]:
        """The user's record, created if missing, held by this request until the block ends."""
        lock = self._locks.setdefault(user_key, asyncio.Lock())
        async with lock:
            owner = str(uuid.uuid4())
            record = await self._acquire(user_key, owner)
            try:
                yield record
            finally:
                await self._conn().execute(
                    "UPDATE kyc_transaction SET lease_owner = NULL, lease_until = 0"
                    " WHERE user_key = ? AND lease_owner = ?",
                    (user_key, owner),
                )

    async def _acquire(self, user_key: str, owner: str) -> UserRecord:
        db, now = self._conn(), time.time()
        await db.execute("BEGIN IMMEDIATE")  # the write lock: check and take the lease at once
        try:
            await db.execute(
                "INSERT INTO kyc_transaction (user_key, transaction_id, updated_at)"
                " VALUES (?, ?, ?) ON CONFLICT (user_key) DO NOTHING",
                (user_key, str(uuid.uuid4()), now),
            )
            taken = await db.execute(
                "UPDATE kyc_transaction SET lease_owner = ?, lease_until = ?"
                " WHERE user_key = ? AND lease_until < ?",
                (owner, now + self._lease_seconds, user_key, now),
            )
            if taken.rowcount != 1:
                raise Busy
            async with db.execute(
                "SELECT transaction_id, snapshot, id_front FROM kyc_transaction WHERE user_key = ?",
                (user_key,),
            ) as cursor:
                row = await cursor.fetchone()
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        assert row is not None
        snapshot = None if row[1] is None else json.loads(row[1])
        return UserRecord(db, user_key, row[0], snapshot, row[2])

    async def purge(self) -> int:
        """Delete the rows idle for longer than ``retention``; returns how many went."""
        cursor = await self._conn().execute(
            "DELETE FROM kyc_transaction WHERE updated_at < ? AND lease_until < ?",
            (time.time() - self._retention, time.time()),
        )
        return cursor.rowcount


def _image_bytes(image: object) -> bytes | None:
    """The ID front as the transaction sent it (a prepared JPEG, or the bytes it was given)."""
    if isinstance(image, PreparedImage):
        return image.data
    return image if isinstance(image, bytes) else None
