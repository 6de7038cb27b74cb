"""``vlens bulk`` and ``vlens demo`` run their job inside ``frozen_heap()`` and leave the process
unfrozen."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import vlens_async.bulk
from tests.cli.support import run
from tests.helpers.heap import freeze_counts
from vlens_async.emulator import BackgroundEmulator


def test_bulk_job_runs_with_a_frozen_heap(
    tmp_path: Path,
    cli_manifest: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job sees the start-up heap frozen; after the command nothing is frozen."""
    seen = freeze_counts(monkeypatch, vlens_async.bulk, "run_bulk")
    argv = ["bulk", str(cli_manifest), "--journal", str(tmp_path / "j.db")]
    argv += ["--out", str(tmp_path / "o.jsonl")]
    service = ["--base-url", vlens_emulator_thread.base_url]
    service += ["--api-key", vlens_emulator_thread.api_key]
    assert run(capsys, *argv, *service)[0] == 0
    assert len(seen) == 1
    assert seen[0] > 1000  # the modules' objects, at least
    assert gc.get_freeze_count() == 0


def test_demo_runs_with_a_frozen_heap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's job on the embedded emulator sees the heap frozen; nothing frozen after."""
    seen = freeze_counts(monkeypatch, vlens_async.bulk, "run_bulk")
    argv = ["demo", "--count", "1", "--folder", str(tmp_path / "d"), "--faults", ""]
    assert run(capsys, *argv, "--latency", "none")[0] == 0
    assert len(seen) == 1
    assert seen[0] > 1000
    assert gc.get_freeze_count() == 0
