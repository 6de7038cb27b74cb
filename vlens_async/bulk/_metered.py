"""The per-applicant client: the one place every HTTP attempt of a bulk job passes.

Each attempt takes a token of the shared rate limiter first and holds it until the answer is in
(see :mod:`._ratelimit` for why that guarantees the server never counts more than the limit), is
timed, feeds throttling signals back to the limiter, and is kept for the journal.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .._classify import is_throttle
from ..errors import APIError
from ..flow import Step, error_type_name
from ..images import ImageInput, PreparedFaces
from ..models import VerificationResponse
from ._context import JobContext, Stopped
from ._journal import AttemptRecord
from ._ratelimit import LimiterClosed

__all__ = ["MeteredClient"]

_T = TypeVar("_T")


class MeteredClient:
    """The flow's client for one applicant: takes a rate-limit token before every request,
    times it, feeds throttling signals back to the limiter, and keeps the attempts for the
    journal. It wraps the job's view of the real client, whose own retries are off."""

    def __init__(self, context: JobContext) -> None:
        self._client = context.client
        self._limiter = context.limiter
        self._counters = context.counters
        self.attempts: list[AttemptRecord] = []
        self.counts: Counter[str] = Counter()

    async def _timed(self, step: Step, call: Callable[[], Awaitable[_T]]) -> _T:
        # The token is held until the answer is in: see _ratelimit for why that guarantees
        # the server never counts more than the limit.
        try:
            async with self._limiter.slot():
                return await self._attempt(step, call)
        except LimiterClosed:
            raise Stopped from None  # stopping while queued for a token: nothing was sent

    async def _attempt(self, step: Step, call: Callable[[], Awaitable[_T]]) -> _T:
        self.counts[step.value] += 1
        self._counters.requests += 1
        started = time.perf_counter()
        try:
            result = await call()
        except APIError as exc:
            duration = time.perf_counter() - started
            if is_throttle(exc):
                self._limiter.throttled(exc.retry_after)
            self.attempts.append(
                AttemptRecord(
                    step.value,
                    self.counts[step.value],
                    False,
                    duration,
                    status=exc.status,
                    error_code=exc.error_code,
                    error_type=error_type_name(exc),
                )
            )
            raise
        self.attempts.append(
            AttemptRecord(step.value, self.counts[step.value], True, time.perf_counter() - started)
        )
        return result

    async def scan_id_front(self, image: ImageInput, **options: Any) -> VerificationResponse:
        """Send the ID front once."""
        return await self._timed(Step.FRONT, lambda: self._client.scan_id_front(image, **options))

    async def scan_id_back(self, image: ImageInput, **options: Any) -> VerificationResponse:
        """Send the ID back once."""
        return await self._timed(Step.BACK, lambda: self._client.scan_id_back(image, **options))

    async def check_liveness(
        self, faces: Sequence[ImageInput] | PreparedFaces, **options: Any
    ) -> VerificationResponse:
        """Send the liveness frames once."""
        return await self._timed(
            Step.LIVENESS, lambda: self._client.check_liveness(faces, **options)
        )

    def take_attempts(self) -> list[AttemptRecord]:
        """The attempts since the last call (for the next journal write)."""
        attempts, self.attempts = self.attempts, []
        return attempts
