"""What an applicant's run comes to: its outcome, the flags and words of its results line.

The outcome table (see the README): ``verified`` and ``not_verified`` for a completed flow,
``rejected`` when the service (or the liveness capture itself) said no, ``invalid`` for a file we
cannot read or shrink, ``error`` when nothing was decided. Nothing here holds personal data: the
server's free text never reaches a results line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .._classify import Kind, kind
from .._redact import redact
from ..errors import APIError, FrameTimingError, IdenticalFramesError, VlensError
from ..flow import FlowState
from ..models import Services

__all__ = ["error_message", "outcome_for", "service_flags"]

# What each kind of failure (see _classify) makes of an applicant that did not complete: the
# service's verdict rejects it, input we could not read or shrink makes its row invalid (a file
# the manifest must fix), and the rest decided nothing about it (a resume may try again).
_BY_KIND: Final[Mapping[Kind, str]] = {
    Kind.VERDICT: "rejected",
    Kind.INPUT: "invalid",
    Kind.TRANSIENT: "error",
    Kind.FATAL: "error",
    Kind.FAULT: "error",
}


def outcome_for(state: FlowState | None, error: BaseException | None, verified: bool) -> str:
    """The applicant's terminal outcome (see the README's table); ``state`` is None when there
    is no transaction (its journaled snapshot could not be restored)."""
    if state is None:
        return "error"
    if error is None and state is FlowState.COMPLETED:
        return "verified" if verified else "not_verified"
    if isinstance(error, IdenticalFramesError | FrameTimingError):
        return "rejected"  # the capture itself is unusable, as liveness would have said
    if error is not None and kind(error) is Kind.INPUT:
        return "invalid"  # before the state: whatever else happened, the row needs fixing
    if state is FlowState.FAILED:
        return "rejected"
    return "error" if error is None else _BY_KIND[kind(error)]


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
