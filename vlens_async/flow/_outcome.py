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
    "REVIEW_REASONS",
    "StepRecord",
    "VerificationOutcome",
    "error_type_name",
    "failure_json",
    "non_personal_response",
    "restore_error",
    "restore_response",
    "review_reasons",
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
        """Rebuild from :meth:`to_json`'s output, the typed error included; a value of the wrong
        type raises :class:`TypeError` or :class:`ValueError`."""
        duration = data.get("duration")
        record = cls(
            status=StepStatus(data.get("status", StepStatus.PENDING)),
            attempts=_typed(data.get("attempts", 0), int),
            duration=None if duration is None else float(_typed(duration, int, float)),
            error_type=_typed(data.get("error_type"), str, none=True),
            error_code=_typed(data.get("error_code"), int, none=True),
            error_message=_typed(data.get("error_message"), str, none=True),
            http_status=_typed(data.get("http_status"), int, none=True),
            request_id=_typed(data.get("request_id"), str, none=True),
        )
        if record.error_type is not None:
            record.error = restore_error(data)
        return record


def _typed(value: Any, *types: type, none: bool = False) -> Any:
    """``value`` if it is of one of ``types`` (never a bool for int), else TypeError."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(f"{type(value).__name__} where {types[0].__name__} was expected")
    return value


# What makes an outcome need a person's review, whatever ``verified`` says: the words are the
# bulk results line's service flags.
REVIEW_REASONS: Final = ("aml_matched", "fake_document", "src_invalid")


def review_reasons(services: Services | None) -> tuple[str, ...]:
    """Why a compliance officer must look at an outcome: the AML check matched a watchlist
    (``aml_matched``), spoofing was detected (``fake_document``: a photocopy or a screen), or
    the national registry check failed (``src_invalid``). Empty when none of them."""
    if services is None:
        return ()
    reasons = []
    if services.aml is not None and services.aml.aml_matched:
        reasons.append("aml_matched")
    if services.spoofing is not None and services.spoofing.fake:
        reasons.append("fake_document")
    if services.src is not None and services.src.is_valid is False:
        reasons.append("src_invalid")
    return tuple(reasons)


@attrs.frozen(repr=False)
class VerificationOutcome:
    """The result of a verification so far: state, verdicts, extracted data, flags, timings.

    ``validated`` is the service's ``isVerificationProcessCompleted`` and ``verified`` its
    ``isDigitalIdentityVerified``. ``error`` is the error that stopped the flow, if any.
    ``cross_check`` lists disagreements between the national ID number and the rest of OCR.
    ``needs_review`` is true when the AML check matched, spoofing was detected or the national
    registry (SRC) check failed: ``verified`` is the service's word and does not include them,
    so check ``needs_review`` (or ``review_reasons``) separately. The repr shows no personal
    data.
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
    def review_reasons(self) -> tuple[str, ...]:
        """Why this outcome needs a person's review: ``aml_matched``, ``fake_document`` (spoofing
        detected), ``src_invalid`` (the national registry check failed); empty if none."""
        return review_reasons(self.services)

    @property
    def needs_review(self) -> bool:
        """True when AML matched, spoofing was detected or the SRC check failed, whatever
        ``verified`` says: such an applicant must not be onboarded without a person's review."""
        return bool(self.review_reasons)

    @property
    def finished(self) -> bool:
        """True once the transaction is COMPLETED or FAILED."""
        return self.state in (FlowState.COMPLETED, FlowState.FAILED)

    def __repr__(self) -> str:
        return (
            f"VerificationOutcome(state={self.state.value}, transaction_id={self.transaction_id!r},"
            f" validated={self.validated}, verified={self.verified},"
            f" needs_review={self.needs_review}, error_code={self.error_code!r},"
            f" cross_check={[f.value for f in self.cross_check]})"
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
            "needs_review": self.needs_review,
            "review_reasons": list(self.review_reasons),
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


def non_personal_response(response: VerificationResponse) -> dict[str, Any]:
    """What a snapshot without personal data keeps of a response, in :func:`to_plain`'s shape:
    the service's flags (spoofing, document type, liveness, AML matched, SRC valid and its code,
    the names and codes of failed validations), the completion flags, the error code and the
    ids. No extracted fields, no server text, no AML cases, no validation values."""
    services, data = response.services, response.data
    return {
        "services": {
            "validations": [
                {"field": issue.field, "errors": [{"code": e.code} for e in issue.errors]}
                for issue in services.validations
            ],
            "spoofing": None if services.spoofing is None else {"fake": services.spoofing.fake},
            "classification": None
            if services.classification is None
            else {"doc_type": services.classification.doc_type},
            "liveness": services.liveness,
            "aml": None if services.aml is None else {"aml_matched": services.aml.aml_matched},
            "src": None
            if services.src is None
            else {"is_valid": services.src.is_valid, "error_code": services.src.error_code},
        },
        "data": {
            "is_verification_process_completed": data.is_verification_process_completed,
            "is_digital_identity_verified": data.is_digital_identity_verified,
        },
        "error_code": response.error_code,
        "sent_transaction_id": response.sent_transaction_id,
        "request_id": response.request_id,
    }


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
