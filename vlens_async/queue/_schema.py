"""``init``: procrastinate's schema (when absent) and ours, in one transaction, under a lock.

Our tables (every name starts ``vlens_queue_``):

- ``meta``: the schema version (a newer one is refused, never touched).
- ``runs``: a run's name, the service it was submitted for (``base_url``), the manifest's path
  and SHA-256, its rate limit, whether images are prepared, and its procrastinate queue.
- ``applicants``: per applicant of a run, as the bulk journal keeps it: row, status, flow state,
  the transaction id (written when the applicant is submitted, before any request), the
  allow-listed snapshot without personal data, attempts, outcome and the results line. Also
  ``inputs``, the manifest row a worker needs (image paths, the name check value, the client's
  transaction id), which is cleared when the applicant ends, except after an ``error`` (kept for
  ``retry``).
- ``invalid``: rows that cannot be processed, with the reason.
- ``attempts``: every HTTP attempt (step, outcome, status, code, duration), for latencies.
- ``limits`` and ``tokens``: the tenant-wide rate limiter (see :mod:`._limiter`).
"""

from __future__ import annotations

from typing import Final

from procrastinate.schema import SchemaManager

from ._db import SCHEMA_VERSION, connect
from ._errors import QueueError

__all__ = ["init"]

# A transaction-scoped advisory lock: two `init`s at once run one after the other.
_INIT_LOCK: Final = 0x766C656E73  # "vlens"

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
    created_at double precision NOT NULL
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


async def init(db: str) -> str:
    """Create or upgrade the schema (procrastinate's, then ours) in ``db``; harmless to run
    again. Returns what was done, in words. Raises :class:`QueueError` for a database that
    cannot be reached or whose queue schema is newer than this release's."""
    async with connect(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
        have_ours = await (
            await conn.execute("SELECT to_regclass('vlens_queue_meta') IS NOT NULL")
        ).fetchone()
        if have_ours and have_ours[0]:
            row = await (
                await conn.execute(
                    "SELECT value FROM vlens_queue_meta WHERE key = 'schema_version'"
                )
            ).fetchone()
            version = int(str(row[0])) if row and str(row[0]).isdigit() else 0
            if version > SCHEMA_VERSION:
                raise QueueError(
                    f"the queue schema is version {version}, newer than this release's"
                    f" {SCHEMA_VERSION}: refusing to touch it (upgrade vlens-async)"
                )
            if version == SCHEMA_VERSION:
                return f"the schema is up to date (version {SCHEMA_VERSION})"
        have_jobs = await (
            await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        ).fetchone()
        if not (have_jobs and have_jobs[0]):
            await conn.execute(SchemaManager.get_schema())
        await conn.execute(_TABLES)
        await conn.execute(
            "INSERT INTO vlens_queue_meta (key, value) VALUES ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(SCHEMA_VERSION),),
        )
    return f"the schema was created (version {SCHEMA_VERSION})"
