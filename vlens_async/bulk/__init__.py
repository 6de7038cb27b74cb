"""Bulk onboarding: verify many applicants from a manifest, bounded, rate-limited, journaled,
resumable, with progress and a report.

How a job runs::

    manifest ──(thread, lazily)──► bounded queue ──► N workers ──► flow steps ──► the service
                                                         │            ▲
                                                         │      one shared rate limiter
                                                         ▼
                                               journal (SQLite, own thread) ──► results JSONL

- **Memory** is proportional to the concurrency, never to the job: the manifest is read a few rows
  at a time into a queue of ``concurrency`` slots, ``concurrency`` workers take from it (no task
  per applicant), and results, timings and the set of ids seen live in the journal on disk.
- **Rate limit**: every HTTP request, retries included, holds a token of one
  :class:`RateLimiter` shared by all workers from before it is sent until a window after its
  answer; a 429 or code 4003 slows it down, then it recovers.
  So that retries pass the limiter too, the client's own retries are turned off for the job and
  the runner retries each step itself (transport errors, the retry policy's statuses, 429, 4003,
  bodies cut short; see :mod:`vlens_async._classify`).
- **Journal**: the transaction id is journaled before the first request, and the flow's snapshot
  after every step, before the next one starts. A crash therefore costs at most the step in flight,
  which resume sends again *on the same transaction*: no applicant ever gets a second transaction,
  and no step whose result was journaled is sent again.
- **Stopping**: :meth:`BulkRunner.stop` (the first Ctrl-C or SIGTERM with
  :func:`handle_signals`) stops taking applicants and lets the ones in flight finish the step
  they are on and journal it (a flow still waiting for a rate-limit token gives up, as it has
  sent nothing); a second stops at once. Either way the journal is consistent and the results
  file is written.

One module per concern:

- :mod:`._runner`: :class:`BulkRunner` (the workers, the queue, stopping), :func:`run_bulk`,
  :func:`handle_signals`, :func:`read_manifest`.
- :mod:`._context`: the one object a run hands each applicant's run (shared journal, limiter,
  retry policy, threads, counters, the stop signal, and how an applicant reports back).
- :mod:`._applicant`: one applicant's run: its transaction, its steps and their retries.
- :mod:`._metered`: the per-applicant client every HTTP attempt passes (limiter, timing, attempts).
- :mod:`._inputs`: one applicant's images, made ready (by ``_uploads``) in the runner's threads.
- :mod:`._outcome`: the outcome table and the words of a results line.
- :mod:`._manifest`: reading a CSV or JSONL manifest lazily, bad rows as :class:`InvalidRow`.
- :mod:`._ratelimit`: :class:`RateLimit` and the shared, adaptive :class:`RateLimiter`.
- :mod:`._journal`: the SQLite journal that resume reads.
- :mod:`._report`: progress reporters and :func:`format_summary`.
- :mod:`._demo`: :func:`write_demo_manifest` (synthetic applicants for ``vlens demo``).

Entry points for the command line: :func:`run_bulk`, :meth:`RateLimit.parse`,
:func:`make_progress`, :func:`format_summary`, :func:`handle_signals`, :func:`write_demo_manifest`.
"""

from __future__ import annotations

from ._demo import DEFAULT_SCENARIO_MIX, write_demo_manifest
from ._heap import frozen_heap
from ._journal import LatencyStats
from ._manifest import BulkApplicant, InvalidRow
from ._ratelimit import RateLimit, RateLimiter
from ._report import (
    BulkSummary,
    NullProgress,
    PlainProgress,
    ProgressReporter,
    ProgressStats,
    RichProgress,
    format_summary,
    make_progress,
)
from ._runner import (
    DEFAULT_CONCURRENCY,
    DEFAULT_STEP_RETRY,
    MAX_CONCURRENCY,
    BulkRunner,
    check_concurrency,
    handle_signals,
    read_manifest,
    run_bulk,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SCENARIO_MIX",
    "DEFAULT_STEP_RETRY",
    "MAX_CONCURRENCY",
    "BulkApplicant",
    "BulkRunner",
    "BulkSummary",
    "InvalidRow",
    "LatencyStats",
    "NullProgress",
    "PlainProgress",
    "ProgressReporter",
    "ProgressStats",
    "RateLimit",
    "RateLimiter",
    "RichProgress",
    "check_concurrency",
    "format_summary",
    "frozen_heap",
    "handle_signals",
    "make_progress",
    "read_manifest",
    "run_bulk",
    "write_demo_manifest",
]
