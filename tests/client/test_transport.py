"""One request, one boundary: statuses, error codes, validation errors and bad bodies mapped."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import pickle
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.client import BASE, golden, mock_api, serve
from vlens_async import _wire, errors
from vlens_async._classify import is_verdict
from vlens_async._transport import (
    Request,
    _parse_json,
    connection_not_established,
    interpret,
    parse_retry_after,
    send,
)
from vlens_async.models import Envelope, Tokens, VerificationResponse

REQ = Request(
    method="POST",
    path="/api/DigitalIdentity/verify/id/front",
    headers={},
    request_id="rid-1",
    body=b"{}",
)
TIMEOUT = aiohttp.ClientTimeout(total=5)


def decode_verification(payload: Any) -> VerificationResponse:
    """The client's decoder for verification responses (minus the client-side fields)."""
    if not _wire.is_envelope(payload):
        raise errors.ResponseDecodeError("the response is not the Vlens envelope")
    return _wire.structure(payload, VerificationResponse)


def run(status: int, body: bytes | str | Any, retry_after: float | None = None) -> Any:
    """interpret() on a status and a body (a dict/list is JSON-encoded first)."""
    raw = (
        body
        if isinstance(body, bytes)
        else (body.encode() if isinstance(body, str) else orjson.dumps(body))
    )
    payload = _parse_json(raw) if raw else object()
    return interpret(REQ, status, raw, payload, decode_verification, retry_after=retry_after)


def envelope(code: Any = None, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """A minimal Vlens envelope."""
    return {"services": {}, "data": {}, "error_code": code, "error_message": message, **extra}


def test_success_returns_the_model() -> None:
    """A 200 with error_code null returns the decoded model."""
    model = run(200, golden("guide_liveness_success_response.json"))
    assert isinstance(model, VerificationResponse)


@pytest.mark.parametrize("status", [200, 422, 502])
def test_a_deeply_nested_array_body_leaves_an_error_that_pickles(status: int) -> None:
    """A JSON array 900 deep in place of the envelope: envelope is [], pickle and deepcopy work."""
    body = b"[" * 900 + b"]" * 900
    with pytest.raises(errors.ResponseDecodeError) as info:
        run(status, body)
    err = info.value
    assert (err.status, err.envelope, err.body) == (status, [], body)
    for copied in (pickle.loads(pickle.dumps(err)), copy.deepcopy(err)):
        assert type(copied) is type(err)
        assert (copied.status, copied.envelope, copied.body) == (status, [], body)


@pytest.mark.parametrize("code", [None, 0, "0"])
def test_error_code_zero_and_null_are_success(code: Any) -> None:
    """error_code 0 (a documented example) and null both mean success."""
    assert isinstance(run(200, envelope(code)), VerificationResponse)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (408, errors.RequestTimeoutError),
        (415, errors.UnsupportedMediaTypeError),
        (422, errors.UnprocessableEntityError),
        (429, errors.RateLimitError),
        (500, errors.InternalServerError),
        (502, errors.InternalServerError),
        (503, errors.InternalServerError),
        (302, errors.APIStatusError),
        (418, errors.APIStatusError),
    ],
)
def test_each_status_maps_to_its_class(status: int, expected: type[errors.APIError]) -> None:
    """Every documented status raises its class, carrying status, envelope and request id."""
    with pytest.raises(expected) as info:
        run(status, envelope(None, "refused"))
    err = info.value
    assert err.status == status
    assert err.request_id == "rid-1"
    assert err.error_message == "refused"
    assert isinstance(err.envelope, VerificationResponse)
    assert err.method == "POST"
    assert err.path == REQ.path


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1050, errors.ImageRejectedError),
        (3001, errors.DocumentError),
        (3010, errors.DocumentExpiredError),
        (3011, errors.DocumentError),
        (3101, errors.DocumentMismatchError),
        (4001, errors.BundleError),
        (4003, errors.TooManyAttemptsError),
        (4207, errors.FaceError),
        (5002, errors.ImageRejectedError),
        (5003, errors.ImageRejectedError),
        (7000, errors.VlensAPIError),
        (400, errors.VlensAPIError),
    ],
)
def test_error_code_on_200_maps_to_its_family(code: int, expected: type[errors.APIError]) -> None:
    """A 200 with a non-zero error_code raises the code's family, with code and message."""
    with pytest.raises(expected) as info:
        run(200, envelope(code, "رسالة خطأ"))
    assert info.value.error_code == code
    assert info.value.status == 200
    assert info.value.error_message == "رسالة خطأ"
    assert not isinstance(info.value, errors.APIStatusError)


def test_error_code_with_status_is_both() -> None:
    """A 422 carrying 3010 is caught as DocumentExpiredError and UnprocessableEntityError."""
    with pytest.raises(errors.DocumentExpiredError) as info:
        run(422, envelope(3010, "expired"))
    assert isinstance(info.value, errors.UnprocessableEntityError)


def test_validation_errors_on_200_raise_with_the_issues() -> None:
    """A 200 whose validation_errors list is non-empty is a ValidationFailedError with the list."""
    body = envelope(None)
    body["services"] = {
        "validations": {
            "validation_errors": [
                {"field": "image", "value": "x", "errors": [{"code": 5, "message": "blurry"}]}
            ]
        }
    }
    with pytest.raises(errors.ValidationFailedError) as info:
        run(200, body)
    issue = info.value.validation_errors[0]
    assert issue.field == "image"
    assert issue.errors[0].message == "blurry"
    # The server's field names stay on the attribute: the message only counts them.
    assert "image" not in str(info.value)
    assert "1 validation error" in str(info.value)


def test_error_code_wins_over_validation_errors_but_keeps_them() -> None:
    """With both, the code's class is raised and the validation errors ride along."""
    body = envelope(3001, "bad id")
    body["services"] = {"Validations": {"validation_errors": [{"field": "idNumber"}]}}
    with pytest.raises(errors.DocumentError) as info:
        run(200, body)
    assert [i.field for i in info.value.validation_errors] == ["idNumber"]


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'{"services": {"liveness": tr',
        b"",
        b"[1, 2]",
        b'"just a string"',
        b'{"unrelated": true}',
    ],
)
def test_non_envelope_2xx_is_a_decode_error(body: bytes) -> None:
    """HTML, truncated JSON, empty, non-objects, foreign objects on a 2xx: ResponseDecodeError."""
    with pytest.raises(errors.ResponseDecodeError) as info:
        run(200, body)
    assert info.value.status == 200
    assert info.value.request_id == "rid-1"


def test_html_502_is_a_decode_error_with_status_and_body() -> None:
    """A proxy's HTML 502 page is a ResponseDecodeError that keeps the status and the page."""
    page = b"<html><h1>502 Bad Gateway</h1></html>"
    with pytest.raises(errors.ResponseDecodeError) as info:
        run(502, page)
    assert info.value.status == 502
    assert info.value.body == page
    # ... and a 5xx like any other, whichever ``except`` the caller wrote.
    assert isinstance(info.value, errors.InternalServerError)
    assert isinstance(info.value, errors.APIStatusError)
    assert type(info.value) is errors.decode_error_class(503)


@pytest.mark.parametrize("body", [b"", b"Unauthorized", b"<html>no</html>"])
def test_4xx_without_an_envelope_keeps_its_status_class(body: bytes) -> None:
    """A 401 with an empty or non-JSON body is still an AuthenticationError."""
    with pytest.raises(errors.AuthenticationError) as info:
        run(401, body)
    assert info.value.envelope is None


def test_empty_5xx_is_a_status_error() -> None:
    """A 503 with no body at all is an InternalServerError (there was nothing to decode)."""
    with pytest.raises(errors.InternalServerError):
        run(503, b"")


def test_error_body_that_does_not_decode_keeps_its_code_and_raw_bytes() -> None:
    """A malformed 422 envelope keeps its error_code; envelope holds only what was peeked."""
    body = {"errorCode": "3010", "errorMessage": "expired", "services": []}
    with pytest.raises(errors.DocumentExpiredError) as info:
        run(422, body)
    assert info.value.envelope == {"error_code": 3010, "error_message": "expired"}
    assert info.value.error_message == "expired"
    assert info.value.body == orjson.dumps(body)


@pytest.mark.parametrize("code", ["\u00b2", "9" * 5000, "3010x", "-", ""])
@pytest.mark.parametrize("status", [200, 422])
def test_an_error_code_string_int_refuses_is_no_code(status: int, code: str) -> None:
    """A string error code of non-ASCII digits or past int()'s 4,300 digits: a VlensError."""
    body = {"errorCode": code, "services": []}
    with pytest.raises(errors.APIError) as info:
        run(status, body)
    assert info.value.error_code is None


@pytest.mark.parametrize("body", [b"", b"  \n", b"[1, 2]", b'"text"', b"null", b"3010"])
@pytest.mark.parametrize("status", [400, 415, 422])
def test_a_verdict_status_without_an_envelope_judged_nothing(status: int, body: bytes) -> None:
    """A 400/415/422 whose body is empty or JSON but no object: a decode error, not a verdict."""
    with pytest.raises(errors.ResponseDecodeError) as info:
        run(status, body)
    err = info.value
    assert isinstance(err, errors.api_error_class(status, None))  # its status class still
    assert err.status == status
    assert err.error_code is None
    assert err.body == body
    assert err.audience == "retry"
    assert not is_verdict(err)
    assert ("empty" in err.message) is (not body.strip())


def test_retry_after_is_carried() -> None:
    """A 429's Retry-After (in seconds) is on the error."""
    with pytest.raises(errors.RateLimitError) as info:
        run(429, envelope(None), retry_after=7.0)
    assert info.value.retry_after == 7.0


def test_retry_after_parsing() -> None:
    """Retry-After accepts delta-seconds and HTTP dates; junk and negatives are handled."""
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("inf") is None
    assert parse_retry_after("Wed, 21 Oct 10000000000 07:28:00 GMT") is None  # past year 9999
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30.0)


def test_generic_envelope_without_services() -> None:
    """Token envelopes (no services) go through the same rules."""
    payload = golden("apimd_login_response.json")

    def decode(p: Any) -> Envelope[Tokens]:
        return _wire.structure(p, Envelope[Tokens])

    env = interpret(REQ, 200, orjson.dumps(payload), payload, decode)
    assert env.data is not None
    assert env.data.expire_in_seconds == 86400


statuses = st.sampled_from([200, 201, 204, 400, 401, 403, 404, 408, 415, 422, 429, 500, 502, 503])
junk_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "services",
                    "data",
                    "error_code",
                    "errorCode",
                    "error_message",
                    "validations",
                    "Validations",
                    "validation_errors",
                    "liveness",
                    "idFrontData",
                    "AML",
                    "field",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(statuses, junk_json)
def test_malformed_envelopes_only_raise_vlens_errors(status: int, payload: Any) -> None:
    """Any JSON on any status returns a model or raises a VlensError, never KeyError/TypeError."""
    with contextlib.suppress(errors.VlensError):
        interpret(REQ, status, b"{...}", payload, decode_verification)


@settings(max_examples=100, deadline=None)
@given(statuses, st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_vlens_errors(status: int, body: bytes) -> None:
    """Any bytes on any status return a model or raise a VlensError."""
    with contextlib.suppress(errors.VlensError):
        run(status, body)


# --- send(): the aiohttp boundary ---


async def test_send_maps_connection_refused() -> None:
    """A refused connection is an APIConnectionError naming aiohttp's error type, not yet sent."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(errors.APIConnectionError) as info:
            await send(
                session, "http://127.0.0.1:9", REQ, decode_verification, client_timeout=TIMEOUT
            )
    assert info.value.cause_type == "ClientConnectorError"  # type: ignore[attr-defined]
    assert info.value.cause_reason == "ECONNREFUSED"  # type: ignore[attr-defined]
    assert info.value.__cause__ is None
    assert connection_not_established(info.value)
    assert not isinstance(info.value, errors.APITimeoutError)


async def test_send_maps_timeouts() -> None:
    """A response slower than the attempt's timeout is an APITimeoutError."""
    with mock_api() as mock:
        mock.post(BASE + REQ.path, timeout=True)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(errors.APITimeoutError) as info:
                await send(session, BASE, REQ, decode_verification, client_timeout=TIMEOUT)
    assert info.value.request_id == "rid-1"
    assert not connection_not_established(info.value)


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.ClientPayloadError("Response payload is not completed"),
    ],
)
async def test_send_maps_resets_and_truncation(exc: Exception) -> None:
    """Resets, disconnects and cut-short bodies are APIConnectionError (request may have landed)."""
    with mock_api() as mock:
        mock.post(BASE + REQ.path, exception=exc)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(errors.APIConnectionError) as info:
                await send(session, BASE, REQ, decode_verification, client_timeout=TIMEOUT)
    assert info.value.cause_type == type(exc).__name__  # type: ignore[attr-defined]
    assert info.value.__cause__ is None
    assert not connection_not_established(info.value)


async def test_send_reads_status_body_and_retry_after() -> None:
    """send() passes status, body and Retry-After through interpret()."""
    with mock_api() as mock:
        mock.post(BASE + REQ.path, status=429, payload=envelope(None), headers={"Retry-After": "3"})
        async with aiohttp.ClientSession() as session:
            with pytest.raises(errors.RateLimitError) as info:
                await send(session, BASE, REQ, decode_verification, client_timeout=TIMEOUT)
    assert info.value.retry_after == 3.0


async def test_send_does_not_follow_redirects() -> None:
    """A 307 is reported, not followed (the API key must not travel to another host)."""
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPTemporaryRedirect("/elsewhere")

    app = web.Application()
    app.router.add_post(REQ.path, redirect)
    app.router.add_post("/elsewhere", redirect)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        with pytest.raises(errors.APIStatusError) as info:
            await send(session, base, REQ, decode_verification, client_timeout=TIMEOUT)
    assert info.value.status == 307
    assert hits == [REQ.path]


async def test_truncated_body_from_a_real_server() -> None:
    """A server that closes mid-body yields APIConnectionError (never a half-parsed model)."""

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"services": {')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_post(REQ.path, cut)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        with pytest.raises(errors.APIConnectionError):
            await send(session, base, REQ, decode_verification, client_timeout=TIMEOUT)
    await asyncio.sleep(0)
