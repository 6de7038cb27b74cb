"""Shared by every test. The plugin's fixtures (``vlens_emulator``, ``vlens_client``,
``no_backoff``) come from the installed ``vlens_async`` pytest11 entry point; helpers live in
:mod:`tests.helpers`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.helpers.proxy import ConnectProxy
    from tests.helpers.tls import TestPKI
    from vlens_async.emulator import RunningEmulator

_SERVICE_ENV = (
    "VLENS_BASE_URL",
    "VLENS_API_KEY",
    "VLENS_ACCESS_TOKEN",
    "VLENS_TENANCY_NAME",
    "VLENS_PROXY",
    "VLENS_CA_BUNDLE",
)
# What aiohttp reads with trust_env=True (and urllib in either case), both spellings.
_PROXY_ENV = tuple(
    spelling
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for spelling in (name, name.upper())
)


@pytest.fixture(autouse=True)
def no_real_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real service or a proxy, whatever the developer's environment says."""
    for name in (*_SERVICE_ENV, *_PROXY_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def pki() -> TestPKI:
    """A CA made for this test session (trustme), with a server certificate for 127.0.0.1 and
    localhost and a client certificate."""
    from tests.helpers.tls import TestPKI

    return TestPKI.make()


@pytest.fixture
async def https_emulator(pki: TestPKI) -> AsyncIterator[RunningEmulator]:
    """The emulator served over HTTPS with a certificate from the test's CA."""
    from vlens_async.emulator import EmulatorConfig, running_emulator

    async with running_emulator(EmulatorConfig(tls=pki.server_context())) as emulator:
        yield emulator


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    """A CONNECT proxy on loopback that lets anyone through and records every tunnel."""
    from tests.helpers.proxy import running_proxy

    async with running_proxy() as running:
        yield running
