"""``frozen_heap()``: the start-up heap kept out of the collector's scans for a job, and undone."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vlens_async.bulk import frozen_heap


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (a failed one must not leak a freeze)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_inside_and_unfreezes_after() -> None:
    """What is alive at the start is frozen inside the block; nothing stays frozen after it."""
    kept = [object() for _ in range(10)]
    with frozen_heap():
        assert gc.get_freeze_count() >= len(kept)
        assert not any(o is kept for o in gc.get_objects())  # no generation holds it
    assert gc.get_freeze_count() == 0
    assert any(o is kept for o in gc.get_objects())


def test_unfreezes_when_the_job_raises() -> None:
    """An exception out of the job still unfreezes."""
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("job failed")
    assert gc.get_freeze_count() == 0


def test_leaves_someone_elses_freeze_as_found() -> None:
    """Inside a freeze the application made, it neither refreezes nor undoes that freeze."""
    gc.freeze()
    before = gc.get_freeze_count()
    with frozen_heap():
        assert gc.get_freeze_count() == before
    assert gc.get_freeze_count() == before
