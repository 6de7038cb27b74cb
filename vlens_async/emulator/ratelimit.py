"""The per-tenant rate limit: strict sliding windows (N per second and M per minute).

Strict means at most N requests in *any* window of one second (and M in any 60 s), which is what a
client-side limiter must respect; a refused request does not consume a slot. A refusal is answered
with code 4003 alone (API.md documents no 429 and no rate-limit header), so the wait computed here
is for tests and counters, not sent.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindowLimiter"]


class SlidingWindowLimiter:
    """Admit a request unless it would exceed ``per_second`` or ``per_minute``."""

    def __init__(self, per_second: int, per_minute: int) -> None:
        self.per_second = per_second
        self.per_minute = per_minute
        self._second: deque[float] = deque()
        self._minute: deque[float] = deque()

    def acquire(self, now: float) -> float | None:
        """Admit (``None``) or refuse with the seconds to wait until a slot frees.

        ``now`` is a monotonic clock reading.
        """
        for window, length in ((self._second, 1.0), (self._minute, 60.0)):
            while window and window[0] <= now - length:
                window.popleft()
        waits = []
        if len(self._second) >= self.per_second:
            waits.append(self._second[0] + 1.0 - now)
        if len(self._minute) >= self.per_minute:
            waits.append(self._minute[0] + 60.0 - now)
        if waits:
            return max(max(waits), 0.001)
        self._second.append(now)
        self._minute.append(now)
        return None
