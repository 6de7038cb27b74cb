"""The pytest plugin's fixtures, the background-thread runner, the CLI, our client end to end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.emulator import FRONT, applicant, b64, small_jpeg
from vlens_async.cli import _emulator_config, build_parser, main
from vlens_async.emulator import BackgroundEmulator, RunningEmulator, emulator_in_thread, server
from vlens_async.emulator.faults import FaultKind


async def test_client_fixture_end_to_end(
    vlens_client: object, vlens_emulator: RunningEmulator
) -> None:
    """Our client, through the vlens_client fixture, runs the three steps against the emulator."""
    from vlens_async.client import VlensClient

    assert isinstance(vlens_client, VlensClient)
    app = applicant(1)
    front = await vlens_client.scan_id_front(app.front)
    tx = front.transaction_id
    assert tx
    await vlens_client.scan_id_back(app.back, transaction_id=tx)
    result = await vlens_client.check_liveness(app.faces, id_front=app.front, transaction_id=tx)
    assert result.services.liveness is True
    assert result.data.is_verification_process_completed is True
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 1
    assert counters["steps"][tx] == {"front": 1, "back": 1, "liveness": 1}


@pytest.mark.vlens_emulator(seed=5, tenant={"failure_style": "ok", "ntra": False})
async def test_marker_configures_the_emulator(vlens_emulator: RunningEmulator) -> None:
    """@pytest.mark.vlens_emulator sets config fields and the primary tenant's switches."""
    assert vlens_emulator.config.seed == 5
    assert vlens_emulator.config.tenant.failure_style == "ok"
    assert vlens_emulator.config.tenant.ntra is False
    assert vlens_emulator.base_url.startswith("http://127.0.0.1:")


def test_thread_fixture_for_sync_code(vlens_emulator_thread: BackgroundEmulator) -> None:
    """The background-thread emulator serves synchronous clients; its methods are thread-safe."""
    emu = vlens_emulator_thread
    body = {"image": b64(small_jpeg()), "getExtractedData": True}
    resp = requests.post(
        emu.base_url + FRONT, json=body, headers={"ApiKey": emu.api_key}, timeout=10
    )
    assert resp.status_code == 200
    assert emu.counters()["transactions_created"] == 1
    emu.set_faults("503:1")
    resp = requests.post(
        emu.base_url + FRONT, json=body, headers={"ApiKey": emu.api_key}, timeout=10
    )
    assert resp.status_code == 503
    emu.reset()
    assert emu.counters()["requests_total"] == 0


def _emulator_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "vlens-emulator" and t.is_alive()}


def test_thread_start_timeout_stops_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that neither finishes nor fails in time: the error comes after the half-started
    server was cancelled (its cleanup ran) and its thread joined."""
    cleaned_up = threading.Event()

    @contextlib.asynccontextmanager
    async def never_starts(*_: Any, **__: Any) -> AsyncIterator[RunningEmulator]:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()
        raise AssertionError("unreachable")
        yield  # a generator, for asynccontextmanager

    monkeypatch.setattr(server, "running_emulator", never_starts)
    before = _emulator_threads()
    with pytest.raises(RuntimeError, match="did not start"), emulator_in_thread(start_timeout=0.2):
        pass
    assert cleaned_up.is_set()
    assert _emulator_threads() <= before


def test_cli_builds_the_config() -> None:
    """`vlens emulator` flags map onto EmulatorConfig and the primary tenant."""
    args = build_parser().parse_args(
        [
            "emulator",
            "--port",
            "0",
            "--faults",
            "500:0.1,reset_after:0.05@liveness",
            "--latency",
            "fixed:20ms",
            "--rate-limit",
            "--failure-style",
            "ok",
            "--no-ntra",
            "--api-key",
            "k-123",
            "--image-cap-count",
            "50",
        ]
    )
    config = _emulator_config(args)
    tenant = config.tenant
    assert (tenant.api_key, tenant.rate_limit, tenant.failure_style) == ("k-123", True, "ok")
    assert (tenant.ntra, tenant.cso) == (False, True)
    assert config.image_store_max_count == 50
    kinds = {(r.kind, r.endpoint) for r in config.faults.rules}
    assert kinds == {(FaultKind.HTTP_500, "*"), (FaultKind.RESET_AFTER, "liveness")}
    assert config.faults.latency[0].latency.spec() == "fixed:20ms"


def test_cli_rejects_a_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad fault spec exits with status 2 and a readable message."""
    assert main(["emulator", "--faults", "teapot:1"]) == 2
    assert "unknown fault kind" in capsys.readouterr().err


def test_cli_serves_until_interrupted() -> None:
    """`python -m vlens_async emulator --port 0` prints its URL and key, serves, stops on SIGINT."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlens_async", "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Vlens emulator listening on http://127.0.0.1:")
        base_url = first.rsplit(" ", 1)[1].strip()
        key_line = proc.stdout.readline()
        assert "emulator-api-key" in key_line
        health = requests.get(base_url + "/_emulator/health", timeout=10)
        assert health.json() == {"ok": True}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_plugin_works_in_strict_mode(tmp_path: Path) -> None:
    """The entry-point plugin's async fixtures work in a project that uses strict mode."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest, aiohttp

            @pytest.mark.asyncio
            async def test_it(vlens_emulator):
                async with aiohttp.ClientSession() as s:
                    async with s.get(vlens_emulator.base_url + "/_emulator/health") as r:
                        assert (await r.json()) == {"ok": True}
            """
        )
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
