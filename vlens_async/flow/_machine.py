"""The verification state machine: states, events, and every transition, failures included.

Pure: no I/O, no clock, no client. :func:`transition` is the one guarded transition function;
:class:`~vlens_async.flow.Transaction` asks it before sending a step (is the step legal?) and
after the answer (where does the machine go?)::

    NEW ──front──► FRONT_SCANNED ──back───┐
     │                                    ├──► ID_SCANNED ──liveness──► COMPLETED
     └──back───► BACK_SCANNED ───front────┘

    any non-final state ──EXPIRED_OR_MISMATCHED──────────────────────► FAILED
    a side already done ──REJECTED (its rescan judged)───────────────► that side undone
    ID_SCANNED ──FRAMES_REJECTED──► ID_SCANNED, or FAILED on the last allowed attempt
    ID_SCANNED ──NOT_VERIFIED (the frames passed, the verification did not)──► FAILED
    (a verdict on liveness judges the frames when it is about them: a liveness, face or image
    code, or a 400/415 with no code; any other answer there is NO_VERDICT)
    any state ──NO_VERDICT (connection, 5xx, credentials, bundle)──► unchanged

A step is legal where :data:`_SUCCESS` has an edge for it; anything else raises a
:class:`~vlens_async.errors.FlowError` before anything is sent: a
:class:`~vlens_async.errors.TransactionClosedError` once COMPLETED or FAILED, a
:class:`~vlens_async.errors.StepOrderError` for liveness before both sides.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

import attrs

from .._classify import is_verdict
from ..errors import (
    APIError,
    BadRequestError,
    DocumentExpiredError,
    DocumentMismatchError,
    FaceError,
    ImageRejectedError,
    LivenessFailedError,
    StepOrderError,
    TransactionClosedError,
    UnsupportedMediaTypeError,
    VerificationFailedError,
)

__all__ = [
    "DEFAULT_MAX_LIVENESS_ATTEMPTS",
    "Event",
    "FlowState",
    "Position",
    "Step",
    "StepStatus",
    "event_for",
    "next_state",
    "transition",
]


DEFAULT_MAX_LIVENESS_ATTEMPTS: Final = 3


class FlowState(enum.StrEnum):
    """Where a :class:`~vlens_async.flow.Transaction` stands."""

    NEW = "NEW"
    FRONT_SCANNED = "FRONT_SCANNED"
    BACK_SCANNED = "BACK_SCANNED"
    ID_SCANNED = "ID_SCANNED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class Step(enum.StrEnum):
    """The three capture steps of a verification."""

    FRONT = "front"
    BACK = "back"
    LIVENESS = "liveness"


class StepStatus(enum.StrEnum):
    """The outcome of a step so far."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Event(enum.StrEnum):
    """What the answer to a step was, as far as the machine cares."""

    SUCCEEDED = "succeeded"
    EXPIRED_OR_MISMATCHED = "expired_or_mismatched"  # 3010, 3101: no new photo can help
    REJECTED = "rejected"  # a verdict against an ID side
    FRAMES_REJECTED = "frames_rejected"  # a verdict against the liveness frames
    NOT_VERIFIED = "not_verified"  # the frames passed; the verification itself did not
    NO_VERDICT = "no_verdict"  # nothing was decided: the step can simply be sent again


@attrs.frozen
class Position:
    """The machine's whole state: where it stands and how many liveness verdicts went against
    it (``max_liveness_attempts`` of them fail the transaction)."""

    state: FlowState = FlowState.NEW
    liveness_attempts: int = 0
    max_liveness_attempts: int = DEFAULT_MAX_LIVENESS_ATTEMPTS


# Success edges, rescans included; a (state, step) absent here is illegal.
_SUCCESS: Final[Mapping[tuple[FlowState, Step], FlowState]] = {
    (FlowState.NEW, Step.FRONT): FlowState.FRONT_SCANNED,
    (FlowState.NEW, Step.BACK): FlowState.BACK_SCANNED,
    (FlowState.FRONT_SCANNED, Step.FRONT): FlowState.FRONT_SCANNED,
    (FlowState.FRONT_SCANNED, Step.BACK): FlowState.ID_SCANNED,
    (FlowState.BACK_SCANNED, Step.BACK): FlowState.BACK_SCANNED,
    (FlowState.BACK_SCANNED, Step.FRONT): FlowState.ID_SCANNED,
    (FlowState.ID_SCANNED, Step.FRONT): FlowState.ID_SCANNED,
    (FlowState.ID_SCANNED, Step.BACK): FlowState.ID_SCANNED,
    (FlowState.ID_SCANNED, Step.LIVENESS): FlowState.COMPLETED,
}

# REJECTED on a side that was already done: the server replaced it with the failed rescan, so the
# side is no longer done. REJECTED on a side not yet done leaves the state as it was.
_WITHOUT_SIDE: Final[Mapping[tuple[FlowState, Step], FlowState]] = {
    (FlowState.FRONT_SCANNED, Step.FRONT): FlowState.NEW,
    (FlowState.BACK_SCANNED, Step.BACK): FlowState.NEW,
    (FlowState.ID_SCANNED, Step.FRONT): FlowState.BACK_SCANNED,
    (FlowState.ID_SCANNED, Step.BACK): FlowState.FRONT_SCANNED,
}

# Liveness answers that judge the frames, and so use up an attempt. Other errors on liveness
# (an ordering error, a bundle or generic error, say) say nothing about the frames.
_FRAME_VERDICTS: Final = (VerificationFailedError, FaceError, ImageRejectedError)
# A 400 or 415 judges the frames only when no error code says what it is about: the same code
# must count the same whichever failure style (HTTP status or 200) the tenant uses.
_FRAME_STATUSES: Final = (BadRequestError, UnsupportedMediaTypeError)


def event_for(step: Step, exc: BaseException | None) -> Event:
    """The :class:`Event` an answer stands for: ``exc`` is the step's error, None on success."""
    if exc is None:
        return Event.SUCCEEDED
    if isinstance(exc, DocumentExpiredError | DocumentMismatchError):
        return Event.EXPIRED_OR_MISMATCHED
    if step is not Step.LIVENESS:
        return Event.REJECTED if is_verdict(exc) else Event.NO_VERDICT
    if isinstance(exc, VerificationFailedError) and not isinstance(exc, LivenessFailedError):
        return Event.NOT_VERIFIED
    return Event.FRAMES_REJECTED if is_verdict(exc) and _judges_frames(exc) else Event.NO_VERDICT


def _judges_frames(exc: BaseException) -> bool:
    if isinstance(exc, _FRAME_VERDICTS):
        return True
    return isinstance(exc, _FRAME_STATUSES) and isinstance(exc, APIError) and not exc.error_code


def next_state(state: FlowState, step: Step) -> FlowState:
    """The guard: the state after ``step`` succeeds, or the refusal if it is illegal:
    :class:`TransactionClosedError` in COMPLETED or FAILED, :class:`StepOrderError` otherwise
    (liveness before both sides); both are :class:`FlowError`."""
    try:
        return _SUCCESS[(state, step)]
    except KeyError:
        pass
    if state in (FlowState.COMPLETED, FlowState.FAILED):
        raise TransactionClosedError(_refusal(state, step), state=state.value, step=step.value)
    raise StepOrderError(_refusal(state, step), state=state.value, step=step.value)


def transition(at: Position, step: Step, event: Event) -> Position:
    """Where the machine goes when ``step`` sent from ``at`` got ``event``: every edge.

    Raises :class:`FlowError` (see :func:`next_state`) for a step that is illegal in
    ``at.state``, whatever the event.
    """
    succeeded = next_state(at.state, step)
    if event is Event.SUCCEEDED:
        return attrs.evolve(at, state=succeeded)
    if event is Event.EXPIRED_OR_MISMATCHED:
        return attrs.evolve(at, state=FlowState.FAILED)
    if event is Event.REJECTED and step is not Step.LIVENESS:
        return attrs.evolve(at, state=_WITHOUT_SIDE.get((at.state, step), at.state))
    if event in (Event.FRAMES_REJECTED, Event.NOT_VERIFIED) and step is Step.LIVENESS:
        used = at.liveness_attempts + 1
        last = event is Event.NOT_VERIFIED or used >= at.max_liveness_attempts
        state = FlowState.FAILED if last else at.state
        return attrs.evolve(at, liveness_attempts=used, state=state)
    return at  # NO_VERDICT, or an event that cannot happen on this step


def _refusal(state: FlowState, step: Step) -> str:
    if state is FlowState.FAILED:
        return f"the transaction has failed; {step.value} is not allowed any more"
    if state is FlowState.COMPLETED:
        return f"the transaction is completed; {step.value} cannot be sent again"
    return f"{step.value} is not allowed in state {state.value}: scan both ID sides first"
