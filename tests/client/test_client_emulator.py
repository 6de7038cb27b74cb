"""The client end to end against the emulator: accounts, verification, admin images, faults."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers.emulator import applicant, sign_up
from vlens_async import AdminLogin, RetryPolicy, VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.errors import (
    AuthenticationError,
    DocumentExpiredError,
    InternalServerError,
    PermissionDeniedError,
    ResponseDecodeError,
    UnprocessableEntityError,
)
from vlens_async.samples import make_photo

PHONE = "+201001234567"


async def register_user(client: VlensClient, emulator: RunningEmulator, phone: str) -> str:
    """Run the documented sign-up; the phone number exists after it. Returns the token."""
    token = await sign_up(client, emulator, phone)
    assert (await client.check_existence(phone_number=phone)).exists
    return token


async def test_signup_verify_link_and_admin_download(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """A user verified with the API key alone is linked after sign-up; an admin downloads it."""
    a = applicant(30)
    outcome = await vlens_client.verify(a.front, a.back, a.faces)
    assert outcome.validated
    token = await register_user(vlens_client, vlens_emulator, PHONE)
    linked = await vlens_client.for_user(token).link_user_to_transaction(outcome.transaction_id)
    assert linked.data.is_digital_identity_verified

    admin = AdminLogin(
        vlens_emulator.tenancy_name,
        vlens_emulator.admin_username or "",
        vlens_emulator.admin_password or "",
    )
    async with VlensClient(
        vlens_emulator.api_key, base_url=vlens_emulator.base_url, auth=admin
    ) as admin_client:
        refs = await admin_client.list_identity_images(PHONE)
        assert refs.id_front_image
        raw = await admin_client.download_step_image(outcome.transaction_id, refs.id_front_image)
    with Image.open(io.BytesIO(raw)) as img:
        assert img.format == "JPEG"
    assert admin.logins == 1


async def test_admin_without_requests_permission_is_refused(
    vlens_emulator: RunningEmulator,
) -> None:
    """An admin lacking the Requests permission gets PermissionDeniedError (403)."""
    viewer = AdminLogin(
        vlens_emulator.tenancy_name,
        vlens_emulator.viewer_username or "",
        vlens_emulator.viewer_password or "",
    )
    async with VlensClient(
        vlens_emulator.api_key, base_url=vlens_emulator.base_url, auth=viewer
    ) as client:
        with pytest.raises(PermissionDeniedError) as info:
            await client.list_identity_images(PHONE)
    assert info.value.status == 403


async def test_wrong_api_key_is_an_authentication_error(vlens_emulator: RunningEmulator) -> None:
    """A wrong ApiKey is a 401 AuthenticationError, not retried, key absent from the message."""
    async with VlensClient("wrong-key-123", base_url=vlens_emulator.base_url) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.scan_id_front(applicant(31).front)
    assert "wrong-key-123" not in str(info.value)
    assert vlens_emulator.counters()["requests_total"] == 1


async def test_body_over_one_mebibyte_is_sent_without_warning(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """An unprepared 2 MB image is sent (warnings are errors here, so no ResourceWarning)."""
    big = make_photo(2400, 1800, seed=5, hard=True)
    assert len(big) > 1024 * 1024
    response = await vlens_client.scan_id_front(big, prepare=False)
    assert response.transaction_id
    assert vlens_emulator.counters()["transactions_created"] == 1


async def test_transient_fault_is_retried_on_the_same_transaction(
    vlens_emulator: RunningEmulator,
) -> None:
    """A 503 and a reset on liveness are retried; the flow still completes on one transaction."""
    a = applicant(32)
    vlens_emulator.set_faults("503:1x1@liveness,reset_after:1x1@id_back")
    retry = RetryPolicy(initial=0.01, max_backoff=0.05, jitter=0.0)
    async with VlensClient(
        vlens_emulator.api_key, base_url=vlens_emulator.base_url, retry=retry
    ) as client:
        outcome = await client.verify(a.front, a.back, a.faces)
    assert outcome.validated
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 1
    assert counters["requests"]["liveness"]["503"] == 1


@pytest.mark.vlens_emulator(tenant={"failure_style": "ok"})
async def test_ok_failure_style_raises_the_code_family_only(vlens_client: VlensClient) -> None:
    """A 200 carrying error_code 3010 raises DocumentExpiredError, not a status error."""
    a = applicant(33, "expired")
    tx = vlens_client.transaction()
    with pytest.raises(DocumentExpiredError) as info:
        await tx.scan_back(a.back)
    assert not isinstance(info.value, UnprocessableEntityError)
    assert info.value.status == 200


# --- retries over loopback, against the emulator's injected faults ---

FAST = RetryPolicy(max_attempts=3, initial=0.01, max_backoff=0.05, jitter=0.0)


def fast_client(emulator: RunningEmulator) -> VlensClient:
    """A client on ``emulator`` whose retries wait milliseconds."""
    return VlensClient(emulator.api_key, base_url=emulator.base_url, retry=FAST)


async def test_proxy_page_502_is_retried_then_succeeds(vlens_emulator: RunningEmulator) -> None:
    """One HTML 502 (as a proxy sends it) is retried; the second attempt answers."""
    vlens_emulator.set_faults("502:1x1@id_front")
    async with fast_client(vlens_emulator) as client:
        response = await client.scan_id_front(applicant(40).front)
    assert response.transaction_id
    statuses = vlens_emulator.counters()["requests"]["id_front"]
    assert statuses["502"] == 1
    assert statuses["200"] == 1


async def test_persistent_proxy_page_is_a_decode_error_and_a_server_error(
    vlens_emulator: RunningEmulator,
) -> None:
    """A 502 page on every attempt: all attempts made, then both error classes."""
    vlens_emulator.set_faults("502:1@id_front")
    async with fast_client(vlens_emulator) as client:
        with pytest.raises(ResponseDecodeError) as info:
            await client.scan_id_front(applicant(41).front)
    assert isinstance(info.value, InternalServerError)
    assert info.value.status == 502
    assert vlens_emulator.counters()["requests"]["id_front"]["502"] == FAST.max_attempts


async def test_injected_429_is_honoured_then_retried(vlens_emulator: RunningEmulator) -> None:
    """A proxy's 429 with Retry-After: the client waits and tries again."""
    vlens_emulator.set_faults("429:1x1@id_back,retry_after=0.05s")
    async with fast_client(vlens_emulator) as client:
        response = await client.scan_id_back(applicant(42).back)
    assert response.transaction_id
    statuses = vlens_emulator.counters()["requests"]["id_back"]
    assert statuses["429"] == 1
    assert statuses["200"] == 1


async def test_register_is_not_sent_twice_after_a_5xx(vlens_emulator: RunningEmulator) -> None:
    """Register is not idempotent: a 503 after it was sent is raised, never retried."""
    async with fast_client(vlens_emulator) as client:
        phone = "+201009998877"
        sent = await client.request_phone_otp(phone)
        otp = vlens_emulator.otp(phone)
        assert otp is not None
        await client.verify_phone_otp(phone, sent.phone_number_otp_request_id, otp)
        vlens_emulator.set_faults("503:1x1@register")
        with pytest.raises(InternalServerError):
            await client.register(
                phone, "S3cret-pass!", otp=otp, otp_request_id=sent.phone_number_otp_request_id
            )
    assert vlens_emulator.counters()["requests"]["register"] == {"503": 1}
