"""Connections to the queue's PostgreSQL: one place that turns psycopg's failures into a
:class:`QueueError` naming the database without its password."""

from __future__ import annotations

import contextlib
import math
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg import conninfo

from ._errors import QueueError

__all__ = ["connect", "describe", "open_pool"]

CONNECT_TIMEOUT: Final = 10
_CHECK_IDLE_AFTER: Final = 1.0  # seconds idle before a pooled connection is checked


def describe(url: str) -> str:
    """The database a URL names, as it may be shown: host or socket, port and name, never the
    password (nor the user)."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable database URL)"
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    name = str(params.get("dbname") or "")
    if url.startswith(("postgres://", "postgresql://")) and not params.get("host"):
        host = urllib.parse.urlsplit(url).hostname or "localhost"
    return f"{host}{port}/{name}"


def _why(exc: BaseException) -> str:
    """psycopg's first line (of a failed connection: libpq names the host, port and user)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    """One connection (autocommit; use ``conn.transaction()``), or a :class:`QueueError`."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
    except psycopg.ProgrammingError:
        # Not psycopg's text: it quotes the word it could not read, which may be a password.
        raise QueueError(
            "bad database URL: give postgresql://user@host:port/dbname or key=value pairs"
        ) from None
    except psycopg.Error as exc:
        raise QueueError(f"cannot connect to the database {describe(url)}: {_why(exc)}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def open_pool(
    url: str, *, max_size: int, min_size: int = 1
) -> psycopg_pool.AsyncConnectionPool:
    """An open pool of ``min_size`` to ``max_size`` autocommit connections (a statement is its
    own transaction: no BEGIN and COMMIT round trips), checked by one connection first.

    A connection is checked before use (an empty query) only when it sat idle for more than a
    second: one just returned is known good, and checking it too (as procrastinate's own pool
    does) costs a round trip per use. A connection that fails in use is discarded by the pool."""
    async with connect(url):
        pass
    returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
        # Not a connect() keyword: procrastinate passes the pool's keywords, and its own
        # autocommit, to the listener's connection.
        await conn.set_autocommit(True)

    async def stamp(conn: psycopg.AsyncConnection[Any]) -> None:
        returned[conn] = time.monotonic()

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        if time.monotonic() - returned.get(conn, -math.inf) > _CHECK_IDLE_AFTER:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    pool = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=max(1, min(min_size, max_size)),
        max_size=max(2, max_size),
        open=False,
        kwargs={"connect_timeout": CONNECT_TIMEOUT},
        configure=autocommit,
        check=check,
        reset=stamp,
    )
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    return pool
