"""Fixtures of the emulator's tests: raw HTTP, with no client code in between."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.helpers.emulator import Raw
from vlens_async.emulator import RunningEmulator


@pytest.fixture
async def raw(vlens_emulator: RunningEmulator) -> AsyncIterator[Raw]:
    """Raw HTTP to the per-test emulator."""
    async with aiohttp.ClientSession(vlens_emulator.base_url) as session:
        yield Raw(vlens_emulator, session)
