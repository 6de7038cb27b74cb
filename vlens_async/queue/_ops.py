"""``status``, ``export`` and ``retry``: reading and re-sending a run while it goes on."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import orjson

from ..bulk._journal import PENDING, check_output_path, export_line, same_file
from ..bulk._ratelimit import RateLimit
from ._app import job_for, make_app
from ._db import connect
from ._errors import QueueError
from ._schema import require_schema
from ._store import Conn, service_key

__all__ = ["RunStatus", "export", "retry", "status"]

_WINDOW = 60.0  # throughput over the last minute
_ALIVE = 30.0  # a worker whose heartbeat is younger than this is alive
_REQUESTS_PER_APPLICANT = 3  # front, back, liveness: what the rate limit allows per applicant
_BATCH = 1000


@attrs.frozen
class RunStatus:
    """Where a run stands: applicants by outcome (``pending`` for unfinished ones, ``invalid``
    for bad rows), total, flagged for review, the last minute's throughput (applicants per
    second), the estimated seconds left (None when nothing finished lately or no worker is
    alive; from the throughput, at most what the run's rate limit allows), the ``vlens queue
    work`` processes serving the run's service with a heartbeat in the last 30 s
    (``workers_alive``), procrastinate's worker loops alive on this database (``worker_loops``,
    up to four per process), and the run's jobs by procrastinate status."""

    run: str
    base_url: str
    total: int
    by_outcome: dict[str, int]
    needs_review: int
    throughput: float
    eta: float | None
    workers_alive: int
    jobs: dict[str, int]
    worker_loops: int = 0

    @property
    def pending(self) -> int:
        """Applicants not finished yet."""
        return self.by_outcome.get(PENDING, 0)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return {**attrs.asdict(self), "pending": self.pending}


async def _run_id(conn: Conn, run: str) -> tuple[int, str, str]:
    found = await _run(conn, run)
    return found[0], found[1], found[2]


async def _run(conn: Conn, run: str) -> tuple[int, str, str, str]:
    """The run's id, base URL, queue and rate limit; an unknown run is a QueueError."""
    row = await (
        await conn.execute(
            "SELECT id, base_url, queue, rate FROM vlens_queue_runs WHERE name = %s", (run,)
        )
    ).fetchone()
    if row is None:
        raise QueueError(f"no run named {run!r} in this database")
    return int(row[0]), str(row[1]), str(row[2]), str(row[3])


def _eta(pending: int, throughput: float, rate: str, workers: int) -> float | None:
    """Seconds left: at the last minute's throughput, capped by what the rate limit allows;
    unknown with no worker alive or nothing finished lately."""
    if pending == 0:
        return 0.0
    limit = RateLimit.parse(rate)
    per_second = [n for n in (limit.per_second, (limit.per_minute or 0) / 60) if n]
    if per_second:
        throughput = min(throughput, min(per_second) / _REQUESTS_PER_APPLICANT)
    if workers == 0 or throughput <= 0:
        return None
    return pending / throughput


async def status(db: str, run: str) -> RunStatus:
    """The run's counts, throughput, ETA and workers alive (works while it runs)."""
    async with connect(db) as conn:
        await require_schema(conn)
        run_id, base_url, queue, rate = await _run(conn, run)
        by_outcome: dict[str, int] = {}
        for outcome, n in await (
            await conn.execute(
                "SELECT coalesce(outcome, %s), count(*) FROM vlens_queue_applicants"
                " WHERE run = %s GROUP BY 1",
                (PENDING, run_id),
            )
        ).fetchall():
            by_outcome[str(outcome)] = int(n)
        invalid = await (
            await conn.execute("SELECT count(*) FROM vlens_queue_invalid WHERE run = %s", (run_id,))
        ).fetchone()
        if invalid and invalid[0]:
            by_outcome["invalid"] = by_outcome.get("invalid", 0) + int(invalid[0])
        review = await (
            await conn.execute(
                "SELECT count(*) FROM vlens_queue_applicants WHERE run = %s AND status = 'done'"
                " AND result::jsonb ->> 'needs_review' = 'true'",
                (run_id,),
            )
        ).fetchone()
        now = time.time()
        recent = await (
            await conn.execute(
                "SELECT count(*), min(finished_at) FROM vlens_queue_applicants"
                " WHERE run = %s AND finished_at > %s",
                (run_id, now - _WINDOW),
            )
        ).fetchone()
        alive = await (
            await conn.execute(
                "SELECT (SELECT count(*) FROM vlens_queue_workers WHERE service = %s"
                " AND last_heartbeat > now() - make_interval(secs => %s)),"
                " (SELECT count(*) FROM procrastinate_workers"
                " WHERE last_heartbeat > now() - make_interval(secs => %s))",
                (service_key(base_url), _ALIVE, _ALIVE),
            )
        ).fetchone()
        jobs = {
            str(s): int(n)
            for s, n in await (
                await conn.execute(
                    "SELECT status::text, count(*) FROM procrastinate_jobs"
                    " WHERE queue_name = %s AND (args ->> 'run')::bigint = %s GROUP BY 1",
                    (queue, run_id),
                )
            ).fetchall()
        }
    done_recently = int(recent[0]) if recent else 0
    span = now - float(recent[1]) if recent and recent[1] is not None else 0.0
    throughput = done_recently / max(span, 1.0) if done_recently else 0.0
    workers = int(alive[0]) if alive else 0
    return RunStatus(
        run=run,
        base_url=base_url,
        total=sum(by_outcome.values()),
        by_outcome=by_outcome,
        needs_review=int(review[0]) if review else 0,
        throughput=throughput,
        eta=_eta(by_outcome.get(PENDING, 0), throughput, rate, workers),
        workers_alive=workers,
        jobs=jobs,
        worker_loops=int(alive[1]) if alive else 0,
    )


async def export(db: str, run: str, out: str | os.PathLike[str]) -> int:
    """Write the run's results file (JSONL, ``vlens bulk``'s line schema, manifest order: an
    unfinished applicant as ``pending``, a bad row as ``invalid``); replaced atomically. Returns
    the number of lines."""
    path = Path(out)
    await asyncio.to_thread(check_output_path, path)
    async with connect(db) as conn:
        await require_schema(conn)
        run_id, _, _ = await _run_id(conn, run)
        await _check_export_target(conn, run, run_id, path)
        fd, tmp_name = await asyncio.to_thread(
            tempfile.mkstemp, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        tmp = Path(tmp_name)
        lines = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                async with conn.transaction(), conn.cursor(name="vlens_export") as cur:
                    await cur.execute(
                        "SELECT row, applicant_id, state, transaction_id, outcome, result, NULL"
                        " FROM vlens_queue_applicants WHERE run = %s UNION ALL"
                        " SELECT row, applicant_id, NULL, NULL, 'invalid', NULL, reason"
                        " FROM vlens_queue_invalid WHERE run = %s ORDER BY 1",
                        (run_id, run_id),
                    )
                    for _ in range(10**12):  # bounded by the run's rows
                        batch = await cur.fetchmany(_BATCH)
                        if not batch:
                            break
                        data = b"".join(orjson.dumps(export_line(*r)) + b"\n" for r in batch)
                        await asyncio.to_thread(fh.write, data)
                        lines += len(batch)
            await asyncio.to_thread(os.replace, tmp, path)
        except BaseException:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
            raise
    return lines


async def _check_export_target(conn: Conn, run: str, run_id: int, path: Path) -> None:
    """Refuse to replace the run's manifest, or a file that holds anything but this run's
    results (another run's, say), as ``vlens bulk`` refuses its ``--out``."""
    row = await (
        await conn.execute("SELECT manifest_path FROM vlens_queue_runs WHERE id = %s", (run_id,))
    ).fetchone()
    manifest = Path(str(row[0])) if row else None
    if manifest is not None and await asyncio.to_thread(same_file, path, manifest):
        raise QueueError(f"{path} is the run's manifest; it would be overwritten")
    first = await asyncio.to_thread(_first_line, path)
    if first is None:
        return
    try:
        line = orjson.loads(first)
        key = (int(line["row"]), line.get("transaction_id"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        key = None
    # The first line's row and transaction id (derived from the run's secret: no other run's).
    mine = (
        key is not None
        and await (
            await conn.execute(
                "SELECT 1 FROM vlens_queue_applicants WHERE run = %s AND row = %s"
                " AND transaction_id = %s UNION ALL SELECT 1 FROM vlens_queue_invalid"
                " WHERE run = %s AND row = %s AND %s::text IS NULL",
                (run_id, key[0], key[1], run_id, key[0], key[1]),
            )
        ).fetchone()
    )
    if not mine:
        raise QueueError(
            f"{path} holds something other than the results of run {run!r} (another run's?);"
            " give another path, or remove the file"
        )


def _first_line(path: Path) -> bytes | None:
    """The first line of an existing, non-empty file (at most 1 MiB of it), else None."""
    try:
        with path.open("rb") as fh:
            data = fh.readline(1024 * 1024)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return data.strip() or None


async def retry(db: str, run: str, *, failed: bool = True) -> int:
    """Send the run's transient failures (outcome ``error``) round again, each on its own
    transaction where it stopped; returns how many. ``failed`` must be True (the only kind)."""
    if not failed:
        raise QueueError("say which applicants to retry: --failed")
    async with connect(db) as conn:
        await require_schema(conn)
        run_id, _, queue = await _run_id(conn, run)
        app = make_app(db, max_size=2)
        async with conn.transaction():
            rows = await (
                await conn.execute(
                    "UPDATE vlens_queue_applicants SET status = 'active', outcome = NULL,"
                    " error_key = NULL, result = NULL, finished_at = NULL, updated_at = %s"
                    " WHERE run = %s AND status = 'done' AND outcome = 'error'"
                    " AND inputs IS NOT NULL RETURNING applicant_id",
                    (time.time(), run_id),
                )
            ).fetchall()
            ids = [str(r[0]) for r in rows]
            for start in range(0, len(ids), _BATCH):
                await app.job_manager.batch_defer_jobs_async(
                    [job_for(queue, run_id, a) for a in ids[start : start + _BATCH]],
                    connection=conn,
                )
    return len(ids)
