"""``submit``: a manifest into a run, in chunks, each one database transaction that inserts the
applicants (with their transaction ids) and defers their jobs together.

An applicant's transaction id is written with it, before any worker can take its job, and is
derived from its id and the run's secret (:func:`~vlens_async._ids.transaction_id_for`, as the
bulk journal derives them): every job run for it reads that one id, and should the row ever be
lost after a worker used it (a server that acknowledged a commit it then lost), submitting the
manifest again gives the applicant the same transaction, never a second one."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
from psycopg.types.json import Jsonb

from .._ids import new_job_secret, transaction_id_for
from ..bulk._journal import manifest_digest
from ..bulk._manifest import BulkApplicant, InvalidRow, ManifestItem, iter_manifest
from ..bulk._ratelimit import DEFAULT_RATE_LIMIT, RateLimit
from ..errors import BulkInputError
from ._app import job_for, make_app
from ._db import connect
from ._errors import QueueError
from ._limiter import current_limit, set_limit
from ._schema import require_schema
from ._store import Conn, inputs_of, queue_for, service_key

__all__ = ["SubmitResult", "submit"]

DEFAULT_CHUNK: Final = 500


@attrs.frozen
class SubmitResult:
    """What :func:`submit` did: the run's id and name, applicants ``added`` now, ``invalid``
    rows recorded now, and the run's size (applicants and invalid rows, all submissions)."""

    run: str
    run_id: int
    added: int
    invalid: int
    total: int


async def submit(
    db: str,
    manifest: str | os.PathLike[str],
    *,
    run: str,
    base_url: str,
    rate: RateLimit | str | None = None,
    prepare: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> SubmitResult:
    """Read ``manifest`` as ``vlens bulk`` does and add its applicants to the run ``run`` (made
    now for the service ``base_url``, or continued). Submitting the same manifest again adds
    nothing for applicants already in the run and changes nothing of it. ``rate`` is the
    service's limit, set when the run is made (``None``: the service's limit when one is set,
    else 10/s, 60/min); for an existing run it may be left out or given as it was. Raises
    :class:`QueueError` (nothing written) for a run made from another manifest, for another
    service or with another rate, a database without the schema, and
    :class:`~vlens_async.errors.BulkInputError` for a manifest that cannot be read."""
    if not run.strip() or len(run) > 200:
        raise QueueError("a run name must be 1 to 200 characters")
    given = None if rate is None else RateLimit.parse(rate) if isinstance(rate, str) else rate
    path = Path(manifest)
    try:
        resolved, digest = await asyncio.to_thread(manifest_digest, path)
    except OSError as exc:
        raise BulkInputError(
            f"cannot read the manifest {path} ({exc.strerror or type(exc).__name__})"
        ) from None
    rows = await asyncio.to_thread(iter_manifest, path)
    first = await asyncio.to_thread(_chunk, rows, 1)  # a bad header fails before any write
    app = make_app(db, max_size=2)
    queue = queue_for(base_url)
    added = invalid = 0
    async with connect(db) as conn:
        await require_schema(conn)
        async with conn.transaction():
            # Without a rate, a new run takes the service's limit when one is set.
            existing = await current_limit(conn, service_key(base_url))
            limit = given or existing or DEFAULT_RATE_LIMIT
            run_id, secret, made = await _run_row(
                conn, run, base_url, resolved, digest, limit, prepare, queue, given is not None
            )
            if made and (given is not None or existing is None):  # an existing run: nothing
                await set_limit(conn, service_key(base_url), limit)
        items = first
        for _ in range(10**9):  # bounded by the manifest; ends at its last row
            if not items:
                break
            async with conn.transaction():
                a, i = await _insert(conn, app, queue, run_id, secret, items)
            added += a
            invalid += i
            items = await asyncio.to_thread(_chunk, rows, max(1, chunk))
        total = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM vlens_queue_applicants WHERE run = %s)"
                " + (SELECT count(*) FROM vlens_queue_invalid WHERE run = %s)",
                (run_id, run_id),
            )
        ).fetchone()
    return SubmitResult(run, run_id, added, invalid, int(total[0]) if total else 0)


def _chunk(rows: Iterator[ManifestItem], size: int) -> list[ManifestItem]:
    out: list[ManifestItem] = []
    for item in rows:
        out.append(item)
        if len(out) >= size:
            break
    return out


async def _run_row(
    conn: Conn,
    run: str,
    base_url: str,
    path: str,
    digest: str,
    limit: RateLimit,
    prepare: bool,
    queue: str,
    rate_given: bool,
) -> tuple[int, str, bool]:
    """The run's id and secret, and whether it was made now; else checked against this
    submission (a run made before runs had secrets gets one now; its applicants keep the ids
    they were given)."""
    inserted = await (
        await conn.execute(
            "INSERT INTO vlens_queue_runs (name, base_url, manifest_path, manifest_sha256, rate,"
            " prepare, queue, created_at, secret) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET secret = coalesce(vlens_queue_runs.secret,"
            " EXCLUDED.secret) RETURNING (xmax = 0)",  # xmax 0: the row was inserted, not updated
            (
                run,
                base_url,
                path,
                digest,
                str(limit),
                prepare,
                queue,
                time.time(),
                new_job_secret(),
            ),
        )
    ).fetchone()
    row = await (
        await conn.execute(
            "SELECT id, base_url, manifest_path, manifest_sha256, secret, rate"
            " FROM vlens_queue_runs WHERE name = %s",
            (run,),
        )
    ).fetchone()
    assert row is not None
    assert inserted is not None
    run_id, stored_url, stored_path, stored_digest, secret, stored_rate = row
    if service_key(stored_url) != service_key(base_url):
        raise QueueError(
            f"the run {run!r} was submitted for {service_key(stored_url)}, not"
            f" {service_key(base_url)}"
        )
    if stored_path != path or stored_digest != digest:
        raise QueueError(
            f"the run {run!r} was made from the manifest {stored_path}"
            f" (SHA-256 {stored_digest[:12]}...), not {path} (SHA-256 {digest[:12]}...):"
            " give the run another name"
        )
    if rate_given and not inserted[0] and stored_rate != str(limit):
        raise QueueError(
            f"the run {run!r} was submitted with the rate {stored_rate}, not {limit}: submit it"
            " again without a rate (or with that one); a new run sets the service's limit"
        )
    return int(run_id), str(secret), bool(inserted[0])


async def _insert(
    conn: Conn, app: Any, queue: str, run_id: int, secret: str, items: list[ManifestItem]
) -> tuple[int, int]:
    """One chunk: applicants and their jobs, invalid rows; (added, invalid) now."""
    now = time.time()
    applicants = [i for i in items if isinstance(i, BulkApplicant)]
    bad = [i for i in items if isinstance(i, InvalidRow)]
    added: list[str] = []
    seen: dict[str, int] = {}
    for a in applicants:
        if a.applicant_id in seen:  # twice in this chunk: the first row wins
            bad.append(
                InvalidRow(
                    a.row,
                    f"duplicate applicant_id (first seen at row {seen[a.applicant_id]})",
                    a.applicant_id,
                )
            )
            continue
        seen[a.applicant_id] = a.row
        row = await (
            await conn.execute(
                "INSERT INTO vlens_queue_applicants (run, applicant_id, row, transaction_id,"
                " inputs, updated_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (run, applicant_id) DO NOTHING RETURNING applicant_id",
                (
                    run_id,
                    a.applicant_id,
                    a.row,
                    transaction_id_for(a.applicant_id, secret),
                    Jsonb(inputs_of(a)),
                    now,
                ),
            )
        ).fetchone()
        if row is not None:
            added.append(a.applicant_id)
            continue
        first = await (
            await conn.execute(
                "SELECT row FROM vlens_queue_applicants WHERE run = %s AND applicant_id = %s",
                (run_id, a.applicant_id),
            )
        ).fetchone()
        if first is not None and int(first[0]) != a.row:
            bad.append(
                InvalidRow(
                    a.row, f"duplicate applicant_id (first seen at row {first[0]})", a.applicant_id
                )
            )
    invalid = 0
    for item in bad:
        cur = await conn.execute(
            "INSERT INTO vlens_queue_invalid (run, row, applicant_id, reason)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (run, row) DO NOTHING",
            (run_id, item.row, item.applicant_id, item.reason),
        )
        invalid += cur.rowcount
    if added:
        await app.job_manager.batch_defer_jobs_async(
            [job_for(queue, run_id, a) for a in added], connection=conn
        )
    return len(added), invalid
