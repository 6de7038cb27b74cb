"""Retries: what is retried, how long to wait, and a total deadline that is never exceeded.

The loop itself is stamina's (``retry_context``), so its testing switch (``stamina.set_testing``)
turns every backoff off in tests and its instrumentation hooks see our retries. What we add:

- which failures are retried: connection errors and timeouts, and the statuses in
  :attr:`RetryPolicy.statuses` (408, 429, 5xx by default) whatever class the error has (an HTML 502
  page is a ResponseDecodeError with status 502, and is retried like any 502); and a body that is
  not JSON at all (cut short or garbled on the way), which is a lost response like a reset. A JSON
  body of the wrong shape is not retried: asking again would get the same answer, and every
  verify call counts against the tenant's bundle;
- the wait: exponential backoff from ``initial`` capped at ``max_backoff``, plus random jitter; a
  server's ``Retry-After`` replaces it, capped at ``retry_after_cap``;
- the deadline: each attempt gets at most the time left, and a wait that would end past the
  deadline is not slept: the call raises :class:`APITimeoutError` at once instead.

Only calls that are safe to repeat are retried on every failure. The verify endpoints are: the
client fixes ``transaction_id`` before the first attempt (it generates one when the caller did not),
so a repeated scan lands on the same transaction instead of opening a second one. Calls that are not
idempotent (an OTP request sends an SMS, an OTP check or a token refresh spends what it sends, a
sign-up creates an account) are retried only when the request provably never reached the server
(the connection was never established), or was refused with a 429; never for a fatal failure
(an untrusted certificate, a proxy's 407), which no attempt would change.

stamina's own retry hooks are process-wide (``stamina.instrumentation.set_on_retry_hooks``; there is
no per-call hook), so the library leaves them alone; each retry also gets a DEBUG line of ours on
the ``vlens_async`` logger.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import stamina

from ._classify import is_fatal, is_transient
from .config import RetryPolicy
from .errors import (
    APIError,
    APITimeoutError,
    RateLimitError,
)

__all__ = ["backoff_delay", "is_retryable", "plan_delay", "run_with_retries"]

logger: Final = logging.getLogger("vlens_async")

T = TypeVar("T")

_RNG: Final = random.Random()


def backoff_delay(attempt: int, policy: RetryPolicy, *, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential + jitter."""
    base = min(policy.max_backoff, policy.initial * 2.0 ** min(attempt - 1, 60))
    generator = rng if rng is not None else _RNG
    jitter = generator.uniform(0, policy.jitter) if policy.jitter else 0.0
    return min(policy.max_backoff, base + jitter)


def plan_delay(
    attempt: int,
    exc: BaseException,
    policy: RetryPolicy,
    *,
    rng: random.Random | None = None,
) -> float:
    """The wait before the next attempt: the server's ``Retry-After`` (capped), else backoff."""
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after >= 0:
        return min(float(retry_after), policy.retry_after_cap)
    return backoff_delay(attempt, policy, rng=rng)


def is_retryable(
    exc: BaseException,
    policy: RetryPolicy,
    *,
    idempotent: bool = True,
    not_sent: Callable[[BaseException], bool] = lambda _: False,
) -> bool:
    """Whether a failed attempt may be repeated (see the module docstring)."""
    if not idempotent:
        # Never a fatal error, sent or not: an untrusted certificate or a proxy's 407 comes back
        # the same on every connection.
        if is_fatal(exc):
            return False
        return not_sent(exc) or (isinstance(exc, RateLimitError) and 429 in policy.statuses)
    return is_transient(exc, policy.statuses)


async def run_with_retries(
    attempt_fn: Callable[[int, float | None], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline_at: float | None,
    retryable: Callable[[BaseException], bool],
    clock: Callable[[], float] = time.monotonic,
    request_id: str | None = None,
    method: str | None = None,
    path: str | None = None,
) -> T:
    """Run ``attempt_fn(attempt, seconds_left)`` until it succeeds, under ``policy``.

    ``deadline_at`` is a ``clock()`` time (or ``None``). The last error is raised when attempts
    run out or the failure is not retryable; :class:`APITimeoutError` when the deadline has passed
    or the next wait would pass it. ``request_id``, ``method`` and ``path`` name the call in our
    log lines and on that :class:`APITimeoutError`.
    """
    attempt = 0
    deadline_hit = False
    head = f"{method} {path} failed: " if method and path else ""

    def on_failure(exc: Exception) -> bool | float:
        nonlocal deadline_hit
        if not retryable(exc):
            return False
        # Out of attempts first: the last attempt's own error is the one to raise, whatever a
        # Retry-After on it says about the deadline.
        if attempt >= policy.max_attempts:
            return False
        delay = plan_delay(attempt, exc, policy)
        if deadline_at is not None and clock() + delay >= deadline_at:
            deadline_hit = True
            return False
        # stamina's own hooks are process-wide (its default one logs at WARNING to the "stamina"
        # logger); this DEBUG line is ours, on the library's logger.
        logger.debug(
            "%s %s retry scheduled after attempt=%d delay=%.2fs reason=%s request_id=%s",
            method,
            path,
            attempt,
            delay,
            type(exc).__name__,
            request_id,
        )
        return delay

    async def attempt_now(number: int) -> T:
        left = None if deadline_at is None else deadline_at - clock()
        if left is not None and left <= 0:
            raise APITimeoutError(
                f"{head}the call's deadline ran out before attempt {number}",
                request_id=request_id,
                method=method,
                path=path,
            )
        return await attempt_fn(number, left)

    # The first attempt runs before stamina's loop, which is entered only after a failure (its
    # first turn raises that failure again, so stamina decides and counts exactly as before).
    # Most calls succeed at once, and each retry context is a cluster of reference cycles
    # (tenacity's) that outlives a 200 ms call into the collector's oldest generation: in
    # bench_bulk most of what each full collection scanned.
    attempt = 1
    try:
        return await attempt_now(1)
    except Exception as exc:
        failed: Exception | None = exc
    result: T
    try:
        async for retry in stamina.retry_context(
            on=on_failure,
            attempts=policy.max_attempts,
            timeout=None,  # our deadline, enforced above, is the one that counts
        ):
            with retry:
                attempt = retry.num
                if failed is not None:
                    first, failed = failed, None
                    try:
                        raise first
                    finally:  # not in this frame's locals, which error reporters capture
                        del first
                result = await attempt_now(attempt)
    except APIError as exc:
        if deadline_hit and not isinstance(exc, APITimeoutError):
            raise APITimeoutError(
                f"{head}the call's deadline would pass before the next retry",
                status=exc.status,
                error_code=exc.error_code,
                error_message=exc.error_message,
                validation_errors=exc.validation_errors,
                request_id=exc.request_id or request_id,
                method=exc.method or method,
                path=exc.path or path,
                envelope=exc.envelope,
                retry_after=exc.retry_after,
            ) from exc
        raise
    return result
