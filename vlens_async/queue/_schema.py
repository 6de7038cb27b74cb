"""The schema: ``init`` creates or upgrades procrastinate's and ours; ``require_schema`` refuses
a database a command cannot use.

procrastinate keeps no record of which of its migrations a database has (its documentation
leaves that to the user), so ours does: ``vlens_queue_meta`` holds our schema's version and the
name of the last procrastinate migration applied. ``init`` then:

- on a database without procrastinate's tables, applies procrastinate's own ``schema.sql``
  (:meth:`procrastinate.schema.SchemaManager.get_schema`) and records its newest migration;
- on one with them, applies every migration of the installed procrastinate
  (:meth:`~procrastinate.schema.SchemaManager.get_migrations_path`) newer than the one
  recorded, in order, each in a transaction of its own with the record (one of them adds an
  enum value the next may use, which PostgreSQL allows only after a commit). Tables that no
  ``init`` recorded (made by ``procrastinate schema --apply``, or by the first release of this
  module, which kept no record) are placed by the fingerprints below, back to procrastinate
  3.0; an older unrecorded schema is refused;
- creates our tables, or upgrades them one version at a time (:data:`_UPGRADES`).

A schema from a newer release, ours or procrastinate's (a recorded migration this procrastinate
does not have), is refused and never touched. Two ``init``s at once run one after the other (a
session advisory lock); a second one finds nothing to do.

Our tables (every name starts ``vlens_queue_``):

- ``meta``: the versions above.
- ``runs``: a run's name, the service it was submitted for (``base_url``), the manifest's path
  and SHA-256, its rate limit, whether images are prepared, its procrastinate queue, and the
  run's secret, from which each applicant's transaction id is derived (as the bulk journal
  derives them from the job's secret).
- ``applicants``: per applicant of a run, as the bulk journal keeps it: row, status, flow state,
  the transaction id (written when the applicant is submitted, before any request), the
  allow-listed snapshot without personal data, attempts, outcome and the results line. Also
  ``inputs``, the manifest row a worker needs (image paths, the name check value, the client's
  transaction id), which is cleared when the applicant ends, except after an ``error`` (kept for
  ``retry``).
- ``invalid``: rows that cannot be processed, with the reason.
- ``attempts``: every HTTP attempt (step, outcome, status, code, duration), for latencies.
- ``limits`` and ``tokens``: the tenant-wide rate limiter (see :mod:`._limiter`).
- ``workers``: one row per worker process while it runs, with its service and heartbeat.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any, Final

import psycopg
from procrastinate.schema import SchemaManager

from ._db import connect
from ._errors import QueueError

__all__ = ["SCHEMA_VERSION", "init", "procrastinate_migrations", "require_schema"]

# Our tables' version. 2: the run's secret (transaction ids derived from it). 3: the workers.
# 4: the applicant's lease (a worker stopped and put back can no longer write over the next).
SCHEMA_VERSION: Final = 4
_VERSION_KEY: Final = "schema_version"
_PROCRASTINATE_KEY: Final = "procrastinate_migration"
# A session advisory lock: two `init`s at once run one after the other.
_INIT_LOCK: Final = 0x766C656E73  # "vlens"

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_TABLES: Final = """
CREATE TABLE IF NOT EXISTS vlens_queue_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS vlens_queue_runs (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    base_url text NOT NULL,
    manifest_path text NOT NULL,
    manifest_sha256 text NOT NULL,
    rate text NOT NULL,
    prepare boolean NOT NULL,
    queue text NOT NULL,
    created_at double precision NOT NULL,
    secret text
);
CREATE TABLE IF NOT EXISTS vlens_queue_applicants (
    run bigint NOT NULL REFERENCES vlens_queue_runs (id),
    applicant_id text NOT NULL,
    row integer NOT NULL,
    status text NOT NULL DEFAULT 'active',
    state text NOT NULL DEFAULT 'NEW',
    transaction_id text NOT NULL,
    inputs jsonb,
    snapshot text,
    attempts integer NOT NULL DEFAULT 0,
    outcome text,
    error_key text,
    result text,
    updated_at double precision NOT NULL,
    finished_at double precision,
    lease bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run, applicant_id)
);
CREATE INDEX IF NOT EXISTS vlens_queue_applicants_row ON vlens_queue_applicants (run, row);
CREATE INDEX IF NOT EXISTS vlens_queue_applicants_finished
    ON vlens_queue_applicants (run, finished_at);
CREATE TABLE IF NOT EXISTS vlens_queue_invalid (
    run bigint NOT NULL REFERENCES vlens_queue_runs (id),
    row integer NOT NULL,
    applicant_id text,
    reason text NOT NULL,
    PRIMARY KEY (run, row)
);
CREATE TABLE IF NOT EXISTS vlens_queue_attempts (
    id bigserial PRIMARY KEY,
    run bigint NOT NULL,
    applicant_id text NOT NULL,
    step text NOT NULL,
    attempt integer NOT NULL,
    ok boolean NOT NULL,
    status integer,
    error_code integer,
    error_type text,
    duration double precision NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS vlens_queue_attempts_run ON vlens_queue_attempts (run, step);
CREATE TABLE IF NOT EXISTS vlens_queue_limits (
    key text PRIMARY KEY,
    per_second integer,
    per_minute integer,
    factor double precision NOT NULL DEFAULT 1,
    paused_until double precision NOT NULL DEFAULT 0,
    last_grant double precision NOT NULL DEFAULT 0,
    last_signal double precision NOT NULL DEFAULT 0,
    recover_from double precision NOT NULL DEFAULT 0,
    signals bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vlens_queue_tokens (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    owner bigint NOT NULL,
    granted_at double precision NOT NULL,
    released_at double precision
);
CREATE INDEX IF NOT EXISTS vlens_queue_tokens_key ON vlens_queue_tokens (key, released_at);
"""
# One row per `vlens queue work` process while it runs (procrastinate's own table has one per
# loop, with no process identity): the service it serves and its heartbeat.
_WORKERS: Final = """
CREATE TABLE IF NOT EXISTS vlens_queue_workers (
    id bigserial PRIMARY KEY,
    service text NOT NULL,
    started_at double precision NOT NULL,
    last_heartbeat timestamp with time zone NOT NULL DEFAULT now()
);
"""

# What takes our tables from the version before to this one (``_TABLES`` already has it all for
# a new database, so each is written to be harmless there).
_UPGRADES: Final[dict[int, str]] = {
    2: "ALTER TABLE vlens_queue_runs ADD COLUMN IF NOT EXISTS secret text",
    3: _WORKERS,
    4: "ALTER TABLE vlens_queue_applicants"
    " ADD COLUMN IF NOT EXISTS lease bigint NOT NULL DEFAULT 0",
}


def _has_proc(name: str) -> str:
    return f"EXISTS (SELECT 1 FROM pg_proc WHERE proname = '{name}')"


def _proc_says(name: str, text: str) -> str:
    return f"EXISTS (SELECT 1 FROM pg_proc WHERE proname = '{name}' AND prosrc LIKE '%{text}%')"


# Where an unrecorded procrastinate schema stands: newest first, the first migration (by its
# ``xx.yy.zz_ab`` key) whose mark is present is the last one applied. Each mark is what that
# migration made or removed and no later one undid.
_FINGERPRINTS: Final = (
    (
        "03.04.00_50",
        _proc_says("procrastinate_trigger_function_status_events_update_v1", "retried"),
    ),
    ("03.04.00_01", _has_proc("procrastinate_retry_job_v2")),
    ("03.03.00_01", _proc_says("procrastinate_fetch_job_v2", "other_jobs.priority")),
    (
        "03.02.00_50",
        f"{_has_proc('procrastinate_defer_jobs_v1')}"
        f" AND NOT {_has_proc('procrastinate_defer_job_v1')}",
    ),
    ("03.02.00_01", _has_proc("procrastinate_defer_jobs_v1")),
    (
        "03.01.00_50",
        f"{_has_proc('procrastinate_fetch_job_v2')}"
        f" AND NOT {_has_proc('procrastinate_fetch_job_v1')}",
    ),
    ("03.01.00_01", _has_proc("procrastinate_fetch_job_v2")),
    (
        "03.00.00_50",
        "EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'check_not_todo_abort_requested')",
    ),
    ("03.00.00_01", _has_proc("procrastinate_defer_job_v1")),
)


def _key(name: str) -> tuple[str, ...]:
    """A migration's place in procrastinate's order: ``xx.yy.zz`` and the serial ``ab``."""
    return tuple(name.split("_", 2)[:2])


@functools.cache
def procrastinate_migrations() -> tuple[Path, ...]:
    """The installed procrastinate's migration scripts, in the order they apply."""
    folder = Path(SchemaManager.get_migrations_path())
    return tuple(sorted(folder.glob("*.sql"), key=lambda p: _key(p.stem)))


async def _latest() -> str:
    """The name of the installed procrastinate's newest migration."""
    return (await asyncio.to_thread(procrastinate_migrations))[-1].stem


async def _one(conn: Conn, query: str, params: tuple[Any, ...] | None = None) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    return None if row is None else row[0]


async def _meta(conn: Conn) -> dict[str, str] | None:
    """Our meta rows, or None when our tables are absent."""
    if not await _one(conn, "SELECT to_regclass('vlens_queue_meta') IS NOT NULL"):
        return None
    rows = await (await conn.execute("SELECT key, value FROM vlens_queue_meta")).fetchall()
    return {str(k): str(v) for k, v in rows}


def _version(meta: dict[str, str]) -> int:
    value = meta.get(_VERSION_KEY, "")
    return int(value) if value.isdigit() else 0


def _check_not_newer(ours: int, procrastinate: str | None, latest: str) -> None:
    """Refuse a schema from a newer release: ours, or procrastinate's migrations."""
    if ours > SCHEMA_VERSION:
        raise QueueError(
            f"the queue schema is version {ours}, newer than this release's {SCHEMA_VERSION}:"
            " refusing to touch it (upgrade vlens-async)"
        )
    if procrastinate is not None and _key(procrastinate) > _key(latest):
        raise QueueError(
            f"procrastinate's schema has the migration {procrastinate}, newer than the installed"
            f" procrastinate's last ({latest}): refusing to touch it (upgrade procrastinate)"
        )


async def require_schema(conn: Conn) -> None:
    """Refuse a database without our schema, or with one older or newer than this release's
    (ours or procrastinate's)."""
    meta = await _meta(conn)
    if meta is None:
        raise QueueError("this database has no vlens queue schema: run `vlens queue init` first")
    latest = await _latest()
    version, procrastinate = _version(meta), meta.get(_PROCRASTINATE_KEY)
    _check_not_newer(version, procrastinate, latest)
    if version < SCHEMA_VERSION or procrastinate is None or _key(procrastinate) < _key(latest):
        raise QueueError(
            f"the queue schema is older than this release's (version {version}, procrastinate"
            f" {procrastinate or 'unrecorded'}): run `vlens queue init` to upgrade it"
        )


async def _detect(conn: Conn) -> str:
    """The last procrastinate migration an unrecorded schema has (see ``_FINGERPRINTS``)."""
    for key, mark in _FINGERPRINTS:
        if await _one(conn, f"SELECT {mark}"):
            return key
    raise QueueError(
        "this database has procrastinate tables from before procrastinate 3.0 that `vlens queue"
        " init` did not make: apply procrastinate's migrations first (procrastinate schema"
        " --migrations-path)"
    )


def _check_placeable(found: str, latest: str) -> None:
    """Refuse to place an unrecorded schema that may be past the newest fingerprint: the
    installed procrastinate has migrations after it, which such a schema may already have."""
    newest = _FINGERPRINTS[0][0]
    if _key(found) == _key(newest) and _key(latest) > _key(newest):
        raise QueueError(
            f"this database has procrastinate tables that `vlens queue init` did not make, at"
            f" migration {newest} or later, and the installed procrastinate goes to {latest}:"
            " which of those it has cannot be told; apply them with procrastinate's own tools, or"
            f" use a procrastinate whose last migration is {newest}"
        )


async def init(db: str) -> str:
    """Create or upgrade the schema (procrastinate's, then ours) in ``db``; harmless to run
    again. Returns what was done, in words. Raises :class:`QueueError` for a database that
    cannot be reached, or whose schema (ours or procrastinate's) is newer than this release's,
    or holds procrastinate tables too old to place."""
    async with connect(db) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_INIT_LOCK,))
        try:
            return await _init(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_INIT_LOCK,))


async def _init(conn: Conn) -> str:
    meta = await _meta(conn) or {}
    version, recorded = _version(meta), meta.get(_PROCRASTINATE_KEY)
    migrations = await asyncio.to_thread(procrastinate_migrations)
    latest = migrations[-1].stem
    _check_not_newer(version, recorded, latest)
    if not await _one(conn, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"):
        async with conn.transaction():
            await conn.execute(SchemaManager.get_schema())
            await _ours(conn, version, latest)
        return f"the schema was created (version {SCHEMA_VERSION}, procrastinate {latest})"
    if recorded is None:
        found = await _detect(conn)
        _check_placeable(found, latest)
        start = next((p.stem for p in migrations if _key(p.stem) == _key(found)), found)
    else:
        start = recorded
    _check_not_newer(version, start, latest)
    pending = [p for p in migrations if _key(p.stem) > _key(start)]
    if version == SCHEMA_VERSION and recorded is not None and not pending:
        return f"the schema is up to date (version {SCHEMA_VERSION}, procrastinate {latest})"
    async with conn.transaction():
        await _ours(conn, version, recorded or start)
    for path in pending:
        script = await asyncio.to_thread(path.read_text, encoding="utf-8")
        try:
            async with conn.transaction():
                await conn.execute(script)
                await _record(conn, _PROCRASTINATE_KEY, path.stem)
        except psycopg.Error as exc:  # rolled back: the record still names the last one applied
            raise QueueError(
                f"procrastinate's migration {path.stem} failed ({type(exc).__name__}); nothing of"
                " it was applied, and the migrations before it are recorded"
            ) from None
    return (
        f"the schema was upgraded (version {version or 'none'} to {SCHEMA_VERSION};"
        f" procrastinate from {start} to {latest}, {len(pending)} migrations)"
    )


async def _ours(conn: Conn, version: int, procrastinate: str) -> None:
    """Our tables, created or upgraded from ``version``, and the meta rows."""
    await conn.execute(_TABLES + _WORKERS)
    for step in range(version + 1, SCHEMA_VERSION + 1):
        if step in _UPGRADES:
            await conn.execute(_UPGRADES[step])
    await _record(conn, _VERSION_KEY, str(SCHEMA_VERSION))
    await _record(conn, _PROCRASTINATE_KEY, procrastinate)


async def _record(conn: Conn, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO vlens_queue_meta (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (key, value),
    )
