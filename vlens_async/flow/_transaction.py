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
one transaction are serialised by a lock. :meth:`Transaction.snapshot` is plain JSON (no images,
no credentials) and :meth:`Transaction.restore` continues from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from .. import _uploads
from .._ids import new_transaction_id
from ..config import NOT_GIVEN, NotGiven
from ..errors import APIError, FlowError, LivenessFailedError, VerificationFailedError
from ..images import ImageInput, PreparedFaces
from ..models import IdBackData, IdFrontData, Services, VerificationResponse
from ..national_id import cross_check
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
    restore_error,
    restore_response,
    to_plain,
)

__all__ = ["DEFAULT_MAX_LIVENESS_ATTEMPTS", "SNAPSHOT_VERSION", "FlowClient", "Transaction"]

SNAPSHOT_VERSION: Final = 1


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
        self._lock = asyncio.Lock()

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
        """The ID front as it was sent, kept for liveness (None before it, and after restore)."""
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

        ``id_front`` defaults to the front already scanned (pass it after :meth:`restore`, which
        keeps no images). A liveness verdict against the frames raises
        :class:`LivenessFailedError` and counts towards ``max_liveness_attempts``.
        """
        async with self._lock:
            if self._already_done(Step.LIVENESS, rescan=False):
                return self._responses[Step.LIVENESS]
            next_state(self.state, Step.LIVENESS)
            front = id_front if id_front is not None else self._front_image
            if front is None:
                raise FlowError(
                    "id_front is required: this transaction holds no front image (restored?)",
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
            next_state(self.state, step)  # refuse before preprocessing or sending anything
            prepared = await self.prepare_side(step, image)
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
        if done and rescan and self.state is not FlowState.COMPLETED:
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
            cross_check=cross_check(_Extracted(front, back)),
            timings=dict(self._timings),
            steps={step: attrs.evolve(record) for step, record in self._steps.items()},
            liveness_attempts=self.liveness_attempts,
        )

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
            "state": self.state.value,
            "max_liveness_attempts": self.max_liveness_attempts,
            "liveness_attempts": self.liveness_attempts,
            "get_extracted_data": self._get_extracted_data,
            "prepare": self._prepare,
            "failure": None if self._failure is None else failure_json(self._failure),
            "steps": {step.value: record.to_json() for step, record in self._steps.items()},
            "responses": {step.value: to_plain(r) for step, r in self._responses.items()},
            "timings": dict(self._timings),
        }

    @classmethod
    def restore(
        cls,
        client: FlowClient,
        snapshot: Mapping[str, Any],
        *,
        prepare: bool | NotGiven = NOT_GIVEN,
    ) -> Transaction:
        """Rebuild a transaction from :meth:`snapshot` and continue where it stopped.

        ``prepare`` not given keeps the snapshot's setting (a snapshot without one prepares).
        """
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
                prepare=bool(snapshot.get("prepare", True))
                if isinstance(prepare, NotGiven)
                else prepare,
            )
            tx._position = attrs.evolve(
                tx._position,
                state=FlowState(snapshot["state"]),
                liveness_attempts=int(snapshot.get("liveness_attempts", 0)),
            )
            tx._steps = {Step(k): StepRecord.from_json(v) for k, v in snapshot["steps"].items()}
            tx._responses = {
                Step(k): restore_response(v) for k, v in snapshot.get("responses", {}).items()
            }
            tx._timings = {str(k): float(v) for k, v in snapshot.get("timings", {}).items()}
            failure = snapshot.get("failure")
            tx._failure = None if failure is None else restore_error(failure)
        except (KeyError, TypeError, ValueError) as exc:
            raise FlowError(f"malformed snapshot: {type(exc).__name__}") from exc
        return tx


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
