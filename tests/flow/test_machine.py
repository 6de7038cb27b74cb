"""The pure state machine (flow/_machine.py): every edge of ``transition`` and ``event_for``.

No client, no transaction: positions and events in, positions out. The tables below are written
out by hand from the diagram in the module docstring, not read from the module's own tables.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from vlens_async import errors
from vlens_async.errors import (
    APIConnectionError,
    APITimeoutError,
    FlowError,
    FrameCountError,
    IdenticalFramesError,
    LivenessFailedError,
    ResponseDecodeError,
    StepOrderError,
    TransactionClosedError,
    ValidationFailedError,
    VerificationFailedError,
)
from vlens_async.flow import _machine
from vlens_async.flow._machine import Event, FlowState, Position, Step, event_for, transition

NEW, FRONT, BACK, ID, DONE, FAILED = (
    FlowState.NEW,
    FlowState.FRONT_SCANNED,
    FlowState.BACK_SCANNED,
    FlowState.ID_SCANNED,
    FlowState.COMPLETED,
    FlowState.FAILED,
)

# Every legal (state, step) and where success takes it: the diagram, rescans included.
SUCCESS_EDGES: dict[tuple[FlowState, Step], FlowState] = {
    (NEW, Step.FRONT): FRONT,
    (NEW, Step.BACK): BACK,
    (FRONT, Step.FRONT): FRONT,
    (FRONT, Step.BACK): ID,
    (BACK, Step.BACK): BACK,
    (BACK, Step.FRONT): ID,
    (ID, Step.FRONT): ID,
    (ID, Step.BACK): ID,
    (ID, Step.LIVENESS): DONE,
}
LEGAL = sorted(SUCCESS_EDGES)
ILLEGAL = sorted(set(itertools.product(FlowState, Step)) - set(SUCCESS_EDGES))
SIDES = (Step.FRONT, Step.BACK)


def pair_id(pair: tuple[FlowState, Step]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


@pytest.mark.parametrize(("at", "step"), LEGAL, ids=map(pair_id, LEGAL))
def test_success_follows_each_edge_of_the_diagram(at: FlowState, step: Step) -> None:
    """SUCCEEDED takes each legal (state, step) to its state in the diagram, attempts kept."""
    before = Position(state=at, liveness_attempts=1, max_liveness_attempts=3)
    after = transition(before, step, Event.SUCCEEDED)
    assert after == Position(state=SUCCESS_EDGES[at, step], liveness_attempts=1)


@pytest.mark.parametrize("event", list(Event))
@pytest.mark.parametrize(("at", "step"), ILLEGAL, ids=map(pair_id, ILLEGAL))
def test_illegal_steps_raise_flow_error_whatever_the_event(
    at: FlowState, step: Step, event: Event
) -> None:
    """An illegal (state, step) raises its FlowError subclass (closed, or out of order) naming
    the state and step, for every event."""
    closed = at in (FlowState.COMPLETED, FlowState.FAILED)
    with pytest.raises(FlowError) as info:
        transition(Position(state=at), step, event)
    assert type(info.value) is (TransactionClosedError if closed else StepOrderError)
    assert (info.value.state, info.value.step) == (at.value, step.value)
    assert step.value in str(info.value)


@pytest.mark.parametrize(("at", "step"), ILLEGAL, ids=map(pair_id, ILLEGAL))
def test_next_state_refuses_the_same_pairs(at: FlowState, step: Step) -> None:
    """The guard next_state refuses exactly the illegal pairs transition refuses."""
    with pytest.raises(FlowError):
        _machine.next_state(at, step)


@pytest.mark.parametrize(("at", "step"), LEGAL, ids=map(pair_id, LEGAL))
def test_expired_or_mismatched_fails_from_every_non_final_state(at: FlowState, step: Step) -> None:
    """EXPIRED_OR_MISMATCHED (3010, 3101) on any legal step ends in FAILED; attempts unused."""
    after = transition(Position(state=at), step, Event.EXPIRED_OR_MISMATCHED)
    assert after == Position(state=FAILED, liveness_attempts=0)


@pytest.mark.parametrize(
    ("at", "step", "expected"),
    [
        (FRONT, Step.FRONT, NEW),
        (BACK, Step.BACK, NEW),
        (ID, Step.FRONT, BACK),
        (ID, Step.BACK, FRONT),
    ],
)
def test_rejected_rescan_undoes_the_side(at: FlowState, step: Step, expected: FlowState) -> None:
    """REJECTED on a side already done undoes that side (the server replaced it)."""
    before = Position(state=at, liveness_attempts=2)
    assert transition(before, step, Event.REJECTED) == Position(state=expected, liveness_attempts=2)


@pytest.mark.parametrize(
    ("at", "step"), [(NEW, Step.FRONT), (NEW, Step.BACK), (FRONT, Step.BACK), (BACK, Step.FRONT)]
)
def test_rejected_side_not_yet_done_leaves_the_state(at: FlowState, step: Step) -> None:
    """REJECTED on a side not yet done leaves the position as it was."""
    before = Position(state=at)
    assert transition(before, step, Event.REJECTED) == before


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 5])
def test_frames_rejected_counts_attempts_and_fails_on_the_max(max_attempts: int) -> None:
    """Each FRAMES_REJECTED uses one attempt; the max-th ends in FAILED, not before."""
    at = Position(state=ID, max_liveness_attempts=max_attempts)
    for used in range(1, max_attempts):
        at = transition(at, Step.LIVENESS, Event.FRAMES_REJECTED)
        assert at == Position(state=ID, liveness_attempts=used, max_liveness_attempts=max_attempts)
    at = transition(at, Step.LIVENESS, Event.FRAMES_REJECTED)
    assert at == Position(
        state=FAILED, liveness_attempts=max_attempts, max_liveness_attempts=max_attempts
    )
    with pytest.raises(FlowError):
        transition(at, Step.LIVENESS, Event.SUCCEEDED)


def test_frames_rejected_then_success_completes_with_the_count_kept() -> None:
    """A liveness that passes after rejected frames completes and keeps the attempts used."""
    at = transition(Position(state=ID), Step.LIVENESS, Event.FRAMES_REJECTED)
    assert transition(at, Step.LIVENESS, Event.SUCCEEDED) == Position(
        state=DONE, liveness_attempts=1
    )


@pytest.mark.parametrize(("used", "max_attempts"), [(0, 3), (1, 3), (0, 1), (4, 9)])
def test_not_verified_fails_at_once(used: int, max_attempts: int) -> None:
    """NOT_VERIFIED (frames passed, verification did not) fails whatever attempts remain."""
    before = Position(state=ID, liveness_attempts=used, max_liveness_attempts=max_attempts)
    after = transition(before, Step.LIVENESS, Event.NOT_VERIFIED)
    assert after == Position(
        state=FAILED, liveness_attempts=used + 1, max_liveness_attempts=max_attempts
    )


@pytest.mark.parametrize(("at", "step"), LEGAL, ids=map(pair_id, LEGAL))
def test_no_verdict_leaves_the_position_unchanged(at: FlowState, step: Step) -> None:
    """NO_VERDICT (connection, 5xx, credentials, bundle) changes nothing, attempts included."""
    before = Position(state=at, liveness_attempts=2, max_liveness_attempts=3)
    assert transition(before, step, Event.NO_VERDICT) == before


@pytest.mark.parametrize(
    ("at", "step", "event"),
    [
        (ID, Step.LIVENESS, Event.REJECTED),
        (NEW, Step.FRONT, Event.FRAMES_REJECTED),
        (ID, Step.BACK, Event.FRAMES_REJECTED),
        (FRONT, Step.FRONT, Event.NOT_VERIFIED),
        (ID, Step.FRONT, Event.NOT_VERIFIED),
    ],
)
def test_an_event_of_another_step_changes_nothing(at: FlowState, step: Step, event: Event) -> None:
    """A side verdict on liveness, or a frames verdict on a side, leaves the position as it was."""
    before = Position(state=at, liveness_attempts=1)
    assert transition(before, step, event) == before


def api(status: int | None, code: int | None = None) -> errors.APIError:
    """An error as the transport builds it: the class for (status, code), both attributes set."""
    return errors.api_error_class(status, code)("m", status=status, error_code=code)


EVENT_CASES: list[tuple[Step, BaseException | None, Event]] = [
    (Step.FRONT, None, Event.SUCCEEDED),
    (Step.BACK, None, Event.SUCCEEDED),
    (Step.LIVENESS, None, Event.SUCCEEDED),
    # expired or mismatched card: nothing can help, whatever the step or status
    (Step.FRONT, api(200, 3010), Event.EXPIRED_OR_MISMATCHED),
    (Step.BACK, api(422, 3010), Event.EXPIRED_OR_MISMATCHED),
    (Step.FRONT, api(502, 3010), Event.EXPIRED_OR_MISMATCHED),
    (Step.LIVENESS, api(200, 3010), Event.EXPIRED_OR_MISMATCHED),
    (Step.BACK, api(200, 3101), Event.EXPIRED_OR_MISMATCHED),
    (Step.LIVENESS, api(422, 3101), Event.EXPIRED_OR_MISMATCHED),
    # verdicts against a side
    (Step.FRONT, api(200, 3001), Event.REJECTED),
    (Step.FRONT, api(200, 7001), Event.REJECTED),
    (Step.BACK, api(422, 7002), Event.REJECTED),
    (Step.FRONT, api(200, 4207), Event.REJECTED),
    (Step.BACK, api(200, 5001), Event.REJECTED),
    (Step.FRONT, api(400), Event.REJECTED),
    (Step.BACK, api(415), Event.REJECTED),
    (Step.FRONT, api(422), Event.REJECTED),
    (Step.BACK, api(200, 7000), Event.REJECTED),
    (Step.FRONT, ValidationFailedError("m", status=200), Event.REJECTED),
    (Step.BACK, VerificationFailedError("m", status=200), Event.REJECTED),
    # verdicts against the liveness frames
    (Step.LIVENESS, LivenessFailedError("m", status=200), Event.FRAMES_REJECTED),
    (Step.LIVENESS, api(200, 4206), Event.FRAMES_REJECTED),
    (Step.LIVENESS, api(422, 4209), Event.FRAMES_REJECTED),
    (Step.LIVENESS, api(200, 1050), Event.FRAMES_REJECTED),
    (Step.LIVENESS, api(400), Event.FRAMES_REJECTED),
    (Step.LIVENESS, api(415), Event.FRAMES_REJECTED),
    # a proxy's HTML 400 page judged nothing, and a face code with refused credentials neither
    (Step.LIVENESS, errors.decode_error_class(400)("m", status=400, body=b"<"), Event.NO_VERDICT),
    (Step.LIVENESS, api(401, 4206), Event.NO_VERDICT),
    # the frames passed, the verification did not
    (Step.LIVENESS, VerificationFailedError("m", status=200), Event.NOT_VERIFIED),
    # errors on liveness that say nothing about the frames
    (Step.LIVENESS, api(400, 7000), Event.NO_VERDICT),
    (Step.LIVENESS, api(400, 4003), Event.NO_VERDICT),
    (Step.LIVENESS, api(200, 7001), Event.NO_VERDICT),
    (Step.LIVENESS, api(200, 3001), Event.NO_VERDICT),
    (Step.LIVENESS, ValidationFailedError("m", status=200), Event.NO_VERDICT),
    (Step.LIVENESS, api(422), Event.NO_VERDICT),
    (Step.LIVENESS, IdenticalFramesError("same", pair=(0, 1)), Event.NO_VERDICT),
    (Step.LIVENESS, FrameCountError("two"), Event.NO_VERDICT),
    # nothing was decided, whatever the step
    (Step.FRONT, APIConnectionError("reset"), Event.NO_VERDICT),
    (Step.LIVENESS, APITimeoutError("slow"), Event.NO_VERDICT),
    (Step.BACK, api(503), Event.NO_VERDICT),
    (Step.LIVENESS, api(500), Event.NO_VERDICT),
    (Step.FRONT, api(429), Event.NO_VERDICT),
    (Step.LIVENESS, api(429), Event.NO_VERDICT),
    (Step.FRONT, api(401), Event.NO_VERDICT),
    (Step.BACK, api(403), Event.NO_VERDICT),
    (Step.FRONT, api(404), Event.NO_VERDICT),
    (Step.FRONT, api(200, 4001), Event.NO_VERDICT),
    (Step.LIVENESS, api(200, 4001), Event.NO_VERDICT),
    (Step.BACK, api(200, 4003), Event.NO_VERDICT),
    (Step.FRONT, api(422, 4003), Event.NO_VERDICT),
    (Step.FRONT, ResponseDecodeError("garbled", body=b"<html>"), Event.NO_VERDICT),
    (Step.FRONT, FlowError("illegal"), Event.NO_VERDICT),
    (Step.BACK, ValueError("not ours"), Event.NO_VERDICT),
]


def event_case_id(case: tuple[Step, BaseException | None, Event]) -> str:
    step, exc, _ = case
    if exc is None:
        return f"{step.value}-ok"
    status, code = getattr(exc, "status", None), getattr(exc, "error_code", None)
    return f"{step.value}-{type(exc).__name__}-{status}-{code}"


@pytest.mark.parametrize(
    ("step", "exc", "expected"), EVENT_CASES, ids=[event_case_id(c) for c in EVENT_CASES]
)
def test_event_for_each_kind_of_answer(
    step: Step, exc: BaseException | None, expected: Event
) -> None:
    """event_for maps each real answer (None or the error raised) to the event it stands for."""
    assert event_for(step, exc) is expected


def test_every_event_is_produced_by_some_answer() -> None:
    """The event_for table reaches every Event, so none is left untested."""
    assert {expected for _, _, expected in EVENT_CASES} == set(Event)


def test_the_machine_imports_nothing_that_does_io() -> None:
    """_machine.py imports only enum, collections.abc, typing, attrs, errors and _classify."""
    tree = ast.parse(Path(_machine.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative to vlens_async.flow
                package = "vlens_async.flow".rsplit(".", node.level - 1)[0]
                module = f"{package}.{module}" if module else package
            imported.add(module)
    allowed = {
        "__future__",
        "enum",
        "collections.abc",
        "typing",
        "attrs",
        "vlens_async.errors",
        "vlens_async._classify",
    }
    assert imported, "no imports found: the parse is wrong"
    assert imported <= allowed, imported - allowed
