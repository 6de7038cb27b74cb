"""The queue's journal in PostgreSQL: what the bulk runner's SQLite journal keeps, per run.

:class:`PgJournal` is the :class:`~vlens_async.bulk._context.StepJournal` an
:class:`~vlens_async.bulk._applicant.ApplicantRun` writes to: each step's attempts and the
flow's snapshot through the bulk journal's own allow-list (no personal data), then the results
line. Each write is one transaction. :func:`load_claim` reads an applicant back for a job.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import psycopg
import psycopg_pool

from ..bulk._journal import AttemptRecord, Claim, ClaimKind, dump_snapshot, load_snapshot
from ..bulk._manifest import BulkApplicant

__all__ = [
    "PgJournal",
    "applicant_from_inputs",
    "inputs_of",
    "load_claim",
    "queue_for",
    "service_key",
]

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def service_key(base_url: str) -> str:
    """The service a base URL names (scheme, host, port, path; never a user or password): the
    rate limiter's bucket and what a run is tied to."""
    parts = urllib.parse.urlsplit(base_url.strip())
    host = (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def queue_for(base_url: str) -> str:
    """The procrastinate queue of a service's runs: a worker listens to its own service's queue
    only, so it never takes an applicant submitted for another service."""
    return "vlens-" + hashlib.sha256(service_key(base_url).encode()).hexdigest()[:16]


def inputs_of(applicant: BulkApplicant) -> dict[str, Any]:
    """What a worker needs of a manifest row (absolute paths)."""
    return {
        "front": str(applicant.front),
        "back": str(applicant.back),
        "faces": [str(f) for f in applicant.faces],
        "name_check_value": applicant.name_check_value,
        "client_transaction_id": applicant.client_transaction_id,
    }


def applicant_from_inputs(applicant_id: str, row: int, inputs: Mapping[str, Any]) -> BulkApplicant:
    """The manifest row back from :func:`inputs_of`."""
    faces = inputs["faces"]
    return BulkApplicant(
        applicant_id,
        front=inputs["front"],
        back=inputs["back"],
        faces=(faces[0], faces[1], faces[2]),
        row=row,
        name_check_value=inputs.get("name_check_value"),
        client_transaction_id=inputs.get("client_transaction_id"),
    )


async def load_claim(
    conn: Conn, run: int, applicant_id: str
) -> tuple[Claim, BulkApplicant | None] | None:
    """The journal's answer for one applicant of ``run`` (None: not in the run)."""
    row = await (
        await conn.execute(
            "SELECT row, status, state, transaction_id, snapshot, attempts, outcome, inputs"
            " FROM vlens_queue_applicants WHERE run = %s AND applicant_id = %s",
            (run, applicant_id),
        )
    ).fetchone()
    if row is None:
        return None
    number, status, state, transaction_id, snapshot, attempts, outcome, inputs = row
    restored, error = load_snapshot(snapshot)
    claim = Claim(
        ClaimKind.DONE if status == "done" else ClaimKind.RESUME,
        transaction_id=transaction_id,
        snapshot=restored,
        attempts=int(attempts),
        outcome=outcome,
        state=state or "NEW",
        snapshot_error=error,
    )
    applicant = None if inputs is None else applicant_from_inputs(applicant_id, number, inputs)
    return claim, applicant


class PgJournal:
    """The journal of one run, in PostgreSQL (see the module's docstring)."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, run: int) -> None:
        self._pool = pool
        self.run = run

    async def save_step(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
    ) -> None:
        """Journal one finished step: its attempts and the flow's snapshot after it."""
        await self._save(applicant_id, state, snapshot, attempts, None)

    async def finish(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any],
    ) -> None:
        """Journal the applicant's terminal outcome and results line; its inputs (the manifest
        row, with the name check value) are cleared unless the outcome is ``error``."""
        await self._save(applicant_id, state, snapshot, attempts, result)

    async def _save(
        self,
        applicant_id: str,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any] | None,
    ) -> None:
        snap = None if snapshot is None else dump_snapshot(snapshot)
        now = time.time()
        async with self._pool.connection() as conn, conn.transaction():
            if attempts:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO vlens_queue_attempts (run, applicant_id, step, attempt, ok,"
                        " status, error_code, error_type, duration, at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [
                            (
                                self.run,
                                applicant_id,
                                a.step,
                                a.attempt,
                                a.ok,
                                a.status,
                                a.error_code,
                                a.error_type,
                                a.duration,
                                a.at,
                            )
                            for a in attempts
                        ],
                    )
            if result is None:
                await conn.execute(
                    "UPDATE vlens_queue_applicants SET state = %s,"
                    " snapshot = coalesce(%s, snapshot), attempts = attempts + %s,"
                    " updated_at = %s WHERE run = %s AND applicant_id = %s",
                    (state, snap, len(attempts), now, self.run, applicant_id),
                )
                return
            code = result.get("error_code")
            error_key = str(code) if code else result.get("error_type")
            await conn.execute(
                "UPDATE vlens_queue_applicants SET status = 'done', state = %s,"
                " snapshot = coalesce(%s, snapshot), attempts = attempts + %s, outcome = %s,"
                " error_key = %s, result = %s, updated_at = %s, finished_at = %s,"
                " inputs = CASE WHEN %s = 'error' THEN inputs END"
                " WHERE run = %s AND applicant_id = %s",
                (
                    state,
                    snap,
                    len(attempts),
                    result["outcome"],
                    error_key,
                    orjson.dumps(dict(result)).decode(),
                    now,
                    now,
                    result["outcome"],
                    self.run,
                    applicant_id,
                ),
            )
