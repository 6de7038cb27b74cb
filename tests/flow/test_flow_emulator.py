"""The verification flow end to end against the emulator on loopback.

Every rule of the state machine is checked against what the emulator actually received (its
counters), so "nothing is sent" and "the same transaction" are facts, not assumptions.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import pytest

from vlens_async.client import VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.errors import (
    DocumentExpiredError,
    DocumentMismatchError,
    FlowError,
    IdenticalFramesError,
    LivenessFailedError,
)
from vlens_async.flow import FlowState, Step, StepStatus, Transaction
from vlens_async.samples import Applicant, make_applicant


@functools.cache
def applicant(seed: int, scenario: str = "valid") -> Applicant:
    """Synthetic applicants are deterministic, so build each once per test session."""
    return make_applicant(seed, scenario=scenario)


def total_requests(emulator: RunningEmulator) -> int:
    return int(emulator.counters()["requests_total"])


def steps_of(emulator: RunningEmulator, tx: Transaction) -> dict[str, int]:
    steps: dict[str, dict[str, int]] = emulator.counters()["steps"]
    return steps.get(tx.transaction_id, {})


async def test_front_back_liveness_on_one_transaction(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """The three steps reach COMPLETED on one server transaction with one request each."""
    a = applicant(1)
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    assert tx.state is FlowState.FRONT_SCANNED
    await tx.scan_back(a.back)
    assert tx.state is FlowState.ID_SCANNED
    await tx.check_liveness(a.faces)
    assert tx.state is FlowState.COMPLETED
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 1
    assert steps_of(vlens_emulator, tx) == {"front": 1, "back": 1, "liveness": 1}
    outcome = tx.result
    assert outcome.validated
    assert outcome.verified
    assert outcome.front is not None
    assert outcome.front.id_number == a.fields.national_id
    assert outcome.back is not None
    assert outcome.cross_check == ()


async def test_back_first_then_front(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """Back before front is accepted by the machine and the server alike."""
    a = applicant(2)
    tx = vlens_client.transaction()
    await tx.scan_back(a.back)
    assert tx.state is FlowState.BACK_SCANNED
    await tx.scan_front(a.front)
    await tx.check_liveness(a.faces)
    assert tx.state is FlowState.COMPLETED
    assert vlens_emulator.counters()["transactions_created"] == 1


@pytest.mark.parametrize("done", [(), ("front",), ("back",)])
async def test_illegal_liveness_sends_no_request(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator, done: tuple[str, ...]
) -> None:
    """Liveness before both sides raises FlowError and the emulator sees no request."""
    a = applicant(3)
    tx = vlens_client.transaction()
    for side in done:
        await (tx.scan_front(a.front) if side == "front" else tx.scan_back(a.back))
    before = total_requests(vlens_emulator)
    with pytest.raises(FlowError):
        await tx.check_liveness(a.faces)
    assert total_requests(vlens_emulator) == before


async def test_steps_after_completion_send_nothing(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """Repeating a succeeded step returns its stored result without a request."""
    a = applicant(4)
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    await tx.check_liveness(a.faces)
    before = total_requests(vlens_emulator)
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    await tx.check_liveness(a.faces)
    assert total_requests(vlens_emulator) == before


async def test_rescan_replaces_the_step_on_the_same_transaction(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """rescan=True sends the side again; the server keeps one transaction."""
    a = applicant(5)
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    await tx.scan_front(a.front, rescan=True)
    assert tx.state is FlowState.FRONT_SCANNED
    assert vlens_emulator.counters()["transactions_created"] == 1
    assert steps_of(vlens_emulator, tx) == {"front": 2}


@pytest.mark.parametrize(
    ("scenario", "error"),
    [("expired", DocumentExpiredError), ("back_of_other_card", DocumentMismatchError)],
)
async def test_hard_document_errors_fail_the_transaction(
    vlens_client: VlensClient,
    vlens_emulator: RunningEmulator,
    scenario: str,
    error: type[Exception],
) -> None:
    """An expired card or a back of another card moves the transaction to FAILED at once."""
    a = applicant(6, scenario)
    tx = vlens_client.transaction()

    async def scan_both_sides() -> None:
        await tx.scan_front(a.front)
        await tx.scan_back(a.back)

    with pytest.raises(error):
        await scan_both_sides()
    assert tx.state is FlowState.FAILED
    before = total_requests(vlens_emulator)
    with pytest.raises(FlowError):
        await tx.scan_back(a.back)
    assert total_requests(vlens_emulator) == before
    assert tx.result.error_message


async def test_liveness_retry_with_the_right_person_completes(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """Frames of another person fail liveness; a retry with the card holder's frames passes."""
    a = applicant(7)
    stranger = applicant(7, "different_person")
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    with pytest.raises(LivenessFailedError):
        await tx.check_liveness(stranger.faces)
    assert tx.state is FlowState.ID_SCANNED
    assert tx.steps[Step.LIVENESS].status is StepStatus.FAILED
    await tx.check_liveness(a.faces)
    assert tx.state is FlowState.COMPLETED
    assert steps_of(vlens_emulator, tx)["liveness"] == 2


async def test_liveness_attempts_used_up_fail_the_transaction(vlens_client: VlensClient) -> None:
    """max_liveness_attempts failed verdicts move the transaction to FAILED."""
    a = applicant(8)
    stranger = applicant(8, "different_person")
    tx = vlens_client.transaction(max_liveness_attempts=2)
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    for _ in range(2):
        with pytest.raises(LivenessFailedError):
            await tx.check_liveness(stranger.faces)
    assert tx.state is FlowState.FAILED
    with pytest.raises(FlowError):
        await tx.check_liveness(a.faces)


async def test_identical_frames_are_refused_before_upload(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """The preprocessor refuses identical frames; nothing is sent and no attempt is used."""
    a = applicant(9, "identical_frames")
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    before = total_requests(vlens_emulator)
    with pytest.raises(IdenticalFramesError):
        await tx.check_liveness(a.faces)
    assert total_requests(vlens_emulator) == before
    assert tx.liveness_attempts == 0


async def test_snapshot_restore_mid_flow_then_finish(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """A JSON snapshot after the back restores and finishes the same server transaction."""
    a = applicant(10)
    tx = vlens_client.transaction(client_transaction_id="crm-42")
    await tx.scan_back(a.back)
    snapshot = json.loads(json.dumps(tx.snapshot()))
    assert "image" not in json.dumps(snapshot)
    restored = Transaction.restore(vlens_client, snapshot)
    await restored.scan_back(a.back)  # already done: not sent again
    await restored.scan_front(a.front)
    await restored.check_liveness(a.faces)
    assert restored.state is FlowState.COMPLETED
    assert vlens_emulator.counters()["transactions_created"] == 1
    assert steps_of(vlens_emulator, tx) == {"front": 1, "back": 1, "liveness": 1}


async def test_concurrent_steps_are_serialised(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """Concurrent scans of one side on one transaction send a single request."""
    a = applicant(11)
    tx = vlens_client.transaction()
    results = await asyncio.gather(*(tx.scan_front(a.front) for _ in range(5)))
    assert all(r is results[0] for r in results)
    assert steps_of(vlens_emulator, tx) == {"front": 1}


async def test_cancellation_mid_step_is_resumable(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """A step cancelled while the server is slow leaves the state as it was; retrying finishes."""
    a = applicant(12)
    vlens_emulator.set_faults(None, latency="fixed:2000ms@id_front")
    tx = vlens_client.transaction()
    task = asyncio.create_task(tx.scan_front(a.front))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tx.state is FlowState.NEW
    vlens_emulator.set_faults(None)
    outcome = await vlens_client.verify(a.front, a.back, a.faces, transaction=tx)
    assert outcome.state is FlowState.COMPLETED
    assert vlens_emulator.counters()["transactions_created"] == 1


SCENARIO_OUTCOMES: list[tuple[str, FlowState, Any]] = [
    ("valid", FlowState.COMPLETED, None),
    ("expired", FlowState.FAILED, 3010),
    ("back_of_other_card", FlowState.FAILED, 3101),
    ("different_person", FlowState.ID_SCANNED, LivenessFailedError),
    ("identical_frames", FlowState.ID_SCANNED, IdenticalFramesError),
]


@pytest.mark.parametrize(("scenario", "state", "expected"), SCENARIO_OUTCOMES)
async def test_verify_classifies_each_scenario(
    vlens_client: VlensClient, scenario: str, state: FlowState, expected: Any
) -> None:
    """verify() ends each synthetic scenario in its expected state with its typed error."""
    a = applicant(20, scenario)
    outcome = await vlens_client.verify(a.front, a.back, a.faces)
    assert outcome.state is state
    if expected is None:
        assert outcome.error is None
        assert outcome.validated
    elif isinstance(expected, int):
        assert outcome.error_code == expected
    else:
        assert isinstance(outcome.error, expected)
    assert {"total"} <= set(outcome.timings)


async def test_verify_outcome_carries_cross_check_and_masks_pii(vlens_client: VlensClient) -> None:
    """The outcome's JSON masks the national ID unless asked, and lists cross-check flags."""
    a = applicant(21)
    outcome = await vlens_client.verify(a.front, a.back, a.faces)
    data = outcome.to_json()
    nid = a.fields.national_id
    assert nid not in json.dumps(data)
    assert data["front"]["id_number"].endswith(nid[-4:])
    assert outcome.to_json(show_pii=True)["front"]["id_number"] == nid
    assert nid not in repr(outcome)
    # A valid applicant's number agrees with everything OCR read: no false positive.
    assert outcome.cross_check == ()
    assert data["cross_check"] == []


async def test_outcome_json_hides_aml_case_personal_data(vlens_client: VlensClient) -> None:
    """An AML match's case name, birth date and full ID number stay out of to_json()."""
    a = applicant(22, "aml_watchlisted")
    outcome = await vlens_client.verify(a.front, a.back, a.faces)
    assert outcome.services is not None
    assert outcome.services.aml is not None
    assert outcome.services.aml.aml_matched
    cases = outcome.services.aml.cases
    assert cases
    text = json.dumps(outcome.to_json()["services"], ensure_ascii=False)
    for case in cases:
        assert case.full_name is None or case.full_name not in text
        assert case.id_number is None or case.id_number not in text
    shown = json.dumps(outcome.to_json(show_pii=True)["services"], ensure_ascii=False)
    assert all(case.full_name is None or case.full_name in shown for case in cases)
