"""A long job's process: the heap it started with kept out of the cyclic collector's scans."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["frozen_heap"]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """A ``with`` block for a process whose work is one long job, as ``vlens bulk``, ``vlens
    demo`` and ``vlens queue work`` hold it.

    What is alive when it starts (the imported modules, Pillow, aiohttp, the converters cattrs
    generated) is moved out of the cyclic garbage collector's reach, so each full collection
    scans only the job's own objects: in ``bench_bulk`` a full collection held the event loop
    for 66-101 ms before, 23-71 ms after (``benchmarks/RESULTS.md``). The collector is
    process-wide, so this is too: hold it only where the process is the job's. Everything is
    unfrozen on exit; inside a freeze that someone else made, it does nothing (theirs to undo).
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
