"""Connections to the queue's PostgreSQL: one place that turns psycopg's failures into a
:class:`QueueError` naming the database without its password."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg import conninfo

from ._errors import QueueError

__all__ = ["connect", "describe", "open_pool"]

CONNECT_TIMEOUT: Final = 10


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
    """psycopg's first line, without the conninfo it may quote."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    """One connection (autocommit; use ``conn.transaction()``), or a :class:`QueueError`."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
    except psycopg.ProgrammingError as exc:
        raise QueueError(f"bad database URL ({_why(exc)})") from None
    except psycopg.Error as exc:
        raise QueueError(f"cannot connect to the database {describe(url)}: {_why(exc)}") from None
    try:
        yield conn
    finally:
        await conn.close()


async def open_pool(url: str, *, max_size: int) -> psycopg_pool.AsyncConnectionPool:
    """An open pool (autocommit connections), checked by one connection first."""
    async with connect(url):
        pass
    pool = psycopg_pool.AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max(2, max_size),
        open=False,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
    )
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    return pool
