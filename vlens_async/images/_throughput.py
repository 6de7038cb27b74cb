"""The ``preserve_grain`` option: whether a grainy JPEG may spend a second core on fidelity.

The grain-preserving path (see _grain) prepares a grainy JPEG in the same wall time for 1.7x the
CPU. That pays for one image on an otherwise idle pair of cores, not when every core already has
work: three grainy frames prepared at once with it took 115 ms longer. Hence the defaults: True
for a document (one image: its second core is free), False for liveness frames (three prepared
concurrently, each already using a core), and False for both inside ``with prefer_throughput():``.
An explicit ``preserve_grain`` always wins.

The option is resolved once, where a call enters the package (in the caller's thread or task),
and passed down explicitly: threads of a ThreadPoolExecutor do not inherit context variables, and
resolving before ``asyncio.to_thread`` keeps the async and sync twins alike. The output bytes for
one input and one set of options never depend on what else the process is doing.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Final

from ..errors import ConfigurationError

DOCUMENT_PRESERVES_GRAIN: Final = True
FACES_PRESERVE_GRAIN: Final = False

# How many prefer_throughput() blocks this context is inside (0: each call's own default). A
# count per context, set rather than reset with tokens, so one block object may be entered by
# several tasks or threads at once: each context counts its own entries.
_throughput_depth: Final[ContextVar[int]] = ContextVar(
    "vlens_async.images.prefer_throughput", default=0
)


def resolve_preserve_grain(option: bool | None, *, faces: bool) -> bool:
    """``option`` when given, else this context's default, else the default for the kind of call.

    Call it in the caller's thread or task, never in a worker thread (which has a context of its
    own). Raises :class:`~vlens_async.errors.ConfigurationError` for anything but a bool or None.
    """
    if option is not None and not isinstance(option, bool):
        raise ConfigurationError(f"preserve_grain must be True, False or None, got {option!r}")
    if option is not None:
        return option
    if _throughput_depth.get() > 0:
        return False
    return FACES_PRESERVE_GRAIN if faces else DOCUMENT_PRESERVES_GRAIN


class _PreferThroughput:
    """Sets the context's default to False for a ``with`` block, and restores it on exit.

    Only a ``with`` block: unlike contextlib's context managers it is no decorator, which would
    cover a coroutine function's call but not its run.
    """

    def __enter__(self) -> None:
        _throughput_depth.set(_throughput_depth.get() + 1)

    def __exit__(self, *exc: object) -> None:
        _throughput_depth.set(max(0, _throughput_depth.get() - 1))


def prefer_throughput() -> contextlib.AbstractContextManager[None]:
    """A ``with`` block inside which images are prepared for throughput: no second core each.

    Outside it, ``preserve_grain`` defaults to True for a document, so that a grainy JPEG takes the
    grain-preserving path (full-resolution luma, with a second thread: the same wall time for 1.7x
    the CPU), and to False for liveness frames. Inside it, the default is False for both; an
    explicit ``preserve_grain=True`` still wins. A bulk job holds it for its whole run (its spare
    core belongs to the event loop); hold it in a service whose cores are busy with other requests.

    It sets a context variable: it covers this thread, or this task and the tasks and
    ``asyncio.to_thread`` calls it starts, not other threads (nor ``run_in_executor`` jobs, which
    do not copy the context). Nestable, and one block object may be shared by several tasks or
    threads; ``with`` only, not a decorator.
    """
    return _PreferThroughput()
