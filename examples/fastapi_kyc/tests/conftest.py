"""The example app served by uvicorn on loopback, against the ``vlens_emulator`` fixture."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from examples.fastapi_kyc.app import Settings, create_app
from examples.fastapi_kyc.demo import register_test_user
from tests.conftest import https_emulator, no_real_service, pki, proxy
from vlens_async import VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.samples import Applicant, make_applicant

# The project's own fixtures: no real service or proxy, the test CA, the HTTPS emulator, the proxy.
__all__ = ["https_emulator", "no_real_service", "pki", "proxy"]

_STARTUP_POLLS = 1000  # x 10 ms


@functools.cache
def applicant(seed: int, scenario: str = "valid") -> Applicant:
    """Each synthetic applicant drawn once per session."""
    return make_applicant(seed, scenario=scenario)


@asynccontextmanager
async def serve(app: FastAPI, port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (``port``, else a free one), lifespan included;
    yield its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(_STARTUP_POLLS):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def settings_for(emulator: RunningEmulator, db: Path, api_key: str | None = None) -> Settings:
    """The app's settings for ``emulator`` (its API key unless given), keeping verifications in
    ``db``."""
    return Settings(
        api_key=api_key or emulator.api_key, base_url=emulator.base_url, db_path=str(db)
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite file of the app's store."""
    return tmp_path / "kyc.sqlite3"


@pytest.fixture
async def app_url(vlens_emulator: RunningEmulator, db_path: Path) -> AsyncIterator[str]:
    """The example app (demo routes on) against the emulator, served on loopback."""
    app = create_app(settings_for(vlens_emulator, db_path), demo_on=vlens_emulator)
    async with serve(app) as url:
        yield url


@pytest.fixture
async def user_token(vlens_client: VlensClient, vlens_emulator: RunningEmulator) -> str:
    """A freshly signed-up end user's Vlens access token."""
    return await register_test_user(vlens_client, vlens_emulator)


@pytest.fixture
async def http(app_url: str, user_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, signed in as the test user."""
    headers = {"Authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=app_url, headers=headers, timeout=60) as client:
        yield client
