"""Snapshots without personal data, the restored path, the typed refusals, the review flag and
one server transaction per verification (issue 12), against the emulator where it counts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from typing import Any

import pytest

from tests.helpers.flow import FACES, IMG, NID, ScriptedClient, make_tx
from vlens_async import _wire, transaction_id_for
from vlens_async.client import VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.errors import (
    DocumentExpiredError,
    FlowError,
    LivenessFailedError,
    MissingInputError,
    StepOrderError,
    TransactionClosedError,
)
from vlens_async.flow import SNAPSHOT_VERSION, FlowState, Transaction
from vlens_async.models import VerificationResponse
from vlens_async.national_id import CrossCheckFlag
from vlens_async.samples import Applicant, make_applicant

SECRET = "an application secret of 32 bytes"
PHONE = "+201001234567"
BIRTH = "1999-01-01T00:00:00Z"


@functools.cache
def applicant(seed: int, scenario: str = "valid") -> Applicant:
    """Synthetic applicants are deterministic: build each once per session."""
    return make_applicant(seed, scenario=scenario)


def personal_values(a: Applicant) -> list[str]:
    """Every personal value of ``a`` a snapshot might hold, as text."""
    f = a.fields
    return [
        f.first_name,
        f.last_names,
        f.first_name_english,
        f.last_names_english,
        f.address,
        f.address_english,
        f.national_id,
        f.national_id[:10],
        f.date_of_birth.isoformat(),
    ]


def hostile_response(tx: str) -> VerificationResponse:
    """A liveness answer carrying every personal field the models know, AML cases included."""
    body: dict[str, Any] = {
        "services": {
            "liveness": True,
            "AML": {
                "AML_matched": True,
                "data": [
                    {
                        "fullName": "Secret Person",
                        "idNumber": NID,
                        "dateOfBirth": "1999-01-01T00:00:00Z",
                    }
                ],
            },
            "SRC": {"isValid": False, "error_code": 12, "error_message": "Secret Person"},
            "spoofing": {"fake": False},
            "validations": [
                {"field": "firstName", "value": "Secret", "errors": [{"code": 3, "message": "x"}]}
            ],
        },
        "data": {
            "isVerificationProcessCompleted": True,
            "isDigitalIdentityVerified": True,
            "user": {"name": "Secret", "phoneNumber": PHONE, "idNumber": NID, "address": "Home"},
            "idFrontData": {
                "idNumber": NID,
                "firstName": "Secret",
                "address": "12 Nile Street",
                "dateOfBirth": "1999-01-01T00:00:00Z",
                "transaction_id": tx,
            },
            "idBackData": {"idNumber": NID, "job": "Engineer", "transactionId": tx},
        },
        "error_code": None,
        "error_message": "Secret Person",
    }
    return _wire.structure(body, VerificationResponse)


async def test_default_snapshot_of_a_real_flow_holds_no_personal_data(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """After a full flow the default snapshot holds no name, address, birth date or national ID
    beyond its last 4 digits; with include_personal_data=True they are kept."""
    a = applicant(41)
    tx = vlens_client.transaction(client_transaction_id="crm-41", name_check_value=a.fields.name)
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    await tx.check_liveness(a.faces)
    text = json.dumps(tx.snapshot(), ensure_ascii=False)
    for value in [*personal_values(a), a.fields.name]:
        assert value not in text
    assert "crm-41" in text
    assert tx.transaction_id in text
    kept = json.dumps(tx.snapshot(include_personal_data=True), ensure_ascii=False)
    assert a.fields.national_id in kept
    assert a.fields.first_name in kept


async def test_default_snapshot_drops_phone_user_aml_and_server_text() -> None:
    """A response with a phone number, a user block, AML case names, validation values and server
    text leaves none of them in the default snapshot; the flags survive."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", hostile_response(tx.transaction_id))
    await tx.check_liveness(FACES)
    snapshot = tx.snapshot()
    text = json.dumps(snapshot)
    for value in (PHONE, NID, NID[:10], "Secret", "Nile", "1999-01-01", "Engineer", "Home"):
        assert value not in text
    services = snapshot["responses"]["liveness"]["services"]
    assert services["aml"] == {"aml_matched": True}
    assert services["src"] == {"is_valid": False, "error_code": 12}
    assert services["validations"] == [{"field": "firstName", "errors": [{"code": 3}]}]
    assert snapshot["version"] == SNAPSHOT_VERSION
    assert snapshot["personal_data"] is False


async def test_restore_from_both_kinds_reports_the_same_outcome() -> None:
    """Restored from either snapshot, the outcome's state, verdicts, review flag and cross-check
    are the ones of the original."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    client.queue("liveness", hostile_response(tx.transaction_id))
    await tx.check_liveness(FACES)
    original = tx.result
    for personal in (False, True):
        saved = json.loads(json.dumps(tx.snapshot(include_personal_data=personal)))
        got = Transaction.restore(client, saved).result
        assert (got.state, got.validated, got.verified) == (FlowState.COMPLETED, True, True)
        assert got.needs_review
        assert got.review_reasons == ("aml_matched", "src_invalid")
        assert got.cross_check == original.cross_check
        assert (got.front is not None) is personal


async def test_cross_check_result_survives_a_snapshot_without_the_fields() -> None:
    """A birth date that disagrees with the national ID is still flagged after a PII-free
    snapshot, taken between the sides and restored, once the back is scanned."""
    client = ScriptedClient()
    tx = make_tx(client)
    front = _wire.structure(
        {
            "data": {
                "idFrontData": {
                    "idNumber": NID,
                    "dateOfBirth": "1988-05-05T00:00:00Z",
                    "transaction_id": tx.transaction_id,
                }
            }
        },
        VerificationResponse,
    )
    client.queue("front", front)
    await tx.scan_front(IMG)
    assert CrossCheckFlag.BIRTH_DATE_MISMATCH in tx.result.cross_check
    saved = json.loads(json.dumps(tx.snapshot()))
    assert NID not in json.dumps(saved)
    assert "1988-05-05" not in json.dumps(saved)
    restored = Transaction.restore(client, saved)
    await restored.scan_back(IMG)
    assert CrossCheckFlag.BIRTH_DATE_MISMATCH in restored.result.cross_check


async def test_restored_liveness_takes_the_front_given_at_restore(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """restore(id_front=...) completes liveness with no id_front at the call, on one server
    transaction."""
    a = applicant(42)
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    saved = json.loads(json.dumps(tx.snapshot()))
    restored = Transaction.restore(vlens_client, saved, id_front=a.front)
    await restored.check_liveness(a.faces)
    assert restored.state is FlowState.COMPLETED
    assert restored.result.verified
    assert vlens_emulator.counters()["transactions_created"] == 1


async def test_verify_finishes_a_restored_transaction_with_the_front_it_prepares(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """verify() on a transaction restored after both sides sends only liveness, with the front
    it was given, on the same server transaction."""
    a = applicant(47)
    tx = vlens_client.transaction()
    await tx.scan_front(a.front)
    await tx.scan_back(a.back)
    restored = Transaction.restore(vlens_client, json.loads(json.dumps(tx.snapshot())))
    outcome = await vlens_client.verify(a.front, a.back, a.faces, transaction=restored)
    assert outcome.state is FlowState.COMPLETED
    assert vlens_emulator.counters()["transactions_created"] == 1
    assert vlens_emulator.counters()["steps"][tx.transaction_id] == {
        "front": 1,
        "back": 1,
        "liveness": 1,
    }


async def test_restored_liveness_without_the_front_names_it_and_sends_nothing() -> None:
    """Without an ID front anywhere, liveness raises MissingInputError naming ``id_front``:
    a FlowError, but neither an order nor a closed-transaction error."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    restored = Transaction.restore(client, tx.snapshot())
    with pytest.raises(MissingInputError) as info:
        await restored.check_liveness(FACES)
    err = info.value
    assert err.missing == "id_front"
    assert "id_front" in str(err)
    assert isinstance(err, FlowError)
    assert not isinstance(err, StepOrderError | TransactionClosedError)
    assert [c for c, _ in client.calls] == ["front", "back"]


async def test_out_of_order_and_closed_steps_have_their_own_classes() -> None:
    """Liveness before the back is a StepOrderError; a step on a failed transaction a
    TransactionClosedError; both FlowErrors, and nothing is sent."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    with pytest.raises(StepOrderError) as order:
        await tx.check_liveness(FACES, IMG)
    assert order.value.step == "liveness"
    client.queue("back", DocumentExpiredError("expired", status=422, error_code=3010))
    with pytest.raises(DocumentExpiredError):
        await tx.scan_back(IMG)
    assert tx.state is FlowState.FAILED
    sent = len(client.calls)
    with pytest.raises(TransactionClosedError) as closed:
        await tx.scan_back(IMG)
    assert closed.value.state == "FAILED"
    assert isinstance(closed.value, FlowError)
    assert not isinstance(closed.value, StepOrderError)
    assert len(client.calls) == sent


async def test_name_check_is_asked_back_after_a_pii_free_restore() -> None:
    """A PII-free snapshot keeps no name check: its next step raises MissingInputError naming
    ``name_check_value`` until restore() is given it, which is then sent."""
    client = ScriptedClient()
    tx = make_tx(client, name_check_value="Secret Person")
    await tx.scan_front(IMG)
    saved = tx.snapshot()
    assert "Secret" not in json.dumps(saved)
    with pytest.raises(MissingInputError) as info:
        await Transaction.restore(client, saved).scan_back(IMG)
    assert info.value.missing == "name_check_value"
    assert [c for c, _ in client.calls] == ["front"]
    await Transaction.restore(client, saved, name_check_value="Secret Person").scan_back(IMG)
    assert client.options[-1]["name_check_value"] == "Secret Person"
    kept = Transaction.restore(client, tx.snapshot(include_personal_data=True))
    await kept.scan_back(IMG)
    assert client.options[-1]["name_check_value"] == "Secret Person"


@pytest.mark.parametrize(
    "breakage",
    [
        {"version": 99},
        {"version": "2"},
        {"steps": ["front"]},
        {"steps": {"front": {"attempts": "many"}}},
        {"state": "SOMEWHERE"},
        {"max_liveness_attempts": "3"},
        {"responses": {"front": 7}},
        {"cross_check": ["not_a_flag"]},
        {"transaction_id": 12},
    ],
)
def test_a_snapshot_of_another_version_or_wrong_types_is_a_flow_error(
    breakage: dict[str, Any],
) -> None:
    """Whatever is wrong with a snapshot's fields, restore() raises FlowError, nothing else."""
    saved = {**make_tx(ScriptedClient()).snapshot(), **breakage}
    with pytest.raises(FlowError):
        Transaction.restore(ScriptedClient(), saved)


def test_a_version_1_snapshot_still_restores() -> None:
    """A snapshot written by the previous release (version 1, responses whole) restores."""
    old = {
        "version": 1,
        "transaction_id": "t-1",
        "client_transaction_id": None,
        "name_check_value": None,
        "state": "FRONT_SCANNED",
        "max_liveness_attempts": 3,
        "liveness_attempts": 0,
        "get_extracted_data": True,
        "prepare": False,
        "failure": None,
        "steps": {"front": {"status": "succeeded", "attempts": 1, "duration": 0.1}},
        "responses": {"front": {"data": {"id_front_data": {"id_number": NID}}}},
        "timings": {"front": 0.1},
    }
    tx = Transaction.restore(ScriptedClient(), old)
    assert tx.state is FlowState.FRONT_SCANNED
    assert tx.result.front is not None


def test_transaction_id_for_is_deterministic_and_keyed() -> None:
    """The same key and secret give the same UUID; another key or secret another one; a short
    secret is refused."""
    first = transaction_id_for("user-1", SECRET)
    assert first == transaction_id_for("user-1", SECRET.encode())
    assert uuid.UUID(first).version == 4
    assert first == first.lower()
    assert first != transaction_id_for("user-2", SECRET)
    assert first != transaction_id_for("user-1", SECRET + "!")
    with pytest.raises(ValueError, match="secret"):
        transaction_id_for("user-1", "short")


async def test_two_transactions_for_one_key_open_one_server_transaction(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """Two web workers verifying the same application concurrently, each with its own
    Transaction on transaction_id_for(key), reach one server transaction."""
    a = applicant(43)
    key = "application-43"

    async def worker() -> None:
        tx = vlens_client.transaction(transaction_id_for(key, SECRET), client_transaction_id=key)
        await vlens_client.verify(a.front, a.back, a.faces, transaction=tx)

    await asyncio.gather(worker(), worker())
    assert vlens_emulator.counters()["transactions_created"] == 1


async def test_two_restored_copies_used_at_once_open_one_server_transaction(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """Two copies restored from one snapshot and driven concurrently reach one transaction."""
    a = applicant(44)
    saved = json.loads(json.dumps(vlens_client.transaction().snapshot()))
    copies = [Transaction.restore(vlens_client, saved, id_front=a.front) for _ in range(2)]
    await asyncio.gather(
        *(vlens_client.verify(a.front, a.back, a.faces, transaction=c) for c in copies)
    )
    assert vlens_emulator.counters()["transactions_created"] == 1
    assert {c.transaction_id for c in copies} == {saved["transaction_id"]}


async def test_aml_match_is_verified_but_needs_review(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """An AML-watchlisted applicant is verified by the service and flagged needs_review, in the
    outcome and its JSON."""
    a = applicant(45, "aml_watchlisted")
    outcome = await vlens_client.verify(a.front, a.back, a.faces)
    assert outcome.verified
    assert outcome.needs_review
    assert "aml_matched" in outcome.review_reasons
    data = outcome.to_json()
    assert data["needs_review"] is True
    assert "aml_matched" in data["review_reasons"]
    b = applicant(46)
    clean = await vlens_client.verify(b.front, b.back, b.faces)
    assert not clean.needs_review
    assert clean.to_json()["needs_review"] is False


@pytest.mark.parametrize(
    ("services", "reasons"),
    [
        ({"spoofing": {"fake": True}}, ("fake_document",)),
        ({"SRC": {"isValid": False}}, ("src_invalid",)),
        (
            {"AML": {"AML_matched": True}, "spoofing": {"fake": True}},
            ("aml_matched", "fake_document"),
        ),
        ({"SRC": {"isValid": True}, "spoofing": {"fake": False}, "liveness": False}, ()),
    ],
)
async def test_needs_review_reads_aml_spoofing_and_src(
    services: dict[str, Any], reasons: tuple[str, ...]
) -> None:
    """needs_review is exactly: AML matched, spoofing detected, or SRC invalid."""
    client = ScriptedClient()
    tx = make_tx(client)
    await tx.scan_front(IMG)
    await tx.scan_back(IMG)
    body = {
        "services": {"liveness": True, **services},
        "data": {"isVerificationProcessCompleted": True},
    }
    client.queue("liveness", _wire.structure(body, VerificationResponse))
    with contextlib.suppress(LivenessFailedError):  # the liveness=False case
        await tx.check_liveness(FACES)
    assert tx.result.review_reasons == reasons
    assert tx.result.needs_review is bool(reasons)
