"""What a bulk job shares with each applicant's run, as one explicit object.

The runner builds one :class:`JobContext` per run and hands it to every :class:`ApplicantRun`
(and, through it, to the metered client): the shared journal, rate limiter, retry policy and
preprocessing threads, the run's counters, whether the job is stopping, and the two ways an
applicant reports back (its outcome, or an error that must stop the job). Nothing below the
runner reaches into the runner itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..config import RetryPolicy
from ._journal import AttemptRecord
from ._report import FAILED_OUTCOMES, ProgressStats

if TYPE_CHECKING:
    from ..client import VlensClient

__all__ = [
    "JobContext",
    "Limiter",
    "RunCounters",
    "StepJournal",
    "StopSignal",
    "Stopped",
    "Superseded",
]


class StepJournal(Protocol):
    """Where an applicant's run journals its steps: the bulk runner's SQLite
    :class:`~vlens_async.bulk._journal.Journal`, or another store with the same two writes (the
    PostgreSQL queue's)."""

    async def hold(self, applicant_id: str) -> None:
        """Before each attempt is sent: raise :class:`Superseded` when the applicant is no longer
        this run's (the queue's lease was taken by another worker)."""

    async def save_step(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
    ) -> None:
        """Journal one finished step: its attempts and the flow's snapshot after it."""

    async def finish(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any],
    ) -> None:
        """Journal the applicant's terminal outcome and its results line."""


class Limiter(Protocol):
    """What every attempt passes: the bulk runner's in-process
    :class:`~vlens_async.bulk._ratelimit.RateLimiter`, or a shared one with the same two calls."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold a token for the duration of one request (raises ``LimiterClosed`` on stop)."""

    def throttled(self, retry_after: float | None = None) -> None:
        """Report a throttling signal (HTTP 429 or code 4003) from the server."""


class Stopped(Exception):
    """Raised inside a worker when the job is stopping between two steps (or while a request
    waits for its rate-limit token): nothing more is sent for this applicant."""


class Superseded(Exception):
    """Raised by a journal that refuses a write because another worker holds the applicant now
    (the queue's: this one was stopped long enough for its job to be put back and taken). The
    applicant's run ends at once: nothing more is sent or written for it."""


class StopSignal:
    """Whether the job is stopping, and a sleep that a stop cuts short (so that a graceful stop
    never waits out a long backoff before the applicant is journaled)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def is_set(self) -> bool:
        """True once the job began to stop."""
        return self._event.is_set()

    def set(self) -> None:
        """The job is stopping: wake every :meth:`sleep` up."""
        self._event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the job stops meanwhile; True if it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        return self.is_set


@attrs.define
class RunCounters:
    """Counters of the current run (bounded: one per outcome)."""

    started: float = attrs.field(factory=time.monotonic)
    by_outcome: Counter[str] = attrs.field(factory=Counter)
    skipped: int = 0
    resumed: int = 0
    requests: int = 0  # HTTP attempts sent, retries included
    needs_review: int = 0  # finished applicants flagged for review (AML, spoofing, SRC)
    total: int | None = None
    # Known from the journal before the manifest is read: the progress shows it from the start.
    skipped_before: int = 0

    def stats(self) -> ProgressStats:
        """Where the run stands, for the progress reporter."""
        done = sum(self.by_outcome.values())
        failed = sum(n for o, n in self.by_outcome.items() if o in FAILED_OUTCOMES)
        return ProgressStats(
            done=done,
            failed=failed,
            skipped=max(self.skipped, self.skipped_before),
            total=self.total,
            elapsed=time.monotonic() - self.started,
            by_outcome=dict(self.by_outcome),
            needs_review=self.needs_review,
        )


@attrs.frozen
class JobContext:
    """Everything an applicant's run needs from its job, and how it reports back.

    ``client`` is a view of the caller's client with its own retries and preprocessing off (every
    attempt must pass ``limiter``; images are prepared once, in ``executor``). ``finished(outcome)``
    counts an applicant that reached its outcome; ``halt(reason)`` stops the job gracefully for an
    error that is nobody's fault in particular (refused credentials, say).
    """

    client: VlensClient
    journal: StepJournal
    limiter: Limiter
    step_retry: RetryPolicy
    prepare: bool
    executor: concurrent.futures.Executor
    counters: RunCounters
    stop: StopSignal
    finished: Callable[[str], None]
    halt: Callable[[str], None]
