"""Each user's verification kept between requests: one SQLite row per user, through aiosqlite.

A row holds the transaction id, the transaction's snapshot (``Transaction.snapshot()``: plain
JSON without images or personal data) and, while liveness still needs it, the ID front as it was
sent: a snapshot keeps no images, and ``Transaction.restore(..., id_front=...)`` needs the front
to finish liveness. The front is national ID data: it is dropped as soon as the transaction is
completed or failed, and every row goes once it has been idle for ``retention``. The file is
made owner-only (0600) before SQLite opens it; its rollback journal (``journal_mode=DELETE``, not
WAL, whose log would keep a dropped front's pages) and ``secure_delete`` leave no copy of a
dropped front in the database's files.

One verification per user at a time, even with several worker processes:

- the row's primary key makes the transaction id the user's only one;
- a lease on the row lets one request at a time work on it: taken in one statement (an upsert
  that only takes a lease that has run out), renewed while the request runs, and checked by
  every write, so a request that lost it (stalled past it) can overwrite nothing. A request that
  finds the row leased by another process gets :class:`Busy`;
- within a process an :class:`asyncio.Lock` per user queues the second request behind the first
  instead, so a double submit finds the step done and nothing is sent twice.

Every statement stands alone (autocommit, no ``BEGIN``), so the one connection serves every
user's requests at once without one's transaction catching another's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import aiosqlite

from vlens_async import Transaction, VlensClient
from vlens_async.config import DEFAULT_DEADLINE
from vlens_async.flow import FlowState
from vlens_async.images import load_image_bytes

__all__ = ["LEASE_SECONDS", "Busy", "KycStore", "LeaseLost", "UserRecord"]

# A request holds a row for one step: one API call (its retries and their waits are within the
# client's deadline) and the images' preparation before it. Renewed every third of it.
LEASE_SECONDS: Final = DEFAULT_DEADLINE + 120
OWNER_ONLY: Final = 0o600

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
# Creates the row if missing and takes its lease if free: no row back means another holds it.
_TAKE_LEASE = """
INSERT INTO kyc_transaction (user_key, transaction_id, lease_owner, lease_until, updated_at)
VALUES (:user, :new_id, :owner, :until, :now)
ON CONFLICT (user_key) DO UPDATE SET lease_owner = :owner, lease_until = :until
    WHERE kyc_transaction.lease_until < :now
RETURNING transaction_id, snapshot, id_front
"""
# The states in which the transaction has a scanned front that liveness will send again.
_FRONT_KEPT: Final = (FlowState.FRONT_SCANNED, FlowState.ID_SCANNED)


class Busy(Exception):
    """Another process is working on this user's verification right now."""


class LeaseLost(RuntimeError):
    """This request no longer holds the user's row (it stalled past its lease): nothing was
    written, and the request that holds it now decides."""


class UserRecord:
    """One user's stored verification, held (leased) for the duration of a request."""

    def __init__(
        self,
        store: KycStore,
        user_key: str,
        owner: str,
        transaction_id: str,
        snapshot: dict[str, Any] | None,
        id_front: bytes | None,
    ) -> None:
        self._store = store
        self._user_key = user_key
        self._owner = owner
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
        front = await _front_to_keep(tx)
        snapshot = tx.snapshot()
        await self._write("snapshot = ?, id_front = ?", (json.dumps(snapshot), front))
        self._snapshot, self._id_front = snapshot, front

    async def start_over(self) -> None:
        """Replace the verification with a new one (a new transaction id, nothing sent)."""
        new_id = str(uuid.uuid4())
        await self._write("transaction_id = ?, snapshot = NULL, id_front = NULL", (new_id,))
        self.transaction_id, self._snapshot, self._id_front = new_id, None, None

    async def _write(self, assignments: str, values: tuple[object, ...]) -> None:
        changed = await self._store.run(
            f"UPDATE kyc_transaction SET {assignments}, updated_at = ?"
            " WHERE user_key = ? AND lease_owner = ?",
            (*values, time.time(), self._user_key, self._owner),
        )
        if changed != 1:
            raise LeaseLost("the request lost its lease on the verification; nothing was saved")


async def _front_to_keep(tx: Transaction) -> bytes | None:
    """The ID front's bytes as the transaction sent them, while liveness will need them; else
    None. A transaction that should hold one but does not is a bug, never a silent None."""
    if tx.state not in _FRONT_KEPT:
        return None
    if tx.front_image is None:
        raise RuntimeError(f"a {tx.state.value} transaction holds no ID front to keep")
    # Whatever the transaction holds (a prepared JPEG, bytes, a path, a PIL image): its bytes.
    return await asyncio.to_thread(load_image_bytes, tx.front_image)


class KycStore:
    """The SQLite file at ``path`` holding every user's verification (see the module docstring).

    Use as ``async with KycStore(path) as store``; ``retention`` (seconds idle) bounds how long a
    row is kept, ``lease_seconds`` how long a crashed request can keep a row from others.
    """

    def __init__(
        self, path: str, *, retention: float = 24 * 3600, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._path = path
        self._retention = retention
        self._lease_seconds = lease_seconds
        self._db: aiosqlite.Connection | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __aenter__(self) -> KycStore:
        await asyncio.to_thread(_make_owner_only, self._path)
        # Autocommit (isolation_level=None): every statement is its own transaction.
        self._db = await aiosqlite.connect(self._path, timeout=5, isolation_level=None)
        try:
            # A rollback journal, deleted at each commit: WAL would keep a dropped front's pages
            # in its log until a checkpoint. Deleted content is overwritten with zeros.
            await self._db.execute("PRAGMA journal_mode = DELETE")
            await self._db.execute("PRAGMA secure_delete = ON")
            await self._db.execute(_SCHEMA)
            await self.purge()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open: use 'async with KycStore(...)'")
        return self._db

    async def run(self, sql: str, values: Iterable[object] = ()) -> int:
        """Run one statement on its own; returns how many rows it changed."""
        async with self._conn().execute(sql, tuple(values)) as cursor:
            return cursor.rowcount

    @asynccontextmanager
    async def hold(self, user_key: str) -> AsyncIterator[UserRecord]:
        """The user's record, created if missing, held by this request until the block ends."""
        lock = self._locks.setdefault(user_key, asyncio.Lock())
        async with lock:
            owner = str(uuid.uuid4())
            record = await self._acquire(user_key, owner)
            renewing = asyncio.create_task(self._renew(user_key, owner))
            try:
                yield record
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
                await self.run(
                    "UPDATE kyc_transaction SET lease_owner = NULL, lease_until = 0"
                    " WHERE user_key = ? AND lease_owner = ?",
                    (user_key, owner),
                )

    async def _acquire(self, user_key: str, owner: str) -> UserRecord:
        now = time.time()
        rows = await self._conn().execute_fetchall(
            _TAKE_LEASE,
            {
                "user": user_key,
                "new_id": str(uuid.uuid4()),
                "owner": owner,
                "until": now + self._lease_seconds,
                "now": now,
            },
        )
        if not rows:
            raise Busy
        ((transaction_id, snapshot, id_front),) = rows
        loaded = None if snapshot is None else json.loads(snapshot)
        return UserRecord(self, user_key, owner, transaction_id, loaded, id_front)

    async def _renew(self, user_key: str, owner: str) -> None:
        """Keep the lease while the request runs; stops once it is lost (writes then fail)."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            renewed = await self.run(
                "UPDATE kyc_transaction SET lease_until = ? WHERE user_key = ? AND lease_owner = ?",
                (time.time() + self._lease_seconds, user_key, owner),
            )
            if not renewed:
                return

    async def snapshot(self, user_key: str) -> dict[str, Any] | None:
        """The user's stored snapshot (None: no verification yet, or none begun), read without
        creating or holding the row."""
        async with self._conn().execute(
            "SELECT snapshot FROM kyc_transaction WHERE user_key = ?", (user_key,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None or row[0] is None:
            return None
        loaded: dict[str, Any] = json.loads(row[0])
        return loaded

    async def purge(self) -> int:
        """Delete the rows idle for longer than ``retention``; returns how many went."""
        now = time.time()
        return await self.run(
            "DELETE FROM kyc_transaction WHERE updated_at < ? AND lease_until < ?",
            (now - self._retention, now),
        )


def _make_owner_only(path: str) -> None:
    """Create the database file owner-only (or make an existing one so) before SQLite opens
    it: its journal takes the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, OWNER_ONLY)
    try:
        os.fchmod(fd, OWNER_ONLY)
    finally:
        os.close(fd)
