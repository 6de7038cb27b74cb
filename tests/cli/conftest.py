"""Fixtures of the CLI tests: a recording server, a small manifest with its images."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import RecordingServer, recording_server
from vlens_async.bulk import write_demo_manifest


@pytest.fixture
def recording() -> Iterator[RecordingServer]:
    """A fresh recording server on 127.0.0.1 (every request answered 401)."""
    with recording_server() as server:
        yield server


@pytest.fixture(scope="session")
def cli_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic applicants and their manifest.csv (read only by the tests)."""
    folder = tmp_path_factory.mktemp("cli-manifest")
    return asyncio.run(write_demo_manifest(folder, 2, 11))
