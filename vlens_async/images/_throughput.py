"""Images being prepared in this process, and prefer_throughput().

The grain-preserving path takes a second core, so an image takes it only when nothing else is
being prepared: with other images in flight every core already has work, and its 1.7x CPU would
slow them all (three grainy frames at once took 115 ms longer, and verify() with them 114 ms
longer). A grainy image may therefore come out slightly different alone and alongside others;
both are within the limits.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Final, TypeVar

_T = TypeVar("_T")

_in_flight = 0
_in_flight_lock: Final = threading.Lock()


def _count(delta: int) -> None:
    global _in_flight
    with _in_flight_lock:
        _in_flight = max(0, _in_flight + delta)  # never below 0, even after a fork mid-block


class _Counted:
    """Counts ``count`` images in flight for the duration of a ``with`` block (and only a
    ``with`` block: unlike contextlib's, it is no decorator, which would not cover a coroutine).
    """

    def __init__(self, images: int) -> None:
        self._images = images

    def __enter__(self) -> None:
        _count(self._images)

    def __exit__(self, *exc: object) -> None:
        _count(-self._images)


def preparing(count: int) -> contextlib.AbstractContextManager[None]:
    """Count ``count`` images in flight for a ``with`` block."""
    return _Counted(count)


class CountedFrames:
    """Liveness frames counted in flight from before any starts (so each sees the others) until
    each ends, or is dropped unstarted when its caller gives up; a frame still running after a
    cancellation keeps counting."""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._unstarted = set(range(count))
        _count(count)

    def run(self, index: int, work: Callable[[], _T]) -> _T:
        """Run frame ``index``'s ``work`` (in a worker thread) unless it was dropped."""
        with self._lock:
            if index not in self._unstarted:
                raise RuntimeError("frame dropped before it started")  # nobody awaits it
            self._unstarted.discard(index)
        try:
            return work()
        finally:
            _count(-1)

    def drop_unstarted(self) -> None:
        """Stop counting the frames that never started (all have, after a normal return)."""
        with self._lock:
            dropped = len(self._unstarted)
            self._unstarted.clear()
        _count(-dropped)


def alone() -> bool:
    """Whether this is the only image being prepared in the process."""
    return _in_flight <= 1


def prefer_throughput() -> contextlib.AbstractContextManager[None]:
    """A ``with`` block inside which every image in the process is prepared for throughput.

    An image prepared while no other is takes the grain-preserving path when it is a grainy JPEG
    (full-resolution luma, with a second thread: the same wall time for 1.7x the CPU). Inside this
    block it never does, as if another image were always in flight. A bulk job holds it for its
    whole run (its spare core belongs to the event loop); hold it in a service whose cores are
    busy with other requests. Nestable, and usable from any thread or coroutine (``with``, not as
    a decorator).
    """
    return _Counted(1)


def _forget_in_flight() -> None:
    # A forked child drops the images the parent's other threads were preparing.
    global _in_flight
    _in_flight = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_flight)
