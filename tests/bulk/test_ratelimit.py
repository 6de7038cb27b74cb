"""Unit tests for the bulk runner's rate limiter, on a fake clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlens_async.bulk._ratelimit import LimiterClosed, RateLimit, RateLimiter, SlidingWindowBucket
from vlens_async.errors import ConfigurationError


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def grants_in_windows(times: list[float], length: float) -> int:
    """The most grants any window of ``length`` seconds (sliding, half-open) contains."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, sum(1 for t in times[i:] if t < start + length))
    return best


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/s,60/min", RateLimit(10, 60)),
        ("20/s", RateLimit(per_second=20, per_minute=None)),
        ("120/minute", RateLimit(per_second=None, per_minute=120)),
        (" 15 / sec , 100 / m ", RateLimit(15, 100)),
        ("none", RateLimit.unlimited()),
        ("off", RateLimit.unlimited()),
    ],
)
def test_parse_accepts_both_windows_in_any_spelling(text: str, expected: RateLimit) -> None:
    """RateLimit.parse reads '10/s,60/min' and its variants, and 'none' means unlimited."""
    assert RateLimit.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["10", "10/h", "ten/s", "0/s", "-1/s", "10/s,20/s", "1.5/s", "0", "", " "]
)
def test_parse_rejects_what_it_cannot_honour(text: str) -> None:
    """Unknown units, non-whole or non-positive counts and a window given twice are errors."""
    with pytest.raises(ConfigurationError):
        RateLimit.parse(text)


def test_parse_zero_is_an_error_that_names_the_way_to_turn_limiting_off() -> None:
    """'0' is refused, and the message says 'none' or 'off' asks for no limit."""
    # '0' used to read as unlimited, silently turning the limit off.
    with pytest.raises(ConfigurationError, match="'none' or 'off'"):
        RateLimit.parse("0")


def test_str_round_trips_through_parse() -> None:
    """str(RateLimit) is the form parse reads back."""
    for limit in (RateLimit(), RateLimit(20, None), RateLimit(None, 90), RateLimit.unlimited()):
        assert RateLimit.parse(str(limit)) == limit


def simulate(
    bucket: SlidingWindowBucket, wants: list[float], latencies: list[float]
) -> list[tuple[float, float]]:
    """Run requests through ``bucket`` one after another: request i wants to go at ``wants[i]``
    (or as soon as it may) and is answered ``latencies[i]`` seconds later. Returns each
    request's (grant, response) times."""
    pending: list[float] = []  # response times of requests in flight
    now, out = 0.0, []
    for want, latency in zip(wants, latencies, strict=True):
        now = max(now, want)
        while True:
            while pending and pending[0] <= now:
                bucket.release(heapq.heappop(pending))
            wait = bucket.reserve(now)
            if wait == 0:
                break
            next_release = pending[0] if pending else math.inf
            now = min(now + wait, next_release)
            assert math.isfinite(now), "blocked with nothing in flight"
        out.append((now, now + latency))
        heapq.heappush(pending, now + latency)
    return out


def server_count(requests: list[tuple[float, float]], window: float) -> int:
    """The most requests a server could count in one window of ``window`` seconds, whenever
    each arrived between its grant and its response (the worst case over arrival times)."""
    # A request can be counted in the window ending at t iff grant <= t < response + window.
    events = sorted(
        [(g, 1) for g, _ in requests] + [(r + window, -1) for _, r in requests],
        key=lambda e: (e[0], e[1]),
    )
    best = held = 0
    for _, delta in events:
        held += delta
        best = max(best, held)
    return best


def test_greedy_caller_gets_exactly_the_limit_per_second() -> None:
    """With instant answers a greedy caller gets the per-second limit in every second."""
    bucket = SlidingWindowBucket(RateLimit(per_second=10, per_minute=None), slack=0, pace=False)
    requests = simulate(bucket, [0.0] * 55, [0.0] * 55)
    times = [g for g, _ in requests]
    assert grants_in_windows(times, 1.0) == 10
    assert times[-1] == pytest.approx(5.0)  # and reaches it: 55 grants in a little over 5 s


def test_tokens_return_one_window_after_the_response() -> None:
    """A token is held in flight and a window after the answer, so the server never counts more."""
    bucket = SlidingWindowBucket(RateLimit(per_second=2, per_minute=None), slack=0, pace=False)
    assert bucket.reserve(0.0) == 0
    assert bucket.reserve(0.0) == 0
    assert bucket.reserve(0.5) == math.inf  # both in flight: wait for an answer
    bucket.release(0.7)
    assert bucket.reserve(0.8) == pytest.approx(0.9)  # free at 0.7 + 1.0
    requests = simulate(
        SlidingWindowBucket(RateLimit(per_second=10, per_minute=None), slack=0),
        [0.0] * 40,
        [0.3] * 40,
    )
    assert server_count(requests, 1.0) == 10
    # The price: about limit / (1 s + latency) per second.
    assert requests[-1][0] == pytest.approx(3 * 1.3 + 0.9, abs=0.11)


def test_bucket_honours_both_windows_at_once() -> None:
    """With 10/s and 60/min, no second has more than 10 and no minute more than 60."""
    bucket = SlidingWindowBucket(RateLimit(per_second=10, per_minute=60), slack=0)
    requests = simulate(bucket, [0.0] * 150, [0.05] * 150)
    assert server_count(requests, 1.0) <= 10
    assert server_count(requests, 60.0) == 60
    assert Counter(int(g // 60) for g, _ in requests)[0] == 60


def test_paced_grants_are_spread_evenly() -> None:
    """With pacing, grants come 1/per_second apart, and no window holds more than the limit."""
    bucket = SlidingWindowBucket(RateLimit(per_second=10, per_minute=None), slack=0)
    requests = simulate(bucket, [0.0] * 25, [0.0] * 25)
    gaps = {round(b[0] - a[0], 6) for a, b in itertools.pairwise(requests)}
    assert gaps == {0.1}
    assert server_count(requests, 1.0) == 10


def test_slack_widens_each_window() -> None:
    """The slack keeps a token a little longer than the window itself."""
    bucket = SlidingWindowBucket(RateLimit(per_second=2, per_minute=None), slack=0.1, pace=False)
    for _ in range(2):
        assert bucket.reserve(0.0) == 0
        bucket.release(0.0)
    assert bucket.reserve(0.5) == pytest.approx(0.6)


@settings(max_examples=60, deadline=None)
@given(
    per_second=st.integers(1, 30),
    per_minute=st.integers(1, 200),
    traffic=st.lists(st.tuples(st.floats(0, 0.3), st.floats(0, 2.0)), min_size=1, max_size=300),
)
def test_any_traffic_stays_within_both_windows_at_the_server(
    per_second: int, per_minute: int, traffic: list[tuple[float, float]]
) -> None:
    """Any arrivals and latencies: the server counts at most the limit per second and minute."""
    bucket = SlidingWindowBucket(RateLimit(per_second, per_minute), slack=0)
    wants = list(itertools.accumulate(gap for gap, _ in traffic))
    requests = simulate(bucket, wants, [latency for _, latency in traffic])
    assert server_count(requests, 1.0) <= per_second
    assert server_count(requests, 60.0) <= per_minute


def test_throttle_signal_pauses_slows_and_then_recovers() -> None:
    """A 429/4003 pauses for Retry-After, halves the rate, and the rate climbs back when quiet."""
    bucket = SlidingWindowBucket(RateLimit(per_second=10, per_minute=None), slack=0)
    bucket.throttled(0.0, retry_after=2.0)
    assert bucket.factor == 0.5
    assert bucket.reserve(1.0) == pytest.approx(1.0)  # paused until t=2
    requests = simulate(bucket, [2.0] * 20, [0.0] * 20)
    assert len([g for g, _ in requests if g < 3.0]) == 5  # half of 10/s
    # Quiet for long enough: back to the full rate.
    bucket.reserve(60.0)
    assert bucket.factor == 1.0


def test_throttling_does_not_shrink_the_minute_already_spent() -> None:
    """After a full-rate minute, one 429 slows the pace without stalling every flow."""
    # The slowdown is not retroactive: the per-minute window is not scaled.
    bucket = SlidingWindowBucket(RateLimit(per_second=100, per_minute=6000), slack=0)
    requests = simulate(bucket, [0.0] * 900, [0.1] * 900)
    now = requests[-1][1]
    for i in range(3):  # three separate 429s: the rate drops to an eighth
        bucket.throttled(now + 1.1 * i, retry_after=0.0)
    assert bucket.factor == 0.125
    assert bucket.reserve(now + 3.3) <= 0.1


def test_a_burst_of_signals_counts_as_one() -> None:
    """Many in-flight requests throttled together slow the rate once, not to the floor."""
    bucket = SlidingWindowBucket(RateLimit(per_second=10, per_minute=None), slack=0)
    for _ in range(8):
        bucket.throttled(5.0)
    assert bucket.factor == 0.5
    assert bucket.throttle_signals == 8
    bucket.throttled(6.5)
    assert bucket.factor == 0.25


def test_factor_never_drops_below_one_request_per_window() -> None:
    """However throttled, at least one request per window is still granted."""
    bucket = SlidingWindowBucket(RateLimit(per_second=3, per_minute=None), slack=0)
    for i in range(20):
        bucket.throttled(float(i) * 2, retry_after=0)
    assert bucket.factor == pytest.approx(0.1)
    assert bucket.reserve(40.0) == 0


async def test_limiter_serves_concurrent_waiters_within_the_limit() -> None:
    """Many concurrent tasks sharing one limiter are granted within the limit, none starved."""
    clock = FakeClock()
    limiter = RateLimiter(
        RateLimit(per_second=5, per_minute=None), slack=0, clock=clock, sleep=clock.sleep
    )
    granted: list[tuple[int, float]] = []

    async def worker(n: int) -> None:
        for _ in range(3):
            async with limiter.slot():
                granted.append((n, clock.now))

    await asyncio.gather(*(worker(n) for n in range(10)))
    times = sorted(t for _, t in granted)
    assert len(times) == 30
    assert grants_in_windows(times, 1.0) <= 5
    assert {n for n, _ in granted} == set(range(10))


async def test_unlimited_limiter_never_waits() -> None:
    """An unlimited limiter grants at once without sleeping."""
    clock = FakeClock()
    limiter = RateLimiter(RateLimit.unlimited(), clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await limiter.acquire()
    assert clock.now == 1000.0


async def test_close_wakes_waiters_and_refuses_new_tokens() -> None:
    """close() makes a waiting acquire() and any later one raise LimiterClosed at once."""
    limiter = RateLimiter(RateLimit(per_second=1, per_minute=None))
    await limiter.acquire()  # holds the only token
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.close()
    with pytest.raises(LimiterClosed):
        await waiter
    with pytest.raises(LimiterClosed):
        await limiter.acquire()
