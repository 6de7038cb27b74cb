"""What an error means for whoever handles it: the one table behind every such decision.

Every failure falls in one :class:`Kind`:

==========  =======================================================  ==========
kind        what happened                                            audience
==========  =======================================================  ==========
VERDICT     the service judged what was sent (expired card, no       ``user``
            face, liveness failed, a refused image): new input needed
INPUT       we refused the input before sending it (unreadable,      ``user``
            too large, identical frames)
TRANSIENT   nothing was decided (connection, timeout, 5xx, 429,      ``retry``
            code 4003, a garbled body): the same request may pass
FATAL       wrong for every applicant alike (credentials,            ``operator``
            permissions, the tenant's bundle, an untrusted TLS
            certificate, a proxy refusing with a 4xx): stop, alert
FAULT       a mistake on our side of the wire (bad option, illegal   ``operator``
            step, unknown path, bad manifest)
==========  =======================================================  ==========

The flow (is an answer a verdict, which undoes a rescanned side or may use up a liveness attempt;
which verdicts judge the frames is the machine's own rule), the bulk runner (retry the step, stop
the job), the client's retries and the CLI (exit status) all ask here; each adds only what is its
own (the retry policy's statuses, a request's idempotency, whether it paces throttles itself).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import Final, Literal, TypeAlias

from .config import RETRYABLE_STATUSES
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BundleError,
    ClientCertificateError,
    ImageError,
    InternalServerError,
    InvalidNationalIdError,
    PermissionDeniedError,
    ProxyError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    ResponseTooLargeError,
    TooManyAttemptsError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    UntrustedCertificateError,
    ValidationFailedError,
    VerificationFailedError,
    VlensAPIError,
)

__all__ = [
    "Audience",
    "Kind",
    "audience",
    "is_fatal",
    "is_throttle",
    "is_transient",
    "is_verdict",
    "kind",
]

Audience: TypeAlias = Literal["user", "retry", "operator"]


class Kind(enum.StrEnum):
    """The kind of a failure (see the module docstring)."""

    VERDICT = "verdict"
    INPUT = "input"
    TRANSIENT = "transient"
    FATAL = "fatal"
    FAULT = "fault"


# First match wins, so the order is the decision: 4003 is a throttle before it is a bundle error;
# refused credentials outrank any code they came with (nothing was judged); otherwise an error
# code (a verdict) outranks the HTTP status it came with (3010 on a 502 is still an expired card).
_TABLE: Final[tuple[tuple[type[BaseException], Kind], ...]] = (
    (TooManyAttemptsError, Kind.TRANSIENT),
    (BundleError, Kind.FATAL),
    (AuthenticationError, Kind.FATAL),
    (PermissionDeniedError, Kind.FATAL),
    # The same certificate comes back on every connection: trusting its CA is a setting.
    (UntrustedCertificateError, Kind.FATAL),
    # The server wants a client certificate: every connection ends the same way.
    (ClientCertificateError, Kind.FATAL),
    (APIConnectionError, Kind.TRANSIENT),
    # Past the client's own max_response_bytes: asking again gets the same answer; someone has to
    # look (the limit, or the server). One on a 401 or 403 is also that status class (the
    # transport makes it so), and is FATAL above: the credentials are the problem.
    (ResponseTooLargeError, Kind.FAULT),
    # A body that is not the envelope (a proxy's HTML page, JSON cut short) judged nothing,
    # whatever status came with it; the wrong-shape 2xx is singled out in kind().
    (ResponseDecodeError, Kind.TRANSIENT),
    (VlensAPIError, Kind.VERDICT),
    (ValidationFailedError, Kind.VERDICT),
    (VerificationFailedError, Kind.VERDICT),
    (BadRequestError, Kind.VERDICT),
    (UnsupportedMediaTypeError, Kind.VERDICT),
    (UnprocessableEntityError, Kind.VERDICT),
    (RateLimitError, Kind.TRANSIENT),
    (RequestTimeoutError, Kind.TRANSIENT),
    (InternalServerError, Kind.TRANSIENT),
    (APIStatusError, Kind.FAULT),
    (APIError, Kind.TRANSIENT),
    (ImageError, Kind.INPUT),
    (InvalidNationalIdError, Kind.INPUT),
)

_AUDIENCE: Final[dict[Kind, Audience]] = {
    Kind.VERDICT: "user",
    Kind.INPUT: "user",
    Kind.TRANSIENT: "retry",
    Kind.FATAL: "operator",
    Kind.FAULT: "operator",
}


def kind(exc: BaseException) -> Kind:
    """The :class:`Kind` of ``exc``; anything not in the table (ours or not) is a FAULT.

    A body that could not be read as the envelope is never a verdict: with a status (a 4xx body
    that is empty, cut or garbled on the way, or JSON but not an object; a 5xx page) its status
    decides, except that a status that would be a verdict (400, 415, 422) means nothing was
    decided (TRANSIENT).
    """
    if _wrong_shape(exc):
        return Kind.FAULT
    if _proxy_refused(exc):
        return Kind.FATAL
    unreadable_status = isinstance(exc, ResponseDecodeError) and isinstance(exc, APIStatusError)
    for cls, result in _TABLE:
        if unreadable_status and cls is ResponseDecodeError:
            continue  # the status class below decides
        if isinstance(exc, cls):
            if unreadable_status and result is Kind.VERDICT:
                return Kind.TRANSIENT
            return result
    return Kind.FAULT


def _wrong_shape(exc: BaseException) -> bool:
    # A 2xx whose JSON is not the envelope: asking again gets the same answer, so it is no
    # transient trouble but a mismatch between this client and the service (alert the team).
    if not isinstance(exc, ResponseDecodeError) or exc.envelope is None:
        return False
    return exc.status is None or 200 <= exc.status < 300


def _proxy_refused(exc: BaseException) -> bool:
    # A proxy's 4xx to CONNECT (407 credentials, 403 policy) comes back the same for every
    # request, except the retryable ones (408 timeout, 429 slow down); its 5xx (it could not reach
    # the service) is transient, like a refused connection.
    if not isinstance(exc, ProxyError) or exc.proxy_status is None:
        return False
    return 400 <= exc.proxy_status < 500 and exc.proxy_status not in RETRYABLE_STATUSES


def audience(exc: BaseException) -> Audience:
    """Whom ``exc`` concerns: ``"user"``, ``"retry"`` or ``"operator"``."""
    return _AUDIENCE[kind(exc)]


def is_verdict(exc: BaseException) -> bool:
    """True when ``exc`` is the service's verdict on what was sent (so retrying the same input is
    pointless), False for transport, server, credential or tenant trouble."""
    return kind(exc) is Kind.VERDICT


def is_fatal(exc: BaseException) -> bool:
    """True when ``exc`` is wrong for every request alike (credentials, permissions, bundle)."""
    return kind(exc) is Kind.FATAL


def is_throttle(exc: BaseException) -> bool:
    """True for the service's two "slow down" signals: HTTP 429 and code 4003."""
    return isinstance(exc, RateLimitError | TooManyAttemptsError)


def is_transient(exc: BaseException, statuses: Collection[int], *, throttles: bool = False) -> bool:
    """True when the very same request may be sent again at once by a retry loop.

    Never a verdict or a fatal error (a code 3010 on a 502 is still an expired card), nor a 2xx
    of the wrong shape (it would come back the same), nor a body over ``max_response_bytes``.
    Otherwise: no usable response (connection, timeout), a body that did not parse as JSON at all
    (cut short on the way; on a 4xx only where the status would have been a verdict), or a status
    in the caller's retry ``statuses``. A throttle on a 2xx (code 4003) counts only with
    ``throttles``: it is for a caller that paces its requests itself (the bulk runner's rate
    limiter); others leave it to their caller. This is the TRANSIENT kind narrowed to what a loop
    may repeat: a TRANSIENT error outside it still means "try again later" to a person
    (``audience``).
    """
    if not isinstance(exc, APIError) or kind(exc) in (Kind.VERDICT, Kind.FATAL):
        return False
    if isinstance(exc, ResponseTooLargeError):
        return False  # whatever its status: the same answer would come back, as large
    if throttles and is_throttle(exc):
        return True
    if isinstance(exc, APIConnectionError):
        return True
    if (
        isinstance(exc, ResponseDecodeError)
        and exc.envelope is None
        and exc.body is not None
        and kind(exc) is Kind.TRANSIENT
    ):
        return True
    return exc.status is not None and exc.status in statuses
