"""Retries: what is retried, backoff and Retry-After math, and the deadline that is never passed."""

from __future__ import annotations

import gc
import logging
import random

import aiohttp
import pytest
import stamina

from vlens_async import errors
from vlens_async._retrying import backoff_delay, is_retryable, plan_delay, run_with_retries
from vlens_async._transport import Request, connection_error, connection_not_established
from vlens_async.config import RetryPolicy

POLICY = RetryPolicy(max_attempts=4, initial=0.5, max_backoff=8.0, jitter=0.25, retry_after_cap=30)


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status_error(status: int, retry_after: float | None = None) -> errors.APIError:
    """The error the transport raises for a bare status."""
    return errors.api_error_class(status, None)("x", status=status, retry_after=retry_after)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    """Backoff doubles from ``initial``, stays under ``max_backoff``, jitter within bounds."""
    rng = random.Random(7)
    no_jitter = RetryPolicy(initial=0.5, max_backoff=8.0, jitter=0)
    assert [backoff_delay(n, no_jitter) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1, 2, 4, 8, 8]
    for n in range(1, 10):
        delay = backoff_delay(n, POLICY, rng=rng)
        base = min(8.0, 0.5 * 2 ** (n - 1))
        assert base <= delay <= min(8.0, base + 0.25)
    assert backoff_delay(10_000, no_jitter) == 8.0  # no overflow for absurd attempt numbers


def test_retry_after_replaces_backoff_up_to_the_cap() -> None:
    """A server's Retry-After is used as is below the cap, and cut to the cap above it."""
    assert plan_delay(1, status_error(429, retry_after=3), POLICY) == 3.0
    assert plan_delay(1, status_error(503, retry_after=0), POLICY) == 0.0
    assert plan_delay(1, status_error(429, retry_after=3600), POLICY) == 30.0
    assert 0.5 <= plan_delay(1, status_error(503), POLICY) <= 0.75


@pytest.mark.parametrize(
    ("exc", "idempotent", "expected"),
    [
        (errors.APIConnectionError("reset"), True, True),
        (errors.APITimeoutError("slow"), True, True),
        (status_error(408), True, True),
        (status_error(429), True, True),
        (status_error(500), True, True),
        (status_error(502), True, True),
        (status_error(503), True, True),
        (status_error(504), True, True),
        (status_error(507), True, True),
        (status_error(520), True, True),
        (status_error(524), True, True),
        (status_error(501), True, False),
        (status_error(505), True, False),
        (status_error(511), True, False),
        (errors.ResponseDecodeError("html", status=502), True, True),
        (errors.ResponseDecodeError("cut", status=200, body=b'{"serv'), True, True),
        (errors.ResponseDecodeError("cut", status=200, body=b'{"serv'), False, False),
        (errors.ResponseDecodeError("shape", status=200, body=b"{}", envelope={}), True, False),
        (errors.ResponseDecodeError("list", status=200, body=b"[]", envelope=[]), True, False),
        (status_error(400), True, False),
        (status_error(401), True, False),
        (status_error(403), True, False),
        (status_error(422), True, False),
        (errors.api_error_class(200, 4003)("busy", status=200, error_code=4003), True, False),
        (errors.ValidationFailedError("v", status=200), True, False),
        (ValueError("not ours"), True, False),
        (status_error(429), False, True),
        (status_error(503), False, False),
        (errors.APIConnectionError("reset"), False, False),
        (errors.APITimeoutError("slow"), False, False),
    ],
)
def test_what_is_retried(exc: Exception, idempotent: bool, expected: bool) -> None:
    """Connection errors, 408, 429 and 5xx are retried; non-idempotent calls only on 429."""
    assert is_retryable(exc, POLICY, idempotent=idempotent) is expected


def test_non_idempotent_calls_retry_when_the_connection_never_opened() -> None:
    """A connect failure (request never sent) is retried even for a call that is not idempotent."""
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, None, None, None, None)
    request = Request("POST", "/p", {}, "rid-1")
    never_sent = connection_error(request, aiohttp.ClientConnectorError(key, OSError(111, "x")))
    maybe_sent = connection_error(request, aiohttp.ServerDisconnectedError())
    assert is_retryable(never_sent, POLICY, idempotent=False, not_sent=connection_not_established)
    assert not is_retryable(
        maybe_sent, POLICY, idempotent=False, not_sent=connection_not_established
    )


async def test_retries_until_success(no_backoff: None) -> None:
    """Two 503s then a success: three attempts, the result returned."""
    seen: list[int] = []

    async def attempt(number: int, left: float | None) -> str:
        seen.append(number)
        if number < 3:
            raise status_error(503)
        return "ok"

    result = await run_with_retries(
        attempt, policy=POLICY, deadline_at=None, retryable=lambda e: is_retryable(e, POLICY)
    )
    assert result == "ok"
    assert seen == [1, 2, 3]


async def test_a_first_attempt_that_succeeds_leaves_no_cyclic_garbage() -> None:
    """Calls that succeed at once leave nothing for the cycle collector (a retry context is a
    cluster of reference cycles: about 60 objects a call when every call opened one)."""

    async def attempt(number: int, left: float | None) -> str:
        return "ok"

    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            await run_with_retries(
                attempt, policy=POLICY, deadline_at=None, retryable=lambda e: True
            )
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_a_retried_first_failure_is_judged_and_logged_once(
    no_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The first attempt runs before the retry loop: its failure is decided once (one retry
    line for attempt 1), then attempt 2 succeeds."""
    seen: list[int] = []

    async def attempt(number: int, left: float | None) -> str:
        seen.append(number)
        if number == 1:
            raise status_error(503)
        return "ok"

    with caplog.at_level(logging.DEBUG, logger="vlens_async"):
        result = await run_with_retries(
            attempt, policy=POLICY, deadline_at=None, retryable=lambda e: is_retryable(e, POLICY)
        )
    assert (result, seen) == ("ok", [1, 2])
    retries = [r.getMessage() for r in caplog.records if "retry scheduled" in r.getMessage()]
    assert len(retries) == 1
    assert "after attempt=1 " in retries[0]


async def test_the_first_failure_is_not_kept_in_a_frame_of_the_final_error(
    no_backoff: None,
) -> None:
    """A 503 then a 400: the 400 is raised, and no frame of its traceback holds the 503 in a
    local variable (error reporters capture locals)."""

    async def attempt(number: int, left: float | None) -> str:
        raise status_error(503 if number == 1 else 400)

    with pytest.raises(errors.APIStatusError) as caught:
        await run_with_retries(
            attempt, policy=POLICY, deadline_at=None, retryable=lambda e: is_retryable(e, POLICY)
        )
    assert caught.value.status == 400
    tb = caught.value.__traceback__
    while tb is not None:
        held = [v for v in tb.tb_frame.f_locals.values() if isinstance(v, errors.APIError)]
        assert all(getattr(v, "status", None) != 503 for v in held), tb.tb_frame.f_code.co_name
        tb = tb.tb_next


async def test_gives_up_after_max_attempts_with_the_last_error(no_backoff: None) -> None:
    """Once max_attempts have failed, the last error is raised as is."""
    calls = 0

    async def attempt(number: int, left: float | None) -> str:
        nonlocal calls
        calls += 1
        raise status_error(502)

    with pytest.raises(errors.InternalServerError):
        await run_with_retries(
            attempt, policy=POLICY, deadline_at=None, retryable=lambda e: is_retryable(e, POLICY)
        )
    assert calls == POLICY.max_attempts


async def test_non_retryable_errors_are_raised_at_once(no_backoff: None) -> None:
    """A 422 is not retried."""
    calls = 0

    async def attempt(number: int, left: float | None) -> str:
        nonlocal calls
        calls += 1
        raise status_error(422)

    with pytest.raises(errors.UnprocessableEntityError):
        await run_with_retries(
            attempt, policy=POLICY, deadline_at=None, retryable=lambda e: is_retryable(e, POLICY)
        )
    assert calls == 1


async def test_retry_after_past_the_deadline_raises_timeout_without_sleeping(
    no_backoff: None,
) -> None:
    """Retry-After 20 s with 10 s of deadline left: APITimeoutError at once, one attempt made."""
    clock = FakeClock()
    calls = 0

    async def attempt(number: int, left: float | None) -> str:
        nonlocal calls
        calls += 1
        assert left == pytest.approx(10.0)
        raise status_error(429, retry_after=20)

    with pytest.raises(errors.APITimeoutError) as info:
        await run_with_retries(
            attempt,
            policy=POLICY,
            deadline_at=clock() + 10,
            retryable=lambda e: is_retryable(e, POLICY),
            clock=clock,
        )
    assert calls == 1
    assert isinstance(info.value.__cause__, errors.RateLimitError)
    assert info.value.status == 429  # what the server said is kept on the timeout


async def test_capped_retry_after_still_fits_the_deadline(
    no_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After 3600 is capped to 30 s; with 60 s left the retry is planned for 30 s."""
    clock = FakeClock()

    async def attempt(number: int, left: float | None) -> str:
        if number == 1:
            raise status_error(429, retry_after=3600)
        return "ok"

    with caplog.at_level(logging.DEBUG, logger="vlens_async"):
        result = await run_with_retries(
            attempt,
            policy=POLICY,
            deadline_at=clock() + 60,
            retryable=lambda e: is_retryable(e, POLICY),
            clock=clock,
        )
    assert result == "ok"
    assert "attempt=1 delay=30.00s reason=RateLimitError" in caplog.text


async def test_each_attempt_gets_only_what_is_left(no_backoff: None) -> None:
    """The time left is passed to each attempt, shrinking as the clock advances."""
    clock = FakeClock()
    lefts: list[float | None] = []

    async def attempt(number: int, left: float | None) -> str:
        lefts.append(left)
        clock.now += 4  # each attempt takes 4 s
        if number < 3:
            raise errors.APIConnectionError("reset")
        return "ok"

    no_jitter = RetryPolicy(max_attempts=5, initial=0.001, jitter=0)
    await run_with_retries(
        attempt,
        policy=no_jitter,
        deadline_at=clock() + 20,
        retryable=lambda e: is_retryable(e, no_jitter),
        clock=clock,
    )
    assert lefts == [pytest.approx(20), pytest.approx(16), pytest.approx(12)]


async def test_deadline_already_spent_raises_timeout(no_backoff: None) -> None:
    """If an attempt used up the deadline, the next is not started: APITimeoutError."""
    clock = FakeClock()
    calls = 0

    async def attempt(number: int, left: float | None) -> str:
        nonlocal calls
        calls += 1
        clock.now += 100
        raise status_error(503)

    with pytest.raises(errors.APITimeoutError):
        await run_with_retries(
            attempt,
            policy=POLICY,
            deadline_at=clock() + 5,
            retryable=lambda e: is_retryable(e, POLICY),
            clock=clock,
        )
    assert calls == 1


async def test_real_backoff_runs_without_testing_mode() -> None:
    """With stamina's testing mode off, real (tiny) sleeps happen and the retry succeeds."""
    assert not stamina.is_testing()
    tiny = RetryPolicy(max_attempts=3, initial=0.001, max_backoff=0.002, jitter=0.001)
    seen: list[int] = []

    async def attempt(number: int, left: float | None) -> str:
        seen.append(number)
        if number == 1:
            raise status_error(503, retry_after=0.001)
        return "ok"

    assert (
        await run_with_retries(
            attempt, policy=tiny, deadline_at=None, retryable=lambda e: is_retryable(e, tiny)
        )
        == "ok"
    )
    assert seen == [1, 2]


async def test_disabled_policy_makes_one_attempt(no_backoff: None) -> None:
    """RetryPolicy.disabled() sends once, even for a retryable failure."""
    calls = 0

    async def attempt(number: int, left: float | None) -> str:
        nonlocal calls
        calls += 1
        raise status_error(503)

    once = RetryPolicy.disabled()
    with pytest.raises(errors.InternalServerError):
        await run_with_retries(
            attempt, policy=once, deadline_at=None, retryable=lambda e: is_retryable(e, once)
        )
    assert calls == 1


async def test_last_attempt_raises_the_real_error_not_a_timeout(no_backoff: None) -> None:
    """Attempts run out on a 429 whose Retry-After would pass the deadline: the 429 is raised."""
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=2, initial=0.5, jitter=0, retry_after_cap=30)

    async def attempt(number: int, left: float | None) -> str:
        raise status_error(503) if number == 1 else status_error(429, retry_after=20)

    with pytest.raises(errors.APIError) as info:
        await run_with_retries(
            attempt,
            policy=policy,
            deadline_at=clock() + 10,
            retryable=lambda e: is_retryable(e, policy),
            clock=clock,
        )
    assert type(info.value) is errors.RateLimitError


@pytest.mark.parametrize("spent_before", [True, False], ids=["before-attempt", "before-retry"])
async def test_deadline_timeout_names_the_request(no_backoff: None, spent_before: bool) -> None:
    """Either APITimeoutError of the deadline logic carries the request id, method and path."""
    clock = FakeClock()
    deadline_at = clock() + (-1 if spent_before else 5)

    async def attempt(number: int, left: float | None) -> str:
        clock.now += 100
        raise status_error(503)

    with pytest.raises(errors.APITimeoutError) as info:
        await run_with_retries(
            attempt,
            policy=POLICY,
            deadline_at=deadline_at,
            retryable=lambda e: is_retryable(e, POLICY),
            clock=clock,
            request_id="rid-7",
            method="POST",
            path="/api/x",
        )
    assert (info.value.request_id, info.value.method, info.value.path) == (
        "rid-7",
        "POST",
        "/api/x",
    )
    assert str(info.value).startswith("POST /api/x failed: ")
