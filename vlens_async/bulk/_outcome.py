"""What an applicant's run comes to: its outcome, the flags and words of its results line.

The outcome table (see the README): ``verified`` and ``not_verified`` for a completed flow,
``rejected`` when the service (or the liveness capture itself) said no, ``invalid`` for a file we
cannot read or shrink, ``error`` when nothing was decided. Nothing here holds personal data: the
server's free text never reaches a results line.
"""

from __future__ import annotations

from typing import Final

from .._redact import redact
from ..config import RetryPolicy
from ..errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BundleError,
    FrameTimingError,
    IdenticalFramesError,
    ImageError,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    TooManyAttemptsError,
    VlensError,
)
from ..flow import FlowState, is_verdict
from ..models import Services

__all__ = [
    "error_message",
    "is_fatal",
    "is_throttle",
    "is_transient",
    "outcome_for",
    "service_flags",
]

# Worth another attempt of the same step on the same transaction: nothing was decided.
_TRANSIENT: Final = (
    APIConnectionError,
    ResponseDecodeError,
    RateLimitError,
    TooManyAttemptsError,
    InternalServerError,
    RequestTimeoutError,
)
# Wrong for every applicant alike (credentials, the tenant's bundle): stop the job instead of
# failing the whole manifest one applicant at a time.
_FATAL: Final = (AuthenticationError, PermissionDeniedError, BundleError)


def is_throttle(exc: BaseException) -> bool:
    """True for the service's "slow down" signals (429, code 4003)."""
    return isinstance(exc, RateLimitError | TooManyAttemptsError)


def is_fatal(exc: BaseException) -> bool:
    """True when ``exc`` is wrong for every applicant alike."""
    return isinstance(exc, _FATAL) and not isinstance(exc, TooManyAttemptsError)


def is_transient(exc: BaseException, policy: RetryPolicy) -> bool:
    """True when the same step may pass if sent again."""
    if is_fatal(exc):
        return False
    if isinstance(exc, TooManyAttemptsError):
        return True
    if is_verdict(exc):
        return False  # the answer to these images (a document or face code, even on a 5xx)
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, APIStatusError) and exc.status in policy.statuses


def outcome_for(state: FlowState | None, error: BaseException | None, verified: bool) -> str:
    """The applicant's terminal outcome (see the README's table); ``state`` is None when there
    is no transaction (its journaled snapshot could not be restored)."""
    if state is None:
        return "error"
    if error is None and state is FlowState.COMPLETED:
        return "verified" if verified else "not_verified"
    if isinstance(error, IdenticalFramesError | FrameTimingError):
        return "rejected"  # the capture itself is unusable, as liveness would have said
    if isinstance(error, ImageError):
        return "invalid"  # a file we cannot read or shrink: the manifest needs fixing
    if state is FlowState.FAILED or (error is not None and is_verdict(error)):
        return "rejected"
    return "error"


def service_flags(services: Services | None) -> list[str]:
    """What the service flagged, as words an operator can filter on (no personal data)."""
    if services is None:
        return []
    flags = []
    if services.aml is not None and services.aml.aml_matched:
        flags.append("aml_matched")
    if services.spoofing is not None and services.spoofing.fake:
        flags.append("fake_document")
    if services.src is not None and services.src.is_valid is False:
        flags.append("src_invalid")
    if services.liveness is False:
        flags.append("liveness_failed")
    if services.validations:
        flags.append("validation_issues")
    return flags


def error_message(exc: BaseException) -> str:
    """Our own words for ``exc``, never the server's.

    The server's ``error_message`` is free text that may hold a customer's name, which
    :func:`redact` cannot recognise; the client builds an :class:`APIError`'s ``message`` from
    the method, path and a table of reasons, and our other errors from our own text. Anything
    else (a bug, an OS error naming a file) is told by its class only.
    """
    if isinstance(exc, APIError):
        return redact(exc.message)
    if isinstance(exc, VlensError):
        return redact(str(exc))
    return f"unexpected {type(exc).__name__}"
