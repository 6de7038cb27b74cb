"""`vlens bulk --resume` against another service or manifest than the journal's: the runner
refuses (a VlensError), the CLI prints it as one line with exit 2 (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import one_line, run
from vlens_async.emulator import BackgroundEmulator


def _finished_job(
    tmp_path: Path, manifest: Path, emulator: BackgroundEmulator, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    """Run a job to the end against ``emulator``; return its argv (without the service)."""
    argv = ["bulk", str(manifest), "--journal", str(tmp_path / "j.db")]
    argv += ["--out", str(tmp_path / "o.jsonl"), "--rate", "50/s,3000/min"]
    service = ["--base-url", emulator.base_url, "--api-key", emulator.api_key]
    assert run(capsys, *argv, *service)[0] == 0
    return argv


def test_resume_against_another_service_is_refused(
    tmp_path: Path,
    cli_manifest: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job run against one service, resumed against another (the embedded emulator): one
    line, exit 2, the journal untouched."""
    argv = _finished_job(tmp_path, cli_manifest, vlens_emulator_thread, capsys)
    before = (tmp_path / "j.db").read_bytes()
    status, _, err = run(capsys, *argv, "--resume", "--emulator")
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2  # the emulator's notice, then the refusal
    assert "Traceback" not in err
    assert lines[1].startswith("vlens bulk: ")
    assert "cannot be resumed on the embedded emulator" in lines[1]
    assert (tmp_path / "j.db").read_bytes() == before


def test_resume_with_another_manifest_is_refused(
    tmp_path: Path,
    cli_manifest: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job resumed with another manifest (same rows, another file): one line, exit 2."""
    argv = _finished_job(tmp_path, cli_manifest, vlens_emulator_thread, capsys)
    other = cli_manifest.with_name("other.csv")
    other.write_text(cli_manifest.read_text().replace("applicant-00001", "applicant-99999"))
    argv[1] = str(other)
    service = ["--base-url", vlens_emulator_thread.base_url]
    service += ["--api-key", vlens_emulator_thread.api_key]
    before = (tmp_path / "j.db").read_bytes()
    status, _, err = run(capsys, *argv, "--resume", *service)
    other.unlink()
    assert status == 2
    assert one_line(err).startswith("vlens bulk: ")
    assert (tmp_path / "j.db").read_bytes() == before
