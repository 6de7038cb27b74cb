"""Send one HTTP request and turn what happened into a model or one of our errors.

This is the one boundary where aiohttp's exceptions and the server's failure signals become
:mod:`vlens_async.errors`. aiohttp's exception texts quote the whole request URL, query string
included (``?emailOrPhoneNumber=%2B2012...``), so they are never chained (neither ``__cause__`` nor
``__context__``): the error keeps the cause's type name on ``cause_type`` and a fixed, URL-free
reason on ``cause_reason`` instead (see :func:`connection_error`).

- no usable response (DNS, refused, reset, a body cut short) -> :class:`APIConnectionError`;
  no response in time -> :class:`APITimeoutError`;
- a non-2xx status -> the class :func:`api_error_class` picks from the status and the envelope's
  ``error_code`` (both failure styles caught by either ``except``);
- a 2xx whose body is not the envelope (HTML, truncated JSON, not an object) -> ResponseDecodeError,
  and so is a 5xx whose body is a non-empty non-JSON page (a proxy's HTML 502), which is also its
  status class (:func:`decode_error_class`); a 4xx keeps its status class whatever its body, so
  ``except AuthenticationError`` always works for a 401;
- a 2xx with a non-zero ``error_code`` -> the :class:`VlensAPIError` family (0 and null are
  success); a 2xx with a non-empty ``validation_errors`` list -> :class:`ValidationFailedError`.

Every error carries the status, ``error_code``, ``error_message``, validation errors, our request
id, the method and path (never the query string, which can hold a phone number), the parsed
envelope, the raw body of an undecodable response, and ``Retry-After`` in seconds.

The exception *message* is ours: the method, the path and what the status or ``error_code`` means
(from the API's documented codes). The server's own text goes on ``error_message`` only, never in
the message: it may quote a name, a national ID number or a token, which no pattern can reliably
mask.

The module knows nothing about the models: the caller passes ``decode``, which turns the JSON
object into the endpoint's model (raising :class:`ResponseDecodeError` when it does not fit).
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final, Protocol, TypeVar

import aiohttp
import attrs
import orjson

from .config import OFFLOAD_THRESHOLD_BYTES
from .errors import (
    APIConnectionError,
    APITimeoutError,
    ResponseDecodeError,
    ValidationFailedError,
    api_error_class,
    decode_error_class,
)

__all__ = [
    "EnvelopeModel",
    "Request",
    "connection_error",
    "connection_not_established",
    "interpret",
    "logger",
    "send",
]

logger: Final = logging.getLogger("vlens_async")

# What the documented error codes mean (API.md), for exception messages.
CODE_REASONS: Final[Mapping[int, str]] = {
    1050: "image quality too low for OCR",
    3001: "invalid ID number",
    3002: "invalid birth date",
    3003: "invalid governorate",
    3004: "invalid ID key",
    3005: "invalid gender",
    3006: "invalid release date",
    3007: "wrong birth date format",
    3008: "wrong release date format",
    3009: "wrong expiry date format",
    3010: "the document has expired",
    3011: "card not detected",
    3013: "invalid MRZ",
    3101: "the ID number differs between front and back",
    4001: "wrong bundle key",
    4002: "bundle exhausted",
    4003: "too many attempts",
    4004: "service not in the bundle",
    4005: "bundle disabled",
    4206: "more than one face",
    4207: "no face found",
    4208: "face missing",
    4209: "unclear face capture",
    5000: "generic error",
    5001: "unsupported document",
    5002: "image over 5 MB",
    5003: "image over 25 million pixels",
    7000: "general error (multiple cards)",
    7001: "general error (ID front)",
    7002: "general error (ID back)",
}

# Raw bodies kept on errors are cut to this size: enough to see a proxy page, not a whole image.
MAX_KEPT_BODY: Final = 64 * 1024


class EnvelopeModel(Protocol):
    """What the transport reads from a decoded envelope model."""

    @property
    def error_code(self) -> int | None:
        """The envelope's ``error_code``."""

    @property
    def error_message(self) -> str | None:
        """The envelope's ``error_message``."""

    @property
    def services(self) -> Any:
        """The envelope's ``services`` (with ``validations``), or ``None``."""


M = TypeVar("M", bound=EnvelopeModel)


@attrs.frozen
class Request:
    """One request, ready to send: everything but the timeout and the attempt number.

    The same ``Request`` (and so the same ``X-Request-Id`` header and the same body bytes) is sent
    on every attempt of one logical call.
    """

    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    request_id: str
    body: bytes | None = attrs.field(default=None, repr=False)
    params: Mapping[str, str] | None = attrs.field(default=None, repr=False)


_UNDECODABLE: Final = object()


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNDECODABLE


async def _decode_json(body: bytes) -> Any:
    if len(body) > OFFLOAD_THRESHOLD_BYTES:
        return await asyncio.to_thread(_parse_json, body)
    return _parse_json(body)


# aiohttp warns (ResourceWarning) about raw bytes bodies over 1 MiB and suggests BytesIO, whose
# payload writes 64 KiB at a time with a loop round-trip each (about 25 % more client CPU on a
# 2.7 MB liveness body). Handing the body over as a one-item async iterable writes it in one
# transport.write, as raw bytes would (the transport buffers what the socket does not take, so
# the loop is not held), without the warning. Its Content-Length is set explicitly, so it is not
# sent chunked. A fresh iterator per attempt: sending consumes it.
_LARGE_BODY_BYTES: Final = 1024 * 1024


async def _whole(body: bytes) -> AsyncIterator[bytes]:
    yield body


def _headers(request: Request) -> Mapping[str, str]:
    if request.body is not None and len(request.body) > _LARGE_BODY_BYTES:
        return {**request.headers, "Content-Length": str(len(request.body))}
    return request.headers


def _payload(body: bytes | None) -> bytes | AsyncIterator[bytes] | None:
    if body is not None and len(body) > _LARGE_BODY_BYTES:
        return _whole(body)
    return body


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a year past 9999
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        seconds = when.timestamp() - current
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(seconds, 0.0)


def _peek(payload: Mapping[Any, Any], wanted: str) -> Any:
    # Case-insensitive read of a top-level key, for an error body that did not decode as a model.
    for key, value in payload.items():
        if isinstance(key, str) and key.replace("_", "").lower() == wanted and value is not None:
            return value
    return None


def _peek_code(payload: Mapping[Any, Any]) -> int | None:
    value = _peek(payload, "errorcode")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _peek_message(payload: Mapping[Any, Any]) -> str | None:
    value = _peek(payload, "errormessage")
    return value if isinstance(value, str) else None


def _validation_errors(model: Any) -> tuple[Any, ...]:
    services = getattr(model, "services", None)
    return tuple(getattr(services, "validations", None) or ())


def _code_reason(error_code: int) -> str:
    return CODE_REASONS.get(error_code, "the service refused the request")


def _summary(request: Request, status: int | None, detail: str | None) -> str:
    head = f"{request.method} {request.path} failed"
    if detail:
        return f"{head}: {detail}"
    if status is not None:
        try:
            return f"{head}: {HTTPStatus(status).phrase}"
        except ValueError:
            return f"{head}: HTTP {status}"
    return head


def interpret(
    request: Request,
    status: int,
    body: bytes,
    payload: Any,
    decode: Callable[[Any], M],
    *,
    retry_after: float | None = None,
) -> M:
    """Turn a response into the decoded model, or raise the error it stands for.

    ``payload`` is the decoded JSON of ``body`` (any JSON value), or any non-JSON sentinel when
    ``body`` did not decode. Pure: no I/O, so it is tested directly (hypothesis feeds it junk).
    """
    common: dict[str, Any] = {
        "status": status,
        "request_id": request.request_id,
        "method": request.method,
        "path": request.path,
        "retry_after": retry_after,
    }
    ok = 200 <= status < 300
    if not isinstance(payload, dict):
        kept = body[:MAX_KEPT_BODY]
        if ok or (status >= 500 and body.strip()):
            what = "not JSON" if payload is _UNDECODABLE else "not a JSON object"
            raise decode_error_class(status)(
                _summary(request, status, f"the response body is {what}"),
                body=kept,
                envelope=None if payload is _UNDECODABLE else payload,
                **common,
            )
        raise api_error_class(status, None)(_summary(request, status, None), body=kept, **common)

    model: M | None = None
    decode_error: ResponseDecodeError | None = None
    try:
        model = decode(payload)
    except ResponseDecodeError as exc:
        decode_error = exc

    if model is not None:
        error_code, error_message = model.error_code, model.error_message
        issues = _validation_errors(model)
    else:
        error_code, error_message = _peek_code(payload), _peek_message(payload)
        issues = ()
    details: dict[str, Any] = {
        "error_code": error_code,
        "error_message": error_message,
        "validation_errors": issues,
        "envelope": model if model is not None else payload,
        **common,
    }

    if not ok:
        cls = api_error_class(status, error_code)
        reason = _code_reason(error_code) if error_code else None
        raise cls(_summary(request, status, reason), **details) from decode_error
    if decode_error is not None:
        raise ResponseDecodeError(
            _summary(request, status, decode_error.message), body=body[:MAX_KEPT_BODY], **details
        ) from decode_error
    assert model is not None  # decode either returned a model or raised
    if error_code:
        reason = _code_reason(error_code)
        raise api_error_class(status, error_code)(_summary(request, status, reason), **details)
    if issues:
        fields = ", ".join(sorted({str(getattr(i, "field", None) or "?") for i in issues}))
        raise ValidationFailedError(
            _summary(request, status, f"validation failed for {fields}"), **details
        )
    return model


# Set on the errors :func:`connection_error` builds (errors.py declares no such field).
_NEVER_SENT: Final = "_vlens_never_sent"


def connection_not_established(exc: BaseException) -> bool:
    """True when ``exc`` is a connection error raised before the request could reach the server.

    Only these are safe to retry for calls that are not idempotent (an OTP request, a sign-up).
    """
    return isinstance(exc, APIConnectionError) and getattr(exc, _NEVER_SENT, False) is True


# Fixed phrases by type, never the exception's own text (it quotes the URL); the first match
# wins, so subclasses come before their bases.
_CAUSE_REASONS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (aiohttp.ClientConnectorCertificateError, "TLS certificate verification failed"),
    (aiohttp.ClientSSLError, "TLS handshake failed"),
    (aiohttp.ClientConnectorDNSError, "the host name did not resolve"),
    (aiohttp.ConnectionTimeoutError, "no connection within the connect timeout"),
    (aiohttp.SocketTimeoutError, "no data within the read timeout"),
    (TimeoutError, "no response within the attempt's timeout"),
    (aiohttp.ServerDisconnectedError, "the server closed the connection"),
    (aiohttp.ClientPayloadError, "the response body was cut short"),
    (aiohttp.InvalidURL, "the request URL is invalid"),
    (aiohttp.ClientResponseError, "aiohttp refused the response"),
)


def _cause_reason(exc: BaseException) -> str:
    # For OS errors only the errno's symbolic name, which cannot carry anything of the request.
    for kind, reason in _CAUSE_REASONS:
        if isinstance(exc, kind):
            return reason
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, OSError) and isinstance(os_error.errno, int):
        return errno.errorcode.get(os_error.errno, f"errno {os_error.errno}")
    return "the connection failed"


def connection_error(request: Request, exc: BaseException) -> APIConnectionError:
    """Our error for an aiohttp or OS failure while sending ``request`` (not chained to ``exc``).

    A timeout becomes :class:`APITimeoutError`, anything else :class:`APIConnectionError`. The
    error carries ``cause_type`` (the type name of ``exc``) and ``cause_reason`` (a fixed phrase
    or an errno name), never the text of ``exc``, which quotes the URL and its query string.
    """
    cls: type[APIConnectionError] = APIConnectionError
    if isinstance(exc, TimeoutError):
        cls, detail = APITimeoutError, "timed out"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        detail = "the connection closed before the whole body arrived"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        detail = "could not connect"
    else:
        detail = "connection failed"
    cause_type, reason = type(exc).__name__, _cause_reason(exc)
    error = cls(
        _summary(request, None, f"{detail} ({cause_type}: {reason})"),
        request_id=request.request_id,
        method=request.method,
        path=request.path,
    )
    error.cause_type, error.cause_reason = cause_type, reason
    # Refused, unresolvable, TLS failed: the request provably never left this process.
    vars(error)[_NEVER_SENT] = isinstance(exc, aiohttp.ClientConnectorError)
    return error


def _log_attempt(request: Request, outcome: str, attempt: int, started: float) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s %s status=%s attempt=%d duration_ms=%.1f request_id=%s",
            request.method,
            request.path,
            outcome,
            attempt,
            (time.perf_counter() - started) * 1000,
            request.request_id,
        )


def _outcome(exc: BaseException) -> str:
    # The ``status=`` word of the attempt's log line.
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect-error"
    return "connection-error"


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    request: Request,
    decode: Callable[[Any], M],
    *,
    client_timeout: aiohttp.ClientTimeout,
    attempt: int = 1,
) -> M:
    """Send ``request`` once on ``session`` and return ``decode``'s model, or raise our error.

    Cancellation propagates untouched; leaving the ``async with`` releases (or closes) the
    connection, so a cancelled call never leaks one. Redirects are not followed: a 3xx is an error
    (following one could carry the API key to another host).
    """
    started = time.perf_counter()
    outcome = "error"
    failure: APIConnectionError | None = None
    try:
        async with session.request(
            request.method,
            base_url + request.path,
            data=_payload(request.body),
            params=request.params,
            headers=_headers(request),
            timeout=client_timeout,
            allow_redirects=False,
        ) as response:
            status = response.status
            outcome = str(status)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            body = await response.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        outcome = _outcome(exc)
        failure = connection_error(request, exc)
    finally:
        _log_attempt(request, outcome, attempt, started)
    if failure is not None:
        # Raised here, outside the ``except``, so not even ``__context__`` holds aiohttp's error.
        raise failure
    payload = await _decode_json(body) if body else _UNDECODABLE
    return interpret(request, status, body, payload, decode, retry_after=retry_after)
