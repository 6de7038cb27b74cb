"""The tenant-wide rate limiter: the bulk runner's counting, kept in PostgreSQL so that every
worker process on every machine shares it.

Counted as :mod:`vlens_async.bulk._ratelimit` counts (read it for why): a request holds a token
from its grant until one window *after its answer*, at most ``limit`` tokens are held per window,
grants are paced ``1/per_second`` apart, and a throttling signal (HTTP 429 or code 4003) halves
the per-second rate, pauses for ``Retry-After`` and recovers step by step, with the same
constants. Here the bucket is a row of ``vlens_queue_limits`` (one per service: the tenant) and
the tokens are rows of ``vlens_queue_tokens``; times are the database server's clock, so the
machines' clocks do not matter. A grant is one short transaction that locks the bucket's row, so
grants are serialised across all workers; within a process one coroutine at a time asks (FIFO),
so waiting costs a poll every few tens of milliseconds, not one per request waiting.

A worker that dies holding tokens does not hold them for ever: each limiter holds a session
advisory lock on its owner id for its lifetime on a connection of its own, and a grant releases,
at that moment, the tokens of owners whose lock is gone (the dead process sends nothing more, so
its requests arrived before): at most once a second per process, and at once when every token
is held.

Why not pyrate-limiter's ``PostgresBucket``: it counts a request when it is *sent* (a leaky
bucket of send times), which jitter between our send and the server's count can beat (see the
bulk limiter's docstring); it has no notion of a request in flight, nor of the adaptive slow-down
a 429 must cause in every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import psycopg
import psycopg_pool

from ..bulk._ratelimit import (
    BACKOFF_FACTOR,
    DEFAULT_PENALTY_PAUSE,
    DEFAULT_SLACK,
    MAX_PAUSE,
    MIN_FACTOR,
    RECOVERY_INTERVAL,
    RECOVERY_STEP,
    LimiterClosed,
    RateLimit,
)

__all__ = ["PgRateLimiter", "current_limit", "set_limit"]

_OWNER_SPACE: Final = 0x766C  # the advisory-lock key space of limiter owners
_POLL: Final = 0.05  # seconds between asks while every token is held
_MAX_SLEEP: Final = 0.5  # re-ask at least this often (another worker may have been throttled)
_KEEP: Final = 120.0  # released tokens older than this are deleted
_DELETE_EVERY: Final = 64  # grants between two deletions of old tokens
_SWEEP_EVERY: Final = 1.0  # seconds between two releases of dead owners' tokens
_UNLIMITED_RECHECK: Final = 1.0  # a bucket without a limit is asked again after this long


async def set_limit(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], key: str, limit: RateLimit
) -> None:
    """Set the limit of the bucket ``key`` (a service), creating it if needed."""
    await conn.execute(
        "INSERT INTO vlens_queue_limits (key, per_second, per_minute) VALUES (%s, %s, %s)"
        " ON CONFLICT (key) DO UPDATE SET per_second = EXCLUDED.per_second,"
        " per_minute = EXCLUDED.per_minute",
        (key, limit.per_second, limit.per_minute),
    )


async def current_limit(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], key: str
) -> RateLimit | None:
    """The limit of the bucket ``key`` (a service), None when none was set."""
    row = await (
        await conn.execute(
            "SELECT per_second, per_minute FROM vlens_queue_limits WHERE key = %s", (key,)
        )
    ).fetchone()
    return None if row is None else RateLimit(per_second=row[0], per_minute=row[1])


class PgRateLimiter:
    """One process's handle on the shared bucket ``key``: ``async with limiter.slot():``
    around every request, :meth:`throttled` on a 429/4003, :meth:`close` when stopping.

    Open with :meth:`open` (it takes a connection of ``pool`` for its owner lock) and
    :meth:`aclose` at the end.
    """

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, key: str) -> None:
        self._pool = pool
        self.key = key
        self.owner = secrets.randbelow(2**31 - 2) + 1
        self._lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._owner_conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._signals: set[asyncio.Task[None]] = set()
        self.grants = 0
        self.asks = 0
        self._swept = -math.inf
        self._unlimited_until = -math.inf

    async def open(self) -> PgRateLimiter:
        """Take the owner lock on a connection of its own; returns self."""
        conn = await self._pool.getconn()  # autocommit (open_pool): a session lock only
        await conn.execute("SELECT pg_advisory_lock(%s, %s)", (_OWNER_SPACE, self.owner))
        self._owner_conn = conn
        return self

    async def aclose(self) -> None:
        """Wait for throttle reports in flight, release the owner lock and its connection."""
        self.close()
        if self._signals:
            await asyncio.gather(*self._signals, return_exceptions=True)
        conn, self._owner_conn = self._owner_conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock_all()")
            await self._pool.putconn(conn)

    def close(self) -> None:
        """Refuse further tokens: waiters and later callers get :class:`LimiterClosed`."""
        self._closed.set()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a token for the duration of one request (released even on error or cancel)."""
        token = await self.acquire()
        try:
            yield
        finally:
            if token is not None:
                await asyncio.shield(self._release(token))

    async def acquire(self) -> int | None:
        """Wait for a token of the shared bucket; its id (None: the bucket has no limit)."""
        if self._closed.is_set():
            raise LimiterClosed("the rate limiter is closed")
        if time.monotonic() < self._unlimited_until:
            return None  # the bucket said "no limit" less than a second ago
        async with self._lock:
            for _ in range(10_000_000):  # bounded; each turn waits at least a poll
                if self._closed.is_set():
                    raise LimiterClosed("the rate limiter is closed")
                granted, wait = await self._ask()
                if wait <= 0:
                    self.grants += 1
                    return granted
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(max(wait, _POLL), _MAX_SLEEP)):
                        await self._closed.wait()
        raise LimiterClosed("the rate limiter waited too long")  # pragma: no cover

    async def _ask(self) -> tuple[int | None, float]:
        """One grant attempt in one transaction: (token id, 0) or (None, seconds to wait)."""
        self.asks += 1
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT per_second, per_minute, factor, paused_until, last_grant,"
                    " recover_from, extract(epoch FROM clock_timestamp())::float8"
                    " FROM vlens_queue_limits WHERE key = %s FOR UPDATE",
                    (self.key,),
                )
            ).fetchone()
            if row is None:
                return None, 0.0
            per_second, per_minute, factor, paused_until, last_grant, recover_from, now = row
            assert isinstance(now, float)
            assert isinstance(factor, float)
            if per_second is None and per_minute is None:
                self._unlimited_until = time.monotonic() + _UNLIMITED_RECHECK
                return None, 0.0
            factor, recover_from = _recover(factor, float(recover_from), now)
            swept = time.monotonic() - self._swept >= _SWEEP_EVERY
            if swept:
                self._swept = time.monotonic()
                await conn.execute(
                    "UPDATE vlens_queue_tokens SET released_at = %s WHERE key = %s"
                    " AND released_at IS NULL AND owner NOT IN (SELECT objid::bigint FROM"
                    " pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2"
                    " AND granted)",
                    (now, self.key, _OWNER_SPACE),
                )
            held = [
                r[0]
                for r in await (
                    await conn.execute(
                        "SELECT released_at FROM vlens_queue_tokens WHERE key = %s AND"
                        " (released_at IS NULL OR released_at > %s)",
                        (self.key, now - 60.0 - DEFAULT_SLACK),
                    )
                ).fetchall()
            ]
            waits = [float(paused_until) - now]
            if isinstance(per_second, int):
                waits.append(_delay(held, per_second, 1.0 + DEFAULT_SLACK, now, factor))
                waits.append(float(last_grant) + 1.0 / (per_second * factor) - now)
            if isinstance(per_minute, int):
                waits.append(_delay(held, per_minute, 60.0 + DEFAULT_SLACK, now, 1.0))
            wait = max(waits)
            if math.isinf(wait) and not swept:
                self._swept = -math.inf  # every token held: are their owners still alive?
            if wait > 0:
                await conn.execute(
                    "UPDATE vlens_queue_limits SET factor = %s, recover_from = %s WHERE key = %s",
                    (factor, recover_from, self.key),
                )
                return None, wait
            token = await (
                await conn.execute(
                    "INSERT INTO vlens_queue_tokens (key, owner, granted_at) VALUES (%s, %s, %s)"
                    " RETURNING id",
                    (self.key, self.owner, now),
                )
            ).fetchone()
            await conn.execute(
                "UPDATE vlens_queue_limits SET factor = %s, recover_from = %s, last_grant = %s"
                " WHERE key = %s",
                (factor, recover_from, now, self.key),
            )
            if self.grants % _DELETE_EVERY == 0:
                await conn.execute(
                    "DELETE FROM vlens_queue_tokens WHERE key = %s AND released_at < %s",
                    (self.key, now - _KEEP),
                )
            assert token is not None
            return int(str(token[0])), 0.0

    async def _release(self, token: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE vlens_queue_tokens SET released_at = extract(epoch FROM"
                " clock_timestamp()) WHERE id = %s",
                (token,),
            )

    def throttled(self, retry_after: float | None = None) -> None:
        """Report a throttling signal to every worker (the bucket's row; in the background)."""
        task = asyncio.get_running_loop().create_task(self._throttled(retry_after))
        self._signals.add(task)
        task.add_done_callback(self._signals.discard)

    async def _throttled(self, retry_after: float | None) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT factor, paused_until, last_signal,"
                    " extract(epoch FROM clock_timestamp())::float8"
                    " FROM vlens_queue_limits WHERE key = %s FOR UPDATE",
                    (self.key,),
                )
            ).fetchone()
            if row is None:
                return
            factor, paused_until, last_signal, now = (float(v) for v in row)
            # Signals of requests already in flight arrive together: one burst is one signal.
            if now - last_signal >= 1.0 or factor >= 1.0:
                factor = max(MIN_FACTOR, factor * BACKOFF_FACTOR)
                last_signal = now
            pause = DEFAULT_PENALTY_PAUSE if retry_after is None else retry_after
            paused_until = max(paused_until, now + min(max(pause, 0.0), MAX_PAUSE))
            await conn.execute(
                "UPDATE vlens_queue_limits SET factor = %s, paused_until = %s, last_signal = %s,"
                " recover_from = %s, signals = signals + 1 WHERE key = %s",
                (factor, paused_until, last_signal, max(now, paused_until), self.key),
            )


def _recover(factor: float, recover_from: float, now: float) -> tuple[float, float]:
    """Additive increase: one step per quiet interval since ``recover_from``."""
    if factor >= 1.0:
        return factor, recover_from
    steps = math.floor((now - recover_from) / RECOVERY_INTERVAL)
    if steps > 0:
        factor = min(1.0, factor + steps * RECOVERY_STEP)
        recover_from += steps * RECOVERY_INTERVAL
    return factor, recover_from


def _delay(held: list[Any], limit: int, length: float, now: float, factor: float) -> float:
    """Seconds until one more grant fits in a window of ``length`` (as the bulk limiter's
    ``_Window.delay``): ``held`` are the release times (None: in flight) of recent tokens."""
    allowed = max(1, math.floor(limit * factor))
    in_flight = sum(1 for r in held if r is None)
    released = sorted(float(r) for r in held if r is not None and float(r) + length > now)
    count = in_flight + len(released)
    if count < allowed:
        return 0.0
    must_leave = count - allowed + 1
    if must_leave > len(released):
        return math.inf
    return released[must_leave - 1] + length - now
