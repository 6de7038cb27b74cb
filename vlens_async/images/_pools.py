"""The preprocessor's own thread pools: started on first use, forgotten in a forked child."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Final


class LazyPool:
    """A thread pool started on first use, and forgotten in a forked child (which inherits the
    executor but not its threads)."""

    def __init__(self, least: int, name: str) -> None:
        self._least = least
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(self._least, os.cpu_count() or 1), thread_name_prefix=self._name
                )
            return self._executor

    def forget(self) -> None:
        """Drop the executor without shutting it down (in a forked child its threads are gone)."""
        self._executor = None
        self._lock = threading.Lock()  # a child may inherit it held


# The sync twin's worker threads, started once: a bulk job calls it for every applicant, and
# starting three threads per call cost more CPU than checking three compliant frames. One per
# core (three at least), so concurrent callers on a big machine are not held to three frames.
frame_pool: Final = LazyPool(3, "vlens-images")
# Threads that help one image along (the grain-preserving path's second decode and band). Kept
# apart from the frame pool: a frame waits on its helper, so sharing one pool could deadlock.
helper_pool: Final = LazyPool(2, "vlens-images-helper")


def _forget_pools() -> None:
    frame_pool.forget()
    helper_pool.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)
