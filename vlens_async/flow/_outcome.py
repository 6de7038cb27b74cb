"""What a verification came to: per-step records and the :class:`VerificationOutcome`, with their
plain-JSON forms (personal data hidden unless asked) and the way back from JSON to typed errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .. import _wire, errors
from .._redact import mask_id, redact
from ..errors import APIError, ResponseDecodeError
from ..models import IdBackData, IdFrontData, Services, VerificationResponse
from ..national_id import CrossCheckFlag
from ._machine import FlowState, Step, StepStatus

__all__ = [
    "StepRecord",
    "VerificationOutcome",
    "error_type_name",
    "failure_json",
    "restore_error",
    "restore_response",
    "to_plain",
]


@attrs.define
class StepRecord:
    """What happened to one step: status, attempts, duration, and the last error."""

    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    duration: float | None = None
    error_type: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    error: BaseException | None = attrs.field(default=None, repr=False, eq=False)

    def succeeded(self, duration: float) -> None:
        """Record a success."""
        self.status, self.duration = StepStatus.SUCCEEDED, duration
        self.error_type = self.error_code = self.error_message = self.error = None
        self.http_status = None

    def failed(self, exc: BaseException, duration: float) -> None:
        """Record a failure, keeping the typed error.

        ``error_message`` is our own description (method, path, what the code means), never the
        server's free text, which may name the applicant; that stays on ``error.error_message``.
        """
        self.status, self.duration, self.error = StepStatus.FAILED, duration, exc
        self.error_type = error_type_name(exc)
        self.error_code = getattr(exc, "error_code", None)
        self.error_message = redact(getattr(exc, "message", None) or str(exc))
        self.http_status = getattr(exc, "status", None)
        self.request_id = getattr(exc, "request_id", None)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, without the exception object."""
        return {
            "status": self.status.value,
            "attempts": self.attempts,
            "duration": self.duration,
            "error_type": self.error_type,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "http_status": self.http_status,
            "request_id": self.request_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepRecord:
        """Rebuild from :meth:`to_json`'s output, the typed error included."""
        record = cls(
            status=StepStatus(data.get("status", StepStatus.PENDING)),
            attempts=int(data.get("attempts", 0)),
            duration=data.get("duration"),
            error_type=data.get("error_type"),
            error_code=data.get("error_code"),
            error_message=data.get("error_message"),
            http_status=data.get("http_status"),
            request_id=data.get("request_id"),
        )
        if record.error_type is not None:
            record.error = restore_error(data)
        return record


@attrs.frozen(repr=False)
class VerificationOutcome:
    """The result of a verification so far: state, verdicts, extracted data, flags, timings.

    ``validated`` is the service's ``isVerificationProcessCompleted`` and ``verified`` its
    ``isDigitalIdentityVerified``. ``error`` is the error that stopped the flow, if any.
    ``cross_check`` lists disagreements between the national ID number and the rest of OCR.
    The repr shows no personal data.
    """

    state: FlowState
    transaction_id: str
    validated: bool
    verified: bool
    services: Services | None
    front: IdFrontData | None
    back: IdBackData | None
    error: BaseException | None
    cross_check: tuple[CrossCheckFlag, ...]
    timings: Mapping[str, float]
    steps: Mapping[Step, StepRecord]
    liveness_attempts: int

    @property
    def error_code(self) -> int | None:
        """The error code of :attr:`error`, when it had one."""
        return getattr(self.error, "error_code", None)

    @property
    def error_message(self) -> str | None:
        """Our description of :attr:`error` (safe to log or show); the server's own words, which
        may name the applicant, stay on ``error.error_message``."""
        if self.error is None:
            return None
        return redact(getattr(self.error, "message", None) or str(self.error))

    @property
    def finished(self) -> bool:
        """True once the transaction is COMPLETED or FAILED."""
        return self.state in (FlowState.COMPLETED, FlowState.FAILED)

    def __repr__(self) -> str:
        return (
            f"VerificationOutcome(state={self.state.value}, transaction_id={self.transaction_id!r},"
            f" validated={self.validated}, verified={self.verified},"
            f" error_code={self.error_code!r}, cross_check={[f.value for f in self.cross_check]})"
        )

    def to_json(self, *, show_pii: bool = False) -> dict[str, Any]:
        """Plain JSON. Unless ``show_pii``, every personal field is hidden (names, addresses,
        birth date, job, religion, AML case names, the server's free text) and national ID
        numbers keep only their last 4 digits."""
        return {
            "state": self.state.value,
            "transaction_id": self.transaction_id,
            "validated": self.validated,
            "verified": self.verified,
            "error_type": None if self.error is None else error_type_name(self.error),
            "error_code": self.error_code,
            "error_message": self.error_message,
            "cross_check": [flag.value for flag in self.cross_check],
            "front": _extracted_json(self.front, show_pii),
            "back": _extracted_json(self.back, show_pii),
            "services": _services_json(self.services, show_pii),
            "steps": {step.value: record.to_json() for step, record in self.steps.items()},
            "liveness_attempts": self.liveness_attempts,
            "timings": dict(self.timings),
        }


_ID_FIELDS: Final = ("id_number", "id_key")


def _json_value(_: Any, __: Any, value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return list(value) if isinstance(value, tuple) else value


def to_plain(model: Any) -> dict[str, Any]:
    """A response model as plain JSON with snake_case keys, which the wire converter reads back."""
    return attrs.asdict(model, value_serializer=_json_value)


# Personal data inside ``services``: AML case names and birth dates, validation values.
# The server's free text (validation and SRC messages) may quote any of them, so it goes too.
_SERVICE_PII: Final = ("full_name", "date_of_birth", "value", "message", "error_message")


def _mask_tree(value: Any) -> Any:
    """Mask ID numbers and drop the personal fields of ``_SERVICE_PII``, recursively."""
    if isinstance(value, list):
        return [_mask_tree(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in _SERVICE_PII and item is not None:
            out[key] = "<hidden>"
        elif key in _ID_FIELDS and item:
            out[key] = mask_id(str(item))
        else:
            out[key] = _mask_tree(item)
    return out


def _services_json(services: Services | None, show_pii: bool) -> Any:
    if services is None:
        return None
    plain = to_plain(services)
    return plain if show_pii else _mask_tree(plain)


def _extracted_json(data: IdFrontData | IdBackData | None, show_pii: bool) -> Any:
    if data is None:
        return None
    plain = to_plain(data)
    if show_pii:
        return plain
    # Every field the model hides in its repr (names, addresses, birth date, religion, ...) is
    # hidden here too; ID numbers keep their last 4 digits.
    for field in attrs.fields(type(data)):
        value = plain.get(field.name)
        if not value or field.repr is True:
            continue
        plain[field.name] = mask_id(str(value)) if field.name in _ID_FIELDS else "<hidden>"
    return plain


def error_type_name(exc: BaseException) -> str:
    """The public class name of an error (a status-and-code error gives its code family)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in errors.__all__:
            return cls.__name__
    return type(exc).__name__


def restore_response(data: Mapping[str, Any]) -> VerificationResponse:
    """A journaled response, with the fields the client filled in itself (the converter reads
    only what a server sends), so a restored transaction snapshots exactly as before."""
    response = _wire.structure(data, VerificationResponse)
    return attrs.evolve(
        response,
        sent_transaction_id=data.get("sent_transaction_id"),
        request_id=data.get("request_id"),
    )


def restore_error(data: Mapping[str, Any]) -> APIError:
    """Rebuild a recorded error with its class, so ``except DocumentExpiredError`` (or the
    status class it came with) still catches it after a restore."""
    status, code = data.get("http_status"), data.get("error_code")
    named = getattr(errors, str(data.get("error_type")), None)
    cls = named if isinstance(named, type) and issubclass(named, APIError) else APIError
    combined = errors.api_error_class(status, code)
    if issubclass(cls, ResponseDecodeError):  # a proxy's HTML 502 is a 5xx too
        cls = errors.decode_error_class(status)
    elif issubclass(combined, cls):
        cls = combined
    return cls(
        str(data.get("error_message") or "the step failed"),
        status=status,
        error_code=code,
        request_id=data.get("request_id"),
    )


def failure_json(exc: BaseException) -> dict[str, Any]:
    record = StepRecord()
    record.failed(exc, 0.0)
    keep = ("error", "request", "http")
    return {k: v for k, v in record.to_json().items() if k.startswith(keep)}
