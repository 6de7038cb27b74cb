"""pytest plugin for vlens-async: a Vlens emulator and a client bound to it, as fixtures.

Registered as the ``pytest11`` entry point ``vlens_async``, so installing the package registers
it; the async fixtures need pytest-asyncio (``asyncio_mode = "auto"``, or ``@pytest.mark.asyncio``
on each test)::

    async def test_front_scan(vlens_client, vlens_emulator):
        applicant = make_applicant(1)
        result = await vlens_client.scan_id_front(applicant.front)
        assert vlens_emulator.counters()["transactions_created"] == 1

Fixtures:

- ``vlens_emulator_config``: the :class:`~vlens_async.emulator.EmulatorConfig` used (override it in
  a ``conftest.py``, or set fields per test with ``@pytest.mark.vlens_emulator(seed=3,
  tenant={"ntra": False})``; ``tls=`` a server-side ``ssl.SSLContext`` serves HTTPS, see
  :func:`vlens_async.emulator.server_tls_context`).
- ``vlens_emulator`` (async): a fresh emulator on 127.0.0.1, a free port, per test; a
  :class:`~vlens_async.emulator.RunningEmulator` with ``base_url``, ``api_key``,
  ``admin_username``/``admin_password`` (Requests permission), ``viewer_username``/
  ``viewer_password`` (without), ``app``, ``state``, and the control API as methods:
  ``await reset()``, ``set_faults(...)``, ``counters()``, ``otp(phone)``,
  ``configure_tenant(...)``, ``advance_clock(seconds)``, ``transaction(id)``.
- ``vlens_client`` (async): a ``VlensClient`` for that emulator (API key auth), made with the
  keyword arguments of ``vlens_client_options`` (none by default; override it to pass
  ``ssl=`` trusting the CA of an emulator served over HTTPS, or ``proxy=``).
- ``vlens_emulator_thread`` (sync): the same emulator served from a background thread, for
  synchronous tests; its methods are thread-safe.
- ``no_backoff``: the client's retries keep their attempt count but never sleep (stamina's
  testing mode), so a test of retry behaviour runs in milliseconds.

The async fixtures need pytest-asyncio; without it only the synchronous fixture is defined.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import stamina

from vlens_async.emulator import (
    BackgroundEmulator,
    EmulatorConfig,
    RunningEmulator,
    emulator_in_thread,
    running_emulator,
)

if TYPE_CHECKING:
    from vlens_async.client import VlensClient

__all__ = [
    "no_backoff",
    "pytest_configure",
    "vlens_client_options",
    "vlens_emulator_config",
    "vlens_emulator_thread",
]

_MARKER = "vlens_emulator"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``vlens_emulator`` marker (warnings about unknown markers are errors)."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**fields): EmulatorConfig fields for the vlens_emulator fixture; "
        "tenant={...} changes the primary tenant (ntra, cso, failure_style, rate_limit, ...)",
    )


def _configured(request: pytest.FixtureRequest, base: EmulatorConfig) -> EmulatorConfig:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return base
    fields: dict[str, Any] = dict(marker.kwargs)
    tenant_changes = fields.pop("tenant", None) or {}
    config: EmulatorConfig = attrs.evolve(base, **fields) if fields else base
    return config.with_tenant(**tenant_changes) if tenant_changes else config


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """Retries without sleeping: stamina's testing mode, each policy's attempt count kept."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture
def vlens_emulator_config() -> EmulatorConfig:
    """The emulator configuration (override in a conftest.py to change every test's)."""
    return EmulatorConfig()


@pytest.fixture
def vlens_client_options() -> dict[str, Any]:
    """Keyword arguments for the ``vlens_client`` fixture's client (override in a conftest.py)."""
    return {}


@pytest.fixture
def vlens_emulator_thread(
    request: pytest.FixtureRequest, vlens_emulator_config: EmulatorConfig
) -> Iterator[BackgroundEmulator]:
    """An emulator served from a background thread, for synchronous tests."""
    with emulator_in_thread(_configured(request, vlens_emulator_config)) as emulator:
        yield emulator


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a dev dependency
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:
    __all__ += ["vlens_client", "vlens_emulator"]

    # pytest_asyncio.fixture (not pytest.fixture) so the fixtures work in strict mode too.
    @pytest_asyncio.fixture
    async def vlens_emulator(
        request: pytest.FixtureRequest, vlens_emulator_config: EmulatorConfig
    ) -> AsyncIterator[RunningEmulator]:
        """A fresh emulator on 127.0.0.1 (a free port) for this test."""
        async with running_emulator(_configured(request, vlens_emulator_config)) as emulator:
            yield emulator

    @pytest_asyncio.fixture
    async def vlens_client(
        vlens_emulator: RunningEmulator, vlens_client_options: dict[str, Any]
    ) -> AsyncIterator[VlensClient]:
        """A ``VlensClient`` talking to the ``vlens_emulator`` fixture with its API key (and the
        ``vlens_client_options``)."""
        # Imported here so the plugin loads even where the client cannot be imported.
        from vlens_async.client import VlensClient

        async with VlensClient(
            vlens_emulator.api_key, base_url=vlens_emulator.base_url, **vlens_client_options
        ) as client:
            yield client
