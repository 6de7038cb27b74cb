"""``vlens queue work`` serves inside ``frozen_heap()`` and leaves the process unfrozen."""

from __future__ import annotations

import gc

import pytest

import vlens_async.queue
from tests.helpers.heap import freeze_counts
from vlens_async.cli import main
from vlens_async.emulator import BackgroundEmulator


def test_worker_runs_with_a_frozen_heap(
    pg_url: str,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker sees the start-up heap frozen; after the command nothing is frozen."""
    seen = freeze_counts(monkeypatch, vlens_async.queue, "run_worker")
    assert main(["queue", "init", "--db", pg_url]) == 0
    service = ["--base-url", vlens_emulator_thread.base_url]
    service += ["--api-key", vlens_emulator_thread.api_key]
    argv = ["queue", "work", "--db", pg_url, *service, "--until-empty", "--poll", "0.2"]
    assert main(argv) == 0, capsys.readouterr().err
    assert len(seen) == 1
    assert seen[0] > 1000
    assert gc.get_freeze_count() == 0
