"""VlensClient: lifecycle, headers, every endpoint, request bodies, retries, views, cancellation."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import logging
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.helpers.client import (
    API_KEY,
    BACK_URL,
    BASE,
    EXISTENCE_URL,
    FRONT_URL,
    IMAGES_URL,
    LINK_URL,
    LIVENESS_URL,
    LOGIN_URL,
    OK_ENVELOPE,
    PHONE_URL,
    REFRESH_URL,
    REGISTER_URL,
    STEP_IMAGE_URL,
    body_of,
    golden,
    jpeg,
    mock_api,
    reply,
    serve,
)
from vlens_async import errors
from vlens_async.client import VlensClient
from vlens_async.config import RetryPolicy, Timeouts
from vlens_async.images import PreparedFaces, PreparedImage, prepare_document
from vlens_async.models import (
    ExistenceResult,
    IdentityImageRefs,
    PhoneOtpResult,
    RegistrationResult,
    Tokens,
    VerificationResponse,
)

pytestmark = pytest.mark.usefixtures("no_backoff")


def client(**options: Any) -> VlensClient:
    """A client on the mocked base URL, preprocessing off unless asked."""
    options.setdefault("prepare_images", False)
    return VlensClient(API_KEY, base_url=BASE, **options)


def calls(mock: Any, suffix: str) -> list[Any]:
    """The recorded requests whose path ends with ``suffix``."""
    return [c for (_, url), cs in mock.requests.items() if url.path.endswith(suffix) for c in cs]


# --- lifecycle ---


async def test_using_the_client_outside_async_with_raises() -> None:
    """Before ``async with`` and after it, every call raises ClientClosedError."""
    c = client()
    with pytest.raises(errors.ClientClosedError, match="async with"):
        await c.scan_id_front(b"img")
    async with c:
        pass
    assert c.closed
    with pytest.raises(errors.ClientClosedError):
        await c.check_existence(phone_number="+201000000000")
    with pytest.raises(errors.ClientClosedError):
        async with c:
            pass


async def test_closing_the_client_between_retries_is_client_closed_error() -> None:
    """Closed while a call waits to retry: ClientClosedError, not aiohttp's RuntimeError."""
    c = client()

    async def close_then_fail(url: Any, **kwargs: Any) -> Any:
        await c.close()
        return reply(503, {"error_code": None})

    with mock_api() as mock:
        mock.post(FRONT_URL, callback=close_then_fail)
        async with c:
            with pytest.raises(errors.ClientClosedError, match="closed"):
                await c.scan_id_front(b"img")
        assert len(calls(mock, "front")) == 1


async def test_views_follow_their_parent() -> None:
    """A view is usable while its parent is open and closed with it; closing a view is a no-op."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE, repeat=True)
        parent = client()
        view = parent.for_user("user-token")
        with pytest.raises(errors.ClientClosedError):
            await view.scan_id_front(b"img")
        async with parent:
            async with view:
                await view.scan_id_front(b"img")
            await view.close()
            await view.scan_id_front(b"img")  # the view's close did not close the session
        with pytest.raises(errors.ClientClosedError):
            await view.scan_id_front(b"img")


async def test_unclosed_client_warns() -> None:
    """A client entered but never closed emits a ResourceWarning when collected."""
    c = client()
    await c.__aenter__()
    session = c._shared.session
    with pytest.warns(ResourceWarning, match="unclosed VlensClient"):
        del c  # the last reference: the client is collected here
    assert session is not None
    await session.close()  # tidy up what the test leaked on purpose


def test_configuration_is_checked() -> None:
    """Bad keys, both credentials, plain http to a remote host and bad language are refused."""
    with pytest.raises(errors.ConfigurationError):
        VlensClient("")
    with pytest.raises(errors.ConfigurationError):
        VlensClient(API_KEY, access_token="t", auth=object())  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigurationError, match="http"):
        VlensClient(API_KEY, base_url="http://api.vlenseg.com")
    VlensClient(API_KEY, base_url="http://api.vlenseg.com", allow_insecure_http=True)
    VlensClient(API_KEY, base_url="http://127.0.0.1:8080")
    VlensClient(API_KEY, base_url="http://localhost:8080/")
    with pytest.raises(errors.ConfigurationError):
        VlensClient(API_KEY, language="fr")
    # A name under .localhost is resolved by DNS like any other: no plain http to it.
    with pytest.raises(errors.ConfigurationError, match="http"):
        VlensClient(API_KEY, base_url="http://evil.localhost:8080")


@pytest.mark.parametrize("bad", ["key\r\nX-Injected: 1", "key\n", "key\x00"])
def test_credentials_that_no_header_can_carry_are_refused(bad: str) -> None:
    """A CR, LF or NUL in a key, token or tenancy is a ConfigurationError that never shows it."""
    for make in (
        lambda: VlensClient(bad),
        lambda: VlensClient(API_KEY, access_token=bad),
        lambda: VlensClient(API_KEY, tenancy_name=bad),
    ):
        with pytest.raises(errors.ConfigurationError, match="line break or NUL") as info:
            make()
        assert "key" not in str(info.value).replace("api_key", "")


# --- headers and ids ---


async def test_headers_on_a_verify_call() -> None:
    """ApiKey, Bearer, TenancyName, Accept_Language, X-Request-Id and JSON content type are sent."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client(access_token="user-tok", tenancy_name="acme", language="ar") as c:
            response = await c.scan_id_front(b"img")
        headers = calls(mock, "front")[0].kwargs["headers"]
    assert headers["ApiKey"] == API_KEY
    assert headers["Authorization"] == "Bearer user-tok"
    assert headers["TenancyName"] == "acme"
    assert headers["Accept_Language"] == "ar"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"vlens-async/{version('vlens-async')}"
    assert uuid.UUID(headers["X-Request-Id"]).version == 4
    assert response.request_id == headers["X-Request-Id"]


async def test_no_optional_headers_when_not_set() -> None:
    """Without a token, tenancy or language, those headers are absent."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(b"img")
        headers = calls(mock, "front")[0].kwargs["headers"]
    assert {"Authorization", "TenancyName", "Accept_Language"}.isdisjoint(headers)


async def test_first_scan_gets_a_client_generated_transaction_id() -> None:
    """With no transaction_id, a UUID4 is generated, sent, and reported back."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            response = await c.scan_id_front(b"img")
        sent = body_of(calls(mock, "front")[0])["transaction_id"]
    assert uuid.UUID(sent).version == 4
    assert response.transaction_id == sent == response.sent_transaction_id


async def test_server_transaction_id_wins() -> None:
    """When the server returns a transaction id, response.transaction_id is that one."""
    payload = golden("gitbook_verify_response.json")
    payload["services"] = {}
    payload["error_code"] = None
    with mock_api() as mock:
        mock.post(BACK_URL, payload=payload)
        async with client() as c:
            response = await c.scan_id_back(b"img", transaction_id="mine")
    assert response.transaction_id == "123e4567-e89b-12d3-a456-426614174000"


async def test_request_id_is_the_same_on_every_retry() -> None:
    """Two 503s then 200: three attempts with the same X-Request-Id and transaction id."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=503, payload={"error_code": None})
        mock.post(FRONT_URL, status=503, body=b"")
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(b"img")
        sent = calls(mock, "front")
    assert len(sent) == 3
    assert len({s.kwargs["headers"]["X-Request-Id"] for s in sent}) == 1
    assert len({body_of(s)["transaction_id"] for s in sent}) == 1


async def test_given_request_id_is_used_for_header_and_body() -> None:
    """A caller's request_id becomes the X-Request-Id and the body's request_id."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(b"img", request_id="req-42", transaction_id="tx-1")
        call = calls(mock, "front")[0]
    assert call.kwargs["headers"]["X-Request-Id"] == "req-42"
    assert body_of(call)["request_id"] == "req-42"


# --- request bodies against the seeds ---


async def test_scan_body_uses_the_seed_request_keys() -> None:
    """The id/front body's keys are the seed's, image is base64 of the input, options sent."""
    seed_keys = set(golden("gitbook_verify_id_request.json"))
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(
                b"\xff\xd8raw",
                transaction_id="tx-1",
                client_transaction_id="mine-1",
                name_check_value="Ahmed",
                request_id="r-1",
                country="EG",
                get_extracted_data=False,
            )
        body = body_of(calls(mock, "front")[0])
    assert set(body) == seed_keys
    assert base64.b64decode(body["image"]) == b"\xff\xd8raw"
    assert body["getExtractedData"] is False
    assert body["country"] == "EG"


async def test_liveness_body_uses_the_seed_request_keys() -> None:
    """The liveness body has image + face_1..3 and the seed's option keys, in base64."""
    seed_keys = set(golden("gitbook_liveness_multi_request.json")) - {"id_front_image"}
    with mock_api() as mock:
        mock.post(LIVENESS_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.check_liveness(
                [b"f1", bytearray(b"f2"), memoryview(b"f3")],
                id_front=b"front",
                transaction_id="tx-1",
                client_transaction_id="c",
                name_check_value="n",
                request_id="r",
                country="EG",
            )
        body = body_of(calls(mock, "multi")[0])
    assert set(body) == seed_keys
    assert [base64.b64decode(body[k]) for k in ("image", "face_1", "face_2", "face_3")] == [
        b"front",
        b"f1",
        b"f2",
        b"f3",
    ]


async def test_liveness_needs_three_frames_and_a_transaction() -> None:
    """Two frames, or an empty transaction id, are refused before anything is sent."""
    async with client() as c:
        with pytest.raises(errors.ConfigurationError, match="3 face frames"):
            await c.check_liveness([b"a", b"b"], id_front=b"f", transaction_id="t")
        with pytest.raises(errors.ConfigurationError):
            await c.check_liveness([b"a", b"b", b"c"], id_front=b"f", transaction_id="")


async def test_image_inputs_paths_files_and_pillow(tmp_path: Path) -> None:
    """With preprocessing off, paths, file objects and PIL images are read and sent."""
    path = tmp_path / "front.jpg"
    path.write_bytes(b"from-a-path")
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE, repeat=True)
        async with client() as c:
            await c.scan_id_front(path)
            await c.scan_id_front(str(path))
            await c.scan_id_front(io.BytesIO(b"from-a-file"))
            await c.scan_id_front(Image.new("RGB", (4, 4)))
        images = [base64.b64decode(body_of(s)["image"]) for s in calls(mock, "front")]
    assert images[:3] == [b"from-a-path", b"from-a-path", b"from-a-file"]
    assert images[3].startswith(b"\x89PNG")


async def test_preprocessing_on_by_default_and_per_call() -> None:
    """By default documents are prepared (a JPEG within limits); prepare=False sends as is."""
    big = jpeg(3000, 2000)
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE, repeat=True)
        async with VlensClient(API_KEY, base_url=BASE) as c:
            await c.scan_id_front(big)
            await c.scan_id_front(b"raw-bytes", prepare=False)
        sent = [base64.b64decode(body_of(s)["image"]) for s in calls(mock, "front")]
    prepared = Image.open(io.BytesIO(sent[0]))
    assert prepared.format == "JPEG"
    assert max(prepared.size) <= 2000
    assert sent[1] == b"raw-bytes"


async def test_prepared_inputs_are_sent_as_is() -> None:
    """PreparedImage and PreparedFaces pass through: exactly their bytes are sent."""
    front = await prepare_document(jpeg(400, 250))
    frames = [
        await prepare_document(jpeg(96, 96, colour)) for colour in ((1, 2, 3), (9, 8, 7), (5, 5, 5))
    ]
    faces = PreparedFaces(frames)
    with mock_api() as mock:
        mock.post(LIVENESS_URL, payload=OK_ENVELOPE)
        async with VlensClient(API_KEY, base_url=BASE) as c:
            await c.check_liveness(faces, id_front=front, transaction_id="tx")
        body = body_of(calls(mock, "multi")[0])
    assert base64.b64decode(body["image"]) == front.data
    assert [base64.b64decode(body[f"face_{i}"]) for i in (1, 2, 3)] == [f.data for f in faces]
    assert isinstance(front, PreparedImage)


# --- every endpoint ---


async def test_every_endpoint_returns_its_model() -> None:
    """Each endpoint coroutine sends the API.md request and returns its typed model."""
    step_image = golden("apimd_step_image_response.json")
    with mock_api() as mock:
        mock.post(
            BACK_URL,
            payload=golden("readme_verify_id_back_response.json")
            | {"error_code": None, "services": {}},
        )
        mock.post(LINK_URL, payload=golden("guide_liveness_success_response.json"))
        mock.get(IMAGES_URL, payload=golden("readme_list_identity_images_response.json"))
        mock.get(STEP_IMAGE_URL, payload=step_image)
        mock.post(LOGIN_URL, payload=golden("apimd_login_response.json"))
        mock.post(REFRESH_URL, payload=golden("apimd_refresh_token_response.json"))
        mock.post(EXISTENCE_URL, payload=golden("apimd_check_existence_response.json"))
        mock.post(PHONE_URL, payload=golden("apimd_phone_otp_response.json"), repeat=True)
        mock.post(REGISTER_URL, payload=golden("apimd_register_response.json"))
        async with client(tenancy_name="acme", access_token="admin") as c:
            back = await c.scan_id_back(b"img", transaction_id="tx")
            linked = await c.link_user_to_transaction("c83669c9-e06e-4564-b355-a2cb2d55a570")
            refs = await c.list_identity_images("+201234567890")
            raw = await c.download_step_image("tx", refs.id_front_image or "")
            tokens = await c.login("admin", "pw")
            refreshed = await c.refresh_token(tokens.refresh_token or "")
            exists = await c.check_existence(phone_number="+201234567890")
            otp = await c.request_phone_otp("+201234567890")
            checked = await c.verify_phone_otp("+201234567890", "otp-req", "123456")
            registered = await c.register(
                "+201234567890", "pw", otp="123456", otp_request_id="otp-req", email="u@x.eg"
            )
        link_body = body_of(calls(mock, "LinkUserWithExistingTransaction")[0])
        images_url = next(url for (_, url) in mock.requests if url.path.endswith("Images"))
        step_url = next(url for (_, url) in mock.requests if url.path.endswith("StepImage"))
        phone_bodies = [body_of(s) for s in calls(mock, "StepVerifyPhone")]
        register_body = body_of(calls(mock, "Register")[0])
        existence_body = body_of(calls(mock, "CheckExistenceOfEmailOrPhone")[0])
    assert isinstance(back, VerificationResponse)
    assert back.data.id_back_data is not None
    assert isinstance(linked, VerificationResponse)
    assert linked.verified
    assert link_body == {
        "transactionId": "c83669c9-e06e-4564-b355-a2cb2d55a570",
        "getExtractedData": True,
    }
    assert isinstance(refs, IdentityImageRefs)
    assert images_url.query["emailOrPhoneNumber"] == "+201234567890"
    assert dict(step_url.query) == {
        "TransactionId": "tx",
        "FileName": "user123_id_front_20240601.jpg",
    }
    assert raw == base64.b64decode(step_image["data"]["image"])
    assert raw.startswith(b"\xff\xd8")
    assert isinstance(tokens, Tokens)
    assert isinstance(refreshed, Tokens)
    assert refreshed.current_refresh_token == "admin-refresh-token-2"
    assert isinstance(exists, ExistenceResult)
    assert exists.exists is False
    assert existence_body == {"phoneNumber": "+201234567890"}
    assert isinstance(otp, PhoneOtpResult)
    assert isinstance(checked, PhoneOtpResult)
    assert phone_bodies == [
        {"phoneNumber": "+201234567890"},
        {
            "phoneNumber": "+201234567890",
            "phoneNumberOtpRequestId": "otp-req",
            "phoneNumberOtp": "123456",
        },
    ]
    assert isinstance(registered, RegistrationResult)
    assert registered.user is not None
    assert register_body == {
        "phoneNumber": "+201234567890",
        "password": "pw",
        "phoneNumberOtp": "123456",
        "phoneNumberOtpRequestId": "otp-req",
        "email": "u@x.eg",
    }


async def test_envelope_without_data_is_a_decode_error() -> None:
    """A success envelope with data null, where data is needed, is a ResponseDecodeError."""
    with mock_api() as mock:
        mock.post(LOGIN_URL, payload={"data": None, "error_code": None})
        async with client(tenancy_name="acme") as c:
            with pytest.raises(errors.ResponseDecodeError, match="no data"):
                await c.login("u", "p")


async def test_login_needs_a_tenancy() -> None:
    """Without a tenancy name anywhere, login refuses before sending."""
    async with client() as c:
        with pytest.raises(errors.ConfigurationError, match="tenancy"):
            await c.login("u", "p")


async def test_check_existence_needs_an_argument() -> None:
    """check_existence() with neither phone nor e-mail is refused."""
    async with client() as c:
        with pytest.raises(errors.ConfigurationError):
            await c.check_existence()


# --- failures through the client ---


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (200, {"error_code": 3010, "error_message": "expired"}, errors.DocumentExpiredError),
        (422, {"error_code": 3101, "error_message": "mismatch"}, errors.DocumentMismatchError),
        (200, {"error_code": 4003}, errors.TooManyAttemptsError),
        (415, {"error_code": 5001}, errors.ImageRejectedError),
        (403, {"error_code": None}, errors.PermissionDeniedError),
        (
            200,
            {"services": {"validations": {"validation_errors": [{"field": "image"}]}}},
            errors.ValidationFailedError,
        ),
    ],
)
async def test_failures_raise_typed_errors(
    status: int, payload: dict[str, Any], expected: type[errors.APIError]
) -> None:
    """Statuses, error codes and validation errors raise their class with the request id."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=status, payload=payload)
        async with client() as c:
            with pytest.raises(expected) as info:
                await c.scan_id_front(b"img", transaction_id="tx-9")
        rid = calls(mock, "front")[0].kwargs["headers"]["X-Request-Id"]
    assert info.value.request_id == rid
    assert info.value.status == status
    envelope = info.value.envelope
    assert isinstance(envelope, VerificationResponse)
    assert envelope.transaction_id == "tx-9"


async def test_html_502_is_retried_then_raised_as_decode_error() -> None:
    """A proxy's HTML 502 is retried like any 502; when it persists, ResponseDecodeError."""
    with mock_api() as mock:
        mock.post(
            FRONT_URL,
            status=502,
            body=b"<html>Bad Gateway</html>",
            content_type="text/html",
            repeat=True,
        )
        async with client(retry=RetryPolicy(max_attempts=3)) as c:
            with pytest.raises(errors.ResponseDecodeError) as info:
                await c.scan_id_front(b"img")
        assert len(calls(mock, "front")) == 3
    assert info.value.status == 502


async def test_garbled_body_is_retried_but_a_wrong_shape_is_not() -> None:
    """A 200 cut short (not JSON) is a lost response and retried; a wrong shape is raised once."""
    with mock_api() as mock:
        mock.post(FRONT_URL, body=b'{"services": {"liven')
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        mock.post(BACK_URL, payload={"services": {"liveness": "perhaps"}}, repeat=True)
        async with client() as c:
            await c.scan_id_front(b"img")
            with pytest.raises(errors.ResponseDecodeError, match="liveness"):
                await c.scan_id_back(b"img")
        assert len(calls(mock, "front")) == 2
        assert len(calls(mock, "back")) == 1


async def test_retry_after_on_429_then_success() -> None:
    """A 429 with Retry-After is retried, then the success returned."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=429, payload={}, headers={"Retry-After": "2"})
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(b"img")
        assert len(calls(mock, "front")) == 2


async def test_retry_after_beyond_the_deadline_raises_timeout_at_once() -> None:
    """A 429 asking for 100 s when the call's deadline is 5 s: APITimeoutError after 1 attempt."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=429, payload={}, headers={"Retry-After": "100"}, repeat=True)
        async with client(retry=RetryPolicy(retry_after_cap=120)) as c:
            with pytest.raises(errors.APITimeoutError) as info:
                await c.scan_id_front(b"img", timeouts=Timeouts(deadline=5))
        assert len(calls(mock, "front")) == 1
    assert info.value.status == 429


async def test_per_call_retry_override() -> None:
    """retry=RetryPolicy.disabled() on one call makes a single attempt."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=503, payload={}, repeat=True)
        async with client() as c:
            with pytest.raises(errors.InternalServerError):
                await c.scan_id_front(b"img", retry=RetryPolicy.disabled())
        assert len(calls(mock, "front")) == 1


async def test_per_call_timeout_override_reaches_aiohttp() -> None:
    """Per-call timeouts set the attempt's aiohttp timeout (total capped by the deadline)."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(
                b"img", timeouts=Timeouts(connect=1, read=2, per_attempt=30, deadline=10)
            )
        timeout = calls(mock, "front")[0].kwargs["timeout"]
    assert timeout.sock_connect == 1
    assert timeout.sock_read == 2
    assert 0 < timeout.total <= 10


async def test_non_idempotent_calls_are_not_retried_on_5xx() -> None:
    """request_phone_otp and register are sent once on a 503 (a retry could send a 2nd SMS)."""
    with mock_api() as mock:
        mock.post(PHONE_URL, status=503, payload={}, repeat=True)
        mock.post(REGISTER_URL, status=503, payload={}, repeat=True)
        async with client() as c:
            with pytest.raises(errors.InternalServerError):
                await c.request_phone_otp("+201234567890")
            with pytest.raises(errors.InternalServerError):
                await c.register("+201234567890", "pw", otp="1", otp_request_id="r")
        assert len(calls(mock, "StepVerifyPhone")) == 1
        assert len(calls(mock, "Register")) == 1


async def test_non_idempotent_calls_retry_on_429() -> None:
    """A 429 means nothing was done: even the OTP request is retried."""
    with mock_api() as mock:
        mock.post(PHONE_URL, status=429, payload={})
        mock.post(PHONE_URL, payload=golden("apimd_phone_otp_response.json"))
        async with client() as c:
            await c.request_phone_otp("+201234567890")
        assert len(calls(mock, "StepVerifyPhone")) == 2


async def test_connection_errors_are_retried() -> None:
    """A reset then a success: the scan succeeds on the second attempt."""
    with mock_api() as mock:
        mock.post(FRONT_URL, exception=aiohttp.ServerDisconnectedError())
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.scan_id_front(b"img")
        assert len(calls(mock, "front")) == 2


# --- views ---


async def test_for_user_and_with_options_share_the_session() -> None:
    """Views share the parent's session and swap only their own options."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE, repeat=True)
        async with client(access_token="admin-tok", language="en") as c:
            alice = c.for_user("alice-tok")
            arabic = c.with_options(language="ar", retry=RetryPolicy.disabled())
            anonymous = c.with_options(access_token=None)
            assert alice._shared.session is c._shared.session
            for view in (c, alice, arabic, anonymous):
                await view.scan_id_front(b"img")
        sent = [s.kwargs["headers"] for s in calls(mock, "front")]
    assert [h.get("Authorization") for h in sent] == [
        "Bearer admin-tok",
        "Bearer alice-tok",
        "Bearer admin-tok",
        None,
    ]
    assert [h.get("Accept_Language") for h in sent] == ["en", "en", "ar", "en"]


def test_with_options_refuses_both_credentials() -> None:
    """access_token and auth together are ambiguous."""
    with pytest.raises(errors.ConfigurationError):
        client().with_options(access_token="a", auth=None)


# --- flow hooks ---


async def test_transaction_and_verify_delegate_to_the_flow() -> None:
    """client.transaction() builds a flow Transaction bound to this client with the given id."""
    from vlens_async.flow import Transaction

    async with client() as c:
        tx = c.transaction("tx-1", client_transaction_id="mine")
        assert isinstance(tx, Transaction)
        assert tx.transaction_id == "tx-1"


# --- cancellation and leaks ---


async def test_cancelling_a_call_releases_its_connection() -> None:
    """With one connection, a cancelled slow call frees it: the next call goes through."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response(OK_ENVELOPE)

    async def fast(request: web.Request) -> web.Response:
        return web.json_response(OK_ENVELOPE)

    app = web.Application()
    app.router.add_post("/api/DigitalIdentity/verify/id/front", slow)
    app.router.add_post("/api/DigitalIdentity/verify/id/back", fast)
    before = asyncio.all_tasks()
    async with serve(app) as base:
        async with VlensClient(
            API_KEY, base_url=base, connector_limit=1, prepare_images=False
        ) as c:
            call = asyncio.create_task(c.scan_id_front(b"img"))
            await arrived.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            response = await asyncio.wait_for(c.scan_id_back(b"img"), timeout=10)
            assert isinstance(response, VerificationResponse)
            connector = c._shared.session.connector if c._shared.session else None
            assert connector is not None
        release.set()
    assert connector.closed
    await asyncio.sleep(0)
    leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leaked == set()


async def test_liveness_prepares_documents_and_faces_by_default() -> None:
    """With preprocessing on, the ID front and the three frames go out as prepared JPEGs."""
    from vlens_async.config import FACE_MAX_BYTES
    from vlens_async.samples import make_photo

    frames = [make_photo(480, 640, seed) for seed in (1, 2, 3)]
    with mock_api() as mock:
        mock.post(LIVENESS_URL, payload=OK_ENVELOPE)
        async with VlensClient(API_KEY, base_url=BASE) as c:
            await c.check_liveness(iter(frames), id_front=jpeg(1200, 760), transaction_id="tx")
        body = body_of(calls(mock, "multi")[0])
    for key in ("image", "face_1", "face_2", "face_3"):
        data = base64.b64decode(body[key])
        assert Image.open(io.BytesIO(data)).format == "JPEG"
        assert len(data) <= FACE_MAX_BYTES or key == "image"


async def test_liveness_accepts_an_iterator_of_raw_frames() -> None:
    """A generator of frames works with preprocessing off (it is read exactly once)."""
    with mock_api() as mock:
        mock.post(LIVENESS_URL, payload=OK_ENVELOPE)
        async with client() as c:
            await c.check_liveness(
                (f for f in (b"a", io.BytesIO(b"b"), b"c")), id_front=b"f", transaction_id="t"
            )
        body = body_of(calls(mock, "multi")[0])
    assert [base64.b64decode(body[f"face_{i}"]) for i in (1, 2, 3)] == [b"a", b"b", b"c"]


async def test_image_errors_stop_the_call_before_sending() -> None:
    """A file that is not an image raises UnsupportedImageError and nothing is sent."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with VlensClient(API_KEY, base_url=BASE) as c:
            with pytest.raises(errors.UnsupportedImageError):
                await c.scan_id_front(b"this is not an image")
        assert calls(mock, "front") == []


# --- review fixes: non-idempotent calls, deadline errors, base_url, transaction options ---


async def test_refresh_and_otp_check_are_not_retried_on_5xx() -> None:
    """refresh_token (rotates the token) and verify_phone_otp (one-time) are sent once on a 503."""
    with mock_api() as mock:
        mock.post(REFRESH_URL, status=503, payload={}, repeat=True)
        mock.post(PHONE_URL, status=503, payload={}, repeat=True)
        async with client() as c:
            with pytest.raises(errors.InternalServerError):
                await c.refresh_token("refresh-1")
            with pytest.raises(errors.InternalServerError):
                await c.verify_phone_otp("+201234567890", "otp-req-1", "123456")
        assert len(calls(mock, "RefreshToken")) == 1
        assert len(calls(mock, "StepVerifyPhone")) == 1


async def test_otp_check_still_retries_on_429() -> None:
    """A 429 means nothing was done, so even the one-time password check is sent again."""
    with mock_api() as mock:
        mock.post(PHONE_URL, status=429, payload={})
        mock.post(PHONE_URL, payload=golden("apimd_phone_otp_response.json"))
        async with client() as c:
            await c.verify_phone_otp("+201234567890", "otp-req-1", "123456")
        assert len(calls(mock, "StepVerifyPhone")) == 2


class SlowToken:
    """An AuthProvider whose token arrives after the call's (tiny) deadline has passed."""

    async def get_token(self, api: Any) -> str | None:
        """Sleep past the deadline, then hand out a token."""
        await asyncio.sleep(0.05)
        return "tok"

    async def on_unauthorized(self, api: Any, rejected: str | None) -> bool:
        """Never renews."""
        return False


async def test_deadline_timeout_carries_request_id_method_and_path() -> None:
    """A deadline spent before the first attempt raises APITimeoutError naming the request."""
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client(auth=SlowToken()) as c:
            with pytest.raises(errors.APITimeoutError) as info:
                await c.scan_id_front(b"img", request_id="rid-42", timeouts=Timeouts(deadline=0.01))
        assert calls(mock, "front") == []
    assert info.value.request_id == "rid-42"
    assert info.value.method == "POST"
    assert info.value.path == "/api/DigitalIdentity/verify/id/front"


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:SECRETPW@api.vlenseg.com",
        "https://admin@api.vlenseg.com",
        "http://admin:SECRETPW@127.0.0.1:8080",
    ],
)
def test_base_url_with_credentials_is_refused(url: str) -> None:
    """user:password@ in base_url is refused with a clear error that does not repeat it."""
    with pytest.raises(errors.ConfigurationError, match="credentials") as info:
        VlensClient(API_KEY, base_url=url)
    assert "SECRETPW" not in str(info.value)
    assert "admin" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://admin:SECRETPW@files.example/x",
        "https://admin:SECRETPW@",
        "admin:SECRETPW@api.vlenseg.com",
        "http://admin:SECRETPW@api.vlenseg.com",
        "https://admin:SECRETPW@[::1",
    ],
)
def test_bad_base_url_errors_never_echo_userinfo(url: str) -> None:
    """Whatever is wrong with base_url, the error shows at most its scheme and host."""
    with pytest.raises(errors.ConfigurationError) as info:
        VlensClient(API_KEY, base_url=url)
    assert "SECRETPW" not in str(info.value)
    assert "admin" not in str(info.value)


async def test_transaction_passes_the_flow_options() -> None:
    """client.transaction() takes the Transaction's options as typed keywords and passes them."""
    params = inspect.signature(VlensClient.transaction).parameters
    assert {"max_liveness_attempts", "get_extracted_data", "prepare"} <= set(params)
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params.values())
    async with client(prepare_images=True) as c:
        tx = c.transaction("tx-1", max_liveness_attempts=1, get_extracted_data=False, prepare=False)
        default = c.transaction()
    assert (tx.max_liveness_attempts, tx._get_extracted_data, tx.prepare) == (1, False, False)
    assert (default.max_liveness_attempts, default._get_extracted_data, default.prepare) == (
        3,
        True,
        True,
    )
    with pytest.raises(errors.FlowError):
        c.transaction(max_liveness_attempts=0)


@pytest.mark.parametrize("prepare_images", [True, False])
async def test_transaction_follows_the_clients_prepare_images(prepare_images: bool) -> None:
    """A Transaction made without ``prepare`` takes the client's ``prepare_images``."""
    async with client(prepare_images=prepare_images) as c:
        assert c.prepare_images is prepare_images
        assert c.base_url == BASE
        assert c.for_user("tok").base_url == BASE
        assert c.transaction().prepare is prepare_images
        assert c.transaction(prepare=not prepare_images).prepare is not prepare_images


async def test_verify_without_preparing_puts_the_given_bytes_on_the_wire() -> None:
    """VlensClient(prepare_images=False).verify() sends every image exactly as given."""
    big = jpeg(2400, 1800)  # over the face side limit: preparing would shrink it
    front, back = big + b"front", big + b"back"
    frames = (big + b"1", big + b"2", big + b"3")
    with mock_api() as mock:
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        mock.post(BACK_URL, payload=OK_ENVELOPE)
        mock.post(LIVENESS_URL, payload=golden("guide_liveness_success_response.json"))
        async with client(prepare_images=False) as c:
            outcome = await c.verify(front, back, frames)
        sent = {
            suffix: body_of(calls(mock, suffix)[0])
            for suffix in ("/id/front", "/id/back", "/liveness/multi")
        }
    assert outcome.error is None
    assert base64.b64decode(sent["/id/front"]["image"]) == front
    assert base64.b64decode(sent["/id/back"]["image"]) == back
    liveness = sent["/liveness/multi"]
    assert base64.b64decode(liveness["image"]) == front
    assert [base64.b64decode(liveness[f"face_{i}"]) for i in (1, 2, 3)] == list(frames)


async def test_retries_are_logged_at_debug_on_our_logger(caplog: pytest.LogCaptureFixture) -> None:
    """Each scheduled retry has a DEBUG line on "vlens_async" naming method, path and request id."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=503, payload={})
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with client() as c:
            with caplog.at_level(logging.DEBUG, logger="vlens_async"):
                await c.scan_id_front(b"img", request_id="rid-9")
    (record,) = [
        r for r in caplog.records if r.name == "vlens_async" and "retry scheduled" in r.getMessage()
    ]
    line = record.getMessage()
    assert record.levelno == logging.DEBUG
    assert line.startswith("POST /api/DigitalIdentity/verify/id/front retry scheduled")
    assert "attempt=1" in line
    assert "reason=InternalServerError" in line
    assert "request_id=rid-9" in line
