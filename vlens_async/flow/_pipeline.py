"""The pipelined :func:`verify`: the whole flow in one await, images prepared while others upload.

It drives a :class:`~vlens_async.flow.Transaction` through its public methods only, so anything
it does a caller could do step by step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs

from .. import _uploads
from .._telemetry import NO_TELEMETRY, FlowScope, telemetry_of
from ..config import NOT_GIVEN, NotGiven
from ..errors import APIError, FlowError, ImageError
from ..images import ImageInput, PreparedFaces, capture_spread, prefer_throughput
from ._machine import FlowState, Step, StepStatus
from ._outcome import VerificationOutcome
from ._transaction import DEFAULT_MAX_LIVENESS_ATTEMPTS, FlowClient, Transaction

__all__ = ["verify"]

_T = TypeVar("_T")


@attrs.define
class _Preparation:
    """Starts the preprocessing of all five images; each is awaited when its upload needs it.

    The front gets a head start: with five images decoded at once on a small machine, all of
    them finish late and the first upload waits for the slowest. Alone, the front has a core to
    itself, its upload starts sooner, and the back and the three frames are prepared while it
    travels, well before they are needed. Those four are prepared for throughput
    (:func:`~vlens_async.images.prefer_throughput`): each already has a core's worth of work, so
    a grainy back's second decoding thread would only slow the frames.
    """

    front: asyncio.Task[ImageInput]
    back: asyncio.Task[ImageInput]
    faces: asyncio.Task[Sequence[ImageInput] | PreparedFaces]

    @classmethod
    def start(
        cls,
        tx: Transaction,
        front: ImageInput,
        back: ImageInput,
        faces: Sequence[ImageInput] | PreparedFaces,
        capture_times: Sequence[float] | None,
    ) -> _Preparation:
        """Start preparing: the front at once, the back and the frames once it is ready."""
        first = asyncio.create_task(tx.prepare_side(Step.FRONT, front))
        with prefer_throughput():  # a task keeps the context it was created in
            back_task = asyncio.create_task(_after(first, lambda: tx.prepare_side(Step.BACK, back)))
            faces_task = asyncio.create_task(
                _after(first, lambda: tx.prepare_faces(faces, capture_times=capture_times))
            )
        return cls(first, back_task, faces_task)

    async def close(self) -> None:
        """Cancel what is left and wait for it, so no thread result is left unobserved."""
        tasks = (self.front, self.back, self.faces)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _after(first: asyncio.Task[Any], work: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``work`` once ``first`` has finished, however it finished."""
    await asyncio.wait({first})
    return await work()


async def _scan_sides(tx: Transaction, prep: _Preparation) -> None:
    """Upload whichever side is prepared first, then the other (skipping sides already done)."""
    pending = {
        step: task
        for step, task in ((Step.FRONT, prep.front), (Step.BACK, prep.back))
        if tx.steps[step].status is not StepStatus.SUCCEEDED
    }
    while pending:
        await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
        step = next(s for s, task in pending.items() if task.done())
        image = pending.pop(step).result()
        await (tx.scan_front(image) if step is Step.FRONT else tx.scan_back(image))


async def verify(
    client: FlowClient,
    front: ImageInput,
    back: ImageInput,
    faces: Sequence[ImageInput] | PreparedFaces,
    *,
    transaction: Transaction | None = None,
    transaction_id: str | None = None,
    client_transaction_id: str | None = None,
    name_check_value: str | None = None,
    capture_times: Sequence[float] | None = None,
    max_liveness_attempts: int = DEFAULT_MAX_LIVENESS_ATTEMPTS,
    prepare: bool | NotGiven = NOT_GIVEN,
    raise_on_failure: bool = False,
) -> VerificationOutcome:
    """Run the whole flow in one await, pipelined, and return its :class:`VerificationOutcome`.

    The front is prepared first and uploaded; the back and the three frames are prepared while it
    travels, the back follows, and liveness goes as soon as both sides succeeded and its frames
    are ready. Pass ``transaction`` to continue one (steps that succeeded are skipped).
    ``prepare`` not given follows the client's ``prepare_images``.

    A failure of the verification (an API, flow or image error) is reported in the outcome's
    ``error`` and ``state``; with ``raise_on_failure`` it is raised instead. ``faces`` that are
    not three frames raise :class:`~vlens_async.errors.FrameCountError` (a :class:`FlowError`),
    and ``capture_times`` that are not three times
    :class:`~vlens_async.errors.ConfigurationError`, at once, before anything is prepared or sent.
    """
    faces = _uploads.three_frames(faces)  # refused before anything is prepared or sent
    if capture_times is not None:
        capture_spread(capture_times)  # malformed times are refused before anything is sent
    tx = transaction or Transaction(
        client,
        transaction_id,
        client_transaction_id=client_transaction_id,
        name_check_value=name_check_value,
        max_liveness_attempts=max_liveness_attempts,
        prepare=prepare,
    )
    started = time.perf_counter()
    telemetry = telemetry_of(client)
    with telemetry.verification(transaction_id=tx.transaction_id) as scope:
        try:
            error = (
                None
                if tx.state in (FlowState.COMPLETED, FlowState.FAILED)
                else await _run(tx, front, back, faces, capture_times, raise_on_failure)
            )
        except BaseException:
            if telemetry is not NO_TELEMETRY:
                _report_raised(scope, tx)
            raise
        tx.record_timing("total", time.perf_counter() - started)
        outcome = tx.outcome(error)
        scope.result(_outcome_label(outcome), tx.state.value)
    return outcome


def _report_raised(scope: FlowScope, tx: Transaction) -> None:
    """Tell the scope how a ``verify()`` that raised left ``tx``. Never raises: the error on its
    way out is the caller's to see, not one from reading the outcome."""
    try:
        label = _outcome_label(tx.outcome())
    except Exception:  # the scope goes without a result rather than hide the error
        return
    scope.result(label, tx.state.value)


async def _run(
    tx: Transaction,
    front: ImageInput,
    back: ImageInput,
    faces: Sequence[ImageInput] | PreparedFaces,
    capture_times: Sequence[float] | None,
    raise_on_failure: bool,
) -> BaseException | None:
    """The flow's steps, pipelined; the error that stopped them, unless ``raise_on_failure``."""
    prep = _Preparation.start(tx, front, back, faces, capture_times)
    try:
        await _scan_sides(tx, prep)
        frames = await prep.faces
        # After a restore the transaction holds no front image: use the prepared one.
        id_front = await prep.front if tx.front_image is None else None
        await tx.check_liveness(frames, id_front, capture_times=capture_times)
    except (APIError, FlowError, ImageError) as exc:
        if raise_on_failure:
            raise
        return exc
    finally:
        await prep.close()
    return None


def _outcome_label(outcome: VerificationOutcome) -> str:
    """One word for an outcome, as telemetry counts it: ``verified``, ``needs_review``
    (verified, but AML, spoofing or the SRC check calls for a person), ``not_verified``
    (completed without the service's verification), ``failed``, or ``incomplete`` (not finished:
    frames to retake, or a failure with no verdict to try again)."""
    if outcome.state is FlowState.FAILED:
        return "failed"
    if outcome.state is not FlowState.COMPLETED:
        return "incomplete"
    if not outcome.verified:
        return "not_verified"
    return "needs_review" if outcome.needs_review else "verified"
