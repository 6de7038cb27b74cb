"""Conformance of the emulator, spoken to in raw HTTP (aiohttp only, none of our client code)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
import yarl

from tests.helpers.emulator import (
    BACK,
    EXISTS,
    FRONT,
    IMAGES,
    LINK,
    LIVENESS,
    LOGIN,
    OTP,
    REFRESH,
    REGISTER,
    STEP_IMAGE,
    Raw,
    applicant,
    b64,
    new_tx,
    small_jpeg,
)
from vlens_async import samples
from vlens_async.emulator import RunningEmulator

GOLDEN = Path(__file__).parent.parent / "golden"


def _codes(data: dict[str, Any]) -> list[int]:
    errors = data["services"]["validations"]["validation_errors"]
    return [e["code"] for item in errors for e in item["errors"]]


# --- auth ---


async def test_missing_or_wrong_api_key_is_401(raw: Raw) -> None:
    """No ApiKey header, or an unknown one, is refused with 401 and the envelope."""
    status, data, _ = await raw.post(EXISTS, {"phoneNumber": "+201000000001"}, api_key=None)
    assert status == 401
    assert data is not None
    assert set(data) == {"services", "data", "error_code", "error_message", "error_descriptions"}
    status, _, _ = await raw.post(EXISTS, {"phoneNumber": "+201000000001"}, api_key="nope")
    assert status == 401


async def test_bad_or_expired_token_is_401(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """A garbage bearer token is 401; a real one is 401 once the emulator clock passes 24 h."""
    status, _ = await raw.front(small_jpeg(), token="not-a-token")
    assert status == 401
    token = await raw.admin_token()
    status, _, _ = await raw.get(IMAGES, {"emailOrPhoneNumber": "+201000000002"}, token=token)
    assert status == 404  # authorised, the user just does not exist
    vlens_emulator.advance_clock(86_401)
    status, _, _ = await raw.get(IMAGES, {"emailOrPhoneNumber": "+201000000002"}, token=token)
    assert status == 401


async def test_admin_endpoints_need_the_requests_permission(
    raw: Raw, vlens_emulator: RunningEmulator
) -> None:
    """No token 401; an admin without Requests 403; an end user's token 403."""
    params = {"emailOrPhoneNumber": "+201000000003"}
    status, _, _ = await raw.get(IMAGES, params)
    assert status == 401
    viewer = await raw.admin_token(vlens_emulator.viewer_username, vlens_emulator.viewer_password)
    status, _, _ = await raw.get(IMAGES, params, token=viewer)
    assert status == 403
    user = await raw.register("+201000000003")
    status, _, _ = await raw.get(
        STEP_IMAGE, {"TransactionId": new_tx(), "FileName": "x"}, token=user
    )
    assert status == 403


async def test_login_and_refresh_rotates(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """Login gives the documented keys; refresh returns a new pair and spends the old token."""
    body = {
        "tenancyName": vlens_emulator.tenancy_name,
        "userNameOrEmailAddress": vlens_emulator.admin_username,
        "password": vlens_emulator.admin_password,
    }
    status, data, _ = await raw.post(LOGIN, body, headers={"TenancyName": body["tenancyName"]})
    assert status == 200
    assert data is not None
    login = data["data"]
    assert set(login) == {
        "accessToken",
        "expireInSeconds",
        "refreshToken",
        "refreshTokenExpireInSeconds",
    }
    assert login["expireInSeconds"] == 86400
    assert login["refreshTokenExpireInSeconds"] == 604800
    status, data, _ = await raw.post(REFRESH, {"refreshToken": login["refreshToken"]})
    assert status == 200
    assert data is not None
    fresh = data["data"]
    assert {"accessToken", "encryptedAccessToken", "expireInSeconds", "refreshToken"} <= set(fresh)
    assert fresh["newRefreshToken"] == fresh["refreshToken"] != login["refreshToken"]
    status, _, _ = await raw.post(REFRESH, {"refreshToken": login["refreshToken"]})
    assert status == 401
    status, _ = await raw.login(body["userNameOrEmailAddress"], "wrong")
    assert status == 401


async def test_otp_registration_flow(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """Send an OTP, read it from the control API, reject a wrong one, confirm, register, log in."""
    phone = "+201000000004"
    status, data, _ = await raw.post(OTP, {"phoneNumber": phone})
    assert status == 200
    assert data is not None
    request_id = data["data"]["phoneNumberOtpRequestId"]
    assert data["data"]["isPhoneNumberConfirmed"] is False
    code = vlens_emulator.otp(phone)
    assert code is not None
    assert len(code) == 6
    wrong = "000000" if code != "000000" else "111111"
    check = {"phoneNumber": phone, "phoneNumberOtpRequestId": request_id}
    status, data, _ = await raw.post(OTP, {**check, "phoneNumberOtp": wrong})
    assert status == 400
    assert data is not None
    assert data["error_code"] == 400
    status, data, _ = await raw.post(OTP, {**check, "phoneNumberOtp": code})
    assert status == 200
    assert data is not None
    assert data["data"]["isPhoneNumberConfirmed"] is True
    register = {**check, "phoneNumberOtp": code, "password": "secret-pw", "email": "a@b.eg"}
    status, data, _ = await raw.post(REGISTER, register)
    assert status == 200
    assert data is not None
    reg = data["data"]
    assert reg["isDigitalIdentityVerified"] is False
    assert reg["user"] == {"id": 1, "emailAddress": "a@b.eg", "phoneNumber": phone}
    assert reg["accessToken"]
    status, data, _ = await raw.post(EXISTS, {"phoneNumber": phone})
    assert data is not None
    assert data["data"] == {"exists": True}
    status, data, _ = await raw.post(EXISTS, {"email": "nobody@b.eg"})
    assert data is not None
    assert data["data"] == {"exists": False}
    status, _ = await raw.login(phone, "secret-pw")
    assert status == 200


# --- the verification flow ---


async def test_full_flow_with_api_key_only(raw: Raw) -> None:
    """Front, back and liveness with the ApiKey alone validate and verify a valid applicant."""
    app = applicant(1)
    status, data = await raw.front(app.front)
    assert status == 200
    front = data["data"]["idFrontData"]
    tx = front["transaction_id"]
    assert front["transactionId"] == tx
    assert front["idNumber"] == app.fields.national_id
    assert front["first_name_english"] == app.fields.first_name_english
    assert front["dateOfBirth"] == f"{app.fields.date_of_birth.isoformat()}T00:00:00Z"
    status, data = await raw.back(app.back, tx)
    assert status == 200
    assert data["data"]["idBackData"]["idExpiry"].startswith(app.fields.expiry_date.isoformat())
    status, data = await raw.liveness(app.front, app.faces, tx, getExtractedData=True)
    assert status == 200
    assert data["services"]["liveness"] is True
    assert data["data"]["isVerificationProcessCompleted"] is True
    assert data["data"]["isDigitalIdentityVerified"] is True
    assert data["data"]["idBackData"]["idNumber"] == app.fields.national_id


async def test_response_keys_match_the_seed_pages(raw: Raw) -> None:
    """services, idFrontData, idBackData, AML and SRC carry exactly the seed pages' keys."""
    golden = json.loads((GOLDEN / "gitbook_verify_response.json").read_text())
    app = applicant(4, "aml_watchlisted")
    tx = new_tx()
    status, front = await raw.front(app.front, tx)
    assert status == 200
    status, back = await raw.back(app.back, tx)
    assert status == 200
    assert set(front) == set(golden)
    assert set(front["services"]) == set(golden["services"])
    assert set(front["data"]) == set(golden["data"])
    assert set(front["data"]["idFrontData"]) == set(golden["data"]["idFrontData"])
    assert set(back["data"]["idBackData"]) == set(golden["data"]["idBackData"])
    assert set(front["services"]["SRC"]) == set(golden["services"]["SRC"])
    aml = front["services"]["AML"]
    assert set(aml) == set(golden["services"]["AML"])
    assert set(aml["data"][0]) == set(golden["services"]["AML"]["data"][0])


async def test_liveness_before_both_sides_is_5000(raw: Raw) -> None:
    """Liveness after the front only, or on an unknown transaction, fails with error 5000."""
    app = applicant(1)
    tx = new_tx()
    status, _ = await raw.front(app.front, tx)
    assert status == 200
    status, data = await raw.liveness(app.front, app.faces, tx)
    assert status == 422
    assert data["error_code"] == 5000
    assert "ID back" in data["error_message"]
    status, data = await raw.liveness(app.front, app.faces, new_tx())
    assert status == 422
    assert data["error_code"] == 5000


async def test_front_and_back_numbers_differ_3101(raw: Raw) -> None:
    """The back of another person's card is refused with 3101."""
    app = applicant(2, "back_of_other_card")
    tx = new_tx()
    status, _ = await raw.front(app.front, tx)
    assert status == 200
    status, data = await raw.back(app.back, tx)
    assert status == 422
    assert data["error_code"] == 3101


async def test_expired_card_3010(raw: Raw) -> None:
    """An expired card's back is refused with 3010."""
    app = applicant(3, "expired")
    tx = new_tx()
    await raw.front(app.front, tx)
    status, data = await raw.back(app.back, tx)
    assert status == 422
    assert data["error_code"] == 3010


async def test_failure_style_ok_sends_200_with_error_code(
    raw: Raw, vlens_emulator: RunningEmulator
) -> None:
    """In the ``ok`` failure style a coded failure is HTTP 200 with error_code set."""
    vlens_emulator.configure_tenant(failure_style="ok")
    app = applicant(3, "expired")
    tx = new_tx()
    await raw.front(app.front, tx)
    status, data = await raw.back(app.back, tx)
    assert status == 200
    assert data["error_code"] == 3010
    assert data["error_message"]
    status, _ = await raw.front(b"not an image")  # a protocol-level failure keeps its status
    assert status == 415


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [("identical_frames", "identical"), ("different_person", "belong")],
)
async def test_liveness_false_for_scenarios(
    raw: Raw, vlens_emulator: RunningEmulator, scenario: str, reason: str
) -> None:
    """Identical frames, or a face that is not the card holder's, make liveness false."""
    app = applicant(5, scenario)
    tx = await raw.scan_both(app)
    status, data = await raw.liveness(app.front, app.faces, tx)
    assert status == 200
    assert data["services"]["liveness"] is False
    assert data["data"]["isVerificationProcessCompleted"] is False
    assert data["data"]["isDigitalIdentityVerified"] is False
    summary = vlens_emulator.transaction(tx)
    assert summary is not None
    assert reason in summary["steps"]["liveness"]["liveness_reason"]


async def test_liveness_false_for_unrelated_frames(raw: Raw) -> None:
    """Frames of two different people fail liveness."""
    app, other = applicant(1), applicant(6)
    tx = await raw.scan_both(app)
    status, data = await raw.liveness(app.front, (app.faces[0], other.faces[1], app.faces[2]), tx)
    assert status == 200
    assert data["services"]["liveness"] is False


async def test_liveness_false_for_identical_plain_photos(raw: Raw) -> None:
    """Without face codes, identical frames are still caught (bytes or thumbnails)."""
    tx = new_tx()
    await raw.front(small_jpeg(1), tx)
    await raw.back(small_jpeg(2), tx)
    status, data = await raw.liveness(small_jpeg(1), [small_jpeg(3)] * 3, tx)
    assert status == 200
    assert data["services"]["liveness"] is False
    status, data = await raw.liveness(
        small_jpeg(1), [small_jpeg(3), small_jpeg(4), small_jpeg(5)], tx
    )
    assert data["services"]["liveness"] is True


async def test_spoofing_photocopy(raw: Raw) -> None:
    """A photocopied card is flagged fake and the flow does not validate."""
    app = applicant(7, "photocopy")
    tx = new_tx()
    status, data = await raw.front(app.front, tx)
    assert status == 200
    assert data["services"]["spoofing"] == {"fake": True}
    await raw.back(app.back, tx)
    status, data = await raw.liveness(app.front, app.faces, tx)
    assert data["services"]["spoofing"]["fake"] is True
    assert data["data"]["isVerificationProcessCompleted"] is False


async def test_aml_watchlist(raw: Raw) -> None:
    """A watchlisted card reports AML_matched with a case naming its ID number."""
    app = applicant(4, "aml_watchlisted")
    status, data = await raw.front(app.front)
    assert status == 200
    aml = data["services"]["AML"]
    assert aml["AML_matched"] is True
    assert aml["data"][0]["idNumber"] == app.fields.national_id
    status, data = await raw.front(applicant(1).front)
    assert data["services"]["AML"] == {"AML_matched": False, "data": []}


async def test_src_invalid_number_is_a_soft_failure(vlens_emulator_config: Any) -> None:
    """A card whose number has a bad governorate gets SRC.isValid false and a validation error."""
    from vlens_async.emulator import running_emulator

    fields = samples.make_fields(8)
    bad = attrs.evolve(fields, national_id=fields.national_id[:7] + "77" + fields.national_id[9:])

    def reader(data: bytes) -> Any:
        reading = samples.read_card(data)
        return None if reading is None else attrs.evolve(reading, fields=bad)

    config = attrs.evolve(vlens_emulator_config, card_reader=reader)
    app = applicant(8)
    async with (
        running_emulator(config) as emu,
        aiohttp.ClientSession(emu.base_url) as session,
    ):
        raw = Raw(emu, session)
        tx = new_tx()
        status, data = await raw.front(app.front, tx)
        assert status == 200
        assert data["services"]["SRC"]["isValid"] is False
        assert data["services"]["SRC"]["errorCode"] == 3003
        assert 3003 in _codes(data)
        await raw.back(app.back, tx)
        status, data = await raw.liveness(app.front, app.faces, tx)
        assert data["services"]["liveness"] is True
        assert data["data"]["isVerificationProcessCompleted"] is False


@pytest.mark.vlens_emulator(tenant={"ntra_rejects": ["26711111111111"]})
async def test_ntra_and_cso_switches_decide_verified(
    raw: Raw, vlens_emulator: RunningEmulator
) -> None:
    """An enabled authority that rejects the ID makes verified false; switching it off flips it."""
    app = applicant(1)
    nid = app.fields.national_id
    vlens_emulator.configure_tenant(ntra_rejects=[nid])
    tx = await raw.scan_both(app)
    _, data = await raw.liveness(app.front, app.faces, tx)
    assert data["data"]["isVerificationProcessCompleted"] is True
    assert data["data"]["isDigitalIdentityVerified"] is False
    vlens_emulator.configure_tenant(ntra=False, cso_rejects=[nid])
    _, data = await raw.liveness(app.front, app.faces, tx)
    assert data["data"]["isDigitalIdentityVerified"] is False
    vlens_emulator.configure_tenant(cso=False)
    _, data = await raw.liveness(app.front, app.faces, tx)
    assert data["data"]["isDigitalIdentityVerified"] is True


async def test_rescan_keeps_the_transaction(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """Scanning a side twice replaces it: one transaction, two front steps, liveness cleared."""
    app = applicant(1)
    tx = await raw.scan_both(app)
    await raw.liveness(app.front, app.faces, tx)
    status, data = await raw.front(app.front, tx)
    assert status == 200
    assert data["data"]["idFrontData"]["transaction_id"] == tx
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 1
    assert counters["steps"][tx] == {"front": 2, "back": 1, "liveness": 1}
    summary = vlens_emulator.transaction(tx)
    assert summary is not None
    assert "liveness" not in summary["steps"]


async def test_plain_photos_get_fields_derived_from_the_transaction(raw: Raw) -> None:
    """An image without a card code yields the same valid fields for the same transaction."""
    tx = new_tx()
    _, first = await raw.front(small_jpeg(1), tx)
    _, again = await raw.front(small_jpeg(2), tx)
    _, back = await raw.back(small_jpeg(3), tx)
    number = first["data"]["idFrontData"]["idNumber"]
    assert len(number) == 14
    assert again["data"]["idFrontData"]["idNumber"] == number
    assert back["data"]["idBackData"]["idNumber"] == number
    assert first["services"]["SRC"]["isValid"] is True


@pytest.mark.vlens_emulator(tenant={"unknown_documents": "reject"})
async def test_not_a_card_rejected_when_configured(raw: Raw) -> None:
    """With unknown_documents='reject', a photo that is not a card fails with 3011."""
    status, data = await raw.front(applicant(9, "not_a_card").front)
    assert status == 422
    assert data["error_code"] == 3011


async def test_wrong_side_is_7001(raw: Raw) -> None:
    """The back of a card sent to the front endpoint fails with 7001."""
    status, data = await raw.front(applicant(1).back)
    assert status == 422
    assert data["error_code"] == 7001


# --- image limits ---


async def test_image_over_5_mb_is_5002(raw: Raw) -> None:
    """A decoded image over 5 MB is refused with 5002 (checked from the base64 length)."""
    big = b"\xff\xd8\xff\xe0" + bytes(5 * 1024 * 1024)
    status, data = await raw.front(big)
    assert status == 422
    assert data["error_code"] == 5002


async def test_image_over_25_megapixels_is_5003(raw: Raw) -> None:
    """A PNG whose header says 6000x6000 is refused with 5003 without decoding it."""
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR"
    png = header + (6000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00" + b"\x00" * 4
    status, data = await raw.front(png)
    assert status == 422
    assert data["error_code"] == 5003


async def test_bad_base64_is_400(raw: Raw) -> None:
    """A base64 string with characters outside the alphabet is a 400 naming the field."""
    status, data, _ = await raw.post(FRONT, {"image": "!!!not base64!!!"})
    assert status == 400
    assert data is not None
    assert "image" in data["error_descriptions"]
    status, data, _ = await raw.post(FRONT, {})
    assert status == 400


async def test_not_an_image_is_415(raw: Raw) -> None:
    """Valid base64 of bytes that are neither JPEG nor PNG is a 415."""
    status, data, _ = await raw.post(FRONT, {"image": b64(b"GIF89a" + bytes(100))})
    assert status == 415
    assert data is not None
    status, _, _ = await raw.post(FRONT, {"image": b64(b"just some text, no image")})
    assert status == 415


async def test_bad_json_is_400(raw: Raw) -> None:
    """A body that is not a JSON object is a 400 with the envelope."""
    headers = {**raw.headers(), "Content-Type": "application/json"}
    async with raw.session.post(FRONT, data=b"{not json", headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["error_message"]


# --- link and images ---


async def test_link_user_with_existing_transaction(raw: Raw) -> None:
    """A transaction made with the ApiKey alone is linked to a user who logs in later."""
    app = applicant(1)
    tx = await raw.scan_both(app)
    await raw.liveness(app.front, app.faces, tx)
    token = await raw.register("+201000000005")
    status, data, _ = await raw.post(
        LINK, {"transactionId": tx, "getExtractedData": True}, token=token
    )
    assert status == 200
    assert data is not None
    assert data["data"]["isDigitalIdentityVerified"] is True
    assert data["data"]["user"]["phoneNumber"] == "+201000000005"
    assert data["data"]["user"]["idNumber"] == app.fields.national_id
    assert data["data"]["idFrontData"]["idNumber"] == app.fields.national_id
    status, _, _ = await raw.post(LINK, {"transactionId": new_tx()}, token=token)
    assert status == 404
    status, _, _ = await raw.post(LINK, {"transactionId": tx})
    assert status == 401


async def test_step_image_round_trip(raw: Raw) -> None:
    """Images scanned with a user's token come back through the two admin image endpoints."""
    app = applicant(1)
    user = await raw.register("+201000000006")
    tx = new_tx()
    await raw.front(app.front, tx, token=user)
    await raw.back(app.back, tx, token=user)
    admin = await raw.admin_token()
    status, data, _ = await raw.get(IMAGES, {"emailOrPhoneNumber": "+201000000006"}, token=admin)
    assert status == 200
    assert data is not None
    refs = data["data"]
    assert refs["idFrontImage"].startswith(tx)
    assert refs["livenessImage"] is None
    literal_plus = yarl.URL(
        f"{raw.emu.base_url}{IMAGES}?emailOrPhoneNumber=+201000000006", encoded=True
    )
    async with raw.session.get(literal_plus, headers=raw.headers(admin)) as resp:
        assert resp.status == 200  # an unencoded '+' (a space once decoded) still finds the user
    params = {"TransactionId": tx, "FileName": refs["idFrontImage"]}
    status, data, _ = await raw.get(STEP_IMAGE, params, token=admin)
    assert status == 200
    assert data is not None
    assert base64.b64decode(data["data"]["image"]) == app.front
    status, _, _ = await raw.get(STEP_IMAGE, {**params, "FileName": "other.jpg"}, token=admin)
    assert status == 404


@pytest.mark.vlens_emulator(image_store_max_count=2)
async def test_image_cap_evicts_oldest(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """With a cap of two images the oldest is evicted and GetStepImage says it is gone."""
    tx = new_tx()
    for seed in (1, 2, 3):
        await raw.front(small_jpeg(seed), new_tx() if seed < 3 else tx)
    await raw.back(small_jpeg(4), tx)
    stats = vlens_emulator.counters()["images"]
    assert stats["in_memory"] == 2
    assert stats["evicted"] == 2
    admin = await raw.admin_token()
    summary = vlens_emulator.transaction(tx)
    assert summary is not None
    name = summary["steps"]["back"]["files"]["idBackImage"]
    status, _, _ = await raw.get(STEP_IMAGE, {"TransactionId": tx, "FileName": name}, token=admin)
    assert status == 200


async def test_image_spill_folder(tmp_path: Path, vlens_emulator_config: Any) -> None:
    """With a spill folder, evicted images are written there, still served, and deleted on reset
    and when the emulator stops."""
    from vlens_async.emulator import running_emulator

    config = attrs.evolve(vlens_emulator_config, image_store_max_count=1, image_spill_dir=tmp_path)
    async with running_emulator(config) as emu, aiohttp.ClientSession(emu.base_url) as session:
        raw = Raw(emu, session)
        tx = new_tx()
        await raw.front(small_jpeg(1), tx)
        await raw.back(small_jpeg(2), tx)
        assert emu.counters()["images"]["spilled"] == 1
        assert (tmp_path / tx / f"{tx}_id_front.jpg").read_bytes() == small_jpeg(1)
        admin = await raw.admin_token()
        params = {"TransactionId": tx, "FileName": f"{tx}_id_front.jpg"}
        status, data, _ = await raw.get(STEP_IMAGE, params, token=admin)
        assert status == 200
        assert data is not None
        assert base64.b64decode(data["data"]["image"]) == small_jpeg(1)
        await emu.reset()
        assert not (tmp_path / tx).exists()
        await raw.front(small_jpeg(3), tx)
        await raw.back(small_jpeg(4), tx)
        assert (tmp_path / tx / f"{tx}_id_front.jpg").exists()
    spilled = await asyncio.to_thread(lambda: list(tmp_path.rglob("*.jpg")))
    assert not spilled  # stopping the emulator deletes what it spilled


async def test_liveness_requires_transaction_id(raw: Raw) -> None:
    """Liveness without transaction_id is a 400."""
    app = applicant(1)
    body = {"image": b64(app.front), **{f"face_{i}": b64(small_jpeg(i)) for i in (1, 2, 3)}}
    status, data, _ = await raw.post(LIVENESS, body)
    assert status == 400
    assert data is not None
    assert "transaction_id" in data["error_message"]


async def test_unknown_path_is_404_envelope(raw: Raw) -> None:
    """An unknown API path is a 404 carrying the envelope."""
    status, data, _ = await raw.post("/api/DigitalIdentity/Nope", {})
    assert status == 404
    assert data is not None
    assert data["error_message"]


async def test_back_endpoint_rejects_front_7002(raw: Raw) -> None:
    """The front of a card sent to the back endpoint fails with 7002."""
    status, data = await raw.back(applicant(1).front, new_tx())
    assert status == 422
    assert data["error_code"] == 7002


async def test_request_ids_are_echoed(raw: Raw) -> None:
    """request_id and client_transaction_id come back in idFrontData; X-Request-Id is echoed."""
    body = {
        "image": b64(small_jpeg()),
        "request_id": "req-1",
        "client_transaction_id": "mine-1",
        "getExtractedData": False,
    }
    status, data, resp = await raw.post(FRONT, body, headers={"X-Request-Id": "hdr-1"})
    assert status == 200
    assert data is not None
    front = data["data"]["idFrontData"]
    assert front["request_id"] == "req-1"
    assert front["client_transaction_id"] == "mine-1"
    assert front["idNumber"] is None  # getExtractedData false: ids only
    assert resp.headers["X-Request-Id"] == "hdr-1"


async def test_liveness_image_of_another_card_is_3101(raw: Raw) -> None:
    """Liveness whose ID front belongs to a different card than the transaction's is 3101."""
    app = applicant(1)
    tx = await raw.scan_both(app)
    status, data = await raw.liveness(applicant(6).front, app.faces, tx)
    assert status == 422
    assert data["error_code"] == 3101


async def test_back_before_front_is_allowed(raw: Raw) -> None:
    """The sides may come in either order."""
    app = applicant(1)
    tx = new_tx()
    status, _ = await raw.back(app.back, tx)
    assert status == 200
    status, _ = await raw.front(app.front, tx)
    assert status == 200
    status, data = await raw.liveness(app.front, app.faces, tx)
    assert data["data"]["isVerificationProcessCompleted"] is True


async def test_arabic_messages(raw: Raw) -> None:
    """Accept_Language: ar gives the Arabic message for a known code."""
    app = applicant(3, "expired")
    tx = new_tx()
    await raw.front(app.front, tx)
    body = {"image": b64(app.back), "transaction_id": tx}
    _, data, _ = await raw.post(BACK, body, headers={"Accept_Language": "ar"})
    assert data is not None
    assert data["error_code"] == 3010
    assert data["error_message"] == "البطاقة منتهية الصلاحية"


async def test_name_check_value(raw: Raw) -> None:
    """A name_check_value that does not match the card adds validation error 3012."""
    app = applicant(1)
    _, ok = await raw.front(app.front, name_check_value=app.fields.first_name_english.upper())
    assert _codes(ok) == []
    _, bad = await raw.front(app.front, name_check_value="Somebody Else")
    assert _codes(bad) == [3012]
