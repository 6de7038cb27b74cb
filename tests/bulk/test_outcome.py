"""The outcome table: what a run's last state and error make of an applicant."""

from __future__ import annotations

import pytest

from tests.bulk.scripted import error
from vlens_async.bulk._outcome import outcome_for
from vlens_async.errors import (
    APIConnectionError,
    FrameTimingError,
    IdenticalFramesError,
    UnsupportedImageError,
)
from vlens_async.flow import FlowState


@pytest.mark.parametrize(
    ("state", "exc", "verified", "outcome"),
    [
        (None, None, False, "error"),
        (FlowState.COMPLETED, None, True, "verified"),
        (FlowState.COMPLETED, None, False, "not_verified"),
        (FlowState.ID_SCANNED, IdenticalFramesError("same", pair=(0, 1)), False, "rejected"),
        (FlowState.ID_SCANNED, FrameTimingError("apart", spread=9.0), False, "rejected"),
        (FlowState.NEW, UnsupportedImageError("front: empty file"), False, "invalid"),
        (FlowState.FAILED, error(422, 3010), False, "rejected"),
        (FlowState.NEW, error(200, 3011), False, "rejected"),
        (FlowState.ID_SCANNED, error(422, 4207), False, "rejected"),
        (FlowState.NEW, error(502), False, "error"),
        (FlowState.NEW, APIConnectionError("reset"), False, "error"),
        (FlowState.NEW, error(None, 4003), False, "error"),
        (FlowState.NEW, error(401), False, "error"),
        (FlowState.BACK_SCANNED, KeyError("bug"), False, "error"),
    ],
    ids=[
        "no-transaction",
        "verified",
        "not-verified",
        "identical-frames",
        "frames-apart",
        "unreadable-image",
        "failed-flow",
        "document-verdict",
        "face-verdict",
        "server-error",
        "connection",
        "throttled",
        "credentials",
        "unexpected",
    ],
)
def test_outcome_follows_the_state_and_the_kind_of_error(
    state: FlowState | None, exc: BaseException | None, verified: bool, outcome: str
) -> None:
    """A verdict rejects, bad input is invalid, anything that decided nothing is an error."""
    assert outcome_for(state, exc, verified) == outcome
