"""Counters the control API reports: requests per endpoint and status, faults, transactions,
steps per transaction, and request counts per wall-clock second and minute.

The per-second and per-minute counts, and the busiest sliding 1 s and 60 s windows, let a test
check that a client kept under a rate limit without timing anything itself.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from typing import Any, Final

__all__ = ["Metrics"]

_BUCKETS_KEPT: Final = 3600  # per-second (and per-minute) buckets kept: the last hour of seconds
_TIMESTAMPS_KEPT: Final = 200_000  # arrival times kept for the sliding-window maxima


class Metrics:
    """Mutable counters; everything here runs on the event loop thread."""

    def __init__(self) -> None:
        self.requests: dict[str, Counter[str]] = {}
        self.transactions_created = 0
        self.steps: OrderedDict[str, Counter[str]] = OrderedDict()
        self.per_second: OrderedDict[int, int] = OrderedDict()
        self.per_minute: OrderedDict[int, int] = OrderedDict()
        self.rate_limited = 0
        self._arrivals: deque[float] = deque(maxlen=_TIMESTAMPS_KEPT)

    def arrival(self, now: float | None = None) -> None:
        """Count one API request arriving at wall-clock time ``now``."""
        now = time.time() if now is None else now
        self._arrivals.append(now)
        _bump(self.per_second, int(now))
        _bump(self.per_minute, int(now // 60))

    def response(self, endpoint: str, status: int | str) -> None:
        """Count the outcome of a request: an HTTP status, or ``"reset"``."""
        self.requests.setdefault(endpoint, Counter())[str(status)] += 1

    def step(self, transaction_id: str, step: str) -> None:
        """Count one call of ``step`` (front, back, liveness, link) on a transaction."""
        self.steps.setdefault(transaction_id, Counter())[step] += 1

    def forget(self, transaction_id: str) -> None:
        """Drop the step counts of an evicted transaction."""
        self.steps.pop(transaction_id, None)

    def busiest(self, window: float) -> int:
        """The most requests seen in any sliding window of ``window`` seconds."""
        arrivals = list(self._arrivals)  # deque indexing is O(n) in the middle
        best = lo = 0
        for hi, t in enumerate(arrivals):
            while arrivals[lo] <= t - window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def snapshot(self, faults: Counter[str]) -> dict[str, Any]:
        """A plain-JSON copy of every counter."""
        return {
            "requests": {ep: dict(c) for ep, c in self.requests.items()},
            "requests_total": sum(sum(c.values()) for c in self.requests.values()),
            "faults": dict(faults),
            "rate_limited": self.rate_limited,
            "transactions_created": self.transactions_created,
            "steps": {tx: dict(c) for tx, c in self.steps.items()},
            "per_second": {str(k): v for k, v in self.per_second.items()},
            "per_minute": {str(k): v for k, v in self.per_minute.items()},
            "max_per_second": self.busiest(1.0),
            "max_per_minute": self.busiest(60.0),
        }


def _bump(buckets: OrderedDict[int, int], key: int) -> None:
    buckets[key] = buckets.get(key, 0) + 1
    while len(buckets) > _BUCKETS_KEPT:
        buckets.popitem(last=False)
