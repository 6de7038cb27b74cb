"""The procrastinate side: the app, the one task, its retry rule and a job per applicant.

One job per applicant (``run``, ``applicant``), on the queue of the run's service. A job that
ends with its applicant not finished (the worker is stopping, or a fatal error halted it) or that
is cancelled (a hard stop) is put back at once, to continue on the same transaction; a job left
``doing`` by a worker that died is put back by the other workers' sweep (:mod:`._worker`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision

__all__ = ["TASK_NAME", "Unfinished", "job_for", "make_app"]

TASK_NAME: Final = "vlens_verify_applicant"


class Unfinished(Exception):
    """The applicant's run ended before its outcome (a stop, or a fatal error): run it again."""


class _AgainWhenUnfinished(BaseRetryStrategy):
    """Put the job back at once when its applicant is not finished, however often: the
    journal, not the job's attempt count, says where the applicant stands."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        """Again for :class:`Unfinished`, a cancel or a shutdown's abort; never for others."""
        if isinstance(exception, Unfinished | asyncio.CancelledError | pexc.JobAborted):
            return RetryDecision(retry_in={"seconds": 0})
        return None


def make_app(
    db: str,
    task: Callable[..., Awaitable[None]] | None = None,
    *,
    max_size: int = 10,
    min_size: int = 1,
) -> procrastinate.App:
    """An app on ``db`` (a pool of ``min_size`` to ``max_size`` connections), with ``task``
    registered as the task that verifies one applicant (the submitter only defers jobs and
    needs none)."""
    connector = procrastinate.PsycopgConnector(
        conninfo=db, min_size=max(1, min(min_size, max_size)), max_size=max(2, max_size)
    )
    app = procrastinate.App(connector=connector)

    async def placeholder(**_: Any) -> None:  # pragma: no cover - never run
        raise Unfinished

    app.task(name=TASK_NAME, retry=_AgainWhenUnfinished())(task or placeholder)
    return app


def job_for(queue: str, run: int, applicant_id: str) -> Job:
    """The job that verifies one applicant of ``run``."""
    return Job(
        id=None,
        queue=queue,
        lock=None,
        queueing_lock=None,
        task_name=TASK_NAME,
        task_kwargs={"run": run, "applicant": applicant_id},
    )
