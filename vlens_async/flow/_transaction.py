"""``Transaction``: one verification on one transaction id, step by step.

Front and back go in either order; liveness is legal only once both succeeded, and an illegal
step raises :class:`~vlens_async.errors.FlowError` before anything is prepared or sent (the rules
are :mod:`._machine`'s). A step that already succeeded is not sent again (its stored response is
returned) unless ``rescan=True``; a side that failed may be sent again. Liveness may be retried
with new frames until ``max_liveness_attempts`` verdicts have gone against it; an expired card
(3010), a front and back of different cards (3101), or a verification that did not pass though
the frames did, fail the transaction at once. Errors with no
verdict (connection, 5xx after retries, credentials, the tenant's bundle) leave the state as it
was, so the step can simply be retried, and so can a step cancelled mid-flight.

The transaction id is fixed when the transaction is made (given, or a fresh UUID, as the official
iOS SDK does), so a retried or resumed first step can never open a second transaction. Steps on
one transaction object are serialised by a lock; copies of one verification in other objects or
processes (two restored snapshots, two web workers) reach the same server transaction when they
share its id: keep the id with the user's session, or derive it with
:func:`~vlens_async.transaction_id_for`.

:meth:`Transaction.snapshot` is plain JSON (no images, no credentials). By default it holds no
personal data either: the state, the ids, each step's status and error code, the service's
non-personal flags (spoofing, liveness, AML matched, SRC valid, the names of fields that failed
validation), the completion flags and the cross-check's result; none of the extracted fields, nor
the name check. ``snapshot(include_personal_data=True)`` keeps the responses whole, extracted
fields included. :meth:`Transaction.restore` continues from either; after it, liveness needs the
ID front again (``id_front=`` to :meth:`~Transaction.check_liveness` or to ``restore``) and a
PII-free snapshot of a transaction with a name check needs ``name_check_value=`` again:
without them the step raises :class:`~vlens_async.errors.MissingInputError` naming the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from .. import _uploads
from .._ids import new_transaction_id
from .._telemetry import telemetry_of
from ..config import NOT_GIVEN, NotGiven
from ..errors import (
    APIError,
    FlowError,
    LivenessFailedError,
    MissingInputError,
    VerificationFailedError,
)
from ..images import ImageInput, PreparedFaces
from ..models import IdBackData, IdFrontData, Services, VerificationResponse
from ..national_id import CrossCheckFlag, cross_check
from ._machine import (
    DEFAULT_MAX_LIVENESS_ATTEMPTS,
    Event,
    FlowState,
    Position,
    Step,
    StepStatus,
    event_for,
    next_state,
    transition,
)
from ._outcome import (
    StepRecord,
    VerificationOutcome,
    failure_json,
    non_personal_response,
    restore_error,
    restore_response,
    to_plain,
)

__all__ = ["DEFAULT_MAX_LIVENESS_ATTEMPTS", "SNAPSHOT_VERSION", "FlowClient", "Transaction"]

# 2: personal data only when asked (``personal_data``), the cross-check's result, ``name_check``.
# Version 1 snapshots (which always held the responses whole) are still restored.
SNAPSHOT_VERSION: Final = 2
_RESTORABLE: Final = (1, SNAPSHOT_VERSION)


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


class Transaction:
    """One verification: front and back in either order, then liveness, on one transaction id.

    Made by :meth:`VlensClient.transaction`; see the module docstring for the rules. Safe to
    share between tasks: steps are serialised. ``prepare`` runs the image preprocessor before
    each upload; not given, it follows the client's ``prepare_images``.
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
        prepare: bool | NotGiven = NOT_GIVEN,
    ) -> None:
        if max_liveness_attempts < 1:
            raise FlowError("max_liveness_attempts must be at least 1")
        self._client = client
        self._transaction_id = transaction_id or new_transaction_id()
        self._client_transaction_id = client_transaction_id
        self._name_check_value = name_check_value
        self._get_extracted_data = get_extracted_data
        self._prepare = _prepares(client, prepare)
        self._position = Position(max_liveness_attempts=max_liveness_attempts)
        self._steps = {step: StepRecord() for step in Step}
        self._responses: dict[Step, VerificationResponse] = {}
        self._timings: dict[str, float] = {}
        self._failure: BaseException | None = None
        self._front_image: ImageInput | None = None
        # Set by restore(): the cross-check's result from a snapshot without the extracted
        # fields, and whether the name check the transaction was made with is missing.
        self._carried_flags: tuple[CrossCheckFlag, ...] = ()
        self._name_check_missing = False
        self._lock = asyncio.Lock()
        self._telemetry = telemetry_of(client)
        self._last_event: Event | None = None  # the answer of the step being observed

    def __repr__(self) -> str:
        return f"Transaction(transaction_id={self._transaction_id!r}, state={self.state.value})"

    @property
    def state(self) -> FlowState:
        """The current :class:`FlowState`."""
        return self._position.state

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
        return self._position.liveness_attempts

    @property
    def max_liveness_attempts(self) -> int:
        """How many liveness verdicts may go against the frames before the transaction fails."""
        return self._position.max_liveness_attempts

    @property
    def prepare(self) -> bool:
        """Whether this transaction runs the image preprocessor before each upload."""
        return self._prepare

    @property
    def front_image(self) -> ImageInput | None:
        """The ID front as it was sent, kept for liveness (None before it, and after a restore
        not given ``id_front``)."""
        return self._front_image

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

        ``id_front`` defaults to the front already scanned, or the one given to :meth:`restore`
        (a snapshot keeps no images); with neither, :class:`MissingInputError` (``missing`` is
        ``"id_front"``) is raised before anything is sent. Before both sides:
        :class:`StepOrderError`; once completed or failed: :class:`TransactionClosedError`. A
        liveness verdict against the frames raises :class:`LivenessFailedError` and counts
        towards ``max_liveness_attempts``.
        """
        async with self._lock:
            if self._already_done(Step.LIVENESS, rescan=False):
                return self._responses[Step.LIVENESS]
            with self._observed(Step.LIVENESS):
                next_state(self.state, Step.LIVENESS)
                self._check_name_check(Step.LIVENESS)
                front = id_front if id_front is not None else self._front_image
                if front is None:
                    raise MissingInputError(
                        "liveness needs the ID front and this transaction holds none (a restored"
                        " transaction keeps no images): pass id_front= to check_liveness() or to"
                        " Transaction.restore()",
                        missing="id_front",
                        state=self.state.value,
                        step=Step.LIVENESS.value,
                    )
                frames = await self.prepare_faces(faces, capture_times=capture_times)
                prepared_front = await self.prepare_side(Step.FRONT, front)

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

    async def prepare_side(self, step: Step, image: ImageInput) -> ImageInput:
        """Get an ID side ready to send ahead of its step (preprocessed when :attr:`prepare`,
        timed as ``prepare_front``/``prepare_back``); sending the result costs no second pass."""
        if not self._prepare:
            return image  # sent as given: the client reads it
        started = time.perf_counter()
        ready = await _uploads.upload_document(image, prepare=True)
        if ready is not image:
            self._timings[f"prepare_{step.value}"] = time.perf_counter() - started
        return ready

    async def prepare_faces(
        self,
        faces: Sequence[ImageInput] | PreparedFaces,
        *,
        capture_times: Sequence[float] | None = None,
    ) -> Sequence[ImageInput] | PreparedFaces:
        """Get the three frames ready ahead of liveness (prepared and checked when
        :attr:`prepare`, timed as ``prepare_faces``). Not three frames: FrameCountError."""
        frames = _uploads.three_frames(faces)
        if not self._prepare or isinstance(frames, PreparedFaces):
            return frames
        started = time.perf_counter()
        prepared = await _uploads.upload_faces(frames, prepare=True, capture_times=capture_times)
        self._timings["prepare_faces"] = time.perf_counter() - started
        assert isinstance(prepared, PreparedFaces)
        return prepared

    def record_timing(self, name: str, seconds: float) -> None:
        """Add a timing of the caller's (``verify()`` records ``total``) to the outcome."""
        self._timings[name] = seconds

    async def _scan(self, step: Step, image: ImageInput, rescan: bool) -> VerificationResponse:
        async with self._lock:
            if self._already_done(step, rescan=rescan):
                return self._responses[step]
            with self._observed(step):
                next_state(self.state, step)  # refuse before preprocessing or sending anything
                self._check_name_check(step)
                prepared = await self.prepare_side(step, image)
                scan = (
                    self._client.scan_id_front if step is Step.FRONT else self._client.scan_id_back
                )
                response = await self._send(
                    step,
                    lambda: scan(
                        prepared, transaction_id=self._transaction_id, **self._common_options()
                    ),
                )
                if step is Step.FRONT:
                    self._front_image = prepared
                return response

    @contextlib.contextmanager
    def _observed(self, step: Step) -> Iterator[None]:
        """Report one step to the client's telemetry: the machine's event for its answer
        (``not_sent`` when it stopped before an answer: refused, an image error, cancelled)
        and the state after it."""
        self._last_event = None
        with self._telemetry.step(step.value, transaction_id=self._transaction_id) as scope:
            try:
                yield
            finally:
                event = self._last_event
                scope.result("not_sent" if event is None else event.value, self.state.value)

    def _check_name_check(self, step: Step) -> None:
        if self._name_check_missing:
            raise MissingInputError(
                "this transaction was made with a name check, which a snapshot without personal"
                " data does not keep: pass name_check_value= to Transaction.restore()",
                missing="name_check_value",
                state=self.state.value,
                step=step.value,
            )

    def _already_done(self, step: Step, *, rescan: bool) -> bool:
        # A rescan is always a new send: on a finished transaction the machine refuses it
        # (TransactionClosedError) rather than answering with the stored response.
        done = self._steps[step].status is StepStatus.SUCCEEDED and step in self._responses
        return done and not rescan

    def _common_options(self) -> dict[str, Any]:
        # ``prepare`` too: with it off the client must send the raw input, not prepare it itself.
        return {
            "client_transaction_id": self._client_transaction_id,
            "name_check_value": self._name_check_value,
            "get_extracted_data": self._get_extracted_data,
            "prepare": self._prepare,
        }

    async def _send(
        self, step: Step, send: Callable[[], Awaitable[VerificationResponse]]
    ) -> VerificationResponse:
        # Called under the lock, after the step was found legal. A cancellation propagates
        # without touching the record or the position, so the step can simply be sent again.
        record = self._steps[step]
        started = time.perf_counter()
        try:
            response = await send()
        except APIError as exc:
            record.attempts += 1
            record.failed(exc, time.perf_counter() - started)
            self._move(step, exc)
            raise
        record.attempts += 1
        record.succeeded(time.perf_counter() - started)
        self._timings[step.value] = record.duration or 0.0
        self._responses[step] = response
        self._move(step, None)
        return response

    def _move(self, step: Step, exc: APIError | None) -> None:
        """Take the machine's transition for this answer, and keep what it implies."""
        event = event_for(step, exc)
        self._last_event = event
        before, self._position = self._position, transition(self._position, step, event)
        if self.state is FlowState.FAILED and before.state is not FlowState.FAILED:
            self._failure = exc
        elif event is Event.REJECTED and self.state is not before.state:
            # The server replaced the side with the failed rescan: forget the old answer.
            self._responses.pop(step, None)
            if step is Step.FRONT:
                self._front_image = None

    @property
    def result(self) -> VerificationOutcome:
        """The outcome so far (final once the state is COMPLETED or FAILED)."""
        return self.outcome()

    def outcome(self, error: BaseException | None = None) -> VerificationOutcome:
        """The outcome so far; ``error`` (what stopped the caller, such as an image refused
        before its upload) is reported when the transaction holds no failure of its own."""
        error = self._failure or error or self._last_error()
        front, back, services = self._extracted()
        data = self._latest_data()
        return VerificationOutcome(
            state=self.state,
            transaction_id=self._transaction_id,
            validated=bool(data and data.is_verification_process_completed),
            verified=bool(data and data.is_digital_identity_verified),
            services=services,
            front=front,
            back=back,
            error=None if self.state is FlowState.COMPLETED else error,
            cross_check=self._cross_check(front, back),
            timings=dict(self._timings),
            steps={step: attrs.evolve(record) for step, record in self._steps.items()},
            liveness_attempts=self.liveness_attempts,
        )

    def _cross_check(
        self, front: IdFrontData | None, back: IdBackData | None
    ) -> tuple[CrossCheckFlag, ...]:
        """The cross-check of what this transaction holds; after a restore from a snapshot
        without the extracted fields, together with the result that snapshot kept (a response
        with both sides' data, as liveness returns, makes that result whole again)."""
        computed = cross_check(_Extracted(front, back))
        if front is not None and back is not None:
            return computed
        merged = set(self._carried_flags) | set(computed)
        return tuple(flag for flag in CrossCheckFlag if flag in merged)

    def _last_error(self) -> BaseException | None:
        failed = [r for r in self._steps.values() if r.status is StepStatus.FAILED]
        return failed[-1].error if failed else None

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

    def snapshot(self, *, include_personal_data: bool = False) -> dict[str, Any]:
        """The transaction as plain JSON, which :meth:`restore` continues from.

        Never images or credentials. By default no personal data either: state, ids, each
        step's status, attempts, error type and code, timings, the service's non-personal flags
        (spoofing, liveness, AML matched, SRC valid, the names of fields that failed
        validation), the completion flags and the cross-check's result, enough to continue the
        flow and to report the outcome's ``state``, ``validated``, ``verified`` and
        ``cross_check``; the extracted fields (names, address, birth date, national ID) and the
        name check are left out, so the outcome of a restored transaction has no ``front`` or
        ``back`` until a later step returns them. ``include_personal_data=True`` keeps the
        responses whole and the name check: store that as personal data.
        """
        front, back, _ = self._extracted()
        data: dict[str, Any] = {
            "version": SNAPSHOT_VERSION,
            "personal_data": include_personal_data,
            "transaction_id": self._transaction_id,
            "client_transaction_id": self._client_transaction_id,
            "state": self.state.value,
            "max_liveness_attempts": self.max_liveness_attempts,
            "liveness_attempts": self.liveness_attempts,
            "get_extracted_data": self._get_extracted_data,
            "prepare": self._prepare,
            "failure": None if self._failure is None else failure_json(self._failure),
            "steps": {step.value: record.to_json() for step, record in self._steps.items()},
            "timings": dict(self._timings),
            "cross_check": [flag.value for flag in self._cross_check(front, back)],
        }
        if include_personal_data:
            data["name_check_value"] = self._name_check_value
            data["responses"] = {step.value: to_plain(r) for step, r in self._responses.items()}
        else:
            data["name_check"] = self._name_check_value is not None or self._name_check_missing
            data["responses"] = {
                step.value: non_personal_response(r) for step, r in self._responses.items()
            }
        return data

    @classmethod
    def restore(
        cls,
        client: FlowClient,
        snapshot: Mapping[str, Any],
        *,
        id_front: ImageInput | None = None,
        name_check_value: str | None = None,
        prepare: bool | NotGiven = NOT_GIVEN,
    ) -> Transaction:
        """Rebuild a transaction from :meth:`snapshot` (with or without personal data, or a
        version-1 snapshot of an earlier release) and continue where it stopped.

        A snapshot keeps no images: give ``id_front`` here (or to :meth:`check_liveness`) for
        liveness, else it raises :class:`MissingInputError`. ``name_check_value`` replaces the
        snapshot's; a snapshot without personal data of a transaction made with a name check
        needs it again before any step is sent. ``prepare`` not given keeps the snapshot's
        setting (a snapshot without one prepares). A snapshot of another version, or whose
        fields have the wrong types, raises :class:`FlowError`.
        """
        if not isinstance(snapshot, Mapping):
            raise FlowError(f"malformed snapshot: {type(snapshot).__name__}, not a mapping")
        version = snapshot.get("version")
        if type(version) is not int or version not in _RESTORABLE:
            raise FlowError(f"unsupported snapshot version {version!r}")
        try:
            tx = cls._from_snapshot(client, snapshot, name_check_value, prepare)
        except Exception as exc:  # any wrong type or shape: the snapshot is unusable
            raise FlowError(f"malformed snapshot: {type(exc).__name__}") from exc
        if id_front is not None:
            tx._front_image = id_front
        return tx

    @classmethod
    def _from_snapshot(
        cls,
        client: FlowClient,
        snapshot: Mapping[str, Any],
        name_check_value: str | None,
        prepare: bool | NotGiven,
    ) -> Transaction:
        transaction_id = snapshot["transaction_id"]
        if not isinstance(transaction_id, str) or not transaction_id:
            raise TypeError("transaction_id")
        kept_name = snapshot.get("name_check_value")
        tx = cls(
            client,
            transaction_id,
            client_transaction_id=_optional_str(snapshot.get("client_transaction_id")),
            name_check_value=name_check_value or _optional_str(kept_name),
            max_liveness_attempts=_int(snapshot["max_liveness_attempts"]),
            get_extracted_data=bool(snapshot.get("get_extracted_data", True)),
            prepare=bool(snapshot.get("prepare", True))
            if isinstance(prepare, NotGiven)
            else prepare,
        )
        tx._name_check_missing = bool(snapshot.get("name_check")) and tx._name_check_value is None
        tx._position = attrs.evolve(
            tx._position,
            state=FlowState(snapshot["state"]),
            liveness_attempts=_int(snapshot.get("liveness_attempts", 0)),
        )
        steps = {Step(k): StepRecord.from_json(v) for k, v in _mapping(snapshot["steps"]).items()}
        tx._steps = {step: steps.get(step, StepRecord()) for step in Step}
        tx._responses = {
            Step(k): restore_response(_mapping(v))
            for k, v in _mapping(snapshot.get("responses") or {}).items()
        }
        tx._timings = {str(k): float(v) for k, v in _mapping(snapshot.get("timings") or {}).items()}
        tx._carried_flags = tuple(CrossCheckFlag(f) for f in snapshot.get("cross_check") or ())
        failure = snapshot.get("failure")
        tx._failure = None if failure is None else restore_error(_mapping(failure))
        return tx


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{type(value).__name__} is not a mapping")
    return value


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"{type(value).__name__} is not an integer")
    return value


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} is not a string")
    return value


@attrs.frozen
class _Extracted:
    front: IdFrontData | None
    back: IdBackData | None


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


def _prepares(client: FlowClient, prepare: bool | NotGiven) -> bool:
    # Not given: the client's own setting. A FlowClient without one (a test double) prepares.
    if isinstance(prepare, NotGiven):
        return bool(getattr(client, "prepare_images", True))
    return prepare
