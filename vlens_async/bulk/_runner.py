"""The bulk job: a bounded pool of workers fed lazily from the manifest, under one rate limiter,
journaling every step; stopping on a signal, and the entry points the command line calls.

How a job runs::

    manifest ──(thread, lazily)──► bounded queue ──► N workers ──► ApplicantRun ──► the service
                                                         │                ▲
                                                         │      one shared rate limiter
                                                         ▼
                                               journal (SQLite, own thread) ──► results JSONL
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import attrs

from .._redact import redact
from ..config import RetryPolicy
from ..errors import BulkInputError, ConfigurationError, JournalError, VlensError
from ..flow import error_type_name
from ..images import prefer_throughput
from ._applicant import ApplicantRun
from ._context import JobContext, RunCounters, StopSignal
from ._journal import (
    ClaimKind,
    JobIdentity,
    Journal,
    check_output_path,
    manifest_digest,
    same_file,
)
from ._manifest import BulkApplicant, InvalidRow, ManifestItem, count_manifest_rows, iter_manifest
from ._ratelimit import DEFAULT_RATE_LIMIT, RateLimit, RateLimiter
from ._report import BulkSummary, NullProgress, ProgressReporter, make_progress

if TYPE_CHECKING:
    from ..client import VlensClient

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_STEP_RETRY",
    "MAX_CONCURRENCY",
    "BulkRunner",
    "check_concurrency",
    "handle_signals",
    "read_manifest",
    "run_bulk",
]

DEFAULT_CONCURRENCY: Final = 16
# A task per slot is made up front, so the bound is memory's; past 100, applicants wait for the
# client's connections anyway (its connector_limit).
MAX_CONCURRENCY: Final = 1000


def check_concurrency(value: int) -> int:
    """``value`` when it is a whole number from 1 to :data:`MAX_CONCURRENCY`; else
    :class:`~vlens_async.errors.ConfigurationError` (the bulk runner's and the queue worker's)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise ConfigurationError(
            f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {value!r}"
        )
    return value


# Each step is retried on transient failures up to this policy. More attempts than the client's
# default: a bulk job can afford to wait, and an applicant given up on costs an operator's time.
DEFAULT_STEP_RETRY: Final = RetryPolicy(max_attempts=6, initial=0.5, max_backoff=10.0)
_READ_BATCH: Final = 64
logger: Final = logging.getLogger("vlens_async")
_TICK: Final = 1.0

_T = TypeVar("_T")


class BulkRunner:
    """Verifies many applicants with bounded concurrency under one shared rate limit, journaling
    every step so that a crashed or stopped job resumes where it was.

    ``client`` is an open :class:`~vlens_async.VlensClient`. ``journal`` is the SQLite file
    (``None``: in memory, so no resume); with ``resume`` a journal from an earlier run is
    continued: finished applicants are skipped and the others continue from their last journaled
    step with the same transaction id (``retry_errors`` also gives applicants that ended in
    ``error`` another go). The journal records the client's ``base_url`` and the manifest's path
    and digest; a resume with another service or manifest, or of a file that is no journal it
    recognises, is refused (:class:`~vlens_async.errors.JournalError`) before anything is sent,
    and so is a journal file with more than one hard link. Transaction ids are derived from the
    applicant id and a secret the journal keeps, so an applicant claimed again (its claim lost
    with the journal's write-ahead log) gets the same one.
    ``results`` is the JSONL file written at the end; a results path that is a folder, in a
    folder that does not exist, or the manifest itself, is refused before anything is sent
    (:class:`~vlens_async.errors.BulkInputError`). ``step_retry``
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
        check_concurrency(concurrency)
        # The client's own retries would send requests the rate limiter never saw; and the
        # runner prepares images itself (once per applicant, not once per attempt).
        self._client = client.with_options(retry=RetryPolicy.disabled(), prepare_images=False)
        self.base_url: str = client.base_url  # recorded in the journal; a resume must match it
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
        self._stop = StopSignal()  # also wakes the retry backoffs up on stop()
        self._stop_reason: str | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._hard_stopped = False
        self._stopped_by_error = False
        self._unread = False  # the manifest failed part-way: rows after it were never read
        self._rows_read = 0  # rows this run took from the manifest
        self._read_all = False  # ... and whether it read to the manifest's end
        # One core is left to the event loop (sockets, base64, parsing, progress): with every
        # core busy preprocessing 12 MP scans, the loop's lag grows past 10 ms.
        self.prepare_threads = prepare_threads or max(1, (os.cpu_count() or 2) - 1)
        self._counters = RunCounters()

    # --- control ---

    def stop(self, reason: str = "stopped") -> None:
        """Stop the job: the first call lets applicants in flight finish their current step and
        journal it; a second call cancels them at once. Safe from a signal handler."""
        if not self._stop.is_set:
            self._stop_reason = reason
            self._stop.set()
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
        return self._stop.is_set or self._unread

    def _halt(self, reason: str) -> None:
        """Stop gracefully because of an error (bad credentials, an unreadable manifest).

        Unlike :meth:`stop`, never the hard stop however often it is called: several workers
        may hit the same error at once, and only the user's second signal cancels steps in flight.
        """
        if not self._stop.is_set:
            self._stopped_by_error = True
            self.stop(reason)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set

    # --- the job ---

    async def run(
        self,
        applicants: Iterable[ManifestItem] | AsyncIterable[ManifestItem] | str | os.PathLike[str],
        *,
        manifest: str | os.PathLike[str] | None = None,
    ) -> BulkSummary:
        """Verify every applicant (a :class:`BulkApplicant`, or an :class:`InvalidRow` to record)
        and return the summary. ``applicants`` is read lazily; a sync iterable is read in a
        worker thread, since reading a manifest does blocking file I/O. A path is read as a
        manifest (:func:`read_manifest`), never iterated character by character. ``manifest``
        names the file an iterable of applicants comes from (for the journal's record of it).

        The results and journal paths, the manifest's identity and the journal are checked
        before the first request: a refusal raises and sends nothing.
        """
        total = self.total
        if isinstance(applicants, str | os.PathLike):
            manifest = applicants
            applicants = read_manifest(applicants)
            if total is None:  # a file can be counted: a stopped job then says what it left
                total = await asyncio.to_thread(count_manifest_rows, manifest)
        identity = await asyncio.to_thread(self._identity, manifest)
        journal = await Journal.open(self.journal_path, resume=self.resume, identity=identity)
        # From here on the journal is closed whatever happens (a cancellation, a reporter that
        # raises): left open, it would stay locked for the rest of the process.
        started = False
        tasks: list[asyncio.Task[None]] = []
        pool: concurrent.futures.ThreadPoolExecutor | None = None
        try:
            retried = ("error",) if self.retry_errors else ()
            skipped = await journal.finished_before(excluding=retried) if self.resume else 0
            self._counters = RunCounters(total=total, skipped_before=skipped)
            pool = concurrent.futures.ThreadPoolExecutor(
                self.prepare_threads, thread_name_prefix="vlens-bulk-images"
            )
            context = self._context(journal, pool)
            # Images one at a time would each take a second core for fidelity on grainy photos:
            # the core this job leaves to the event loop. Throughput first.
            with prefer_throughput():
                queue: asyncio.Queue[ManifestItem | None] = asyncio.Queue(maxsize=self.concurrency)
                self.progress.start(total, skipped=skipped)
                started = True
                tasks.append(asyncio.create_task(self._tick()))
                tasks.append(asyncio.create_task(self._produce(applicants, queue)))
                self._workers = [
                    asyncio.create_task(self._work(queue, context, journal))
                    for _ in range(self.concurrency)
                ]
                tasks.extend(self._workers)
            try:
                await asyncio.gather(*self._workers, return_exceptions=False)
            except asyncio.CancelledError:
                if not self._hard_stopped:
                    raise  # our caller cancelled us; clean up below and let it propagate
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if pool is not None:
                # Queued preparations are dropped; one still running ends on its own.
                pool.shutdown(wait=False, cancel_futures=True)
            if started:
                summary = await self._finish(journal)
            else:  # nothing was sent: nothing to export or report
                await asyncio.shield(journal.close(interrupted=True))
        return summary

    def _identity(self, manifest: str | os.PathLike[str] | None) -> JobIdentity:
        """Check the output paths and read the manifest's identity (blocking: in a thread)."""
        manifest_path = None if manifest is None else Path(manifest)
        journal, results = self.journal_path, self.results_path
        if journal is not None and manifest_path is not None and same_file(journal, manifest_path):
            raise JournalError(f"the journal path {self.journal_path} is the manifest")
        if results is not None:
            check_output_path(results, manifest=manifest_path, journal=journal)
        if manifest_path is None:
            return JobIdentity(self.base_url)
        try:
            path, digest = manifest_digest(manifest_path)
        except OSError as exc:
            raise BulkInputError(
                f"cannot read the manifest {manifest_path} ({exc.strerror or type(exc).__name__})"
            ) from None
        return JobIdentity(self.base_url, path, digest)

    def _context(self, journal: Journal, pool: concurrent.futures.Executor) -> JobContext:
        """What this run shares with each applicant's run (see :class:`JobContext`)."""
        return JobContext(
            client=self._client,
            journal=journal,
            limiter=self.limiter,
            step_retry=self.step_retry,
            prepare=self.prepare,
            executor=pool,
            counters=self._counters,
            stop=self._stop,
            finished=self._count,
            halt=self._halt,
        )

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
            rows, not_started, known = self._rows(sum(counts.by_outcome.values()))
            stats = attrs.evolve(
                self._counters.stats(), total=rows if known else None, stopped=self._interrupted
            )
            self.progress.close(stats)
            return BulkSummary(
                total=rows,
                not_started=not_started,
                total_known=known,
                by_outcome=counts.by_outcome,
                by_error=counts.by_error,
                needs_review=counts.needs_review,
                processed=stats.done,
                skipped=self._counters.skipped,
                resumed=self._counters.resumed,
                elapsed=stats.elapsed,
                throughput=stats.rate,
                latency=latency,
                requests=self._counters.requests,
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

    def _rows(self, reached: int) -> tuple[int, int, bool]:
        """The job's rows, how many of them no run has reached (``reached``: the rows the
        journal holds, over every run), and whether those are known. The rows are those read
        when this run read the whole manifest, else those counted before the job; an iterable
        of unknown length left unread tells nothing more than the rows reached."""
        if self._read_all:
            rows = self._rows_read
        elif self._counters.total is not None:
            rows = self._counters.total
        else:
            return reached, 0, False
        return max(rows, reached), max(0, rows - reached), True

    async def _tick(self) -> None:
        # Keeps the rate and ETA moving while no applicant finishes.
        while True:
            await asyncio.sleep(_TICK)
            self.progress.update(self._counters.stats())

    async def _produce(
        self,
        applicants: Iterable[ManifestItem] | AsyncIterable[ManifestItem],
        queue: asyncio.Queue[ManifestItem | None],
    ) -> None:
        cancelled = False
        try:
            async for item in _aiter(applicants):
                if self._stop.is_set:
                    break
                self._rows_read += 1
                await queue.put(item)  # blocks while every worker is busy: bounded memory
            else:
                self._read_all = True
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

    async def _work(
        self, queue: asyncio.Queue[ManifestItem | None], context: JobContext, journal: Journal
    ) -> None:
        while True:
            item = await queue.get()
            if item is None or self._stop.is_set:
                return
            try:
                if isinstance(item, InvalidRow):
                    await self._record_invalid(journal, item)
                    continue
                await self._applicant(context, journal, item)
            except Exception as exc:
                # An applicant's run records its own failures; what escapes it is the journal
                # failing to write at all (a full disk, say): stop gracefully, leaving the rest
                # pending for a resume, rather than abandon the job with a traceback. The class
                # only: the message may name a path.
                logger.error("bulk: the journal failed (%s); stopping", type(exc).__name__)
                self._halt(f"the journal failed: {type(exc).__name__}")
                return

    async def _record_invalid(self, journal: Journal, item: InvalidRow) -> None:
        if await journal.record_invalid(item):
            self._count("invalid")

    def _count(self, outcome: str) -> None:
        """One more applicant reached ``outcome`` in this run."""
        self._counters.by_outcome[outcome] += 1
        self.progress.update(self._counters.stats())

    async def _applicant(
        self, context: JobContext, journal: Journal, applicant: BulkApplicant
    ) -> None:
        if not applicant.applicant_id:  # its transaction id is derived from it (given in code)
            await self._record_invalid(
                journal, InvalidRow(applicant.row, "missing value(s) for applicant_id")
            )
            return
        claim = await journal.claim(applicant)
        if claim.kind is ClaimKind.DUPLICATE:
            await self._record_invalid(
                journal,
                InvalidRow(
                    applicant.row,
                    f"duplicate applicant_id (first seen at row {claim.first_row})",
                    applicant.applicant_id,
                ),
            )
            return
        if claim.kind is ClaimKind.DONE and not (self.retry_errors and claim.outcome == "error"):
            # Finished in an earlier run: its results line is already in the journal.
            self._counters.skipped += 1
            return
        await ApplicantRun(context, applicant, claim).run()


def _reading_error(exc: BaseException) -> str:
    """Why the manifest could not be read, without its contents (a row may name a customer)."""
    if isinstance(exc, VlensError):
        return f"{error_type_name(exc)}: {redact(str(exc))}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


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
    :class:`~vlens_async.errors.BulkInputError` before anything is sent when the manifest cannot
    be read at all or ``out`` cannot be written (a folder, a missing folder, the manifest), and
    :class:`~vlens_async.errors.JournalError` when the journal cannot be used as asked (in use,
    a file with more than one hard link, already used without ``resume``; with ``resume``: no
    journal it recognises, or one started against another service or manifest).
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
        return await runner.run(_chain(first, rows), manifest=manifest)


def _chain(first: ManifestItem | None, rest: Iterator[ManifestItem]) -> Iterator[ManifestItem]:
    if first is not None:
        yield first
        yield from rest


class _Stoppable(Protocol):
    """What :func:`handle_signals` stops: ``stop(reason)``, graceful first, at once the second
    time."""

    def stop(self, reason: str = ...) -> None:
        """Stop, saying why."""


@contextlib.contextmanager
def handle_signals(runner: _Stoppable) -> Iterator[None]:
    """While inside, SIGINT (Ctrl-C) and SIGTERM stop ``runner`` (a :class:`BulkRunner`, or
    anything with its ``stop(reason)``, such as a queue worker): the first gracefully (no new
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
