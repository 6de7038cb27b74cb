"""Send one HTTP request and turn what happened into a model or one of our errors.

This is the one boundary where aiohttp's exceptions and the server's failure signals become
:mod:`vlens_async.errors`. aiohttp's exception texts quote the whole request URL, query string
included (``?emailOrPhoneNumber=%2B2012...``), so they are never chained (neither ``__cause__`` nor
``__context__``): the error keeps the cause's type name on ``cause_type`` and a fixed, URL-free
reason on ``cause_reason`` instead (see :func:`connection_error`).

- no usable response (DNS, refused, reset, a body cut short) -> :class:`APIConnectionError`;
  no response in time -> :class:`APITimeoutError`; a server certificate that was not trusted ->
  :class:`UntrustedCertificateError` (naming the option that trusts a private CA, and whether
  the certificate was the service's or an ``https://`` proxy's); a server's TLS alert asking for
  a client certificate -> :class:`ClientCertificateError`; a proxy that refused the connection,
  answered ``CONNECT`` with an error, or answered a plain request with 407 -> :class:`ProxyError`;
- a non-2xx status -> the class :func:`api_error_class` picks from the status and the envelope's
  ``error_code`` (both failure styles caught by either ``except``);
- a 2xx whose body is not the envelope (HTML, truncated JSON, not an object) -> ResponseDecodeError,
  and so is a 5xx whose body is a non-empty page (a proxy's HTML 502), or a 4xx whose body is
  not a JSON object (empty, cut or garbled on the way, a JSON array or scalar): both are also
  their status class (:func:`decode_error_class`), so ``except AuthenticationError`` always works
  for a 401, and ``_classify`` reads such a 400, 415 or 422 as no verdict;
- a body over ``max_response_bytes`` (as sent, or once inflated: gzip and deflate are inflated
  here, step by step, never by aiohttp in one go) -> :class:`ResponseTooLargeError`, raised as
  soon as the limit is passed, without reading the rest (with a non-2xx status, also its status
  class: a 401 too large is still an :class:`AuthenticationError`); an unknown
  ``Content-Encoding`` or a corrupt compressed body -> ResponseDecodeError;
- a 2xx with a non-zero ``error_code`` -> the :class:`VlensAPIError` family (0 and null are
  success); a 2xx with a non-empty ``validation_errors`` list -> :class:`ValidationFailedError`.

Every error carries the status, ``error_code``, ``error_message``, validation errors, our request
id, the method and path (never the query string, which can hold a phone number), the parsed
envelope, the raw body of an undecodable response (its first 64 KiB), and ``Retry-After`` in
seconds. An envelope the model refused is never kept whole (it may nest a thousand levels deep,
and pickle or deepcopy would recurse through it): only the ``error_code`` and ``error_message``
peeked from it; a JSON array in its place is kept as ``[]``.

The exception *message* is ours: the method, the path and what the status or ``error_code`` means
(from the API's documented codes). The server's own text goes on ``error_message`` only, never in
the message: it may quote a name, a national ID number or a token, which no pattern can reliably
mask. So do the ``field`` names of validation errors: the message counts them, the issues stay on
``validation_errors``.

One attempt, reading and decoding included, ends within the attempt's ``total`` timeout (the
call's deadline caps it): a slow endless body ends there too. A body over
:data:`~vlens_async.config.OFFLOAD_THRESHOLD_BYTES` is parsed and turned into its model in a
worker thread, so tens of thousands of validation errors never hold the event loop.

The module knows nothing about the models: the caller passes ``decode``, which turns the JSON
object into the endpoint's model (raising :class:`ResponseDecodeError` when it does not fit).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import ipaddress
import logging
import re
import ssl
import time
import urllib.request
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final, Protocol, TypeVar

import aiohttp
import attrs
import orjson
import yarl

from .config import (
    CLIENT_CERT_HINT,
    DEFAULT_MAX_RESPONSE_BYTES,
    OFFLOAD_THRESHOLD_BYTES,
    TRUST_CA_HINT,
    TransportOptions,
    check_proxy_url,
    check_ssl,
)
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ClientCertificateError,
    ConfigurationError,
    ProxyError,
    ResponseDecodeError,
    UntrustedCertificateError,
    ValidationFailedError,
    api_error_class,
    decode_error_class,
    describe_code,
    too_large_error_class,
)

__all__ = [
    "EnvelopeModel",
    "Request",
    "connection_error",
    "connection_not_established",
    "describe_failure",
    "describe_proxy_refusal",
    "environment_proxy",
    "interpret",
    "is_proxy_refusal",
    "logger",
    "open_session",
    "send",
    "uses_proxy",
]

logger: Final = logging.getLogger("vlens_async")
# The sessions open_session gave a proxy: only a proxy's 407 is the proxy's refusal (a service
# answering 407 itself is the service's error). aiohttp keeps the proxy in a private attribute.
_PROXIED: Final[weakref.WeakSet[aiohttp.ClientSession]] = weakref.WeakSet()


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


_JSON_TYPES: Final = (dict, list, str, int, float, bool, type(None))


def _not_json(payload: Any) -> bool:
    # ``interpret`` takes any non-JSON sentinel for a body that did not decode.
    return payload is _UNDECODABLE or not isinstance(payload, _JSON_TYPES)


# --- reading a body within bounds ---

# Read this much at a time; inflate at most this much per step (then let the loop run).
_READ_CHUNK: Final = 64 * 1024
_INFLATE_STEP: Final = 1024 * 1024
# Only what this module can inflate step by step is asked for (aiohttp would add br and zstd
# when their packages are installed, and inflate them in one go).
ACCEPT_ENCODING: Final = "gzip, deflate"


class _BodyProblem(Exception):
    """Why a body could not be read; ``send`` turns it into our error (with the response's
    status and the request's names)."""

    def __init__(self, reason: str, *, too_large: bool = False, kept: bytes | None = None):
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large
        self.kept = kept


class _Inflater:
    """Inflates gzip or deflate in bounded steps (a 1 MiB bomb never becomes 1 GiB at once)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._inflater: Any = None
        self._pending = b""  # the first byte of a deflate body, until its second comes

    def _start(self, first: bytes) -> Any:
        if self._encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is zlib-wrapped by the standard, raw deflate from some servers (as aiohttp
        # and browsers accept): a zlib header is two bytes whose 16-bit value divides by 31.
        wrapped = first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def steps(self, chunk: bytes) -> Iterator[bytes]:
        """Yield the inflated pieces of ``chunk``, at most ``_INFLATE_STEP`` bytes each."""
        if self._inflater is None:
            chunk, self._pending = self._pending + chunk, b""
            if len(chunk) < 2:
                self._pending = chunk
                return
            self._inflater = self._start(chunk)
        data, full = chunk, False
        try:
            # A full step may leave output inside zlib even when all the input was consumed (the
            # cap held it back): ask again, with no input, until a step comes back short.
            while (data or full) and not self._inflater.eof:
                piece = self._inflater.decompress(data, _INFLATE_STEP)
                data = self._inflater.unconsumed_tail
                full = len(piece) == _INFLATE_STEP
                yield piece
        except zlib.error:
            raise _BodyProblem("the compressed response body is corrupt") from None

    def check_complete(self) -> bytes:
        """What zlib still holds once the body has ended (nothing after :meth:`steps` drained
        it), or ``_BodyProblem`` when the compressed stream stopped before its end."""
        if self._pending:
            raise _BodyProblem("the compressed response body is incomplete")
        if self._inflater is None or self._inflater.eof:
            return b""
        try:
            rest: bytes = self._inflater.flush()
        except zlib.error:
            raise _BodyProblem("the compressed response body is corrupt") from None
        if not self._inflater.eof:
            raise _BodyProblem("the compressed response body is incomplete")
        return rest


def _inflater_for(headers: Mapping[str, str]) -> _Inflater | None:
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return _Inflater("gzip")
    if encoding == "deflate":
        return _Inflater("deflate")
    # Never the header's own text in the message: the server chose it.
    raise _BodyProblem("the response has a Content-Encoding this client did not ask for")


def _too_large(limit: int, what: str) -> _BodyProblem:
    return _BodyProblem(
        f"the response body is larger than {_size(limit)}{what} (max_response_bytes)",
        too_large=True,
    )


def _size(count: int) -> str:
    if count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    if count % 1024 == 0:
        return f"{count // 1024} KiB"
    return f"{count} bytes"


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, inflated, or ``_BodyProblem`` once it passes ``limit`` bytes (sent or
    inflated) or cannot be inflated. Reads at most ``limit`` bytes plus one chunk."""
    length = response.content_length
    if length is not None and length > limit:
        raise _too_large(limit, "")
    inflater = _inflater_for(response.headers)
    body = bytearray()
    received = 0
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        received += len(chunk)
        if received > limit:
            raise _too_large(limit, "")
        if inflater is None:
            body += chunk
            continue
        for piece in inflater.steps(chunk):
            if len(body) + len(piece) > limit:
                raise _too_large(limit, " once inflated")
            body += piece
            if len(piece) == _INFLATE_STEP:
                await asyncio.sleep(0)  # a highly compressed chunk: let the loop run
    if inflater is not None:
        try:
            rest = inflater.check_complete()
        except _BodyProblem as problem:
            problem.kept = bytes(body[:MAX_KEPT_BODY])
            raise
        if len(body) + len(rest) > limit:
            raise _too_large(limit, " once inflated")
        body += rest
    return bytes(body)


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
    headers = {"Accept-Encoding": ACCEPT_ENCODING, **request.headers}
    if request.body is not None and len(request.body) > _LARGE_BODY_BYTES:
        headers["Content-Length"] = str(len(request.body))
    return headers


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


# An error code written as a string: ASCII digits only (``str.isdigit`` takes "²", which int()
# refuses), and few enough of them (int() refuses more than 4,300).
_CODE_TEXT: Final = re.compile(r"-?[0-9]{1,18}")


def _peek_code(payload: Mapping[Any, Any]) -> int | None:
    value = _peek(payload, "errorcode")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _CODE_TEXT.fullmatch(value.strip()):
        return int(value)
    return None


def _peek_message(payload: Mapping[Any, Any]) -> str | None:
    value = _peek(payload, "errormessage")
    return value if isinstance(value, str) else None


def _bounded_envelope(error_code: int | None, error_message: str | None) -> dict[str, Any]:
    """What an error keeps of an envelope its model refused: the peeked code and message."""
    kept: dict[str, Any] = {}
    if error_code is not None:
        kept["error_code"] = error_code
    if error_message is not None:
        kept["error_message"] = error_message
    return kept


def _validation_errors(model: Any) -> tuple[Any, ...]:
    services = getattr(model, "services", None)
    return tuple(getattr(services, "validations", None) or ())


def _code_reason(error_code: int) -> str:
    return describe_code(error_code) or "the service refused the request"


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
        unreadable = _not_json(payload)
        # A 4xx body that is not the envelope (empty, cut or garbled on the way, JSON but not an
        # object) is no answer of the service's: a decode error as well as its status class
        # (``_classify`` decides what it means). So is a 5xx with a page in place of the envelope.
        if ok or 400 <= status < 500 or (status >= 500 and body.strip()):
            if not body.strip():
                what = "empty"
            else:
                what = "not JSON" if unreadable else "not a JSON object"
            # A JSON scalar is kept; an array only as [] (its items may nest a thousand levels
            # deep, and pickle or deepcopy would recurse through them): ``body`` has the bytes.
            shape: Any = None if unreadable else ([] if isinstance(payload, list) else payload)
            raise decode_error_class(status)(
                _summary(request, status, f"the response body is {what}"),
                body=kept,
                envelope=shape,
                **common,
            )
        raise api_error_class(status, None)(_summary(request, status, None), body=kept, **common)

    model: M | None = None
    decode_error: ResponseDecodeError | None = None
    try:
        model = decode(payload)
    except ResponseDecodeError as exc:
        decode_error = exc

    envelope: Any = model
    if model is not None:
        error_code, error_message = model.error_code, model.error_message
        issues = _validation_errors(model)
    else:
        error_code, error_message = _peek_code(payload), _peek_message(payload)
        issues = ()
        # Never the raw payload, which the model refused (it may be nested thousands of levels
        # deep, and pickle, deepcopy or a log would recurse through it): only what was peeked.
        # ``body`` keeps the raw bytes, cut to MAX_KEPT_BODY.
        envelope = _bounded_envelope(error_code, error_message)
        if decode_error is not None:
            decode_error.envelope = envelope  # the cause travels with the error too
    details: dict[str, Any] = {
        "error_code": error_code,
        "error_message": error_message,
        "validation_errors": issues,
        "envelope": envelope,
        **common,
    }
    if decode_error is not None:
        details["body"] = body[:MAX_KEPT_BODY]

    if not ok:
        cls = api_error_class(status, error_code)
        reason = _code_reason(error_code) if error_code else None
        raise cls(_summary(request, status, reason), **details) from decode_error
    if decode_error is not None:
        raise ResponseDecodeError(
            _summary(request, status, decode_error.message), **details
        ) from decode_error
    assert model is not None  # decode either returned a model or raised
    if error_code:
        reason = _code_reason(error_code)
        raise api_error_class(status, error_code)(_summary(request, status, reason), **details)
    if issues:
        # A count only: the ``field`` names are the server's text (one once held a name).
        count = f"{len(issues)} validation error{'' if len(issues) == 1 else 's'}"
        raise ValidationFailedError(
            _summary(request, status, f"validation failed ({count}, see validation_errors)"),
            **details,
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
    (aiohttp.ClientHttpProxyError, "the proxy refused to open a tunnel"),
    (aiohttp.ClientResponseError, "aiohttp refused the response"),
)


# OpenSSL's names for the alerts a server sends when it wants a client certificate (mutual TLS)
# or refused the one given, and what they say. "handshake failure" is also TLS 1.2's answer to a
# missing client certificate (and to no common cipher, which a default context never meets).
# The alerts a server sends about the client's certificate (it validates no other): none given,
# or one it refused (a CA it does not trust, expired, revoked, not allowed in).
_CLIENT_CERT_ALERTS: Final = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate required",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake failure",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate revoked",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate unknown",
    "TLSV1_ALERT_ACCESS_DENIED": "access denied",
}


def _client_cert_alert(exc: BaseException) -> str | None:
    """The OpenSSL name of a client certificate alert behind ``exc``, if there is one: on
    ``os_error`` (a failed handshake, TLS 1.2) or as the cause (TLS 1.3, where the alert comes
    after the client's side of the handshake, at the first read)."""
    for candidate in (exc, getattr(exc, "os_error", None), exc.__cause__):
        # aiohttp's ClientConnectorSSLError is an SSLError too, without a ``reason``.
        reason = getattr(candidate, "reason", None) if isinstance(candidate, ssl.SSLError) else None
        if reason in _CLIENT_CERT_ALERTS:
            return str(reason)
    return None


def _cause_reason(exc: BaseException) -> str:
    # For OS errors only the errno's symbolic name, which cannot carry anything of the request.
    alert = _client_cert_alert(exc)
    if alert is not None:
        return alert  # an OpenSSL constant
    for kind, reason in _CAUSE_REASONS:
        if isinstance(exc, kind):
            return reason
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, OSError) and isinstance(os_error.errno, int):
        return errno.errorcode.get(os_error.errno, f"errno {os_error.errno}")
    return "the connection failed"


# What an untrusted certificate's OpenSSL verify code means, in words of ours.
_CERT_PROBLEMS: Final = {
    10: "it has expired",
    18: "it is self-signed",
    19: "a self-signed certificate is in its chain",
    20: "its issuer is unknown",
    62: "it was issued for another host name",
}


def _untrusted(
    exc: aiohttp.ClientConnectorCertificateError, service_url: str | None
) -> tuple[str, str]:
    # OpenSSL sets verify_code; an error made by hand (a test double) may have none.
    code = getattr(exc.certificate_error, "verify_code", None)
    problem = _CERT_PROBLEMS.get(code if isinstance(code, int) else -1, "it did not verify")
    # The only other TLS peer than the service is an https:// proxy.
    service = None if service_url is None else yarl.URL(service_url)
    by_proxy = service is not None and (exc.host, exc.port) != (service.host, service.port)
    whose = "the proxy's" if by_proxy else "the server's"
    return (
        f"{whose} TLS certificate was not trusted ({problem})",
        f"if a private CA signed it (a TLS-inspecting proxy's, say), trust it: {TRUST_CA_HINT}",
    )


def is_proxy_refusal(status: int, session: aiohttp.ClientSession, url: str) -> bool:
    """True for a proxy's 407 (it wants credentials) as the answer to a request for ``url`` on
    ``session``. Through a proxy to a plain ``http://`` service, the proxy's 407 comes as the
    response's status, not as a failed ``CONNECT``; it is the proxy's refusal all the same
    (:class:`ProxyError`). Without a proxy, or inside an ``https://`` tunnel (a proxy's 407
    there fails the ``CONNECT``), a 407 is the service's own answer."""
    return (
        status == HTTPStatus.PROXY_AUTHENTICATION_REQUIRED
        and uses_proxy(session)
        and yarl.URL(url).scheme == "http"
    )


def uses_proxy(session: aiohttp.ClientSession) -> bool:
    """True when ``session`` (made by :func:`open_session`) goes through a proxy."""
    return session in _PROXIED


def describe_proxy_refusal(status: int) -> str:
    """What a proxy's refusal with ``status`` means, and what fixes it, in words of ours."""
    detail, fix = _proxy_refusal(status)
    return f"{detail}; {fix}" if fix else detail


def _proxy_refusal(status: int) -> tuple[str, str]:
    if status == 407:
        return (
            "the proxy refused: 407, it wants credentials or refused the ones given",
            "give them as proxy_auth or user:password@ in the proxy URL",
        )
    if status == 403:
        return "the proxy refused: 403, its policy does not allow this host", ""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "HTTP error"
    return f"the proxy refused to open a tunnel: {status} {phrase}", ""


def _failure_detail(
    exc: BaseException, service_url: str | None, via_proxy: bool = False
) -> tuple[type[APIConnectionError], str, str]:
    """Our error class, what happened and what fixes it, in words of ours (never the text of
    ``exc``)."""
    if isinstance(exc, TimeoutError):
        return APITimeoutError, "timed out", ""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UntrustedCertificateError, *_untrusted(exc, service_url)
    alert = _client_cert_alert(exc)
    if alert is not None:
        # A handshake failure may also be a cipher or protocol mismatch (old TLS middleboxes).
        maybe = "may want" if alert == "SSLV3_ALERT_HANDSHAKE_FAILURE" else "wants"
        return (
            ClientCertificateError,
            f"the server refused the TLS handshake ({_CLIENT_CERT_ALERTS[alert]}): it {maybe} a"
            " client certificate (mutual TLS), or refused the one given"
            + (", or shares no cipher or TLS version with this client" if maybe != "wants" else ""),
            f"to present one, pass {CLIENT_CERT_HINT}",
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return ProxyError, *_proxy_refusal(exc.status)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        # The proxy's own host and port (aiohttp took any credentials out of its URL).
        return ProxyError, f"could not connect to the proxy {exc.host}:{exc.port}", ""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError, "the connection closed before the whole body arrived", ""
    if (
        via_proxy
        and isinstance(exc, aiohttp.ClientConnectorError)
        and _another_host(exc.host, service_url)
    ):
        # The only other host a request connects to is its proxy (a name that did not resolve).
        return ProxyError, f"could not connect to the proxy {exc.host}:{exc.port}", ""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError, "could not connect", ""
    return APIConnectionError, "connection failed", ""


def _another_host(host: str, service_url: str | None) -> bool:
    if service_url is None:
        return False
    service_host = yarl.URL(service_url).raw_host or ""  # IDNA, as aiohttp names the host
    return host.lower().rstrip(".") != service_host.lower().rstrip(".")


def describe_failure(
    exc: BaseException, *, service_url: str | None = None, via_proxy: bool = False
) -> str:
    """What an aiohttp or OS failure means, in words of ours, with what fixes it when a setting
    does (a private CA, proxy credentials); never the text of ``exc``, which quotes the URL.

    ``service_url`` (the service's base URL) tells an https:// proxy's certificate from the
    service's; with ``via_proxy`` (the session has a proxy, :func:`uses_proxy`), a host that is
    not the service's is the proxy's."""
    _, detail, fix = _failure_detail(exc, service_url, via_proxy)
    cause_type = type(exc).__name__
    if fix:
        return f"{detail} ({cause_type}); {fix}"
    return f"{detail} ({cause_type}: {_cause_reason(exc)})"


def connection_error(
    request: Request, exc: BaseException, *, service_url: str | None = None, via_proxy: bool = False
) -> APIConnectionError:
    """Our error for an aiohttp or OS failure while sending ``request`` (not chained to ``exc``).

    A timeout becomes :class:`APITimeoutError`, a certificate that was not trusted
    :class:`UntrustedCertificateError`, a proxy's refusal :class:`ProxyError` (its status on
    ``proxy_status``), anything else :class:`APIConnectionError`. The error carries
    ``cause_type`` (the type name of ``exc``) and ``cause_reason`` (a fixed phrase or an errno
    name), never the text of ``exc``, which quotes the URL and its query string.
    ``service_url`` and ``via_proxy`` are as :func:`describe_failure` takes them.
    """
    cls = _failure_detail(exc, service_url, via_proxy)[0]
    cause_type, reason = type(exc).__name__, _cause_reason(exc)
    error = cls(
        _summary(
            request,
            None,
            describe_failure(exc, service_url=service_url, via_proxy=via_proxy),
        ),
        request_id=request.request_id,
        method=request.method,
        path=request.path,
    )
    error.cause_type, error.cause_reason = cause_type, reason
    if isinstance(error, ProxyError) and isinstance(exc, aiohttp.ClientHttpProxyError):
        error.proxy_status = exc.status
    # Refused, unresolvable, TLS failed, no tunnel: the request provably never left this process.
    vars(error)[_NEVER_SENT] = isinstance(
        exc, aiohttp.ClientConnectorError | aiohttp.ClientHttpProxyError
    )
    return error


def _refused_by_proxy(request: Request, status: int) -> ProxyError:
    """The :class:`ProxyError` for a proxy's answer (``is_proxy_refusal``) to a plain request."""
    error = ProxyError(
        _summary(request, status, describe_proxy_refusal(status)),
        status=status,
        request_id=request.request_id,
        method=request.method,
        path=request.path,
    )
    error.proxy_status = status
    error.cause_type, error.cause_reason = None, "the proxy answered in the service's place"
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
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"proxy-{exc.status}"
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
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    on_status: Callable[[int], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> M:
    """Send ``request`` once on ``session`` and return ``decode``'s model, or raise our error.

    ``tls`` is the session's ``ssl`` option (``None``: the system's CAs); it is checked again
    before every send (:func:`check_ssl`: a context is mutable, and one switched to
    ``CERT_NONE`` after the client opened raises :class:`ConfigurationError`, sending nothing).

    The whole attempt (connecting, sending, reading at most ``max_response_bytes`` and decoding)
    ends within ``client_timeout.total``. Cancellation propagates untouched; leaving the
    ``async with`` releases (or closes) the connection, so a cancelled call never leaks one.
    Redirects are not followed: a 3xx is an error (following one could carry the API key to
    another host). ``on_status`` is told the response's status as soon as it arrives.
    """
    context = check_ssl(tls)  # a few attribute reads
    started = time.perf_counter()
    outcome = "error"
    failure: APIError | None = None
    try:
        async with asyncio.timeout(client_timeout.total):
            async with session.request(
                request.method,
                base_url + request.path,
                data=_payload(request.body),
                params=request.params,
                headers=_headers(request),
                timeout=client_timeout,
                allow_redirects=False,
                auto_decompress=False,  # inflated here, within max_response_bytes
                ssl=True if context is None else context,
            ) as response:
                status = response.status
                outcome = str(status)
                if on_status is not None:
                    on_status(status)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if is_proxy_refusal(status, session, base_url):
                    failure = _refused_by_proxy(request, status)
                else:
                    try:
                        body = await _read_body(response, max_response_bytes)
                    except _BodyProblem as problem:
                        outcome = "too-large" if problem.too_large else "undecodable"
                        failure = _body_error(
                            request, status, retry_after, problem, max_response_bytes
                        )
            if failure is None:
                return await _conclude(request, status, body, decode, retry_after)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        outcome = _outcome(exc)
        failure = connection_error(
            request, exc, service_url=base_url, via_proxy=uses_proxy(session)
        )
    finally:
        _log_attempt(request, outcome, attempt, started)
    # Raised here, outside the ``except``, so not even ``__context__`` holds aiohttp's error.
    raise failure


def _body_error(
    request: Request,
    status: int,
    retry_after: float | None,
    problem: _BodyProblem,
    limit: int,
) -> APIError:
    common: dict[str, Any] = {
        "status": status,
        "request_id": request.request_id,
        "method": request.method,
        "path": request.path,
        "retry_after": retry_after,
    }
    message = _summary(request, status, problem.reason)
    if problem.too_large:
        return too_large_error_class(status)(message, limit=limit, **common)
    return decode_error_class(status)(message, body=problem.kept, **common)


def _conclude_now(
    request: Request,
    status: int,
    body: bytes,
    decode: Callable[[Any], M],
    retry_after: float | None,
) -> M:
    payload = _parse_json(body) if body else _UNDECODABLE
    return interpret(request, status, body, payload, decode, retry_after=retry_after)


async def _conclude(
    request: Request,
    status: int,
    body: bytes,
    decode: Callable[[Any], M],
    retry_after: float | None,
) -> M:
    # Parsing and structuring a big body (tens of thousands of validation errors, an image's
    # base64) holds the loop for long: a worker thread does both.
    if len(body) > OFFLOAD_THRESHOLD_BYTES:
        return await asyncio.to_thread(_conclude_now, request, status, body, decode, retry_after)
    return _conclude_now(request, status, body, decode, retry_after)


def environment_proxy(base_url: str) -> tuple[str | None, tuple[str, str] | None]:
    """The proxy the environment names for ``base_url``, as :func:`check_proxy_url` returns it:
    ``HTTPS_PROXY`` (or ``HTTP_PROXY`` for an ``http://`` URL; the lower-case names win), unless
    ``NO_PROXY`` lists the host. ``(None, None)`` for none.

    Read by us, not by aiohttp's ``trust_env``, which would also read ``~/.netrc`` and send its
    credentials to the API as ``Authorization: Basic`` (or clash with an end user's bearer token).
    """
    url = yarl.URL(base_url)
    # As aiohttp's trust_env reads them (on macOS and Windows, the system's settings when the
    # environment names no proxy), less ~/.netrc.
    proxies = urllib.request.getproxies()
    variable = f"{url.scheme.upper()}_PROXY"
    found = proxies.get(url.scheme)
    if not found or url.host is None or _bypassed(url.host, url.port, proxies.get("no")):
        return None, None
    if "://" not in found:
        found = "http://" + found  # "proxy.corp:3128", as curl and requests read it
    try:
        return check_proxy_url(found)
    except ConfigurationError as exc:  # never the value: it may hold a password
        raise ConfigurationError(f"the proxy in {variable} (environment): {exc}") from None


def _bypassed(host: str, port: int | None, no_proxy: str | None) -> bool:
    """Whether ``NO_PROXY`` (``no_proxy``) spares ``host``, as curl and requests read it: ``*``;
    a domain and its subdomains (``example.com``, ``.example.com``, ``*.example.com``); with a
    port, that port only (``example.com:8443``, ``[::1]:443``); an IP address or network
    (``10.0.0.0/8``, ``::1/128``). Without it, the system's settings (macOS, Windows)."""
    if no_proxy is None:
        return bool(urllib.request.proxy_bypass(host))
    host = host.lower().rstrip(".")
    return any(_spares(entry, host, port) for entry in re.split(r"[\s,]+", no_proxy.lower()))


def _spares(entry: str, host: str, port: int | None) -> bool:
    if entry == "*":
        return True
    try:
        network = ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        network = None
    if network is not None:
        with contextlib.suppress(ValueError):  # a host name is in no network
            return ipaddress.ip_address(host) in network
        return False
    parts = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<name>[^:]+)(?::(?P<port>\d+))?", entry
    )
    if parts is None:
        return False
    wanted = parts["p6"] or parts["port"]
    if wanted is not None and int(wanted) != port:
        return False
    if parts["v6"] is not None:  # "[0:0::1]" is "::1": compared as addresses
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(parts["v6"]) == ipaddress.ip_address(host)
        return False
    name = parts["name"].lstrip("*").lstrip(".").rstrip(".")
    if not name:
        return False
    with contextlib.suppress(ValueError):  # an address is matched whole, not as a domain
        ipaddress.ip_address(host)
        return host == name
    return host == name or host.endswith("." + name)


def _as_utf8_for_aiohttp(text: str) -> str:
    """``text`` as the Latin-1 characters of its UTF-8 bytes.

    aiohttp encodes Basic credentials from a URL as ISO-8859-1: "é" would go as one byte that
    proxies expecting UTF-8 (RFC 7617's charset; curl and browsers send it) refuse, and "€"
    would raise a UnicodeEncodeError whose ``object`` is "user:password". Given these
    characters, its ISO-8859-1 encoding yields the UTF-8 bytes; ASCII is unchanged.
    """
    return text.encode("utf-8").decode("latin-1")


def open_session(
    options: TransportOptions, *, base_url: str, limit: int, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    """A session whose every connection to ``base_url`` follows ``options`` (proxy, environment,
    TLS, traces).

    The one place a session is made: the client's, and the CLI's reachability check before a
    bulk job. At most ``limit`` connections; ``timeout`` is the session's default. With
    ``trust_env`` and no ``proxy``, the proxy comes from :func:`environment_proxy`, read now;
    aiohttp's own ``trust_env`` stays off (it would read ``~/.netrc``).
    """
    context = check_ssl(options.ssl)  # again: an SSLContext can be changed after it was given
    bare, credentials = options.proxy, options.proxy_credentials
    if bare is None and options.trust_env:
        bare, credentials = environment_proxy(base_url)
    proxy = None if bare is None else yarl.URL(bare)
    if proxy is not None and credentials is not None:
        # In the URL, which aiohttp turns into Proxy-Authorization; its proxy_auth= and
        # BasicAuth are deprecated (aiohttp 3.14).
        user, password = (_as_utf8_for_aiohttp(text) for text in credentials)
        proxy = proxy.with_user(user).with_password(password)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=True if context is None else context),
        timeout=timeout,
        proxy=proxy,
        trust_env=False,  # never ~/.netrc: see environment_proxy
        trace_configs=list(options.trace_configs) or None,
    )
    if proxy is not None:
        _PROXIED.add(session)
    return session
