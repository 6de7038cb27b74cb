"""One applicant's run: restore or start its transaction, then front, back and liveness, each
retried on transient failures and journaled before the next begins."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .._classify import is_fatal, is_transient
from .._retrying import plan_delay
from ..config import RetryPolicy
from ..errors import APIError, FlowError, ImageError
from ..flow import FlowState, Step, StepStatus, Transaction, error_type_name
from ..models import VerificationResponse
from ._context import JobContext, Stopped, Superseded
from ._inputs import ApplicantImages
from ._journal import Claim, ClaimKind
from ._manifest import BulkApplicant
from ._metered import MeteredClient
from ._outcome import error_message, outcome_for, service_flags

__all__ = ["ApplicantRun"]

logger: Final = logging.getLogger("vlens_async")


class ApplicantRun:
    """One applicant's steps: restore or start the transaction, then front, back, liveness, each
    retried on transient failures and journaled before the next begins.

    All it knows of the job is ``context``: it reports its outcome through ``context.finished``
    and an error that must stop the job through ``context.halt``.
    """

    def __init__(self, context: JobContext, applicant: BulkApplicant, claim: Claim) -> None:
        self.context = context
        self.applicant = applicant
        self.claim = claim
        self.client = MeteredClient(context)
        self.images = ApplicantImages(applicant, context.executor, prepare=context.prepare)
        self.timings: dict[str, float] = {}
        self.failed_step: Step | None = None  # the step that ended the run with an error
        self.started = time.perf_counter()
        self.journal = context.journal

    def _transaction(self) -> Transaction:
        """The applicant's transaction: new, or restored from its journaled snapshot.

        An applicant whose journaled snapshot cannot be read or restored (damaged, of another
        version) raises :class:`~vlens_async.errors.FlowError`: it is recorded as an ``error``
        of its own, with its journaled state and transaction id in its results line, and the job
        goes on (it is not a job-wide failure: the command does not exit 2 for it). When such an
        applicant is tried again (``retry_errors``), its steps start over on its journaled
        transaction id, each sent again on that one server transaction, never a second one;
        unless its journaled state is COMPLETED or FAILED: that transaction is closed, so it
        stays an error (its verdict cannot be read back and the server takes no more steps on
        it).
        """
        try:
            return self._restored()
        except FlowError as exc:
            if self.claim.state in (FlowState.COMPLETED.value, FlowState.FAILED.value):
                raise FlowError(
                    f"{exc}; its transaction is {self.claim.state}, so it cannot be started over"
                ) from None
            if self.claim.kind is not ClaimKind.DONE:
                # Seen for the first time: an operator should know that its journal was damaged.
                raise FlowError(
                    f"{exc}; a bulk resume with --retry-errors (retry_errors=True) starts its"
                    " steps over on the same transaction"
                ) from None
            # A retry of errors (only then does a finished applicant run again): start over.
            return self._new_transaction()

    def _restored(self) -> Transaction:
        if self.claim.snapshot_error is not None:
            raise FlowError(self.claim.snapshot_error)
        snapshot = self.claim.snapshot
        if snapshot is None:
            return self._new_transaction()
        # The journal keeps no names: the manifest gives the name check back (and liveness is
        # given the front explicitly).
        tx = Transaction.restore(
            self.client,
            snapshot,
            name_check_value=self.applicant.name_check_value,
            prepare=self.context.prepare,
        )
        self.context.counters.resumed += 1
        return tx

    def _new_transaction(self) -> Transaction:
        # max_liveness_attempts=1: the job has one set of frames, so a verdict is final.
        return Transaction(
            self.client,
            self.claim.transaction_id,
            client_transaction_id=self.applicant.client_transaction_id,
            name_check_value=self.applicant.name_check_value,
            max_liveness_attempts=1,
            prepare=self.context.prepare,
        )

    async def run(self) -> None:
        """Run the applicant's remaining steps and journal where they end."""
        error: BaseException | None = None
        try:
            tx = self._transaction()
        except FlowError as exc:
            await self._finish(None, exc)
            return
        try:
            error = await self._steps(tx)
        except Superseded:
            raise
        except Stopped:
            # Every finished step is journaled; keep the failed attempts of this one too.
            await self._save_if_possible(tx)
            return
        finally:
            await self.images.close()
        if error is not None and is_fatal(error):
            # Not this applicant's fault: keep it pending for a resume and stop the job.
            await self._save_if_possible(tx)
            self.context.halt(f"{error_type_name(error)}: {error_message(error)}")
            return
        await self._finish(tx, error)

    async def _save(self, tx: Transaction) -> None:
        # The snapshot without personal data: the journal keeps no national ID or birth date,
        # only the cross-check's result.
        await self.journal.save_step(
            self.applicant.applicant_id,
            state=tx.state.value,
            snapshot=tx.snapshot(),
            attempts=self.client.take_attempts(),
        )

    async def _save_if_possible(self, tx: Transaction) -> None:
        """Journal the last attempts of an applicant left pending; if its snapshot cannot be
        taken, its last journaled step stands (a resume sends the rest again on the same
        transaction)."""
        try:
            await self._save(tx)
        except Superseded:
            raise
        except Exception as exc:
            self._unexpected("journal", exc)

    @staticmethod
    def _plan(tx: Transaction) -> list[Step]:
        return [s for s in Step if tx.steps[s].status is not StepStatus.SUCCEEDED]

    async def _steps(self, tx: Transaction) -> BaseException | None:
        """Send the steps not done yet, in order; the error that ended them, if one did."""
        if tx.state in (FlowState.COMPLETED, FlowState.FAILED):
            return None
        plan = self._plan(tx)
        self._start_images(plan)
        for step in plan:
            if self.context.stop.is_set:
                raise Stopped
            started = time.perf_counter()
            try:
                await self._step(tx, step)
            except (Stopped, Superseded):
                raise
            except Exception as exc:
                self.timings[step.value] = time.perf_counter() - started
                self.failed_step = step
                if not isinstance(exc, APIError | ImageError | FlowError):
                    self._unexpected(step.value, exc)
                return exc
            self.timings[step.value] = time.perf_counter() - started
            if step is not Step.LIVENESS:  # the last step is journaled with the result
                try:
                    await self._save(tx)
                except Superseded:
                    raise
                except Exception as exc:  # this applicant's data cannot be journaled
                    self.failed_step = step
                    self._unexpected(step.value, exc)
                    return exc
        return None

    def _start_images(self, plan: list[Step]) -> None:
        # Start reading what the remaining steps need; liveness sends the front again.
        if Step.FRONT in plan or Step.LIVENESS in plan:
            self.images.start("front")
        if Step.BACK in plan:
            self.images.start("back")
        if Step.LIVENESS in plan:
            self.images.start("faces")

    def _unexpected(self, where: str, exc: Exception) -> None:
        # Unforeseen trouble with this applicant alone: recorded as an error (a resume with
        # retry_errors tries again) rather than ending the whole job. The class only: the
        # message of an unknown error may name a file or a person.
        logger.error(
            "bulk: row %d failed unexpectedly in %s (%s); recorded as an error",
            self.applicant.row,
            where,
            type(exc).__name__,
        )

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
        policy = self.context.step_retry
        attempt = 0
        while True:
            attempt += 1
            await self.journal.hold(self.applicant.applicant_id)  # still ours: else nothing sent
            try:
                await send()
                return
            except APIError as exc:
                if tx.state is FlowState.FAILED or attempt >= policy.max_attempts:
                    raise
                if not _worth_retrying(exc, policy):
                    raise
                if self.context.stop.is_set:
                    raise Stopped from exc
                # The backoff ends early on stop(): a graceful stop must not wait out a
                # long Retry-After before the applicant is journaled.
                if await self.context.stop.sleep(plan_delay(attempt, exc, policy)):
                    raise Stopped from exc

    async def _finish(self, tx: Transaction | None, error: BaseException | None) -> None:
        attempts = self.client.take_attempts()
        try:
            result = self._result(tx, error)
            await self.journal.finish(
                self.applicant.applicant_id,
                state=result["state"] or self.claim.state,
                snapshot=None if tx is None else tx.snapshot(),
                attempts=attempts,
                result=result,
            )
        except Superseded:
            raise
        except Exception as exc:
            # This applicant's outcome cannot be journaled as it is (a snapshot that cannot be
            # taken, a value that cannot be encoded): an error, with the plainest line, and the
            # job goes on. If even that cannot be written, the journal itself fails: it raises.
            self._unexpected("journal", exc)
            result = self._result(None, exc)
            state = self.claim.state if tx is None else tx.state.value
            result["state"] = state
            await self.journal.finish(
                self.applicant.applicant_id, state=state, snapshot=None, attempts=[], result=result
            )
        if result["needs_review"]:
            self.context.counters.needs_review += 1
        self.context.finished(result["outcome"])

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
            "outcome": outcome_for(state, error, verified),
            # Without a transaction (its snapshot unreadable), the state the journal knows.
            "state": self.claim.state if state is None else state.value,
            "transaction_id": self.claim.transaction_id,
            "client_transaction_id": self.applicant.client_transaction_id,
            "validated": bool(outcome and outcome.validated),
            "verified": verified,
            # Verified is the service's word; AML, spoofing and the registry are checked apart.
            "needs_review": bool(outcome and outcome.needs_review),
            "error_type": None if error is None else error_type_name(error),
            "error_code": getattr(error, "error_code", None),
            "error_message": None if error is None else error_message(error),
            "failed_step": failed_step,
            "cross_check": [] if outcome is None else [f.value for f in outcome.cross_check],
            "service_flags": [] if outcome is None else service_flags(outcome.services),
            "attempts": self.claim.attempts + sum(self.client.counts.values()),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _worth_retrying(exc: APIError, policy: RetryPolicy) -> bool:
    """Whether the same step may pass if sent again on the same transaction.

    A throttle (429, code 4003) is always retried: it is the runner's to pace, and the metered
    client has already slowed the shared limiter down for it.
    """
    return is_transient(exc, policy.statuses, throttles=True)
