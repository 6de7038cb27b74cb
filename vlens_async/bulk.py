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
  the runner retries each step itself (transport errors, 5xx, 429, 4003, garbled bodies).
- **Journal**: the transaction id is journaled before the first request, and the flow's snapshot
  after every step, before the next one starts. A crash therefore costs at most the step in flight,
  which resume sends again *on the same transaction*: no applicant ever gets a second transaction,
  and no step whose result was journaled is sent again.
- **Stopping**: :meth:`BulkRunner.stop` (the first Ctrl-C or SIGTERM with
  :func:`handle_signals`) stops taking applicants and lets the ones in flight finish the step
  they are on and journal it (a flow still waiting for a rate-limit token gives up, as it has
  sent nothing); a second stops at once. Either way the journal is consistent and the results
  file is written.

Entry points for the command line: :func:`run_bulk`, :meth:`RateLimit.parse`,
:func:`make_progress`, :func:`format_summary`, :func:`handle_signals`, :func:`write_demo_manifest`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import functools
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from ._journal import (
    Claim,
    ClaimKind,
    Journal,
    LatencyStats,
    StepRecord,
)
from ._manifest import (
    BulkApplicant,
    InvalidRow,
    ManifestItem,
    count_manifest_rows,
    iter_manifest,
)
from ._ratelimit import DEFAULT_RATE_LIMIT, LimiterClosed, RateLimit, RateLimiter
from ._redact import redact
from ._report import (
    FAILED_OUTCOMES,
    BulkSummary,
    NullProgress,
    PlainProgress,
    ProgressReporter,
    ProgressStats,
    RichProgress,
    format_summary,
    make_progress,
)
from ._retrying import plan_delay
from .config import RetryPolicy
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BundleError,
    CompressionError,
    ConfigurationError,
    FlowError,
    FrameTimingError,
    IdenticalFramesError,
    ImageError,
    ImageTooLargeError,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    TooManyAttemptsError,
    UnsupportedImageError,
    VlensError,
)
from .flow import FlowState, Step, StepStatus, Transaction, error_type_name, is_verdict
from .images import (
    ImageInput,
    PreparedFaces,
    PreparedImage,
    prefer_throughput,
    prepare_document_sync,
    prepare_faces_sync,
)
from .models import Services, VerificationResponse

if TYPE_CHECKING:
    from .client import VlensClient

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SCENARIO_MIX",
    "DEFAULT_STEP_RETRY",
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
    "format_summary",
    "handle_signals",
    "make_progress",
    "read_manifest",
    "run_bulk",
    "write_demo_manifest",
]

DEFAULT_CONCURRENCY: Final = 16
# Each step is retried on transient failures up to this policy. More attempts than the client's
# default: a bulk job can afford to wait, and an applicant given up on costs an operator's time.
DEFAULT_STEP_RETRY: Final = RetryPolicy(max_attempts=6, initial=0.5, max_backoff=10.0)
_READ_BATCH: Final = 64
_TICK: Final = 1.0

# Worth another attempt of the same step on the same transaction: nothing was decided.
_TRANSIENT: Final = (
    APIConnectionError,
    ResponseDecodeError,
    RateLimitError,
    TooManyAttemptsError,
    InternalServerError,
    RequestTimeoutError,
)
# Wrong for every applicant alike (credentials, the tenant's bundle): stop the job instead of
# failing the whole manifest one applicant at a time.
_FATAL: Final = (AuthenticationError, PermissionDeniedError, BundleError)

_T = TypeVar("_T")
logger: Final = logging.getLogger("vlens_async")


# --- classification ---


def _is_throttle(exc: BaseException) -> bool:
    return isinstance(exc, RateLimitError | TooManyAttemptsError)


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, _FATAL) and not isinstance(exc, TooManyAttemptsError)


def _is_transient(exc: BaseException, policy: RetryPolicy) -> bool:
    if _is_fatal(exc):
        return False
    if isinstance(exc, TooManyAttemptsError):
        return True
    if is_verdict(exc):
        return False  # the answer to these images (a document or face code, even on a 5xx)
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, APIStatusError) and exc.status in policy.statuses


def _outcome_for(state: FlowState | None, error: BaseException | None, verified: bool) -> str:
    """The applicant's terminal outcome (see the README's table); ``state`` is None when there
    is no transaction (its journaled snapshot could not be restored)."""
    if state is None:
        return "error"
    if error is None and state is FlowState.COMPLETED:
        return "verified" if verified else "not_verified"
    if isinstance(error, IdenticalFramesError | FrameTimingError):
        return "rejected"  # the capture itself is unusable, as liveness would have said
    if isinstance(error, ImageError):
        return "invalid"  # a file we cannot read or shrink: the manifest needs fixing
    if state is FlowState.FAILED or (error is not None and is_verdict(error)):
        return "rejected"
    return "error"


# --- the per-applicant client: the one place every HTTP attempt passes ---


class _MeteredClient:
    """The flow's client for one applicant: takes a rate-limit token before every request,
    times it, feeds throttling signals back to the limiter, and keeps the attempts for the
    journal. It wraps a view of the real client whose own retries are off."""

    def __init__(self, client: VlensClient, runner: BulkRunner) -> None:
        self._client = client
        self._runner = runner
        self.attempts: list[StepRecord] = []
        self.counts: Counter[str] = Counter()

    async def _timed(self, step: Step, call: Callable[[], Awaitable[_T]]) -> _T:
        # The token is held until the answer is in: see _ratelimit for why that guarantees
        # the server never counts more than the limit.
        try:
            async with self._runner.limiter.slot():
                return await self._attempt(step, call)
        except LimiterClosed:
            raise _Stop from None  # stopping while queued for a token: nothing was sent

    async def _attempt(self, step: Step, call: Callable[[], Awaitable[_T]]) -> _T:
        self.counts[step.value] += 1
        self._runner._requests += 1
        started = time.perf_counter()
        try:
            result = await call()
        except APIError as exc:
            duration = time.perf_counter() - started
            if _is_throttle(exc):
                self._runner.limiter.throttled(exc.retry_after)
            self.attempts.append(
                StepRecord(
                    step.value,
                    self.counts[step.value],
                    False,
                    duration,
                    status=exc.status,
                    error_code=exc.error_code,
                    error_type=error_type_name(exc),
                )
            )
            raise
        self.attempts.append(
            StepRecord(step.value, self.counts[step.value], True, time.perf_counter() - started)
        )
        return result

    async def scan_id_front(self, image: ImageInput, **options: Any) -> VerificationResponse:
        """Send the ID front once."""
        return await self._timed(Step.FRONT, lambda: self._client.scan_id_front(image, **options))

    async def scan_id_back(self, image: ImageInput, **options: Any) -> VerificationResponse:
        """Send the ID back once."""
        return await self._timed(Step.BACK, lambda: self._client.scan_id_back(image, **options))

    async def check_liveness(
        self, faces: Sequence[ImageInput] | PreparedFaces, **options: Any
    ) -> VerificationResponse:
        """Send the liveness frames once."""
        return await self._timed(
            Step.LIVENESS, lambda: self._client.check_liveness(faces, **options)
        )

    def take_attempts(self) -> list[StepRecord]:
        """The attempts since the last call (for the next journal write)."""
        attempts, self.attempts = self.attempts, []
        return attempts


# --- image preparation for one applicant ---


class _Images:
    """Reads and prepares one applicant's images, each at most once, in the runner's own
    preprocessing threads.

    Started when the applicant's turn comes, so nothing is read for applicants still queued;
    the later images prepare while the earlier steps upload. Not in the loop's default executor:
    the client encodes request bodies there *after* a request took its rate-limit token, and
    queueing that behind seconds of Pillow work would bunch requests up at the server.
    """

    def __init__(
        self, applicant: BulkApplicant, executor: concurrent.futures.Executor, *, prepare: bool
    ) -> None:
        self._applicant = applicant
        self._executor = executor
        self._prepare = prepare
        self._futures: dict[str, asyncio.Future[Any]] = {}

    def start(self, *names: str) -> None:
        loop = asyncio.get_running_loop()
        a = self._applicant
        for name in names:
            if name in self._futures:
                continue
            job: Callable[[], object]
            if name == "faces" and self._prepare:
                job = functools.partial(prepare_faces_sync, *a.faces)
            elif name == "faces":
                job = functools.partial(_read_faces, a.faces)
            else:
                path = a.front if name == "front" else a.back
                reader = _prepare_side if self._prepare else _read_side
                job = functools.partial(reader, name, path)
            self._futures[name] = loop.run_in_executor(self._executor, job)

    async def document(self, name: str) -> PreparedImage | bytes:
        self.start(name)
        result = await self._futures[name]
        assert isinstance(result, PreparedImage | bytes)
        return result

    async def faces(self) -> PreparedFaces | tuple[bytes, bytes, bytes]:
        self.start("faces")
        result = await self._futures["faces"]
        assert isinstance(result, PreparedFaces | tuple)
        return result

    async def close(self) -> None:
        """Cancel what is not needed any more and collect every outcome (no unobserved errors)."""
        for future in self._futures.values():
            future.cancel()
        await asyncio.gather(*self._futures.values(), return_exceptions=True)


def _prepare_side(name: str, path: Path) -> PreparedImage:
    """Prepare one ID side (blocking; runs in a preprocessing thread)."""
    try:
        return prepare_document_sync(path)
    except (UnsupportedImageError, ImageTooLargeError, CompressionError) as exc:
        # Name the side, as prepare_faces names the frame; never the path (it may name a person).
        raise type(exc)(f"{name}: {exc.reason}") from exc


def _read_side(name: str, path: Path) -> bytes:
    """Read an image as it is, for ``prepare=False`` (blocking; runs in a preprocessing thread)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnsupportedImageError(f"{name}: cannot read the image file") from exc
    if not data:
        raise UnsupportedImageError(f"{name}: empty file")
    return data


def _read_faces(paths: tuple[Path, Path, Path]) -> tuple[bytes, bytes, bytes]:
    """Read the three frames as they are, for ``prepare=False``."""
    return (
        _read_side("face_1", paths[0]),
        _read_side("face_2", paths[1]),
        _read_side("face_3", paths[2]),
    )


# --- the runner ---


class _Stop(Exception):
    """Raised inside a worker when the runner is stopping between two steps."""


@attrs.define
class _Live:
    """Counters of the current run (bounded: one per outcome)."""

    started: float = attrs.field(factory=time.monotonic)
    by_outcome: Counter[str] = attrs.field(factory=Counter)
    skipped: int = 0
    resumed: int = 0
    total: int | None = None
    # Known from the journal before the manifest is read: the progress shows it from the start.
    skipped_before: int = 0

    def stats(self) -> ProgressStats:
        done = sum(self.by_outcome.values())
        failed = sum(n for o, n in self.by_outcome.items() if o in FAILED_OUTCOMES)
        return ProgressStats(
            done=done,
            failed=failed,
            skipped=max(self.skipped, self.skipped_before),
            total=self.total,
            elapsed=time.monotonic() - self.started,
            by_outcome=dict(self.by_outcome),
        )


class BulkRunner:
    """Verifies many applicants with bounded concurrency under one shared rate limit, journaling
    every step so that a crashed or stopped job resumes where it was.

    ``client`` is an open :class:`~vlens_async.VlensClient`. ``journal`` is the SQLite file
    (``None``: in memory, so no resume); with ``resume`` a journal from an earlier run is
    continued: finished applicants are skipped and the others continue from their last journaled
    step with the same transaction id (``retry_errors`` also gives applicants that ended in
    ``error`` another go). ``results`` is the JSONL file written at the end. ``step_retry``
    governs the runner's own retries of a step. Images are prepared in ``prepare_threads``
    threads (default: one less than the CPU count, at least 1); with ``prepare=False`` they are
    read and sent as they are (for scans known to be compliant: preprocessing verifies every
    image, which costs CPU even when it passes one through unchanged).
    """

    def __init__(
        self,
        client: VlensClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_limit: RateLimit = DEFAULT_RATE_LIMIT,
        journal: str | os.PathLike[str] | None = None,
        results: str | os.PathLike[str] | None = None,
        resume: bool = False,
        retry_errors: bool = False,
        step_retry: RetryPolicy = DEFAULT_STEP_RETRY,
        progress: ProgressReporter | None = None,
        total: int | None = None,
        limiter: RateLimiter | None = None,
        prepare: bool = True,
        prepare_threads: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        # The client's own retries would send requests the rate limiter never saw; and the
        # runner prepares images itself (once per applicant, not once per attempt).
        self._client = client.with_options(retry=RetryPolicy.disabled(), prepare_images=False)
        self.prepare = prepare
        self.concurrency = concurrency
        self.limiter = limiter or RateLimiter(rate_limit)
        self.journal_path = None if journal is None else Path(journal)
        self.results_path = None if results is None else Path(results)
        self.resume = resume
        self.retry_errors = retry_errors
        self.step_retry = step_retry
        self.progress: ProgressReporter = progress or NullProgress()
        self.total = total
        self._stopping = False
        self._stop_event = asyncio.Event()  # wakes the retry backoffs up on stop()
        self._stop_reason: str | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._hard_stopped = False
        self._stopped_by_error = False
        self._unread = False  # the manifest failed part-way: rows after it were never read
        self._requests = 0
        self._journal: Journal | None = None
        self._prepare_pool: concurrent.futures.ThreadPoolExecutor | None = None
        # One core is left to the event loop (sockets, base64, parsing, progress): with every
        # core busy preprocessing 12 MP scans, the loop's lag grows past 10 ms.
        self.prepare_threads = prepare_threads or max(1, (os.cpu_count() or 2) - 1)
        self._live = _Live()

    # --- control ---

    def stop(self, reason: str = "stopped") -> None:
        """Stop the job: the first call lets applicants in flight finish their current step and
        journal it; a second call cancels them at once. Safe from a signal handler."""
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason
            self._stop_event.set()
            self.limiter.close()
            return
        self._hard_stopped = True
        for task in self._workers:
            task.cancel()

    def _reading_failed(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopped_by_error = True
        self._unread = True

    @property
    def _interrupted(self) -> bool:
        return self._stopping or self._unread

    def _halt(self, reason: str) -> None:
        """Stop gracefully because of an error (bad credentials, an unreadable manifest).

        Unlike :meth:`stop`, never the hard stop however often it is called: several workers
        may hit the same error at once, and only the user's second signal cancels steps in flight.
        """
        if not self._stopping:
            self._stopped_by_error = True
            self.stop(reason)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if :meth:`stop` is called; True if it was."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_event.wait()
        return self._stopping

    # --- the job ---

    async def run(
        self,
        applicants: Iterable[ManifestItem] | AsyncIterable[ManifestItem] | str | os.PathLike[str],
    ) -> BulkSummary:
        """Verify every applicant (a :class:`BulkApplicant`, or an :class:`InvalidRow` to record)
        and return the summary. ``applicants`` is read lazily; a sync iterable is read in a
        worker thread, since reading a manifest does blocking file I/O. A path is read as a
        manifest (:func:`read_manifest`), never iterated character by character."""
        if isinstance(applicants, str | os.PathLike):
            applicants = read_manifest(applicants)
        journal = await Journal.open(self.journal_path, resume=self.resume)
        self._journal = journal
        retried = ("error",) if self.retry_errors else ()
        skipped = await journal.finished_before(excluding=retried) if self.resume else 0
        self._live = _Live(total=self.total, skipped_before=skipped)
        self._prepare_pool = concurrent.futures.ThreadPoolExecutor(
            self.prepare_threads, thread_name_prefix="vlens-bulk-images"
        )
        # Images one at a time would each take a second core for fidelity on grainy photos: the
        # core this job leaves to the event loop. Throughput first.
        with prefer_throughput():
            queue: asyncio.Queue[ManifestItem | None] = asyncio.Queue(maxsize=self.concurrency)
            self.progress.start(self.total, skipped=skipped)
            ticker = asyncio.create_task(self._tick())
            producer = asyncio.create_task(self._produce(applicants, queue))
            self._workers = [
                asyncio.create_task(self._work(queue)) for _ in range(self.concurrency)
            ]
            try:
                await asyncio.gather(*self._workers, return_exceptions=False)
            except asyncio.CancelledError:
                if not self._hard_stopped:
                    raise  # our caller cancelled us; clean up below and let it propagate
            finally:
                for task in (producer, ticker, *self._workers):
                    task.cancel()
                await asyncio.gather(producer, ticker, *self._workers, return_exceptions=True)
                # Queued preparations are dropped; one still running ends on its own.
                self._prepare_pool.shutdown(wait=False, cancel_futures=True)
                summary = await self._finish(journal)
        return summary

    async def _finish(self, journal: Journal) -> BulkSummary:
        # Shielded: even a hard stop writes the results file and closes the journal cleanly.
        async def finish() -> BulkSummary:
            try:
                if self.results_path is not None:
                    await journal.export_results(self.results_path)
                counts = await journal.counts()
                latency = await journal.latencies()
            finally:
                await journal.close(interrupted=self._interrupted)
            stats = self._live.stats()
            self.progress.close(stats)
            return BulkSummary(
                total=sum(counts.by_outcome.values()),
                by_outcome=counts.by_outcome,
                by_error=counts.by_error,
                processed=stats.done,
                skipped=self._live.skipped,
                resumed=self._live.resumed,
                elapsed=stats.elapsed,
                throughput=stats.rate,
                latency=latency,
                requests=self._requests,
                throttled=self.limiter.bucket.throttle_signals,
                rate_limit=str(self.limiter.limit),
                concurrency=self.concurrency,
                interrupted=self._interrupted,
                stop_reason=self._stop_reason,
                stopped_by_error=self._stopped_by_error,
                journal=None if self.journal_path is None else str(self.journal_path),
                results=None if self.results_path is None else str(self.results_path),
            )

        return await asyncio.shield(finish())

    async def _tick(self) -> None:
        # Keeps the rate and ETA moving while no applicant finishes.
        while True:
            await asyncio.sleep(_TICK)
            self.progress.update(self._live.stats())

    async def _produce(
        self,
        applicants: Iterable[ManifestItem] | AsyncIterable[ManifestItem],
        queue: asyncio.Queue[ManifestItem | None],
    ) -> None:
        cancelled = False
        try:
            async for item in _aiter(applicants):
                if self._stopping:
                    break
                await queue.put(item)  # blocks while every worker is busy: bounded memory
        except asyncio.CancelledError:
            cancelled = True  # run() is ending and cancels the workers too
            raise
        except Exception as exc:
            # The manifest became unreadable part-way (a reader that raises cannot give the
            # next row). The rows already read are still verified (the end markers come after
            # them), or a resume would stop at the same place with them still undone.
            self._reading_failed(f"cannot read the manifest: {_reading_error(exc)}")
        finally:
            # One end marker per worker, however reading ended, or they would wait for ever;
            # not once cancelled, when nobody is left to take them.
            if not cancelled:
                for _ in range(self.concurrency):
                    await queue.put(None)

    async def _work(self, queue: asyncio.Queue[ManifestItem | None]) -> None:
        while True:
            item = await queue.get()
            if item is None or self._stopping:
                return
            if isinstance(item, InvalidRow):
                await self._record_invalid(item)
                continue
            await self._applicant(item)

    async def _record_invalid(self, item: InvalidRow) -> None:
        assert self._journal is not None
        if await self._journal.record_invalid(item):
            self._count("invalid")

    def _count(self, outcome: str) -> None:
        self._live.by_outcome[outcome] += 1
        self.progress.update(self._live.stats())

    async def _applicant(self, applicant: BulkApplicant) -> None:
        assert self._journal is not None
        claim = await self._journal.claim(applicant)
        if claim.kind is ClaimKind.DUPLICATE:
            await self._record_invalid(
                InvalidRow(
                    applicant.row,
                    f"duplicate applicant_id (first seen at row {claim.first_row})",
                    applicant.applicant_id,
                )
            )
            return
        if claim.kind is ClaimKind.DONE and not (self.retry_errors and claim.outcome == "error"):
            # Finished in an earlier run: its results line is already in the journal.
            self._live.skipped += 1
            return
        await _ApplicantRun(self, applicant, claim).run()


class _ApplicantRun:
    """One applicant's steps: restore or start the transaction, then front, back, liveness, each
    retried on transient failures and journaled before the next begins."""

    def __init__(self, runner: BulkRunner, applicant: BulkApplicant, claim: Claim) -> None:
        self.runner = runner
        self.applicant = applicant
        self.claim = claim
        self.client = _MeteredClient(runner._client, runner)
        assert runner._prepare_pool is not None
        self.images = _Images(applicant, runner._prepare_pool, prepare=runner.prepare)
        self.timings: dict[str, float] = {}
        self.failed_step: Step | None = None  # the step that ended the run with an error
        self.started = time.perf_counter()
        assert runner._journal is not None
        self.journal = runner._journal

    def _transaction(self) -> Transaction:
        snapshot = self.claim.snapshot
        if snapshot is None:
            # max_liveness_attempts=1: the job has one set of frames, so a verdict is final.
            return Transaction(
                self.client,
                self.claim.transaction_id,
                client_transaction_id=self.applicant.client_transaction_id,
                name_check_value=self.applicant.name_check_value,
                max_liveness_attempts=1,
                prepare=self.runner.prepare,
            )
        self.runner._live.resumed += 1
        # The journal keeps no names; the manifest gives the name check back.
        restored = {
            **snapshot,
            "name_check_value": self.applicant.name_check_value,
            "prepare": self.runner.prepare,
        }
        return Transaction.restore(self.client, restored)

    async def run(self) -> None:
        error: BaseException | None = None
        try:
            tx = self._transaction()
        except FlowError as exc:
            await self._finish(None, exc)
            return
        try:
            error = await self._steps(tx)
        except _Stop:
            # Every finished step is journaled; keep the failed attempts of this one too.
            await self._save(tx)
            return
        finally:
            await self.images.close()
        if error is not None and _is_fatal(error):
            # Not this applicant's fault: keep it pending for a resume and stop the job.
            await self._save(tx)
            self.runner._halt(f"{error_type_name(error)}: {_error_message(error)}")
            return
        await self._finish(tx, error)

    async def _save(self, tx: Transaction) -> None:
        await self.journal.save_step(
            self.applicant.applicant_id,
            state=tx.state.value,
            snapshot=tx.snapshot(),
            steps=self.client.take_attempts(),
        )

    @staticmethod
    def _plan(tx: Transaction) -> list[Step]:
        return [s for s in Step if tx.steps[s].status is not StepStatus.SUCCEEDED]

    async def _steps(self, tx: Transaction) -> BaseException | None:
        if tx.state in (FlowState.COMPLETED, FlowState.FAILED):
            return None
        plan = self._plan(tx)
        # Start reading what the remaining steps need; liveness sends the front again.
        if Step.FRONT in plan or Step.LIVENESS in plan:
            self.images.start("front")
        if Step.BACK in plan:
            self.images.start("back")
        if Step.LIVENESS in plan:
            self.images.start("faces")
        for step in plan:
            if self.runner.stopping:
                raise _Stop
            started = time.perf_counter()
            try:
                await self._step(tx, step)
            except (APIError, ImageError, FlowError) as exc:
                self.timings[step.value] = time.perf_counter() - started
                self.failed_step = step
                return exc
            except _Stop:
                raise
            except Exception as exc:
                # Unforeseen trouble with this applicant alone: record it as an error (a resume
                # with retry_errors tries again) rather than end the whole job. The class only:
                # the message of an unknown error may name a file or a person.
                logger.error(
                    "bulk: row %d failed unexpectedly in %s (%s); recorded as an error",
                    self.applicant.row,
                    step.value,
                    type(exc).__name__,
                )
                self.timings[step.value] = time.perf_counter() - started
                self.failed_step = step
                return exc
            self.timings[step.value] = time.perf_counter() - started
            if step is not Step.LIVENESS:  # the last step is journaled with the result
                await self._save(tx)
        return None

    async def _step(self, tx: Transaction, step: Step) -> None:
        """One step, retried on transient failures with backoff (each attempt rate-limited)."""
        send: Callable[[], Awaitable[VerificationResponse]]
        if step is Step.LIVENESS:
            faces = await self.images.faces()
            front = await self.images.document("front")
            send = functools.partial(tx.check_liveness, faces, front)
        else:
            image = await self.images.document(step.value)
            send = functools.partial(tx.scan_front if step is Step.FRONT else tx.scan_back, image)
        # A hand-written loop rather than stamina: every attempt must pass the shared limiter
        # and be journaled, and stamina's testing switch (one attempt) would silently turn off
        # the retries that keep a faulty network from failing applicants.
        attempt = 0
        while True:
            attempt += 1
            try:
                await send()
                return
            except APIError as exc:
                if tx.state is FlowState.FAILED or attempt >= self.runner.step_retry.max_attempts:
                    raise
                if not _is_transient(exc, self.runner.step_retry):
                    raise
                if self.runner.stopping:
                    raise _Stop from exc
                # The backoff ends early on stop(): a graceful stop must not wait out a
                # long Retry-After before the applicant is journaled.
                delay = plan_delay(attempt, exc, self.runner.step_retry)
                if await self.runner._sleep_unless_stopped(delay):
                    raise _Stop from exc

    async def _finish(self, tx: Transaction | None, error: BaseException | None) -> None:
        result = self._result(tx, error)
        await self.journal.finish(
            self.applicant.applicant_id,
            state=result["state"],
            snapshot=None if tx is None else tx.snapshot(),
            steps=self.client.take_attempts(),
            result=result,
        )
        self.runner._count(result["outcome"])

    def _result(self, tx: Transaction | None, error: BaseException | None) -> dict[str, Any]:
        """The results-file line: outcome and flags, no personal data."""
        self.timings["total"] = time.perf_counter() - self.started
        outcome = None if tx is None else tx.result
        state = None if tx is None else tx.state
        error = error if error is not None else (None if outcome is None else outcome.error)
        # The step the flow recorded as failed, else the one an image or unexpected error
        # stopped (the flow records API answers only).
        failed_step = next(
            (s.value for s in Step if tx is not None and tx.steps[s].status is StepStatus.FAILED),
            None if self.failed_step is None else self.failed_step.value,
        )
        verified = bool(outcome and outcome.verified)
        return {
            "applicant_id": self.applicant.applicant_id,
            "row": self.applicant.row,
            "outcome": _outcome_for(state, error, verified),
            "state": None if state is None else state.value,
            "transaction_id": self.claim.transaction_id,
            "client_transaction_id": self.applicant.client_transaction_id,
            "validated": bool(outcome and outcome.validated),
            "verified": verified,
            "error_type": None if error is None else error_type_name(error),
            "error_code": getattr(error, "error_code", None),
            "error_message": None if error is None else _error_message(error),
            "failed_step": failed_step,
            "cross_check": [] if outcome is None else [f.value for f in outcome.cross_check],
            "service_flags": [] if outcome is None else _service_flags(outcome.services),
            "attempts": self.claim.attempts + sum(self.client.counts.values()),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _service_flags(services: Services | None) -> list[str]:
    """What the service flagged, as words an operator can filter on (no personal data)."""
    if services is None:
        return []
    flags = []
    if services.aml is not None and services.aml.aml_matched:
        flags.append("aml_matched")
    if services.spoofing is not None and services.spoofing.fake:
        flags.append("fake_document")
    if services.src is not None and services.src.is_valid is False:
        flags.append("src_invalid")
    if services.liveness is False:
        flags.append("liveness_failed")
    if services.validations:
        flags.append("validation_issues")
    return flags


def _reading_error(exc: BaseException) -> str:
    """Why the manifest could not be read, without its contents (a row may name a customer)."""
    if isinstance(exc, VlensError):
        return f"{error_type_name(exc)}: {redact(str(exc))}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


def _error_message(exc: BaseException) -> str:
    """Our own words for ``exc``, never the server's.

    The server's ``error_message`` is free text that may hold a customer's name, which
    :func:`redact` cannot recognise; the client builds an :class:`APIError`'s ``message`` from
    the method, path and a table of reasons, and our other errors from our own text. Anything
    else (a bug, an OS error naming a file) is told by its class only.
    """
    if isinstance(exc, APIError):
        return redact(exc.message)
    if isinstance(exc, VlensError):
        return redact(str(exc))
    return f"unexpected {type(exc).__name__}"


async def _aiter(items: Iterable[_T] | AsyncIterable[_T]) -> AsyncIterator[_T]:
    """Iterate either kind; a sync iterable is pulled in batches from a worker thread."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
        return
    iterator = iter(items)

    def batch() -> tuple[list[_T], Exception | None]:
        # The rows read before a failure are returned with it: they must not be lost.
        out: list[_T] = []
        try:
            for item in iterator:
                out.append(item)
                if len(out) >= _READ_BATCH:
                    break
        except Exception as exc:
            return out, exc
        return out, None

    while True:
        chunk, error = await asyncio.to_thread(batch)
        for item in chunk:
            yield item
        if error is not None:
            raise error
        if not chunk:
            return


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestItem]:
    """Read a manifest lazily (blocking; :class:`BulkRunner` pulls it from a thread).

    CSV (header required) or JSONL, one applicant per row: ``applicant_id``, ``front``, ``back``,
    ``face_1``, ``face_2``, ``face_3`` (paths relative to the manifest), optional
    ``name_check_value`` and ``client_transaction_id``. Bad rows come out as :class:`InvalidRow`.
    """
    return iter_manifest(path)


# --- entry points for the command line ---


async def run_bulk(
    client: VlensClient,
    manifest_path: str | os.PathLike[str],
    *,
    journal: str | os.PathLike[str] | None,
    out: str | os.PathLike[str] | None,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate_limit: RateLimit | str = DEFAULT_RATE_LIMIT,
    resume: bool = False,
    retry_errors: bool = False,
    prepare: bool = True,
    prepare_threads: int | None = None,
    progress: ProgressReporter | bool | None = True,
    signals: bool = True,
) -> BulkSummary:
    """Run a bulk job from a manifest file: what ``vlens bulk`` does.

    ``prepare=False`` sends the images as they are and ``prepare_threads`` sets how many
    threads preprocess them (see :class:`BulkRunner`).
    ``progress=True`` picks a rich bar on a terminal and plain lines otherwise (on stderr);
    ``False``/``None`` shows nothing; or pass a reporter. With ``signals`` the first Ctrl-C or
    SIGTERM stops gracefully and a second at once (see :func:`handle_signals`). Raises
    :class:`~vlens_async.errors.BulkInputError` when the manifest cannot be read at all or the
    journal is already used (and ``resume`` is not set).
    """
    manifest = Path(manifest_path)
    limit = RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit
    reporter: ProgressReporter
    if progress is True:
        reporter = make_progress()
    elif progress is False or progress is None:
        reporter = NullProgress()
    else:
        reporter = progress
    total = await asyncio.to_thread(count_manifest_rows, manifest)
    # Open the first rows here so that a missing file or a bad header fails before any work.
    rows = await asyncio.to_thread(iter_manifest, manifest)
    first = await asyncio.to_thread(next, rows, None)
    runner = BulkRunner(
        client,
        concurrency=concurrency,
        rate_limit=limit,
        journal=journal,
        results=out,
        resume=resume,
        retry_errors=retry_errors,
        prepare=prepare,
        prepare_threads=prepare_threads,
        progress=reporter,
        total=total,
    )
    with contextlib.ExitStack() as stack:
        if signals:
            stack.enter_context(handle_signals(runner))
        return await runner.run(_chain(first, rows))


def _chain(first: ManifestItem | None, rest: Iterator[ManifestItem]) -> Iterator[ManifestItem]:
    if first is not None:
        yield first
        yield from rest


@contextlib.contextmanager
def handle_signals(runner: BulkRunner) -> Iterator[None]:
    """While inside, SIGINT (Ctrl-C) and SIGTERM stop ``runner``: the first gracefully (no new
    applicants; those in flight finish their step and journal it), the second at once.

    Must be entered on the event loop's thread. Where the loop cannot take signal handlers
    (Windows), it does nothing and Ctrl-C raises ``KeyboardInterrupt`` as usual.
    """
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        runner.stop(f"{name} received")

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


# --- the demo ---

DEFAULT_SCENARIO_MIX: Final[Mapping[str, float]] = {
    "valid": 0.70,
    "expired": 0.05,
    "back_of_other_card": 0.05,
    "aml_watchlisted": 0.04,
    "photocopy": 0.04,
    "identical_frames": 0.04,
    "different_person": 0.04,
    "not_a_card": 0.04,
}


async def write_demo_manifest(
    folder: str | os.PathLike[str],
    count: int,
    seed: int = 0,
    scenarios_mix: Mapping[str, float] | None = None,
    *,
    threads: int | None = None,
) -> Path:
    """Write ``count`` synthetic applicants (``samples.make_applicant``) of mixed scenarios to
    ``folder`` with a ``manifest.csv``, and return the manifest's path (for ``vlens demo``).

    ``scenarios_mix`` maps scenario names to weights (default: mostly valid, a few of each
    failure). Deterministic for a seed. Images are drawn and written in ``threads`` worker
    threads (default: the CPU count), a bounded number at a time.
    """
    from . import samples

    mix = dict(scenarios_mix or DEFAULT_SCENARIO_MIX)
    unknown = set(mix) - set(samples.SCENARIOS)
    if unknown:
        raise ConfigurationError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if count < 0:
        raise ConfigurationError("count must not be negative")
    rng = random.Random(seed)
    names, weights = list(mix), list(mix.values())
    scenarios = [rng.choices(names, weights)[0] for _ in range(count)]
    root = Path(folder)
    await asyncio.to_thread(functools.partial(root.mkdir, parents=True, exist_ok=True))
    gate = asyncio.Semaphore(threads or os.cpu_count() or 2)

    def write_one(n: int, scenario: str) -> list[str]:
        applicant = samples.make_applicant(seed * 1_000_003 + n, scenario=scenario)
        name = f"applicant-{n:05d}"
        directory = root / name
        directory.mkdir(exist_ok=True)
        files = {"front": applicant.front, "back": applicant.back}
        files.update({f"face_{i + 1}": face for i, face in enumerate(applicant.faces)})
        for key, data in files.items():
            (directory / f"{key}.jpg").write_bytes(data)
        return [name, *(f"{name}/{key}.jpg" for key in files), "", f"demo-{scenario}-{n}"]

    async def one(n: int, scenario: str) -> list[str]:
        async with gate:
            return await asyncio.to_thread(write_one, n, scenario)

    rows = await asyncio.gather(*(one(n, s) for n, s in enumerate(scenarios)))
    manifest = root / "manifest.csv"

    def write_manifest() -> None:
        with manifest.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                [
                    "applicant_id",
                    "front",
                    "back",
                    "face_1",
                    "face_2",
                    "face_3",
                    "name_check_value",
                    "client_transaction_id",
                ]
            )
            writer.writerows(rows)

    await asyncio.to_thread(write_manifest)
    return manifest
