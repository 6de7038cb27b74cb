"""Bulk beyond one machine: a PostgreSQL job queue (procrastinate) with one tenant-wide rate
limit and one transaction per applicant across workers and crashes.

Needs the ``queue`` extra (``pip install 'vlens-async[queue]'``); ``import vlens_async`` never
imports this package. The same promises as :mod:`vlens_async.bulk`, which it reuses (the
manifest reader, the per-applicant run, the snapshot's allow-list, the results line):

- :func:`init` creates or upgrades the schema (procrastinate's migrations and ours, recorded);
  twice is harmless; a newer schema is refused.
- :func:`submit` reads a manifest as ``vlens bulk`` does and, in chunks, inserts applicants
  (each with its transaction id, derived from the run's secret as ``vlens bulk`` derives its
  from the journal's) and defers one job each in the same database transaction.
- :func:`run_worker` runs one worker; start any number on any machine. Every worker must reach
  the manifest's image files (a shared folder); a file it cannot read makes that applicant an
  ``error`` with a one-line reason (transient: ``retry`` continues it on the same
  transaction), not a crash. It says which service it serves, and refuses runs of another.
- :func:`status` (``workers_alive`` counts ``vlens queue work`` processes), :func:`export`
  (``vlens bulk``'s line schema, in manifest order) and
  :func:`retry` (the ``error`` outcomes round again).

A run is tied to the service it was submitted for: a worker serves only the runs of its own
client's service. Every request of every worker passes one rate limiter kept in PostgreSQL
(:mod:`._limiter`), counted as the bulk runner counts; a 429 or 4003 slows every worker.
Errors a user must fix are :class:`QueueError` (one line, nothing lost).
"""

from __future__ import annotations

from ._errors import QueueError
from ._ops import RunStatus, export, retry, status
from ._schema import init
from ._submit import SubmitResult, submit
from ._worker import Worker, WorkerSummary, run_worker

__all__ = [
    "QueueError",
    "RunStatus",
    "SubmitResult",
    "Worker",
    "WorkerSummary",
    "export",
    "init",
    "retry",
    "run_worker",
    "status",
    "submit",
]
