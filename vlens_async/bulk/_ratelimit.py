"""The bulk runner's rate limiter: one bucket, shared by every flow, honouring two windows.

The server counts a request when it *arrives*, and we cannot see that moment: only that it lies
somewhere between our send (the grant) and the response. Any scheme that counts send times can
be beaten by jitter: a burst of large uploads reaches the server spread out and reordered, and the
server's loop may be busy, so a request granted in one window is counted in the next. (A classic
refill-rate token bucket is worse still: it lets through ``capacity + rate * T`` in a window of
``T`` seconds, so 10 tokens refilled at 10/s allow 19 requests in one second.)

So each window here holds a token from the grant until one window *after the response*. A request
counted by the server in a window ``(t - W, t]`` arrived at some ``a`` with ``grant <= a <=
response``, so its token was held at ``t``; since at most ``limit`` tokens are ever held, no window
of that length, sliding or aligned, on the server's clock can count more than the limit. The price
is throughput where the per-second window binds: about ``limit / (1 s + latency)``. Where the
per-minute window binds (the default tenant: 10/s and 60/min) it costs nothing noticeable.

Grants are also paced ``1/per_second`` apart rather than sent as a burst, which keeps the load on
the server smooth; the per-minute window is not paced, so a short job is not stretched to a minute.

It is adaptive: a throttling signal from the server (HTTP 429 or error code 4003) halves the rate
it grants and honours ``Retry-After``; after that the rate climbs back a step at a time while no
further signal comes (additive increase, multiplicative decrease, as TCP does).

The scheduling is pure (:class:`SlidingWindowBucket` takes the time as an argument), so it is
tested with a fake clock; :class:`RateLimiter` wraps it for asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import attrs

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "LimiterClosed",
    "RateLimit",
    "RateLimiter",
    "SlidingWindowBucket",
]

# Adaptive behaviour: how far one throttling signal slows us, how low it may go, how fast it
# climbs back. A 4003 without Retry-After still pauses briefly, so the burst cannot repeat at once.
BACKOFF_FACTOR: Final = 0.5
MIN_FACTOR: Final = 0.1
RECOVERY_STEP: Final = 0.1
RECOVERY_INTERVAL: Final = 2.0
DEFAULT_PENALTY_PAUSE: Final = 1.0
MAX_PAUSE: Final = 60.0
# Added to each window: covers timer resolution and clock-rate differences, nothing more (the
# hold-until-response scheme above covers network and server jitter).
DEFAULT_SLACK: Final = 0.02

_UNITS: Final = {
    "s": "s",
    "sec": "s",
    "second": "s",
    "seconds": "s",
    "m": "min",
    "min": "min",
    "minute": "min",
    "minutes": "min",
}
_PART = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigurationError(f"{attribute.name} must be positive or None, got {value!r}")


@attrs.frozen
class RateLimit:
    """A tenant's rate limit: at most ``per_second`` requests in any second and ``per_minute`` in
    any minute (``None`` for no limit on that window). Vlens's default tenant allows 10/s and
    60/min."""

    per_second: int | None = attrs.field(default=10, validator=_positive_or_none)
    per_minute: int | None = attrs.field(default=60, validator=_positive_or_none)

    @classmethod
    def unlimited(cls) -> RateLimit:
        """No limit at all (for benchmarks and a tenant without one)."""
        return cls(per_second=None, per_minute=None)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"10/s,60/min"``: whole numbers; either part may be left out; ``"none"`` or
        ``"off"`` (or ``"unlimited"``, what ``str`` gives) for no limit. Units: ``s``, ``sec``,
        ``second``; ``m``, ``min``, ``minute``.

        ``"0"`` and an empty text are errors: either could mean "no requests" as well as "no
        limit", and guessing "no limit" would silently lift the tenant's limit.
        """
        stripped = text.strip().lower()
        if stripped in ("none", "off", "unlimited"):
            return cls.unlimited()
        if stripped in ("", "0"):
            raise ConfigurationError(
                f"rate limit {text.strip()!r} is ambiguous: give it like '10/s,60/min', "
                "or 'none' or 'off' for no limit"
            )
        values: dict[str, int] = {}
        for part in stripped.split(","):
            match = _PART.match(part)
            unit = _UNITS.get(match.group(2)) if match else None
            if match is None or unit is None:
                raise ConfigurationError(
                    f"bad rate limit part {part.strip()!r}: expected like '10/s' or '60/min'"
                )
            if unit in values:
                raise ConfigurationError(f"rate limit gives the per-{unit} window twice")
            number = int(match.group(1))
            if number < 1:
                raise ConfigurationError(f"rate limit {part.strip()!r} must be positive")
            values[unit] = number
        return cls(per_second=values.get("s"), per_minute=values.get("min"))

    @property
    def is_unlimited(self) -> bool:
        """True when neither window is limited."""
        return self.per_second is None and self.per_minute is None

    def __str__(self) -> str:
        parts = []
        if self.per_second is not None:
            parts.append(f"{self.per_second}/s")
        if self.per_minute is not None:
            parts.append(f"{self.per_minute}/min")
        return ",".join(parts) or "unlimited"


DEFAULT_RATE_LIMIT: Final = RateLimit()


class LimiterClosed(Exception):
    """The rate limiter was closed (the job is stopping): no more tokens are given."""


class _Window:
    """One window: how many tokens are held by requests in flight, and when each of the others
    was released (a response came back). A released token is free again ``length`` seconds later.

    Memory is bounded by the limit itself (at most ``limit`` entries), never by the job.
    """

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.in_flight = 0
        self.released: deque[float] = deque()  # release times, oldest first

    def delay(self, now: float, factor: float) -> float:
        """Seconds until one more grant fits at ``factor`` times the limit (``inf``: not until
        a request in flight comes back)."""
        allowed = max(1, math.floor(self.limit * factor))
        while self.released and self.released[0] + self.length <= now:
            self.released.popleft()
        held = self.in_flight + len(self.released)
        if held < allowed:
            return 0.0
        must_leave = held - allowed + 1
        if must_leave > len(self.released):
            return math.inf
        return self.released[must_leave - 1] + self.length - now

    def take(self) -> None:
        self.in_flight += 1

    def give_back(self, now: float) -> None:
        self.in_flight -= 1
        self.released.append(now)


class SlidingWindowBucket:
    """The pure scheduling core of :class:`RateLimiter`: it never reads a clock itself.

    :meth:`reserve` either grants a request now (its token is then held until :meth:`release`)
    or says how long to wait (``inf``: until a release); :meth:`throttled` feeds the adaptive
    rate, which recovers by itself as time passes.
    """

    def __init__(
        self, limit: RateLimit, *, slack: float = DEFAULT_SLACK, pace: bool = True
    ) -> None:
        if slack < 0:
            raise ConfigurationError("slack must not be negative")
        self.limit = limit
        self.pace = pace and limit.per_second is not None
        self._last_grant = -math.inf
        self._windows: list[_Window] = []
        if limit.per_second is not None:
            self._windows.append(_Window(limit.per_second, 1.0 + slack))
        if limit.per_minute is not None:
            self._windows.append(_Window(limit.per_minute, 60.0 + slack))
        self.factor = 1.0
        self.paused_until = -math.inf
        self._last_signal = -math.inf
        self._recover_from = -math.inf
        self.throttle_signals = 0

    def reserve(self, now: float) -> float:
        """Grant one request at ``now`` and return 0, or return the seconds to wait first."""
        self._recover(now)
        # The adaptive factor scales the shortest window only. Scaling the per-minute window too
        # would apply a slowdown retroactively: a minute already spent at full rate would hold
        # every flow for up to a minute after a single 429.
        waits = [
            self.paused_until - now,
            *(w.delay(now, self.factor if i == 0 else 1.0) for i, w in enumerate(self._windows)),
        ]
        if self.pace:
            waits.append(self._last_grant + self._interval() - now)
        wait = max(waits)
        if wait > 0:
            return wait
        for window in self._windows:
            window.take()
        self._last_grant = now
        return 0.0

    def release(self, now: float) -> None:
        """The request of one grant is over (answered, failed or cancelled) at ``now``."""
        for window in self._windows:
            window.give_back(now)

    def _interval(self) -> float:
        # Pacing: at most one grant per 1/(per_second) seconds. Without it a full window's worth
        # goes out at once, and a burst of large uploads reaches the server spread out and
        # reordered by more than the slack, which can push one into the server's next window.
        assert self.limit.per_second is not None
        return 1.0 / (self.limit.per_second * self.factor)

    def throttled(self, now: float, retry_after: float | None = None) -> None:
        """The server said "too many" (429 or 4003): slow down, and pause for ``retry_after``."""
        self.throttle_signals += 1
        # Signals from requests already in flight arrive together; count one burst as one signal.
        if now - self._last_signal >= 1.0 or self.factor >= 1.0:
            self.factor = max(MIN_FACTOR, self.factor * BACKOFF_FACTOR)
            self._last_signal = now
        pause = DEFAULT_PENALTY_PAUSE if retry_after is None else retry_after
        self.paused_until = max(self.paused_until, now + min(max(pause, 0.0), MAX_PAUSE))
        # Recovery counts from the end of the pause: time spent paused proves nothing.
        self._recover_from = max(now, self.paused_until)

    def _recover(self, now: float) -> None:
        # Additive increase: one step per quiet interval, computed lazily from the clock.
        if self.factor >= 1.0:
            return
        steps = math.floor((now - self._recover_from) / RECOVERY_INTERVAL)
        if steps > 0:
            self.factor = min(1.0, self.factor + steps * RECOVERY_STEP)
            self._recover_from += steps * RECOVERY_INTERVAL


class RateLimiter:
    """Asyncio front of :class:`SlidingWindowBucket`, shared by every flow of a bulk job.

    Wrap each HTTP request in ``async with limiter.slot():`` (or pair :meth:`acquire` with
    :meth:`release` yourself): the token is held until the request is over. Waiters are served
    first come, first served (one lock), so no flow starves. ``clock`` and ``sleep`` are
    injectable for tests.
    """

    def __init__(
        self,
        limit: RateLimit = DEFAULT_RATE_LIMIT,
        *,
        slack: float = DEFAULT_SLACK,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pace: bool = True,
    ) -> None:
        self.bucket = SlidingWindowBucket(limit, slack=slack, pace=pace)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._released = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def limit(self) -> RateLimit:
        """The configured (not the adapted) limit."""
        return self.bucket.limit

    @property
    def factor(self) -> float:
        """The fraction of the configured limit granted now (1.0 unless throttled lately)."""
        return self.bucket.factor

    async def acquire(self) -> None:
        """Wait until one more request may be sent, and hold its token (see :meth:`release`).

        Raises :class:`LimiterClosed` once :meth:`close` was called, even while waiting.
        """
        if self._closed.is_set():
            raise LimiterClosed("the rate limiter is closed")
        if self.bucket.limit.is_unlimited:
            return
        async with self._lock:
            while True:
                if self._closed.is_set():
                    raise LimiterClosed("the rate limiter is closed")
                wait = self.bucket.reserve(self._clock())
                if wait <= 0:
                    return
                if math.isinf(wait):
                    # Every token is held by a request in flight: wait for one to come back.
                    # (No await between reserve and clear, so a release cannot slip between.)
                    self._released.clear()
                    await self._until(self._released.wait())
                else:
                    await self._until(self._sleep(wait))

    async def _until(self, waiting: Awaitable[object]) -> None:
        """Await ``waiting``, or stop early when the limiter is closed."""
        task = asyncio.ensure_future(waiting)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, closed):
                pending.cancel()
            await asyncio.gather(task, closed, return_exceptions=True)

    def close(self) -> None:
        """Refuse further tokens: waiters and later callers get :class:`LimiterClosed`.

        A stopping job calls it so that flows queued for a token (which may be a minute away
        under a per-minute limit) give up at once instead of sending one more request.
        """
        self._closed.set()

    def release(self) -> None:
        """The request of the last :meth:`acquire` is over; its token frees one window later."""
        if self.bucket.limit.is_unlimited:
            return
        self.bucket.release(self._clock())
        self._released.set()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a token for the duration of one request (released even on error or cancel)."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def throttled(self, retry_after: float | None = None) -> None:
        """Report a throttling signal (HTTP 429 or code 4003) from the server."""
        self.bucket.throttled(self._clock(), retry_after)
