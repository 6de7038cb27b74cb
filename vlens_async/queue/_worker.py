"""``run_worker``: one worker process of any number, on any machine.

It runs procrastinate's worker (four loops sharing the concurrency: each loop fetches one job
per query, one at a time) on the queue of its client's service (so it never takes a run
submitted for another service), and for each job an ``ApplicantRun`` (``bulk._applicant``)
exactly as ``vlens bulk`` runs an applicant, with a ``JobContext`` (``bulk._context``) whose
journal is PostgreSQL (:class:`~._store.PgJournal`) and whose limiter is the tenant-wide
:class:`~._limiter.PgRateLimiter`.

Services: a worker serves the runs submitted for its client's service only. It says which on
start; when jobs wait only for runs of other services it says so once (and again if that
changes), naming the runs and their services; with ``until_empty`` it stops: refused (an
error) when it finished nobody, else as usual once its own service's queue is empty.

Files: every worker must reach the manifest's image files. A file ``submit`` saw that this
worker cannot read is an ``error`` (transient: a shared folder missing on one machine), kept
for ``retry`` on the same transaction, not ``invalid`` as ``vlens bulk`` records it.

Crashes: procrastinate's workers send heartbeats; every worker also sweeps, under one advisory
lock so two sweeps never race, the jobs left ``doing`` by workers whose heartbeat stopped, and
puts them back. The applicant's journaled transaction id and snapshot make the next run of the
job continue on the same transaction; only the step in flight at the crash is sent again.

Stopping: :meth:`Worker.stop` (the first SIGTERM or Ctrl-C with ``handle_signals``) stops
taking jobs, lets the applicants in flight finish their step and journal it, and puts their jobs
back; a second call cancels them at once (their jobs are put back too, and the step in flight,
unjournaled, is sent again by whoever takes the job).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import procrastinate
import psycopg
import psycopg_pool

from ..bulk._applicant import ApplicantRun
from ..bulk._context import JobContext, RunCounters, StopSignal
from ..bulk._journal import AttemptRecord, ClaimKind
from ..bulk._manifest import FACE_COLUMNS, BulkApplicant
from ..bulk._runner import (
    DEFAULT_CONCURRENCY,
    DEFAULT_STEP_RETRY,
    check_concurrency,
    handle_signals,
)
from ..config import RetryPolicy
from ..errors import ConfigurationError
from ..images import prefer_throughput
from ..images._input import os_reason
from ._app import Unfinished, make_app
from ._db import connect, open_pool
from ._errors import QueueError
from ._limiter import PgRateLimiter
from ._schema import require_schema
from ._store import (
    Conn,
    LeaseLost,
    PgJournal,
    load_claim,
    queue_for,
    service_key,
    take_lease,
)

if TYPE_CHECKING:
    from ..client import VlensClient

__all__ = ["Worker", "WorkerSummary", "run_worker"]

logger: Final = logging.getLogger("vlens_async")
_SWEEP_LOCK: Final = 0x766C656E7377  # one sweep at a time, across every worker
_POOL_JOBS: Final = 12  # pool connections for the jobs, beyond the worker's own
_FETCHERS: Final = 4  # procrastinate worker loops per process (each fetches serially)
_NAMED: Final = 3  # runs of other services named in a refusal


def _split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal whole shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@attrs.frozen
class WorkerSummary:
    """What one worker did: applicants it finished by outcome, HTTP attempts, how it stopped."""

    by_outcome: dict[str, int]
    requests: int
    elapsed: float
    stop_reason: str | None
    stopped_by_error: bool

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return attrs.asdict(self)


class Worker:
    """One worker; see the module's docstring. Use :func:`run_worker` unless you need
    :meth:`stop` from your own code."""

    def __init__(
        self,
        db: str,
        client: VlensClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        until_empty: bool = False,
        step_retry: RetryPolicy = DEFAULT_STEP_RETRY,
        prepare_threads: int | None = None,
        heartbeat: float = 2.0,
        stalled_after: float = 15.0,
        poll: float = 1.0,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        check_concurrency(concurrency)
        if stalled_after <= 2 * heartbeat:
            raise ConfigurationError("stalled_after must be more than twice the heartbeat")
        self.db = db
        self._client = client.with_options(retry=RetryPolicy.disabled(), prepare_images=False)
        self.base_url = client.base_url
        self.queue = queue_for(client.base_url)
        self.concurrency = concurrency
        self.until_empty = until_empty
        self.step_retry = step_retry
        self.prepare_threads = prepare_threads or max(1, (os.cpu_count() or 2) - 1)
        self.heartbeat = heartbeat
        self.stalled_after = stalled_after
        self.poll = poll
        self.notice = notice or _log_notice
        self._hello = notice or _log_start
        self.counters = RunCounters()
        self._stop = StopSignal()
        self._stop_reason: str | None = None
        self._stopped_by_error = False
        self._loops: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[Any]] = set()
        self._contexts: dict[int, JobContext] = {}
        self._limiter: PgRateLimiter | None = None
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._worker_id: int | None = None

    # --- control ---

    def stop(self, reason: str = "stopped") -> None:
        """First call: take no more jobs, finish and journal the steps in flight. Second: cancel
        the applicants in flight at once. Safe from a signal handler."""
        if not self._stop.is_set:
            self._stop_reason = reason
            self._stop.set()
            if self._limiter is not None:
                self._limiter.close()
            self._end_loops()
            return
        for task in list(self._jobs):
            task.cancel()

    def _end_loops(self) -> None:
        """Ask procrastinate's loops to stop (each then waits for its jobs in flight)."""
        for loop in self._loops:
            loop.cancel()

    async def _wait_loops(self) -> None:
        """Wait until every loop has ended, each after its own jobs: never close the pool under
        a job still journaling. A loop's failure is raised; our caller's cancel ends them all."""
        try:
            _, running = await asyncio.wait(self._loops, return_when=asyncio.FIRST_EXCEPTION)
            if running:  # one loop failed: end the others too, each after its jobs
                self._end_loops()
                await asyncio.wait(running)
        except asyncio.CancelledError:
            self._end_loops()
            await asyncio.shield(asyncio.wait(self._loops))
            raise
        for loop in self._loops:
            error = None if loop.cancelled() else loop.exception()
            if error is not None:
                raise error

    def _halt(self, reason: str) -> None:
        if not self._stop.is_set:
            self._stopped_by_error = True
            self.stop(reason)

    def _finished(self, outcome: str) -> None:
        self.counters.by_outcome[outcome] += 1

    # --- the worker ---

    async def run(self) -> WorkerSummary:
        """Work until stopped (or, with ``until_empty``, until this service's queue has no job
        waiting or running); the summary."""
        async with connect(self.db) as conn:
            await require_schema(conn)
        # Connections are held for one statement or transaction at a time, never for a request:
        # a pool of a few more than the listener, the limiter's owner lock and the side tasks
        # serves any concurrency, opened at once (a pool grown one connection at a time makes
        # the first jobs queue for connections) and small enough for PostgreSQL's default
        # max_connections of 100 with several workers on it. The pool is ours, given to
        # procrastinate: its own checks every connection before each use (see open_pool).
        size = min(self.concurrency, _POOL_JOBS) + 6
        app = make_app(self.db, self._task)
        started = time.monotonic()
        self._pool = await open_pool(self.db, max_size=size, min_size=size)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._pool.close)
            stack.enter_context(_quiet_about_jobs_taken_over())
            await stack.enter_async_context(app.open_async(self._pool))
            self._limiter = await PgRateLimiter(self._pool, service_key(self.base_url)).open()
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.prepare_threads, thread_name_prefix="vlens-queue-images"
            )
            await self._register()
            stack.push_async_callback(self._unregister)
            self._hello(f"serving {service_key(self.base_url)} (the runs submitted for it only)")
            side: list[asyncio.Task[None]] = [
                asyncio.create_task(self._sweep(app)),
                asyncio.create_task(self._beat()),
                asyncio.create_task(self._watch()),
            ]
            try:
                with prefer_throughput():
                    # Several procrastinate loops share the concurrency: each fetches one job
                    # per query, one at a time, which alone caps a loop near 50 jobs a second.
                    shares = _split(self.concurrency, min(_FETCHERS, self.concurrency))
                    self._loops = [
                        asyncio.create_task(
                            app.run_worker_async(
                                queues=[self.queue],
                                concurrency=share,
                                wait=True,
                                install_signal_handlers=False,
                                update_heartbeat_interval=self.heartbeat,
                                stalled_worker_timeout=self.stalled_after,
                                fetch_job_polling_interval=self.poll,
                                abort_job_polling_interval=max(self.poll, 5.0),
                                delete_jobs="successful",
                            )
                        )
                        for share in shares
                    ]
                    if self._stop.is_set:
                        self._end_loops()
                    await self._wait_loops()
            finally:
                for task in side:
                    task.cancel()
                await asyncio.gather(*side, return_exceptions=True)
                await self._limiter.aclose()
                self._executor.shutdown(wait=False, cancel_futures=True)
        return WorkerSummary(
            by_outcome=dict(self.counters.by_outcome),
            requests=self.counters.requests,
            elapsed=time.monotonic() - started,
            stop_reason=self._stop_reason,
            stopped_by_error=self._stopped_by_error,
        )

    async def _context(self, run: int) -> JobContext:
        """The context of ``run``'s applicants in this worker (made once per run)."""
        found = self._contexts.get(run)
        if found is not None:
            return found
        assert self._pool is not None
        assert self._limiter is not None
        assert self._executor is not None
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT base_url, prepare FROM vlens_queue_runs WHERE id = %s", (run,)
                )
            ).fetchone()
        if row is None:
            raise QueueError(f"no run with id {run}")
        if service_key(row[0]) != service_key(self.base_url):
            raise QueueError(
                f"run {run} was submitted for {service_key(row[0])}; this worker talks to"
                f" {service_key(self.base_url)}"
            )
        context = JobContext(
            client=self._client,
            journal=PgJournal(self._pool, run),
            limiter=self._limiter,
            step_retry=self.step_retry,
            prepare=bool(row[1]),
            executor=self._executor,
            counters=self.counters,
            stop=self._stop,
            finished=self._finished,
            halt=self._halt,
        )
        self._contexts[run] = context
        return context

    async def _task(self, run: int, applicant: str) -> None:
        """The job: one applicant's remaining steps; raises :class:`Unfinished` when it stopped
        before its outcome (the job is then put back)."""
        me = asyncio.current_task()
        if me is not None:
            self._jobs.add(me)
        try:
            if self._stop.is_set:
                raise Unfinished
            context = await self._context(run)
            assert self._pool is not None
            async with self._pool.connection() as conn:
                lease = await take_lease(conn, run, applicant)  # before reading what it holds
                found = await load_claim(conn, run, applicant)
            if found is None:
                logger.error("queue: run %d has no applicant with this id; job dropped", run)
                return
            claim, who = found
            if claim.kind is ClaimKind.DONE or lease is None:  # None: finished meanwhile
                return
            if who is None:
                logger.error("queue: an applicant of run %d has no inputs; job dropped", run)
                return
            ended: list[str] = []
            assert isinstance(context.journal, PgJournal)  # this worker's context
            journal = _FileCheckingJournal(context.journal, who, lease)

            def finished(outcome: str) -> None:
                outcome = journal.outcome or outcome
                ended.append(outcome)
                self._finished(outcome)

            # The run reports its outcome once it is journaled; without one it stopped short.
            try:
                job = attrs.evolve(context, finished=finished, journal=journal)
                await ApplicantRun(job, who, claim).run()
            except psycopg.Error as exc:
                # The journal could not be written (the database went away, say): the job is
                # put back after a pause; its last journaled step stands.
                logger.error("queue: the journal failed (%s); job put back", type(exc).__name__)
                await asyncio.sleep(1.0)
                raise Unfinished from None
            except LeaseLost:
                # Stopped (paused, say) past stalled_after, its job put back and taken: the
                # applicant is another worker's now, and this one writes and sends nothing more.
                self.notice(
                    "an applicant was taken over by another worker while this one was"
                    " stopped; it lets it go"
                )
                return
            if not ended:
                raise Unfinished
        finally:
            if me is not None:
                self._jobs.discard(me)

    async def _sweep(self, app: procrastinate.App) -> None:
        """Put back the jobs of workers whose heartbeat stopped (one sweep at a time)."""
        assert self._pool is not None
        for _ in range(10**9):  # until cancelled with the worker
            await asyncio.sleep(self.heartbeat)
            try:
                async with self._pool.connection() as conn:
                    got = await (
                        await conn.execute("SELECT pg_try_advisory_lock(%s)", (_SWEEP_LOCK,))
                    ).fetchone()
                    if not (got and got[0]):
                        continue
                    try:
                        stalled = await app.job_manager.get_stalled_jobs(
                            queue=self.queue, seconds_since_heartbeat=self.stalled_after
                        )
                        put_back = 0
                        for job in stalled:
                            with contextlib.suppress(procrastinate.exceptions.ConnectorException):
                                await app.job_manager.retry_job(job)
                                put_back += 1
                        if put_back:
                            self.notice(
                                f"{put_back} job{'s' if put_back > 1 else ''} of a stopped worker"
                                f" {'were' if put_back > 1 else 'was'} put back"
                            )
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (_SWEEP_LOCK,))
            except psycopg.Error as exc:
                self.notice(f"the sweep failed ({type(exc).__name__}); it runs again")

    async def _register(self) -> None:
        """This process's row in ``vlens_queue_workers`` (what ``status`` counts)."""
        assert self._pool is not None
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    "INSERT INTO vlens_queue_workers (service, started_at) VALUES (%s, %s)"
                    " RETURNING id",
                    (service_key(self.base_url), time.time()),
                )
            ).fetchone()
        self._worker_id = None if row is None else int(row[0])

    async def _unregister(self) -> None:
        assert self._pool is not None
        with contextlib.suppress(psycopg.Error):
            async with self._pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM vlens_queue_workers WHERE id = %s", (self._worker_id,)
                )

    async def _beat(self) -> None:
        """This process's heartbeat; rows of workers gone for an hour are dropped."""
        assert self._pool is not None
        for _ in range(10**9):  # until cancelled with the worker
            await asyncio.sleep(self.heartbeat)
            with contextlib.suppress(psycopg.Error):
                async with self._pool.connection() as conn:
                    await conn.execute(
                        "UPDATE vlens_queue_workers SET last_heartbeat = now() WHERE id = %s",
                        (self._worker_id,),
                    )
                    await conn.execute(
                        "DELETE FROM vlens_queue_workers"
                        " WHERE last_heartbeat < now() - interval '1 hour'"
                    )

    async def _watch(self) -> None:
        """Say when the jobs waiting are only for runs of other services (once, and again when
        that changes); with ``until_empty``, stop once this service's queue has had nothing
        waiting or running for two polls: refused (stopped by an error) if other services' runs
        wait and this worker finished nobody."""
        assert self._pool is not None
        empty = 0
        said: str | None = None
        for _ in range(10**9):  # until the queue is empty or cancelled
            await asyncio.sleep(self.poll / 2)
            async with self._pool.connection() as conn:
                mine, others = await _waiting(conn, self.queue)
            empty = empty + 1 if mine == 0 else 0
            refusal = _refusal(others, self.base_url) if mine == 0 and others else None
            if self.until_empty and empty >= 2:
                if refusal is not None and not self.counters.by_outcome:
                    self._halt(refusal)  # it served nobody: the wrong service, most likely
                    return
                if refusal is not None:
                    self.notice(f"done; {refusal}")
                self._stop_reason = "the queue is empty"
                self._end_loops()
                return
            if refusal is not None and refusal != said and not self.until_empty:
                self.notice(f"waiting: {refusal}")
            said = refusal


def _log_notice(text: str) -> None:
    logger.warning("queue: %s", text)


def _log_start(text: str) -> None:
    logger.info("queue: %s", text)


async def _waiting(conn: Conn, queue: str) -> tuple[int, list[tuple[str, str]]]:
    """Jobs waiting or running on ``queue``, and the runs (name, base URL) of other services
    that have jobs waiting."""
    row = await (
        await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s"
            " AND status IN ('todo', 'doing')",
            (queue,),
        )
    ).fetchone()
    others = await (
        await conn.execute(
            "SELECT r.name, r.base_url FROM vlens_queue_runs r WHERE r.queue <> %s AND EXISTS"
            " (SELECT 1 FROM procrastinate_jobs j WHERE j.queue_name = r.queue"
            " AND j.status = 'todo' AND (j.args ->> 'run')::bigint = r.id)"
            " ORDER BY r.name LIMIT %s",
            (queue, _NAMED + 1),
        )
    ).fetchall()
    return (0 if row is None else int(row[0])), [(str(n), str(u)) for n, u in others]


def _refusal(others: Sequence[tuple[str, str]], base_url: str) -> str:
    """One line naming the runs of other services (never credentials: service keys only)."""
    named = [f"run {name} was submitted for {service_key(url)}" for name, url in others[:_NAMED]]
    more = ", and other runs" if len(others) > _NAMED else ""
    return f"refused: {', '.join(named)}{more}, this worker serves {service_key(base_url)}"


def _unreadable(applicant: BulkApplicant) -> str | None:
    """Why this worker cannot read one of the applicant's image files (by the image's name,
    with the OS error's kind, never the path), or None (blocking: run in a thread)."""
    names = ("front", "back", *FACE_COLUMNS)
    for name, path in zip(names, (applicant.front, applicant.back, *applicant.faces), strict=True):
        try:
            with Path(path).open("rb"):
                pass
        except (OSError, ValueError) as exc:
            return f"{name}: cannot read the image file ({os_reason(exc)})"
    return None


def _taken_over(context: Mapping[str, Any]) -> bool:
    """Whether an unhandled error is procrastinate failing to record a job's end because the job
    was put back and taken meanwhile (this worker was stopped past ``stalled_after``)."""
    exc = context.get("exception")
    cause = getattr(exc, "__cause__", None)
    return isinstance(cause, psycopg.errors.RaiseException) and "Job was not found" in str(cause)


@contextlib.contextmanager
def _quiet_about_jobs_taken_over() -> Iterator[None]:
    """procrastinate's task that records a job's end has no one to await it: when the job was
    taken over, asyncio would print its error as a traceback. The worker already said so in one
    line (:class:`LeaseLost`); any other unhandled error is reported as before."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _taken_over(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


class _FileCheckingJournal:
    """One applicant's journal: an ``invalid`` outcome while one of its files cannot be read
    here is journaled as an ``error`` instead (the file was there at submit: a missing shared
    folder, say), so ``retry --failed`` sends it round again on the same transaction."""

    def __init__(self, journal: PgJournal, applicant: BulkApplicant, lease: int) -> None:
        self._journal = journal
        self._applicant = applicant
        self._lease = lease  # this run's: a write after a takeover raises LeaseLost
        self.outcome: str | None = None  # the outcome journaled, when changed

    async def hold(self, applicant_id: str) -> None:
        """Raise :class:`LeaseLost` once another worker took the applicant over."""
        await self._journal.hold(applicant_id, lease=self._lease)

    async def save_step(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
    ) -> None:
        """As the journal's own, under this run's lease."""
        await self._journal.save_step(
            applicant_id, state=state, snapshot=snapshot, attempts=attempts, lease=self._lease
        )

    async def finish(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any],
    ) -> None:
        """As the journal's own; an unreadable file makes an ``error``."""
        if result.get("outcome") == "invalid":
            reason = await asyncio.to_thread(_unreadable, self._applicant)
            if reason is not None:
                self.outcome = "error"
                result = {**result, "outcome": "error", "error_message": reason}
        await self._journal.finish(
            applicant_id,
            state=state,
            snapshot=snapshot,
            attempts=attempts,
            result=result,
            lease=self._lease,
        )


async def run_worker(
    db: str,
    client: VlensClient,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    until_empty: bool = False,
    step_retry: RetryPolicy = DEFAULT_STEP_RETRY,
    prepare_threads: int | None = None,
    signals: bool = False,
    heartbeat: float = 2.0,
    stalled_after: float = 15.0,
    poll: float = 1.0,
    notice: Callable[[str], None] | None = None,
) -> WorkerSummary:
    """Run one worker with ``client`` (an open :class:`~vlens_async.VlensClient`; its
    ``base_url`` picks the runs it serves) until stopped, or with ``until_empty`` until the
    queue of its service is empty. With ``signals``, the first SIGINT/SIGTERM stops gracefully
    and a second at once (see :class:`Worker`). ``heartbeat`` and ``stalled_after`` (seconds)
    set how soon a dead worker's jobs are taken over. ``notice`` receives the worker's one-line
    notices (the service it serves, runs it refuses, jobs put back); by default they are logged
    as warnings."""
    worker = Worker(
        db,
        client,
        concurrency=concurrency,
        until_empty=until_empty,
        step_retry=step_retry,
        prepare_threads=prepare_threads,
        heartbeat=heartbeat,
        stalled_after=stalled_after,
        poll=poll,
        notice=notice,
    )
    with contextlib.ExitStack() as stack:
        if signals:
            stack.enter_context(handle_signals(worker))
        return await worker.run()
