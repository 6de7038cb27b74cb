"""The queue's journal in PostgreSQL: what the bulk runner's SQLite journal keeps, per run.

:class:`PgJournal` is the :class:`~vlens_async.bulk._context.StepJournal` an
:class:`~vlens_async.bulk._applicant.ApplicantRun` writes to: each step's attempts and the
flow's snapshot through the bulk journal's own allow-list (no personal data), then the results
line. Each write is one statement (so one transaction). :func:`load_claim` reads an applicant
back for a job.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import orjson
import psycopg
import psycopg_pool

from ..bulk._context import Superseded
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


class LeaseLost(Superseded):
    """The applicant was taken over: this worker was stopped long enough for its job to be put
    back and taken (its lease is no longer the applicant's), so it writes nothing more."""


async def take_lease(conn: Conn, run: int, applicant_id: str) -> int | None:
    """A new lease on an unfinished applicant of ``run``: only its holder's writes land (see
    :class:`PgJournal`); None when the applicant is finished or not in the run."""
    row = await (
        await conn.execute(
            "UPDATE vlens_queue_applicants SET lease = lease + 1"
            " WHERE run = %s AND applicant_id = %s AND status <> 'done' RETURNING lease",
            (run, applicant_id),
        )
    ).fetchone()
    return None if row is None else int(row[0])


class PgJournal:
    """The journal of one run, in PostgreSQL (see the module's docstring).

    A write given a ``lease`` (:func:`take_lease`) lands only while that lease is the
    applicant's and it is unfinished; otherwise nothing is written (its attempts neither) and
    :class:`LeaseLost` is raised."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, run: int) -> None:
        self._pool = pool
        self.run = run

    async def hold(self, applicant_id: str, lease: int | None = None) -> None:
        """Raise :class:`LeaseLost` unless ``lease`` is still the unfinished applicant's (no
        check without one)."""
        if lease is None:
            return
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT 1 FROM vlens_queue_applicants WHERE run = %s AND applicant_id = %s"
                    " AND lease = %s AND status <> 'done'",
                    (self.run, applicant_id, lease),
                )
            ).fetchone()
        if row is None:
            raise LeaseLost(f"applicant {applicant_id!r} of run {self.run} was taken over")

    async def save_step(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        lease: int | None = None,
    ) -> None:
        """Journal one finished step: its attempts and the flow's snapshot after it."""
        await self._save(applicant_id, state, snapshot, attempts, None, lease)

    async def finish(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any],
        lease: int | None = None,
    ) -> None:
        """Journal the applicant's terminal outcome and results line; its inputs (the manifest
        row, with the name check value) are cleared unless the outcome is ``error``."""
        await self._save(applicant_id, state, snapshot, attempts, result, lease)

    async def _save(
        self,
        applicant_id: str,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any] | None,
        lease: int | None,
    ) -> None:
        # One statement (its attempts inserted by a data-modifying WITH) on an autocommit
        # connection: atomic as a transaction, one round trip instead of five.
        params: dict[str, Any] = {
            "run": self.run,
            "applicant": applicant_id,
            "lease": lease,
            "state": state,
            "snapshot": None if snapshot is None else dump_snapshot(snapshot),
            "count": len(attempts),
            "now": time.time(),
            # One JSON text (orjson), not eight arrays for psycopg to adapt element by element.
            "attempts": orjson.dumps([attrs.asdict(a) for a in attempts]).decode(),
        }
        if result is not None:
            code = result.get("error_code")
            params["outcome"] = result["outcome"]
            params["error_key"] = str(code) if code else result.get("error_type")
            params["result"] = orjson.dumps(dict(result)).decode()
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(_SAVE_STEP if result is None else _FINISH, params)
            ).fetchone()
        if not (row and row[0]):
            raise LeaseLost(f"applicant {applicant_id!r} of run {self.run} was taken over")


# The applicant's row first (only while unfinished and, given a lease, held by it), then its
# attempts only if that row was written: a data-modifying WITH runs whatever the rest selects.
_WHERE: Final = """WHERE run = %(run)s AND applicant_id = %(applicant)s AND status <> 'done'
    AND (%(lease)s::bigint IS NULL OR lease = %(lease)s::bigint)
    RETURNING 1
)"""
_ATTEMPTS: Final = """, attempts AS (
    INSERT INTO vlens_queue_attempts (run, applicant_id, step, attempt, ok, status, error_code,
        error_type, duration, at)
    SELECT %(run)s, %(applicant)s, step, attempt, ok, status, error_code, error_type, duration,
        at FROM jsonb_to_recordset(%(attempts)s::jsonb) AS a(step text, attempt int, ok bool,
        status int, error_code int, error_type text, duration float8, at float8)
    WHERE EXISTS (SELECT 1 FROM saved)
)
SELECT count(*) FROM saved"""
_SAVE_STEP: Final = (
    """WITH saved AS (
    UPDATE vlens_queue_applicants SET state = %(state)s,
    snapshot = coalesce(%(snapshot)s, snapshot), attempts = attempts + %(count)s,
    updated_at = %(now)s
"""
    + _WHERE
    + _ATTEMPTS
)
# The inputs (the manifest row, with the name check value) are kept only for `retry`.
_FINISH: Final = (
    """WITH saved AS (
    UPDATE vlens_queue_applicants SET status = 'done', state = %(state)s,
    snapshot = coalesce(%(snapshot)s, snapshot), attempts = attempts + %(count)s,
    outcome = %(outcome)s, error_key = %(error_key)s, result = %(result)s,
    updated_at = %(now)s, finished_at = %(now)s,
    inputs = CASE WHEN %(outcome)s = 'error' THEN inputs END
"""
    + _WHERE
    + _ATTEMPTS
)
