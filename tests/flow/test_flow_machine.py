"""The Transaction state machine in isolation, driven by a scripted client (no network).

The emulator-backed tests in test_flow_emulator.py prove the same rules end to end; these pin
down each transition and failure rule exactly, including ones the emulator cannot produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.flow import FACES, IMG, NID, ScriptedClient, envelope, make_tx
from vlens_async import _wire, errors
from vlens_async.errors import (
    APIConnectionError,
    DocumentError,
    DocumentExpiredError,
    DocumentMismatchError,
    FlowError,
    LivenessFailedError,
    MissingInputError,
    TransactionClosedError,
    UnprocessableEntityError,
    ValidationFailedError,
    VerificationFailedError,
    VlensError,
    api_error_class,
)
from vlens_async.flow import FlowState, Step, StepStatus, Transaction, verify
from vlens_async.models import VerificationResponse


async def test_front_then_back_then_liveness_completes() -> None:
    """The happy path moves NEW -> FRONT_SCANNED -> ID_SCANNED -> COMPLETED on one id."""
    client = ScriptedClient()
    tx = make_tx(client)
    assert tx.state is FlowState.NEW
    await tx.scan_front(IMG)
    assert tx.state is FlowState.FRONT_SCANNED
    await tx.scan_back(IMG)
    assert tx.state is FlowState.ID_SCANNED
    await tx.check_liveness(FACES)
    assert tx.state is FlowState.COMPLETED
    assert {tx_id for _, tx_id in client.calls} == {tx.transaction_id}
    outcome = tx.result
    assert outcome.validated
    assert outcome.verified
    assert outcome.front is not None
    assert outcome.front.id_number == NID
    assert outcome.cross_check == ()


async def test_back_first_is_legal() -> None:
    """The back may come first: NEW -> BACK_SCANNED -> ID_SCANNED."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_back(IMG)
    assert tx.state is FlowState.BACK_SCANNED
    await tx.scan_front(IMG)
    assert tx.state is FlowState.ID_SCANNED


@pytest.mark.parametrize("sides", [(), ("front",), ("back",)])
async def test_liveness_before_both_sides_is_refused_and_sends_nothing(
    sides: tuple[str, ...],
) -> None:
    """Liveness in NEW, FRONT_SCANNED or BACK_SCANNED raises FlowError without a request."""
    client = ScriptedClient()
    tx = make_tx(client)
    for side in sides:
        await (tx.scan_front(IMG) if side == "front" else tx.scan_back(IMG))
    sent = len(client.calls)
    with pytest.raises(FlowError) as info:
        await tx.check_liveness(FACES)
    assert info.value.step == "liveness"
    assert len(client.calls) == sent


async def test_succeeded_step_is_not_sent_again_unless_rescan() -> None:
    """A repeated scan returns the stored response; rescan=True sends it and keeps the state."""
    client = ScriptedClient()
    tx = make_tx(client)
    first = await tx.scan_front(IMG)
    assert await tx.scan_front(IMG) is first
    assert [c for c, _ in client.calls] == ["front"]
    await tx.scan_front(IMG, rescan=True)
    assert [c for c, _ in client.calls] == ["front", "front"]
    assert tx.state is FlowState.FRONT_SCANNED
    assert tx.steps[Step.FRONT].attempts == 2


async def test_completed_transaction_refuses_rescans_and_returns_stored_liveness() -> None:
    """After COMPLETED nothing is sent again: a repeated step returns its stored answer, and a
    rescan (a request to send again) is TransactionClosedError, not the stored answer."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    live = await tx.check_liveness(FACES)
    assert await tx.check_liveness(FACES) is live
    assert await tx.scan_front(IMG) is tx.response(Step.FRONT)
    with pytest.raises(TransactionClosedError):
        await tx.scan_front(IMG, rescan=True)
    assert tx.state is FlowState.COMPLETED
    assert len(client.calls) == 3


async def test_failed_side_may_be_rescanned() -> None:
    """A soft document error leaves the state, records the typed error, and allows a retry."""
    client = ScriptedClient()
    err = api_error_class(200, 3011)("card not detected", error_code=3011, error_message="x")
    client.queue("front", err)
    tx = make_tx(client)
    with pytest.raises(DocumentError):
        await tx.scan_front(IMG)
    assert tx.state is FlowState.NEW
    record = tx.steps[Step.FRONT]
    assert record.status is StepStatus.FAILED
    assert record.error_code == 3011
    assert record.error is err
    await tx.scan_front(IMG)
    assert tx.state is FlowState.FRONT_SCANNED


@pytest.mark.parametrize(
    ("code", "cls"), [(3010, DocumentExpiredError), (3101, DocumentMismatchError)]
)
async def test_hard_document_error_fails_transaction_at_once(
    code: int, cls: type[Exception]
) -> None:
    """An expired card or mismatched sides move the transaction to FAILED; later steps refuse."""
    client = ScriptedClient()
    client.queue("back", api_error_class(200, code)("no", error_code=code))
    tx = make_tx(client)
    await tx.scan_front(IMG)
    with pytest.raises(cls):
        await tx.scan_back(IMG)
    assert tx.state is FlowState.FAILED
    assert tx.result.error_code == code
    with pytest.raises(FlowError):
        await tx.scan_back(IMG)
    assert len(client.calls) == 2


async def test_liveness_retries_until_attempts_used_up() -> None:
    """Liveness verdicts count; the transaction fails when max_liveness_attempts are used up."""
    client = ScriptedClient()
    tx = make_tx(client, max_liveness_attempts=2)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", envelope(tx=tx.transaction_id, liveness=False, completed=False))
    client.queue("liveness", envelope(tx=tx.transaction_id, liveness=False, completed=False))
    with pytest.raises(LivenessFailedError):
        await tx.check_liveness(FACES)
    assert tx.state is FlowState.ID_SCANNED
    assert tx.liveness_attempts == 1
    with pytest.raises(LivenessFailedError):
        await tx.check_liveness(FACES)
    assert tx.state is FlowState.FAILED
    assert isinstance(tx.result.error, LivenessFailedError)


async def test_liveness_retry_with_new_frames_can_succeed() -> None:
    """A failed liveness attempt followed by a good one completes the transaction."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", envelope(tx=tx.transaction_id, liveness=False, completed=False))
    with pytest.raises(LivenessFailedError):
        await tx.check_liveness(FACES)
    await tx.check_liveness(FACES)
    assert tx.state is FlowState.COMPLETED
    assert tx.steps[Step.LIVENESS].attempts == 2


async def test_process_not_completed_fails_at_once() -> None:
    """Frames that pass but a process the service did not complete fail the transaction."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", envelope(tx=tx.transaction_id, liveness=True, completed=False))
    with pytest.raises(VerificationFailedError):
        await tx.check_liveness(FACES)
    assert tx.state is FlowState.FAILED


async def test_transport_error_leaves_state_and_does_not_count() -> None:
    """A connection error is no verdict: the state stays and the step can be retried."""
    client = ScriptedClient()
    tx = make_tx(client, max_liveness_attempts=1)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", APIConnectionError("reset"))
    with pytest.raises(APIConnectionError):
        await tx.check_liveness(FACES)
    assert tx.state is FlowState.ID_SCANNED
    assert tx.liveness_attempts == 0
    await tx.check_liveness(FACES)
    assert tx.state is FlowState.COMPLETED


async def test_concurrent_calls_are_serialised() -> None:
    """Two concurrent scans of one side send once; the second waits and gets the stored result."""
    client = ScriptedClient()
    client.gate = asyncio.Event()
    tx = make_tx(client)
    first = asyncio.create_task(tx.scan_front(IMG))
    second = asyncio.create_task(tx.scan_front(IMG))
    await asyncio.sleep(0.01)
    assert len(client.calls) == 1
    client.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a is b
    assert len(client.calls) == 1


async def test_cancellation_mid_step_leaves_resumable_state() -> None:
    """Cancelling a step mid-flight changes nothing; the step can be sent again."""
    client = ScriptedClient()
    client.gate = asyncio.Event()
    tx = make_tx(client)
    task = asyncio.create_task(tx.scan_front(IMG))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tx.state is FlowState.NEW
    assert tx.steps[Step.FRONT].status is StepStatus.PENDING
    client.gate.set()
    await tx.scan_front(IMG)
    assert tx.state is FlowState.FRONT_SCANNED


async def test_snapshot_restore_mid_flow_then_finish() -> None:
    """A snapshot after the front is JSON; the restored transaction continues on the same id."""
    client = ScriptedClient()
    tx = make_tx(client, client_transaction_id="order-7")
    await tx.scan_front(IMG)
    snap = json.loads(json.dumps(tx.snapshot()))
    restored = Transaction.restore(client, snap)
    assert restored.state is FlowState.FRONT_SCANNED
    assert restored.transaction_id == tx.transaction_id
    assert await restored.scan_front(IMG) is restored.response(Step.FRONT)
    await restored.scan_back(IMG)
    with pytest.raises(MissingInputError) as missing:
        await restored.check_liveness(FACES)  # no front image kept across a restore
    assert missing.value.missing == "id_front"
    await restored.check_liveness(FACES, id_front=IMG)
    assert restored.state is FlowState.COMPLETED
    assert [c for c, _ in client.calls] == ["front", "back", "liveness"]
    assert restored.result.front is None  # the default snapshot keeps no extracted fields
    assert restored.result.back is not None  # scanned after the restore


async def test_restored_failure_keeps_its_error_class() -> None:
    """A FAILED snapshot restores as FAILED with the same error family."""
    client = ScriptedClient()
    client.queue("front", api_error_class(422, 3010)("expired", status=422, error_code=3010))
    tx = make_tx(client)
    with pytest.raises(DocumentExpiredError):
        await tx.scan_front(IMG)
    restored = Transaction.restore(client, json.loads(json.dumps(tx.snapshot())))
    assert restored.state is FlowState.FAILED
    assert isinstance(restored.result.error, DocumentExpiredError)


def test_restore_rejects_malformed_snapshots() -> None:
    """A snapshot of another version or with missing keys raises FlowError."""
    with pytest.raises(FlowError):
        Transaction.restore(ScriptedClient(), {"version": 99})
    with pytest.raises(FlowError):
        Transaction.restore(ScriptedClient(), {"version": 1})


_ACTIONS = st.lists(
    st.sampled_from(["front", "back", "liveness", "fail_front", "fail_live", "reset"]),
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=_ACTIONS)
def test_snapshot_round_trip_property(actions: list[str]) -> None:
    """After any sequence of steps, restore(snapshot) has the same snapshot and state."""

    async def run() -> None:
        client = ScriptedClient()
        tx = make_tx(client)
        for action in actions:
            if action.startswith("fail"):
                step = "front" if action == "fail_front" else "liveness"
                client.queue(step, api_error_class(200, 4209)("unclear", error_code=4209))
                action = step
            with contextlib.suppress(VlensError):
                if action == "front":
                    await tx.scan_front(IMG)
                elif action == "back":
                    await tx.scan_back(IMG)
                elif action == "liveness":
                    await tx.check_liveness(FACES)
            client.script = {"front": [], "back": [], "liveness": []}
        snap = json.loads(json.dumps(tx.snapshot()))
        restored = Transaction.restore(client, snap)
        assert restored.state is tx.state
        again = restored.snapshot()
        assert json.loads(json.dumps(again)) == snap

    asyncio.run(run())


async def test_verify_runs_whole_flow_and_reports_timings() -> None:
    """verify() takes front, back and faces to COMPLETED and times every step."""
    client = ScriptedClient()
    outcome = await verify(client, IMG, IMG, FACES, prepare=False)
    assert outcome.state is FlowState.COMPLETED
    assert outcome.validated
    assert {"front", "back", "liveness", "total"} <= set(outcome.timings)
    assert sorted(c for c, _ in client.calls) == ["back", "front", "liveness"]
    assert len({t for _, t in client.calls}) == 1


async def test_verify_reports_failure_in_outcome_or_raises_on_request() -> None:
    """A document error ends verify() with the error in the outcome, or raised if asked."""
    client = ScriptedClient()
    client.queue("front", api_error_class(200, 3010)("expired", error_code=3010))
    outcome = await verify(client, IMG, IMG, FACES, prepare=False)
    assert outcome.state is FlowState.FAILED
    assert outcome.error_code == 3010
    assert "liveness" not in [c for c, _ in client.calls]
    client2 = ScriptedClient()
    client2.queue("back", api_error_class(200, 3101)("mismatch", error_code=3101))
    with pytest.raises(DocumentMismatchError):
        await verify(client2, IMG, IMG, FACES, prepare=False, raise_on_failure=True)


async def test_verify_continues_a_restored_transaction() -> None:
    """verify(transaction=...) skips the steps that already succeeded."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_back(IMG)
    restored = Transaction.restore(client, tx.snapshot())
    outcome = await verify(client, IMG, IMG, FACES, transaction=restored)
    assert outcome.state is FlowState.COMPLETED
    assert [c for c, _ in client.calls] == ["back", "front", "liveness"]


def test_ids_are_unique_per_transaction() -> None:
    """Each new transaction gets its own UUID; a given id is kept."""
    client = ScriptedClient()
    ids = {make_tx(client).transaction_id for _ in itertools.repeat(None, 50)}
    assert len(ids) == 50
    assert make_tx(client, transaction_id="abc").transaction_id == "abc"


async def test_failed_rescan_takes_the_side_back() -> None:
    """A rescan the service rejects replaces the side there, so liveness is refused again."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("front", api_error_class(200, 3011)("card not detected", error_code=3011))
    with pytest.raises(DocumentError):
        await tx.scan_front(IMG, rescan=True)
    assert tx.state is FlowState.BACK_SCANNED
    sent = len(client.calls)
    with pytest.raises(FlowError):
        await tx.check_liveness(FACES)
    assert len(client.calls) == sent
    await tx.scan_front(IMG)
    assert tx.state is FlowState.ID_SCANNED


async def test_non_verdict_liveness_error_uses_no_attempt() -> None:
    """A liveness error that judges nothing about the frames (an ordering 5000) is not counted."""
    client = ScriptedClient()
    tx = make_tx(client, max_liveness_attempts=1)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", api_error_class(200, 5000)("order", error_code=5000))
    with pytest.raises(VlensError):
        await tx.check_liveness(FACES)
    assert tx.liveness_attempts == 0
    assert tx.state is FlowState.ID_SCANNED


async def test_prepare_flag_reaches_the_client() -> None:
    """With prepare=False the client is told not to prepare either (raw bytes are sent)."""
    client = ScriptedClient()
    await verify(client, IMG, IMG, FACES, prepare=False)
    assert client.options
    assert all(options["prepare"] is False for options in client.options)


async def test_restored_step_errors_keep_class_and_status() -> None:
    """After restore, a failed step's error is rebuilt with its code family and status class."""
    client = ScriptedClient()
    client.queue("front", api_error_class(422, 3011)("not detected", status=422, error_code=3011))
    tx = make_tx(client)
    with pytest.raises(DocumentError):
        await tx.scan_front(IMG)
    restored = Transaction.restore(client, json.loads(json.dumps(tx.snapshot())))
    error = restored.steps[Step.FRONT].error
    assert isinstance(error, DocumentError)
    assert isinstance(error, UnprocessableEntityError)
    assert restored.result.error_code == 3011


async def test_step_messages_are_ours_not_the_servers() -> None:
    """A recorded failure keeps our description; the server's text (a name) stays on the error."""
    client = ScriptedClient()
    err = api_error_class(200, 3012)(
        "POST /verify/id/front failed: name mismatch",
        error_code=3012,
        error_message="Name Mona Hassan does not match",
    )
    client.queue("front", err)
    tx = make_tx(client)
    with pytest.raises(DocumentError):
        await tx.scan_front(IMG)
    snapshot = json.dumps(tx.snapshot())
    assert "Mona" not in snapshot
    assert "Mona" not in json.dumps(tx.result.to_json())
    assert tx.steps[Step.FRONT].error is err


async def test_rescan_after_a_transient_failure_still_reverts_the_side() -> None:
    """A rescan that first fails in transit, then is rejected, still takes the side back."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("front", APIConnectionError("reset"))
    with pytest.raises(APIConnectionError):
        await tx.scan_front(IMG, rescan=True)
    assert tx.state is FlowState.ID_SCANNED  # the server still holds the earlier front
    client.queue("front", api_error_class(422, 7001)("wrong side", status=422, error_code=7001))
    with pytest.raises(VlensError):
        await tx.scan_front(IMG)
    assert tx.state is FlowState.BACK_SCANNED
    with pytest.raises(FlowError):
        await tx.check_liveness(FACES)


async def test_validation_errors_on_liveness_use_no_attempt() -> None:
    """Validation issues (name or document) say nothing about the frames: no attempt is used."""
    client = ScriptedClient()
    tx = make_tx(client, max_liveness_attempts=1)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", ValidationFailedError("name mismatch"))
    with pytest.raises(ValidationFailedError):
        await tx.check_liveness(FACES)
    assert tx.liveness_attempts == 0
    assert tx.state is FlowState.ID_SCANNED


async def test_verify_refuses_two_frames_before_sending_anything() -> None:
    """verify() with two face frames raises FlowError and sends no side."""
    client = ScriptedClient()
    with pytest.raises(FlowError):
        await verify(client, IMG, IMG, FACES[:2], prepare=False)
    assert client.calls == []


def test_outcome_json_hides_server_text_in_services() -> None:
    """Validation and SRC messages quoting a national ID or a name are hidden in to_json()."""
    body = {
        "services": {
            "validations": {
                "validation_errors": [
                    {
                        "field": "idNumber",
                        "value": NID,
                        "errors": [{"code": 3001, "message": f"Mona Hassan {NID} invalid"}],
                    }
                ]
            },
            "SRC": {"isValid": False, "errorMessage": f"{NID} not found for Mona Hassan"},
        },
        "data": {},
    }
    response = _wire.structure(body, VerificationResponse)
    client = ScriptedClient()
    tx = make_tx(client)
    tx._responses[Step.FRONT] = response
    text = json.dumps(tx.result.to_json())
    assert NID not in text
    assert "Mona" not in text
    assert "Mona" in json.dumps(tx.result.to_json(show_pii=True))


def test_outcome_json_hides_the_applicants_personal_data() -> None:
    """Names, addresses, birth date, job, religion, marital status: hidden unless show_pii."""
    body = {
        "data": {
            "idFrontData": {
                "idNumber": NID,
                "firstName": "منى",
                "firstNameEnglish": "Mona",
                "address": "12 Tahrir St",
                "dateOfBirth": "1999-01-01T00:00:00Z",
                "gender": "F",
            },
            "idBackData": {"idNumber": NID, "religion": "x-religion", "husbandName": "Karim"},
        }
    }
    client = ScriptedClient()
    tx = make_tx(client)
    tx._responses[Step.FRONT] = _wire.structure(body, VerificationResponse)
    tx._responses[Step.BACK] = _wire.structure(body, VerificationResponse)
    plain = tx.result.to_json()
    text = json.dumps(plain, ensure_ascii=False)
    for secret in ("Mona", "منى", "Tahrir", "1999-01-01", "x-religion", "Karim", NID):
        assert secret not in text
    assert plain["front"]["gender"] == "F"
    assert plain["front"]["id_number"].endswith(NID[-4:])
    shown = json.dumps(tx.result.to_json(show_pii=True), ensure_ascii=False)
    assert all(s in shown for s in ("Mona", "منى", "Tahrir", "x-religion", "Karim", NID))


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (api_error_class(400, 4002)("bundle exhausted", status=400, error_code=4002), False),
        (api_error_class(200, 4002)("bundle exhausted", status=200, error_code=4002), False),
        (api_error_class(400, 5000)("generic", status=400, error_code=5000), False),
        (api_error_class(400, 3011)("no card", status=400, error_code=3011), False),
        (api_error_class(400, None)("bad frame base64", status=400), True),
        (api_error_class(415, None)("frame format", status=415), True),
        (api_error_class(400, 4207)("no face", status=400, error_code=4207), True),
    ],
)
async def test_only_errors_about_the_frames_use_a_liveness_attempt(
    error: Exception, counted: bool
) -> None:
    """The same error code counts the same whichever HTTP status carries it."""
    client = ScriptedClient()
    tx = make_tx(client, max_liveness_attempts=2)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", error)
    with pytest.raises(VlensError):
        await tx.check_liveness(FACES)
    assert tx.liveness_attempts == int(counted)
    assert tx.state is FlowState.ID_SCANNED


async def test_restored_proxy_page_error_is_still_a_server_error() -> None:
    """A step failed by a proxy's HTML 502 restores as ResponseDecodeError and 5xx alike."""
    client = ScriptedClient()
    tx = make_tx(client)
    page = errors.decode_error_class(502)("not JSON", status=502, body=b"<html>")
    client.queue("front", page)
    with pytest.raises(errors.InternalServerError):
        await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", api_error_class(422, 3101)("mismatch", status=422, error_code=3101))
    with pytest.raises(VlensError):
        await tx.check_liveness(FACES)
    step = Transaction.restore(client, tx.snapshot()).steps[Step.FRONT]
    assert isinstance(step.error, errors.ResponseDecodeError)
    assert isinstance(step.error, errors.InternalServerError)


async def test_snapshot_after_restore_is_the_same_snapshot() -> None:
    """Client-side fields of a stored response (its request id, the id sent) survive a restore,
    with or without personal data."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    for personal in (False, True):
        snapshot = tx.snapshot(include_personal_data=personal)
        restored = Transaction.restore(client, snapshot)
        assert restored.snapshot(include_personal_data=personal) == snapshot
        got, sent = restored.response(Step.FRONT), tx.response(Step.FRONT)
        assert got is not None
        assert sent is not None
        assert (got.request_id, got.sent_transaction_id) == (
            sent.request_id,
            sent.sent_transaction_id,
        )
        assert (got == sent) is personal  # without personal data, the extracted fields stay out


async def test_verify_refuses_two_capture_times_before_sending_anything() -> None:
    """verify() with two capture times raises ConfigurationError and sends no side."""
    client = ScriptedClient()
    with pytest.raises(errors.ConfigurationError, match="capture_times"):
        await verify(client, IMG, IMG, FACES, capture_times=[0.0, 0.1], prepare=False)
    assert client.calls == []


@pytest.mark.parametrize("prepare", [True, False])
def test_restore_keeps_or_overrides_the_snapshots_prepare(prepare: bool) -> None:
    """restore() keeps the snapshot's ``prepare`` unless the caller gives one."""
    snapshot = make_tx(ScriptedClient()).snapshot()  # made with prepare=False
    assert Transaction.restore(ScriptedClient(), snapshot).prepare is False
    assert Transaction.restore(ScriptedClient(), snapshot, prepare=prepare).prepare is prepare
