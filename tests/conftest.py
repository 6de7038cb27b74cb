"""Shared by every test. The plugin's fixtures (``vlens_emulator``, ``vlens_client``,
``no_backoff``) come from the installed ``vlens_async`` pytest11 entry point; helpers live in
:mod:`tests.helpers`."""

from __future__ import annotations

import pytest

_SERVICE_ENV = ("VLENS_BASE_URL", "VLENS_API_KEY", "VLENS_ACCESS_TOKEN", "VLENS_TENANCY_NAME")


@pytest.fixture(autouse=True)
def no_real_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches a real service, whatever the developer's environment says."""
    for name in _SERVICE_ENV:
        monkeypatch.delenv(name, raising=False)
