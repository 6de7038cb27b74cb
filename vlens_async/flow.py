"""The verification flow: the ``Transaction`` state machine and the pipelined :func:`verify`.

The machine (one transition table, one guarded transition function)::

    NEW ──front──► FRONT_SCANNED ──back───┐
     │                                    ├──► ID_SCANNED ──liveness──► COMPLETED
     └──back───► BACK_SCANNED ───front────┘

    any non-final state ──hard document error / liveness attempts used up──► FAILED

Front and back go in either order; liveness is legal only in ``ID_SCANNED``, and an illegal step
raises :class:`FlowError` before anything is sent. A step that already succeeded is not sent again
(its stored response is returned) unless ``rescan=True``; rescanning a side keeps the state. A side
that failed may be sent again. Liveness may be retried with new frames until
``max_liveness_attempts`` verdicts have gone against it; an expired card (3010) or a front and back
of different cards (3101) fail the transaction at once. Errors with no verdict (connection, 5xx
after retries, credentials, the tenant's bundle) leave the state as it was, so the step can simply
be retried, and so can a step cancelled mid-flight.

The transaction id is fixed when the transaction is made (given, or a fresh UUID, as the official
iOS SDK does), so a retried or resumed first step can never open a second transaction. Steps on one
transaction are serialised by a lock. :meth:`Transaction.snapshot` is plain JSON (no images, no
credentials) and :meth:`Transaction.restore` continues from it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar

import attrs

from . import _wire, errors
from ._redact import mask_id, redact
from .config import NotGiven
from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    BundleError,
    DocumentExpiredError,
    DocumentMismatchError,
    FaceError,
    FlowError,
    ImageError,
    ImageRejectedError,
    LivenessFailedError,
    PermissionDeniedError,
    ResponseDecodeError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
    VerificationFailedError,
    VlensAPIError,
)
from .images import (
    ImageInput,
    PreparedFaces,
    PreparedImage,
    capture_spread,
    prepare_document,
    prepare_faces,
)
from .models import IdBackData, IdFrontData, Services, VerificationResponse
from .national_id import CrossCheckFlag, cross_check

__all__ = [
    "DEFAULT_MAX_LIVENESS_ATTEMPTS",
    "SNAPSHOT_VERSION",
    "FlowClient",
    "FlowState",
    "Step",
    "StepRecord",
    "StepStatus",
    "Transaction",
    "VerificationOutcome",
    "error_type_name",
    "is_verdict",
    "next_state",
    "verify",
]

DEFAULT_MAX_LIVENESS_ATTEMPTS: Final = 3
SNAPSHOT_VERSION: Final = 1


class FlowState(enum.StrEnum):
    """Where a :class:`Transaction` stands."""

    NEW = "NEW"
    FRONT_SCANNED = "FRONT_SCANNED"
    BACK_SCANNED = "BACK_SCANNED"
    ID_SCANNED = "ID_SCANNED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class Step(enum.StrEnum):
    """The three capture steps of a verification."""

    FRONT = "front"
    BACK = "back"
    LIVENESS = "liveness"


class StepStatus(enum.StrEnum):
    """The outcome of a step so far."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Success transitions, rescans included; everything absent is illegal.
_TRANSITIONS: Final[Mapping[tuple[FlowState, Step], FlowState]] = {
    (FlowState.NEW, Step.FRONT): FlowState.FRONT_SCANNED,
    (FlowState.NEW, Step.BACK): FlowState.BACK_SCANNED,
    (FlowState.FRONT_SCANNED, Step.FRONT): FlowState.FRONT_SCANNED,
    (FlowState.FRONT_SCANNED, Step.BACK): FlowState.ID_SCANNED,
    (FlowState.BACK_SCANNED, Step.BACK): FlowState.BACK_SCANNED,
    (FlowState.BACK_SCANNED, Step.FRONT): FlowState.ID_SCANNED,
    (FlowState.ID_SCANNED, Step.FRONT): FlowState.ID_SCANNED,
    (FlowState.ID_SCANNED, Step.BACK): FlowState.ID_SCANNED,
    (FlowState.ID_SCANNED, Step.LIVENESS): FlowState.COMPLETED,
}

# Errors that are a verdict on what was sent (so a retry needs new input), as opposed to
# transport, server, credential or tenant trouble, which leave the state untouched.
_VERDICTS: Final = (
    VlensAPIError,
    ValidationFailedError,
    VerificationFailedError,
    BadRequestError,
    UnsupportedMediaTypeError,
    UnprocessableEntityError,
)
_NOT_VERDICTS: Final = (
    BundleError,
    APIConnectionError,
    AuthenticationError,
    PermissionDeniedError,
)
_HARD_FAILURES: Final = (DocumentExpiredError, DocumentMismatchError)

# Liveness answers that judge the frames, and so use up an attempt. Other errors on liveness
# (an ordering error, a bundle or generic error, say) say nothing about the frames.
_FRAME_VERDICTS: Final = (VerificationFailedError, FaceError, ImageRejectedError)
# A 400 or 415 judges the frames only when no error code says what it is about: the same code
# must count the same whichever failure style (HTTP status or 200) the tenant uses.
_FRAME_STATUSES: Final = (BadRequestError, UnsupportedMediaTypeError)


def _judges_frames(exc: APIError) -> bool:
    if isinstance(exc, _FRAME_VERDICTS):
        return True
    return isinstance(exc, _FRAME_STATUSES) and not exc.error_code


# Where a failed rescan of an ID side leaves the machine: that side is no longer done.
_WITHOUT_SIDE: Final[Mapping[tuple[FlowState, Step], FlowState]] = {
    (FlowState.FRONT_SCANNED, Step.FRONT): FlowState.NEW,
    (FlowState.BACK_SCANNED, Step.BACK): FlowState.NEW,
    (FlowState.ID_SCANNED, Step.FRONT): FlowState.BACK_SCANNED,
    (FlowState.ID_SCANNED, Step.BACK): FlowState.FRONT_SCANNED,
}


def next_state(state: FlowState, step: Step) -> FlowState:
    """The guarded transition: the state after ``step`` succeeds, or :class:`FlowError`."""
    try:
        return _TRANSITIONS[(state, step)]
    except KeyError:
        raise FlowError(_refusal(state, step), state=state.value, step=step.value) from None


def _refusal(state: FlowState, step: Step) -> str:
    if state is FlowState.FAILED:
        return f"the transaction has failed; {step.value} is not allowed any more"
    if state is FlowState.COMPLETED:
        return f"the transaction is completed; {step.value} cannot be sent again"
    return f"{step.value} is not allowed in state {state.value}: scan both ID sides first"


def is_verdict(exc: BaseException) -> bool:
    """True when ``exc`` is the service's verdict on what was sent (so retrying the same input is
    pointless), False for transport, server, credential or tenant trouble."""
    return isinstance(exc, _VERDICTS) and not isinstance(exc, _NOT_VERDICTS)


class FlowClient(Protocol):
    """What the flow needs of a client; :class:`~vlens_async.VlensClient` provides it."""

    async def scan_id_front(
        self,
        image: ImageInput,
        *,
        transaction_id: str | None = ...,
        client_transaction_id: str | None = ...,
        name_check_value: str | None = ...,
        get_extracted_data: bool = ...,
        prepare: bool | NotGiven = ...,
    ) -> VerificationResponse:
        """Send the ID front."""
        ...

    async def scan_id_back(
        self,
        image: ImageInput,
        *,
        transaction_id: str | None = ...,
        client_transaction_id: str | None = ...,
        name_check_value: str | None = ...,
        get_extracted_data: bool = ...,
        prepare: bool | NotGiven = ...,
    ) -> VerificationResponse:
        """Send the ID back."""
        ...

    async def check_liveness(
        self,
        faces: Sequence[ImageInput] | PreparedFaces,
        *,
        id_front: ImageInput,
        transaction_id: str,
        client_transaction_id: str | None = ...,
        name_check_value: str | None = ...,
        get_extracted_data: bool = ...,
        prepare: bool | NotGiven = ...,
    ) -> VerificationResponse:
        """Send the three face frames with the ID front."""
        ...


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
            record.error = _restore_error(data)
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


def _to_plain(model: Any) -> dict[str, Any]:
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
    plain = _to_plain(services)
    return plain if show_pii else _mask_tree(plain)


def _extracted_json(data: IdFrontData | IdBackData | None, show_pii: bool) -> Any:
    if data is None:
        return None
    plain = _to_plain(data)
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


class Transaction:
    """One verification: front and back in either order, then liveness, on one transaction id.

    Made by :meth:`VlensClient.transaction`; see the module docstring for the state machine.
    Safe to share between tasks: steps are serialised. ``prepare`` runs the image preprocessor
    (:func:`prepare_document`, :func:`prepare_faces`) before each upload.
    """

    def __init__(
        self,
        client: FlowClient,
        transaction_id: str | None = None,
        *,
        client_transaction_id: str | None = None,
        name_check_value: str | None = None,
        max_liveness_attempts: int = DEFAULT_MAX_LIVENESS_ATTEMPTS,
        get_extracted_data: bool = True,
        prepare: bool = True,
    ) -> None:
        if max_liveness_attempts < 1:
            raise FlowError("max_liveness_attempts must be at least 1")
        self._client = client
        self._transaction_id = transaction_id or str(uuid.uuid4())
        self._client_transaction_id = client_transaction_id
        self._name_check_value = name_check_value
        self._max_liveness_attempts = max_liveness_attempts
        self._get_extracted_data = get_extracted_data
        self._prepare = prepare
        self._state = FlowState.NEW
        self._steps = {step: StepRecord() for step in Step}
        self._responses: dict[Step, VerificationResponse] = {}
        self._timings: dict[str, float] = {}
        self._liveness_attempts = 0
        self._failure: BaseException | None = None
        self._front_image: ImageInput | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Transaction(transaction_id={self._transaction_id!r}, state={self._state.value})"

    @property
    def state(self) -> FlowState:
        """The current :class:`FlowState`."""
        return self._state

    @property
    def transaction_id(self) -> str:
        """The transaction id sent with every step."""
        return self._transaction_id

    @property
    def steps(self) -> Mapping[Step, StepRecord]:
        """Per-step records (status, attempts, duration, last error)."""
        return dict(self._steps)

    @property
    def liveness_attempts(self) -> int:
        """Liveness verdicts received so far (failed ones count towards the limit)."""
        return self._liveness_attempts

    def response(self, step: Step) -> VerificationResponse | None:
        """The stored response of a step that succeeded, if any."""
        return self._responses.get(step)

    async def scan_front(self, image: ImageInput, *, rescan: bool = False) -> VerificationResponse:
        """Send the ID front (returns the stored result if it already succeeded)."""
        return await self._scan(Step.FRONT, image, rescan)

    async def scan_back(self, image: ImageInput, *, rescan: bool = False) -> VerificationResponse:
        """Send the ID back (returns the stored result if it already succeeded)."""
        return await self._scan(Step.BACK, image, rescan)

    async def check_liveness(
        self,
        faces: Sequence[ImageInput] | PreparedFaces,
        id_front: ImageInput | None = None,
        *,
        capture_times: Sequence[float] | None = None,
    ) -> VerificationResponse:
        """Send the three face frames; legal only once both sides succeeded.

        ``id_front`` defaults to the front already scanned (pass it after :meth:`restore`, which
        keeps no images). A liveness verdict against the frames raises
        :class:`LivenessFailedError` and counts towards ``max_liveness_attempts``.
        """
        async with self._lock:
            if self._already_done(Step.LIVENESS, rescan=False):
                return self._responses[Step.LIVENESS]
            next_state(self._state, Step.LIVENESS)
            front = id_front if id_front is not None else self._front_image
            if front is None:
                raise FlowError(
                    "id_front is required: this transaction holds no front image (restored?)",
                    state=self._state.value,
                    step=Step.LIVENESS.value,
                )
            frames = await self._prepare_faces(faces, capture_times)
            prepared_front = await self._prepared_document(front, "prepare_front")

            async def send() -> VerificationResponse:
                response = await self._client.check_liveness(
                    frames,
                    id_front=prepared_front,
                    transaction_id=self._transaction_id,
                    **self._common_options(),
                )
                _raise_for_verdict(response)
                return response

            return await self._send(Step.LIVENESS, send)

    async def _scan(self, step: Step, image: ImageInput, rescan: bool) -> VerificationResponse:
        async with self._lock:
            if self._already_done(step, rescan=rescan):
                return self._responses[step]
            next_state(self._state, step)  # refuse before preprocessing or sending anything
            prepared = await self._prepared_document(image, f"prepare_{step.value}")
            scan = self._client.scan_id_front if step is Step.FRONT else self._client.scan_id_back
            response = await self._send(
                step,
                lambda: scan(
                    prepared, transaction_id=self._transaction_id, **self._common_options()
                ),
            )
            if step is Step.FRONT:
                self._front_image = prepared
            return response

    def _already_done(self, step: Step, *, rescan: bool) -> bool:
        done = self._steps[step].status is StepStatus.SUCCEEDED and step in self._responses
        if done and rescan and self._state is not FlowState.COMPLETED:
            return False
        return done

    def _common_options(self) -> dict[str, Any]:
        # ``prepare`` too: with it off the client must send the raw input, not prepare it itself.
        return {
            "client_transaction_id": self._client_transaction_id,
            "name_check_value": self._name_check_value,
            "get_extracted_data": self._get_extracted_data,
            "prepare": self._prepare,
        }

    async def _prepared_document(self, image: ImageInput, timing_key: str) -> ImageInput:
        if not self._prepare or isinstance(image, PreparedImage):
            return image
        started = time.perf_counter()
        prepared = await prepare_document(image)
        self._timings[timing_key] = time.perf_counter() - started
        return prepared

    async def _prepare_faces(
        self, faces: Sequence[ImageInput] | PreparedFaces, capture_times: Sequence[float] | None
    ) -> Sequence[ImageInput] | PreparedFaces:
        if isinstance(faces, PreparedFaces):
            return faces
        if len(faces) != 3:
            raise FlowError("liveness needs exactly three face frames", step=Step.LIVENESS.value)
        if not self._prepare:
            return faces
        started = time.perf_counter()
        prepared = await prepare_faces(*faces, capture_times=capture_times)
        self._timings["prepare_faces"] = time.perf_counter() - started
        return prepared

    async def _send(
        self, step: Step, send: Callable[[], Awaitable[VerificationResponse]]
    ) -> VerificationResponse:
        # Called under the lock, after the transition was checked. A cancellation propagates
        # without touching the record or the state, so the step can simply be sent again.
        record = self._steps[step]
        target = next_state(self._state, step)
        # From the state, not the record: a transient failure of an earlier rescan already
        # marked the record FAILED, though the server still holds the side.
        was_done = (self._state, step) in _WITHOUT_SIDE
        started = time.perf_counter()
        try:
            response = await send()
        except APIError as exc:
            record.attempts += 1
            record.failed(exc, time.perf_counter() - started)
            self._after_failure(step, exc, rescan=was_done)
            raise
        record.attempts += 1
        record.succeeded(time.perf_counter() - started)
        self._timings[step.value] = record.duration or 0.0
        self._responses[step] = response
        self._state = target
        return response

    def _after_failure(self, step: Step, exc: APIError, *, rescan: bool) -> None:
        if isinstance(exc, _HARD_FAILURES):
            self._fail(exc)
        elif step is not Step.LIVENESS and rescan and is_verdict(exc):
            # The server replaced the side with the failed rescan: the side is no longer done.
            self._state = _WITHOUT_SIDE[(self._state, step)]
            self._responses.pop(step, None)
            if step is Step.FRONT:
                self._front_image = None
        elif step is Step.LIVENESS and _judges_frames(exc):
            self._liveness_attempts += 1
            if isinstance(exc, VerificationFailedError) and not isinstance(
                exc, LivenessFailedError
            ):
                self._fail(exc)  # the frames passed; the verification itself did not
            elif self._liveness_attempts >= self._max_liveness_attempts:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._state = FlowState.FAILED
        self._failure = exc

    @property
    def result(self) -> VerificationOutcome:
        """The outcome so far (final once the state is COMPLETED or FAILED)."""
        return self._outcome(self._failure or self._last_error())

    def _last_error(self) -> BaseException | None:
        failed = [r for r in self._steps.values() if r.status is StepStatus.FAILED]
        return failed[-1].error if failed else None

    def _outcome(self, error: BaseException | None) -> VerificationOutcome:
        front, back, services = self._extracted()
        data = self._latest_data()
        partial = _Extracted(front, back)
        return VerificationOutcome(
            state=self._state,
            transaction_id=self._transaction_id,
            validated=bool(data and data.is_verification_process_completed),
            verified=bool(data and data.is_digital_identity_verified),
            services=services,
            front=front,
            back=back,
            error=None if self._state is FlowState.COMPLETED else error,
            cross_check=cross_check(partial),
            timings=dict(self._timings),
            steps={step: attrs.evolve(record) for step, record in self._steps.items()},
            liveness_attempts=self._liveness_attempts,
        )

    def _latest_data(self) -> Any:
        liveness = self._responses.get(Step.LIVENESS)
        return None if liveness is None else liveness.data

    def _extracted(self) -> tuple[IdFrontData | None, IdBackData | None, Services | None]:
        # Later responses carry the fuller picture (liveness may return both sides' data).
        front = back = None
        services = None
        for step in (Step.FRONT, Step.BACK, Step.LIVENESS):
            response = self._responses.get(step)
            if response is None:
                continue
            front = response.data.id_front_data or front
            back = response.data.id_back_data or back
            services = response.services
        return front, back, services

    def snapshot(self) -> dict[str, Any]:
        """The transaction as plain JSON: state, ids, per-step outcomes, extracted fields.

        Holds no images and no credentials; extracted fields are personal data, so store it
        as such. :meth:`restore` continues from it.
        """
        return {
            "version": SNAPSHOT_VERSION,
            "transaction_id": self._transaction_id,
            "client_transaction_id": self._client_transaction_id,
            "name_check_value": self._name_check_value,
            "state": self._state.value,
            "max_liveness_attempts": self._max_liveness_attempts,
            "liveness_attempts": self._liveness_attempts,
            "get_extracted_data": self._get_extracted_data,
            "prepare": self._prepare,
            "failure": None if self._failure is None else _failure_json(self._failure),
            "steps": {step.value: record.to_json() for step, record in self._steps.items()},
            "responses": {step.value: _to_plain(r) for step, r in self._responses.items()},
            "timings": dict(self._timings),
        }

    @classmethod
    def restore(cls, client: FlowClient, snapshot: Mapping[str, Any]) -> Transaction:
        """Rebuild a transaction from :meth:`snapshot` and continue where it stopped."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise FlowError(f"unsupported snapshot version {snapshot.get('version')!r}")
        try:
            tx = cls(
                client,
                snapshot["transaction_id"],
                client_transaction_id=snapshot.get("client_transaction_id"),
                name_check_value=snapshot.get("name_check_value"),
                max_liveness_attempts=int(snapshot["max_liveness_attempts"]),
                get_extracted_data=bool(snapshot.get("get_extracted_data", True)),
                prepare=bool(snapshot.get("prepare", True)),
            )
            tx._state = FlowState(snapshot["state"])
            tx._liveness_attempts = int(snapshot.get("liveness_attempts", 0))
            tx._steps = {Step(k): StepRecord.from_json(v) for k, v in snapshot["steps"].items()}
            tx._responses = {
                Step(k): _restore_response(v) for k, v in snapshot.get("responses", {}).items()
            }
            tx._timings = {str(k): float(v) for k, v in snapshot.get("timings", {}).items()}
            failure = snapshot.get("failure")
            tx._failure = None if failure is None else _restore_error(failure)
        except (KeyError, TypeError, ValueError) as exc:
            raise FlowError(f"malformed snapshot: {type(exc).__name__}") from exc
        return tx


@attrs.frozen
class _Extracted:
    front: IdFrontData | None
    back: IdBackData | None


def error_type_name(exc: BaseException) -> str:
    """The public class name of an error (a status-and-code error gives its code family)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in errors.__all__:
            return cls.__name__
    return type(exc).__name__


def _restore_response(data: Mapping[str, Any]) -> VerificationResponse:
    """A journaled response, with the fields the client filled in itself (the converter reads
    only what a server sends), so a restored transaction snapshots exactly as before."""
    response = _wire.structure(data, VerificationResponse)
    return attrs.evolve(
        response,
        sent_transaction_id=data.get("sent_transaction_id"),
        request_id=data.get("request_id"),
    )


def _restore_error(data: Mapping[str, Any]) -> APIError:
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


def _failure_json(exc: BaseException) -> dict[str, Any]:
    record = StepRecord()
    record.failed(exc, 0.0)
    keep = ("error", "request", "http")
    return {k: v for k, v in record.to_json().items() if k.startswith(keep)}


def _raise_for_verdict(response: VerificationResponse) -> None:
    """Turn a 2xx liveness answer that did not pass into a typed error."""
    services, data = response.services, response.data
    if services is not None and services.liveness is False:
        raise LivenessFailedError(
            "the liveness check did not pass", envelope=response, error_code=response.error_code
        )
    if data.is_verification_process_completed is False:
        raise VerificationFailedError(
            "the service did not complete the verification process",
            envelope=response,
            error_code=response.error_code,
        )


# --- the pipelined flow ---


@attrs.define
class _Preparation:
    """Starts the preprocessing of all five images; each is awaited when its upload needs it.

    The front gets a head start: with five images decoded at once on a small machine, all of
    them finish late and the first upload waits for the slowest. Alone, the front has a core to
    itself, its upload starts sooner, and the back and the three frames are prepared while it
    travels, well before they are needed.
    """

    front: asyncio.Task[ImageInput]
    back: asyncio.Task[ImageInput]
    faces: asyncio.Task[Sequence[ImageInput] | PreparedFaces]

    @classmethod
    def start(
        cls,
        tx: Transaction,
        front: ImageInput,
        back: ImageInput,
        faces: Sequence[ImageInput] | PreparedFaces,
        capture_times: Sequence[float] | None,
    ) -> _Preparation:
        first = asyncio.create_task(tx._prepared_document(front, "prepare_front"))
        return cls(
            first,
            asyncio.create_task(_after(first, lambda: tx._prepared_document(back, "prepare_back"))),
            asyncio.create_task(_after(first, lambda: tx._prepare_faces(faces, capture_times))),
        )

    async def close(self) -> None:
        """Cancel what is left and wait for it, so no thread result is left unobserved."""
        tasks = (self.front, self.back, self.faces)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


_T = TypeVar("_T")


async def _after(first: asyncio.Task[Any], work: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``work`` once ``first`` has finished, however it finished."""
    await asyncio.wait({first})
    return await work()


async def _scan_sides(tx: Transaction, prep: _Preparation) -> None:
    """Upload whichever side is prepared first, then the other (skipping sides already done)."""
    pending = {
        step: task
        for step, task in ((Step.FRONT, prep.front), (Step.BACK, prep.back))
        if tx.steps[step].status is not StepStatus.SUCCEEDED
    }
    while pending:
        await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
        step = next(s for s, task in pending.items() if task.done())
        image = pending.pop(step).result()
        await (tx.scan_front(image) if step is Step.FRONT else tx.scan_back(image))


async def verify(
    client: FlowClient,
    front: ImageInput,
    back: ImageInput,
    faces: Sequence[ImageInput] | PreparedFaces,
    *,
    transaction: Transaction | None = None,
    transaction_id: str | None = None,
    client_transaction_id: str | None = None,
    name_check_value: str | None = None,
    capture_times: Sequence[float] | None = None,
    max_liveness_attempts: int = DEFAULT_MAX_LIVENESS_ATTEMPTS,
    prepare: bool = True,
    raise_on_failure: bool = False,
) -> VerificationOutcome:
    """Run the whole flow in one await, pipelined, and return its :class:`VerificationOutcome`.

    The front is prepared first and uploaded; the back and the three frames are prepared while it
    travels, the back follows, and liveness goes as soon as both sides succeeded and its frames
    are ready. Pass ``transaction`` to continue one (steps that succeeded are skipped).

    A failure of the verification (an API, flow or image error) is reported in the outcome's
    ``error`` and ``state``; with ``raise_on_failure`` it is raised instead. ``faces`` that are
    not three frames raise :class:`FlowError`, and ``capture_times`` that are not three times
    :class:`~vlens_async.errors.ConfigurationError`, at once, before anything is prepared or sent.
    """
    if not isinstance(faces, PreparedFaces) and len(faces) != 3:
        # Refused before anything is prepared or sent, not after both sides were uploaded.
        raise FlowError("liveness needs exactly three face frames", step=Step.LIVENESS.value)
    if capture_times is not None:
        capture_spread(capture_times)  # malformed times are refused before anything is sent
    tx = transaction or Transaction(
        client,
        transaction_id,
        client_transaction_id=client_transaction_id,
        name_check_value=name_check_value,
        max_liveness_attempts=max_liveness_attempts,
        prepare=prepare,
    )
    started = time.perf_counter()
    error: BaseException | None = None
    if tx.state not in (FlowState.COMPLETED, FlowState.FAILED):
        prep = _Preparation.start(tx, front, back, faces, capture_times)
        try:
            await _scan_sides(tx, prep)
            frames = await prep.faces
            # After a restore the transaction holds no front image: use the prepared one.
            id_front = await prep.front if tx._front_image is None else None
            await tx.check_liveness(frames, id_front, capture_times=capture_times)
        except (APIError, FlowError, ImageError) as exc:
            if raise_on_failure:
                raise
            error = exc
        finally:
            await prep.close()
    tx._timings["total"] = time.perf_counter() - started
    return tx._outcome(tx._failure or error)
