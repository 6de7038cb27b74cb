"""Every exception vlens-async raises, under one root.

::

    VlensError
    ├── ConfigurationError            bad option or argument (a ValueError)
    ├── ClientClosedError             client used outside ``async with`` or after close
    ├── FlowError                     illegal Transaction step; nothing was sent
    │   ├── StepOrderError            a step out of order (liveness before both ID sides)
    │   ├── TransactionClosedError    a step on a COMPLETED or FAILED transaction
    │   ├── MissingInputError         the step needs an input the transaction does not hold
    │   └── FrameCountError           liveness given other than three frames (a ConfigurationError)
    ├── InvalidNationalIdError        a national ID number that cannot be parsed (also a ValueError)
    ├── BulkInputError                a bad manifest or manifest row
    │   └── JournalError              a bulk journal that cannot be used as asked (says why)
    │       └── JournalMismatchError  resume against another service or another manifest
    ├── ImageError                    local preprocessing refused an image; nothing was sent
    │   ├── UnsupportedImageError     not an image, truncated, unreadable format
    │   ├── ImageTooLargeError        over the pixel budget or a decompression bomb
    │   ├── CompressionError          cannot fit the byte budget
    │   ├── IdenticalFramesError      two liveness frames are (nearly) the same
    │   └── FrameTimingError          frames captured too far apart
    └── APIError                      anything about a call to the service
        ├── APIConnectionError        no usable response (DNS, refused, reset)
        │   ├── APITimeoutError       no response in time, or the deadline ran out
        │   ├── ProxyError            the proxy would not carry the request (407, 403, 502)
        │   ├── UntrustedCertificateError  the server's TLS certificate was not trusted
        │   └── ClientCertificateError     the server refused the TLS handshake (mutual TLS)
        ├── ResponseDecodeError       a body that is not the envelope (HTML 502, truncated JSON)
        │   └── ResponseTooLargeError a body over ``max_response_bytes``, sent or inflated
        ├── APIStatusError            a non-2xx status
        │   ├── BadRequestError               400
        │   ├── AuthenticationError           401
        │   ├── PermissionDeniedError         403
        │   ├── NotFoundError                 404
        │   ├── RequestTimeoutError           408
        │   ├── UnsupportedMediaTypeError     415
        │   ├── UnprocessableEntityError      422
        │   ├── RateLimitError                429
        │   └── InternalServerError           5xx
        ├── VlensAPIError             the envelope's ``error_code`` says failure
        │   ├── DocumentError         3001-3101 (DocumentExpiredError 3010,
        │   │                         DocumentMismatchError 3101), WrongSideError 7001-7002
        │   ├── BundleError           4001-4005 (TooManyAttemptsError 4003)
        │   ├── FaceError             4206-4209
        │   └── ImageRejectedError    1050, 5001-5003
        ├── ValidationFailedError     a 2xx whose ``validation_errors`` list is not empty
        └── VerificationFailedError   a 2xx verdict that did not pass (process not completed)
            └── LivenessFailedError   ``services.liveness`` is false

A non-2xx response that also carries an ``error_code`` raises a class that is both: a 422 with code
3010 is an instance of :class:`DocumentExpiredError` *and* :class:`UnprocessableEntityError`, so
either ``except`` works whichever failure style the server chose; :func:`api_error_class` picks it.
Its name stays the plain one (``type(err).__name__ == "DocumentExpiredError"``) in logs and JSON.

Messages never contain secrets or personal data: server text passes through :func:`redact`.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from ._redact import redact

__all__ = [
    "ERROR_CODE_MEANINGS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BulkInputError",
    "BundleError",
    "ClientCertificateError",
    "ClientClosedError",
    "CompressionError",
    "ConfigurationError",
    "DocumentError",
    "DocumentExpiredError",
    "DocumentMismatchError",
    "FaceError",
    "FlowError",
    "FrameCountError",
    "FrameTimingError",
    "IdenticalFramesError",
    "ImageError",
    "ImageRejectedError",
    "ImageTooLargeError",
    "InternalServerError",
    "InvalidNationalIdError",
    "JournalError",
    "JournalMismatchError",
    "LivenessFailedError",
    "MissingInputError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProxyError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "StepOrderError",
    "TooManyAttemptsError",
    "TransactionClosedError",
    "UnprocessableEntityError",
    "UnsupportedImageError",
    "UnsupportedMediaTypeError",
    "UntrustedCertificateError",
    "ValidationFailedError",
    "VerificationFailedError",
    "VlensAPIError",
    "VlensError",
    "WrongSideError",
    "api_error_class",
    "decode_error_class",
    "describe_code",
    "too_large_error_class",
]


# Our messages name the call (method and path), what happened and what fixes it (an option, a
# flag): the cut that keeps a server's free text short must not lose the fix.
_MESSAGE_LIMIT: Final = 600


class VlensError(Exception):
    """Root of every exception raised by vlens-async.

    :attr:`audience` says whom the error concerns, so a web app can route it without knowing the
    tree: ``"user"`` (show it: retake the photo, use another card), ``"retry"`` (nothing was
    decided: try again later) or ``"operator"`` (credentials, bundle, configuration: alert the
    team).
    """

    @property
    def audience(self) -> Literal["user", "retry", "operator"]:
        """Whom this error concerns: ``"user"``, ``"retry"`` or ``"operator"``."""
        # The decision is _classify's (one table for flow, bulk, retries and the CLI); imported
        # here, not at the top, because _classify is built on this module.
        from ._classify import audience

        return audience(self)

    def __reduce__(self) -> Any:
        # Rebuilt without __init__ (several take keyword-only arguments), every attribute kept,
        # so an error crosses a process boundary (multiprocessing, a task queue) intact.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[VlensError], args: tuple[Any, ...], state: dict[str, Any]) -> VlensError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class ConfigurationError(VlensError, ValueError):
    """An option or argument is invalid (for example plain ``http://`` to a remote host)."""


class ClientClosedError(VlensError, RuntimeError):
    """The client was used outside ``async with`` or after it was closed."""


class FlowError(VlensError):
    """A :class:`~vlens_async.Transaction` step is not allowed in the current state.

    Raised before anything is sent. ``state`` is the state the transaction was in and ``step`` the
    step that was refused.
    """

    def __init__(self, message: str, *, state: str | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.step = step


class FrameCountError(FlowError, ConfigurationError):
    """Liveness was given other than three face frames; raised before anything is prepared or
    sent. Both a :class:`FlowError` and a :class:`ConfigurationError`."""


class StepOrderError(FlowError):
    """A step sent out of order: liveness before both ID sides succeeded. Nothing was sent;
    scan the missing side(s) first."""


class TransactionClosedError(FlowError):
    """A step on a transaction that is already COMPLETED or FAILED (``state`` says which).
    Nothing was sent; a new verification needs a new transaction."""


class MissingInputError(FlowError):
    """The step needs an input the transaction does not hold; ``missing`` names it (the
    argument to pass): ``"id_front"`` for liveness after
    :meth:`~vlens_async.Transaction.restore`, ``"name_check_value"`` after restoring a snapshot
    without personal data from a transaction that had one. Nothing was sent."""

    def __init__(
        self,
        message: str,
        *,
        missing: str,
        state: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message, state=state, step=step)
        self.missing = missing


class InvalidNationalIdError(VlensError, ValueError):
    """A national ID number that cannot be parsed; ``reason`` says why, never showing it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BulkInputError(VlensError):
    """A manifest, or one of its rows, cannot be used; ``row`` is its 1-based row number."""

    def __init__(self, message: str, *, row: int | None = None) -> None:
        super().__init__(message if row is None else f"row {row}: {message}")
        self.row = row
        self.reason = message


class JournalError(BulkInputError):
    """A bulk journal that cannot be used as asked, and was left untouched: not a vlens journal
    (empty, tables missing, damaged, a folder), an unknown schema, in use by another job, a file
    with more than one hard link, no journal to resume, or already holding applicants without
    resume. The message says why."""


class JournalMismatchError(JournalError):
    """Resume against another service (base URL) or another manifest (path or contents) than
    the journal was started with; nothing was sent and the journal is untouched."""


# --- local image preprocessing ---


class ImageError(VlensError):
    """Local preprocessing refused an image; nothing was sent. ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedImageError(ImageError):
    """The input is not an image Pillow can read: empty, truncated, unknown format, text."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than allowed, or is a decompression bomb."""


class CompressionError(ImageError):
    """No quality and size within the limits fit the byte budget."""


class IdenticalFramesError(ImageError):
    """Two liveness frames are identical or nearly so; ``pair`` names them (0-based)."""

    def __init__(self, reason: str, *, pair: tuple[int, int], difference: float | None = None):
        super().__init__(reason)
        self.pair = pair
        self.difference = difference


class FrameTimingError(ImageError):
    """The liveness frames were captured further apart than allowed; ``spread`` in seconds."""

    def __init__(self, reason: str, *, spread: float) -> None:
        super().__init__(reason)
        self.spread = spread


# --- the service ---


class APIError(VlensError):
    """Something about a call to the service went wrong.

    Carries everything the server said (all optional, since a connection error has no response):
    ``status`` (HTTP), ``error_code`` and ``error_message`` from the envelope,
    ``validation_errors``, ``request_id`` (our ``X-Request-Id``), ``method`` and ``path``, and
    ``envelope``: the parsed response model when there was one, else the decoded JSON, else
    ``None``. ``body`` keeps the raw bytes of a response that could not be decoded. None of these
    appear in ``repr`` beyond the status, code and request id.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        error_message: str | None = None,
        validation_errors: Sequence[Any] = (),
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        envelope: Any = None,
        body: bytes | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = redact(message, limit=_MESSAGE_LIMIT)
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.error_message = error_message
        self.validation_errors = tuple(validation_errors)
        self.request_id = request_id
        self.method = method
        self.path = path
        self.envelope = envelope
        self.body = body
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.error_code is not None:
            parts.append(f"error_code={self.error_code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " | ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"error_code={self.error_code!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> Any:
        # Dynamic status+code classes are not importable by name: pickle their two importable
        # bases, and the unpickled error is made from the same (cached) combined class.
        cls = type(self)
        bases = cls.__bases__ if _is_combined(cls) else (cls,)
        return (_rebuild, (bases, self.message, self.__dict__))


def _rebuild(
    bases: type[APIError] | tuple[type[APIError], ...], message: str, state: dict[str, Any]
) -> APIError:
    # A single class is what earlier releases pickled; keep reading it.
    if isinstance(bases, type):
        bases = (bases,)
    cls = bases[0]
    if len(bases) == 2 and issubclass(bases[1], APIStatusError):
        cls = _combined(bases[0], bases[1])
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class APIConnectionError(APIError):
    """No usable response: the connection failed, was refused or was reset.

    The underlying aiohttp exception is deliberately not chained (its text carries the URL and
    query string, which may hold a phone number): ``cause_type`` names its class and
    ``cause_reason`` says what happened in words of ours.
    """

    cause_type: str | None = None
    cause_reason: str | None = None


class APITimeoutError(APIConnectionError):
    """No response in time, or the total deadline across retries ran out."""


class ProxyError(APIConnectionError):
    """The proxy answered the ``CONNECT`` with an error status, ``proxy_status``: 407 (it wants
    credentials, or refused the ones given), 403 (its policy refuses this host), 502 (it could
    not reach the service); or answered a plain ``http://`` request with 407. The request never
    reached the service. A 4xx is the operators' to fix and is not retried (but 408 and 429,
    as from the service); a 5xx is transient. The message never holds the proxy's
    credentials."""

    proxy_status: int | None = None


class UntrustedCertificateError(APIConnectionError):
    """The service's TLS certificate (or an ``https://`` proxy's: the message says whose) was
    not trusted (an unknown or private CA, expired, issued for another host), so nothing was
    sent. Behind a TLS-inspecting proxy, trust its CA with
    ``ssl=ssl.create_default_context(cafile=...)`` (CLI: ``--ca-bundle``, ``VLENS_CA_BUNDLE``);
    verification itself is never switched off. The operators' to fix: not retried."""


class ClientCertificateError(APIConnectionError):
    """The server ended the TLS handshake with an alert that says it wants a client certificate
    (mutual TLS) or refused the one given: ``certificate required`` (TLS 1.3), ``bad
    certificate`` or ``handshake failure`` (TLS 1.2; that alert may also mean no common cipher).
    Present one with ``ssl=`` a context on which ``load_cert_chain(certfile, keyfile)`` was
    called (CLI: ``--client-cert FILE [--client-key FILE]``). The operators' to fix: not retried.

    Only a server that sends the alert can be recognised. One that just closes or resets the
    connection (the emulator's asyncio server does, under TLS 1.3 and 1.2; under TLS 1.3 the
    alert also comes after the client's side of the handshake has finished, so a request written
    at once may meet a reset first) gives a plain :class:`APIConnectionError`, which is retried
    like any reset.
    """


class ResponseDecodeError(APIError):
    """The body is not the Vlens envelope: an HTML proxy page, truncated or malformed JSON."""


class ResponseTooLargeError(ResponseDecodeError):
    """The response body is larger than the client's ``max_response_bytes``, as sent or once
    inflated (gzip/deflate); reading stopped there, so nothing of it is kept (``body`` is None).

    ``limit`` is the limit in bytes. Asking again would get the same answer, so it is not retried;
    raise the limit if a real answer needs more.
    """

    def __init__(self, message: str, *, limit: int | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.limit = limit


class APIStatusError(APIError):
    """The server answered with a non-2xx status."""


class BadRequestError(APIStatusError):
    """HTTP 400: a malformed body or bad base64."""


class AuthenticationError(APIStatusError):
    """HTTP 401: missing or wrong API key, bad or expired token."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the token lacks the permission this endpoint needs."""


class NotFoundError(APIStatusError):
    """HTTP 404: unknown path, transaction or file."""


class RequestTimeoutError(APIStatusError):
    """HTTP 408: the server gave up waiting for the request."""


class UnsupportedMediaTypeError(APIStatusError):
    """HTTP 415: the image format is not accepted."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422: the request was understood but refused; see ``error_code``."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests; ``retry_after`` holds the server's hint in seconds."""


class InternalServerError(APIStatusError):
    """HTTP 5xx: the server or a proxy in front of it failed."""


class VlensAPIError(APIError):
    """The envelope carried a non-zero ``error_code``."""


class DocumentError(VlensAPIError):
    """Codes 3001-3101 (and 7001-7002, :class:`WrongSideError`): the ID document is invalid,
    unreadable, inconsistent, or the other side of the card."""


class DocumentExpiredError(DocumentError):
    """Code 3010: the ID card has expired."""


class DocumentMismatchError(DocumentError):
    """Code 3101: the ID number differs between front and back."""


class WrongSideError(DocumentError):
    """Codes 7001 and 7002: an ID side was sent as the other (the back as the front, or the
    front as the back): send the right side."""


class BundleError(VlensAPIError):
    """Codes 4001-4005: the tenant's bundle is wrong, exhausted, throttled or disabled."""


class TooManyAttemptsError(BundleError):
    """Code 4003: too many attempts; the only throttling signal the API documents."""


class FaceError(VlensAPIError):
    """Codes 4206-4209: more than one face, no face, a missing or unclear face."""


class ImageRejectedError(VlensAPIError):
    """Codes 1050 and 5001-5003: quality too low, unsupported document, too large."""


class ValidationFailedError(APIError):
    """A 2xx response whose ``services.validations.validation_errors`` list is not empty."""


class VerificationFailedError(APIError):
    """A 2xx answer whose verdict did not pass: ``isVerificationProcessCompleted`` is false."""


class LivenessFailedError(VerificationFailedError):
    """A 2xx liveness answer with ``services.liveness`` false: retake the three frames."""


# What the documented error codes mean (API.md): the one wording of the client's exception
# messages and of the bulk summary's Errors table. Read-only.
ERROR_CODE_MEANINGS: Final[Mapping[int, str]] = types.MappingProxyType(
    {
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
)


def describe_code(error_code: int) -> str | None:
    """What a documented Vlens ``error_code`` means (``3010``: "the document has expired"), or
    None for a code the API documents no meaning for (see :data:`ERROR_CODE_MEANINGS`)."""
    return ERROR_CODE_MEANINGS.get(error_code)


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

_CODE_CLASSES: dict[int, type[VlensAPIError]] = {
    3010: DocumentExpiredError,
    3101: DocumentMismatchError,
    4003: TooManyAttemptsError,
    7001: WrongSideError,
    7002: WrongSideError,
}


def _status_class(status: int) -> type[APIStatusError]:
    if status >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status, APIStatusError)


def _code_class(error_code: int) -> type[VlensAPIError]:
    if error_code in _CODE_CLASSES:
        return _CODE_CLASSES[error_code]
    if 3001 <= error_code <= 3101:
        return DocumentError
    if 4001 <= error_code <= 4005:
        return BundleError
    if 4206 <= error_code <= 4209:
        return FaceError
    if error_code == 1050 or 5001 <= error_code <= 5003:
        return ImageRejectedError
    return VlensAPIError


_COMBINED: dict[tuple[type[APIError], type[APIError]], type[APIError]] = {}


def _combined(first: type[APIError], status_cls: type[APIStatusError]) -> type[APIError]:
    # Made once per pair and cached, so ``type(err)`` is stable across calls.
    key = (first, status_cls)
    if key not in _COMBINED:
        # The plain name: logs, JSON and ``type(e).__name__`` show the family a user catches.
        doc = f"{first.__doc__} Sent with a non-2xx status ({status_cls.__name__})."
        namespace = {
            "__doc__": doc,
            "__module__": __name__,
            "__qualname__": first.__qualname__,
            "_combined": True,
        }
        name = first.__name__
        _COMBINED[key] = type(name, (first, status_cls), namespace)
    return _COMBINED[key]


def decode_error_class(status: int | None) -> type[ResponseDecodeError]:
    """The class for a body that is not the envelope: with a non-2xx status, also its class.

    A proxy's HTML 502 page is then both a :class:`ResponseDecodeError` and an
    :class:`InternalServerError`, so ``except InternalServerError`` sees every 5xx.
    """
    if status is None or 200 <= status < 300:
        return ResponseDecodeError
    combined = _combined(ResponseDecodeError, _status_class(status))
    assert issubclass(combined, ResponseDecodeError)
    return combined


def too_large_error_class(status: int | None) -> type[ResponseTooLargeError]:
    """:class:`ResponseTooLargeError`, and with a non-2xx status also its class (as
    :func:`decode_error_class`): a 401 too large is still an :class:`AuthenticationError`."""
    if status is None or 200 <= status < 300:
        return ResponseTooLargeError
    combined = _combined(ResponseTooLargeError, _status_class(status))
    assert issubclass(combined, ResponseTooLargeError)
    return combined


def _is_combined(cls: type[Any]) -> bool:
    return bool(cls.__dict__.get("_combined", False))


def api_error_class(status: int | None, error_code: int | None) -> type[APIError]:
    """Pick the exception class for a failed response.

    ``status`` is the HTTP status (``None`` or 2xx for a 200 carrying ``error_code``) and
    ``error_code`` the envelope's code (``None`` or 0 when absent). With both, the class is a
    subclass of the code family *and* the status class.
    """
    status_cls = None if status is None or 200 <= status < 300 else _status_class(status)
    code_cls = None if not error_code else _code_class(error_code)
    if code_cls is not None and status_cls is not None:
        return _combined(code_cls, status_cls)
    return code_cls or status_cls or APIError
