"""Watching whether a job runs inside ``frozen_heap()``."""

from __future__ import annotations

import gc
from typing import Any

import pytest


def freeze_counts(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Wrap the coroutine function ``module.name`` so that each call records how many objects
    were frozen when it started; the list it fills. Nothing is frozen when this returns."""
    real = getattr(module, name)
    seen: list[int] = []

    async def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, name, watched)
    gc.unfreeze()
    return seen
