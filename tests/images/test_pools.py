"""The preprocessor's thread pools."""

from __future__ import annotations

import threading

import pytest

from vlens_async.images import _pools, _prepare, prepare_faces_sync


def test_sync_twin_reuses_its_threads(
    monkeypatch: pytest.MonkeyPatch, applicants: dict[int, tuple[bytes, bytes, bytes]]
) -> None:
    """prepare_faces_sync runs frames on threads started once, not three new ones per call."""
    # Thread objects, not idents (an ident is reused once its thread has ended): with new threads
    # per call, every call would add at least one thread never seen before.
    seen: set[threading.Thread] = set()
    real = _prepare._prepare_frame

    def spy(*args: object) -> object:
        seen.add(threading.current_thread())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_prepare, "_prepare_frame", spy)
    pool_size = _pools.frame_pool()._max_workers
    for _ in range(pool_size + 2):
        prepare_faces_sync(*applicants[6])
    assert threading.current_thread() not in seen
    assert len(seen) <= pool_size


def test_fork_hook_forgets_the_executors() -> None:
    """After the at-fork hook (a forked child), both pools start executors of their own."""
    # A child inherits the parent's executors but not their threads: using them would hang.
    before = _pools.frame_pool(), _pools.helper_pool()
    _pools._forget_pools()  # what os.register_at_fork runs in the child
    after = _pools.frame_pool(), _pools.helper_pool()
    assert after[0] is not before[0]
    assert after[1] is not before[1]
    for executor in before:
        executor.shutdown()
