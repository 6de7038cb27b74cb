"""Failures are one line in the CLI's own words, exit 2, checked before any work; a closed
stdout ends quietly; stop messages name the right flag (issue 12)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import RecordingServer, one_line, run
from vlens_async.cli import cli_words, main
from vlens_async.emulator import BackgroundEmulator
from vlens_async.errors import VlensError


def test_a_closed_stdout_ends_quietly() -> None:
    """`vlens verify | head -1` with the reader already gone: no traceback, no error line, and
    the status of a program ended by a closed pipe (or 0)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "vlens_async", "verify", "--seed", "2"],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert result.returncode in (0, 141)
    assert result.stderr.strip().splitlines() == [
        "vlens verify: using the embedded emulator, not Vlens (no credentials given)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("or pass allow_insecure_http=True", "or pass --allow-insecure-http"),
        ("base_url must be an http:// URL", "--base-url must be an http:// URL"),
        ("pass the API key as api_key and tokens with access_token or auth", "--api-key"),
        ("already holds 3 applicant(s): resume it, or", "continue it with --resume"),
        ("use resume=True", "use --resume"),
        ("run again with resume to finish them", "run again with --resume to finish"),
        ("move it away and run without resume to start", "run without --resume to start"),
        ("max_bytes must be an int", "--max-bytes must be an int"),
        ("concurrency must be a whole number", "--concurrency must be a whole number"),
        ("retry_errors=True needs resume", "--retry-errors needs resume"),
    ],
)
def test_library_names_become_flags(text: str, expected: str) -> None:
    """The library's Python argument names are shown as the CLI's flags."""
    assert expected in cli_words(text)
    assert cli_words(cli_words(text)) == cli_words(text)


def test_insecure_http_hint_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """A plain http:// base URL is refused with a hint naming --allow-insecure-http."""
    status, _, err = run(capsys, "verify", "--base-url", "http://10.1.2.3", "--api-key", "k")
    assert status == 2
    line = one_line(err)
    assert "--allow-insecure-http" in line
    assert "allow_insecure_http" not in line


def test_a_used_journal_hint_names_resume(
    tmp_path: Path, cli_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal already holding applicants, without --resume: the hint names --resume."""
    argv = ["bulk", str(cli_manifest), "--journal", str(tmp_path / "j.db")]
    argv += ["--out", str(tmp_path / "o.jsonl"), "--rate", "50/s,3000/min"]
    assert run(capsys, *argv)[0] == 0
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert "Traceback" not in err
    notice, line = err.strip().splitlines()  # the emulator's notice, then the refusal
    assert "embedded emulator" in notice
    assert "--resume" in line
    assert "resume it" not in line


def test_bulk_stop_message_says_run_again_with_resume(
    tmp_path: Path,
    cli_manifest: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused credentials stop `vlens bulk`, whose summary says to run again with --resume."""
    argv = ["bulk", str(cli_manifest), "--journal", str(tmp_path / "j.db")]
    argv += ["--out", str(tmp_path / "o.jsonl"), "--base-url", vlens_emulator_thread.base_url]
    status, out, _ = run(capsys, *argv, "--api-key", "wrong-key")
    assert status == 2
    assert "run again with --resume" in out
    assert "with resume" not in out


def test_demo_stop_message_does_not_suggest_resume(
    tmp_path: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vlens demo` has no --resume: stopped by refused credentials, it says to run it again."""
    argv = ["demo", "--count", "1", "--folder", str(tmp_path / "d"), "--faults", ""]
    argv += ["--latency", "none", "--base-url", vlens_emulator_thread.base_url]
    status, out, err = run(capsys, *argv, "--api-key", "wrong-key")
    assert status == 2
    assert "run vlens demo again" in out
    assert "--resume" not in out + err
    assert "with resume" not in out + err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--latency", "bogus"], "unknown latency 'bogus'"),
        (["--faults", "bogus"], "bad fault item 'bogus'"),
        (["--rate", "-5/s"], "--rate -5/s: "),
        (["--rate", "bogus"], "--rate bogus: "),
        (["--count", "0"], "--count must be at least 1"),
        (["--concurrency", "0"], "--concurrency must be a whole number from 1 to 1000, got 0"),
        (["--concurrency", "1001"], "--concurrency must be a whole number from 1 to 1000"),
        (["--base-url", "ftp://x", "--api-key", "k"], "--base-url must be an http"),
    ],
)
def test_demo_checks_its_options_before_drawing_applicants(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad demo option: one line, exit 2, and no applicant written (the folder not made)."""
    folder = tmp_path / "d"
    status, out, err = run(capsys, "demo", "--folder", str(folder), *argv)
    assert status == 2
    assert message in one_line(err)
    assert out == ""
    assert not folder.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate", "-5/s"], "--rate -5/s: "),
        (["--concurrency", "0"], "--concurrency must be a whole number from 1 to 1000, got 0"),
        (["--concurrency", "10" * 10], "--concurrency must be a whole number from 1 to 1000"),
        (["--retry-errors"], "--retry-errors needs --resume"),
        (["--journal", "{folder}"], "is a folder"),
        (["--out", "{folder}"], "is a folder"),
        (["--journal", "{missing}/j.db"], "does not exist"),
        (["--out", "{missing}/o.jsonl"], "does not exist"),
        (["--out", "{journal}"], "--journal and --out name the same file"),
    ],
)
def test_bulk_refuses_bad_options_before_anything_is_sent(
    extra: list[str],
    message: str,
    tmp_path: Path,
    cli_manifest: Path,
    recording: RecordingServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad bulk option or path: one line, exit 2, nothing sent, no journal or folder made."""
    journal = tmp_path / "j.db"
    names = {"folder": str(tmp_path), "missing": str(tmp_path / "no"), "journal": str(journal)}
    extra = [item.format(**names) for item in extra]
    argv = ["bulk", str(cli_manifest), "--journal", str(journal), "--out", str(tmp_path / "o")]
    argv += ["--base-url", recording.base_url, "--api-key", "k", *extra]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in one_line(err)
    assert recording.seen == []
    assert not journal.exists()
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--faults", "bogus"], "bad fault item 'bogus'"),
        (["--latency", "bogus"], "unknown latency 'bogus'"),
    ],
)
def test_emulator_refuses_bad_specs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vlens emulator` with a bad fault or latency spec: one line, exit 2, nothing served."""
    status, out, err = run(capsys, "emulator", "--port", "0", *argv)
    assert status == 2
    assert message in one_line(err)
    assert out == ""


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_emulator_refuses_a_port_out_of_range(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vlens emulator --port 99999` (or -1): one line, exit 2."""
    status, _, err = run(capsys, "emulator", "--port", port)
    assert status == 2
    assert f"--port must be from 0 to 65535 (0 picks a free one), got {port}" in one_line(err)


def test_emulator_on_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`vlens emulator --port N` with N taken: one line, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        status, out, err = run(capsys, "emulator", "--port", port)
    assert status == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(err)
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [[], ["verify", "--seed", "x"], ["bulk", "m.csv"], ["emulator", "--port", "x"], ["nope"]],
)
def test_argparse_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own usage errors are one line naming the command's --help, and exit 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("vlens")
    assert ": error: " in err
    assert err.rstrip().endswith("--help)")
    assert "usage:" not in err


def test_bulk_prints_a_runner_refusal_as_one_line(
    tmp_path: Path,
    cli_manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever the runner refuses with (a VlensError over several lines, say) is one line and
    exit 2."""

    async def refuse(*args: object, **kwargs: object) -> None:
        raise VlensError("journal run.db was started against\nhttps://other.example: refused")

    monkeypatch.setattr("vlens_async.bulk.run_bulk", refuse)
    argv = ["bulk", str(cli_manifest), "--journal", str(tmp_path / "j.db")]
    status, _, err = run(capsys, *argv, "--out", str(tmp_path / "o.jsonl"), "--emulator")
    assert status == 2
    lines = err.strip().splitlines()
    assert lines[-1] == (
        "vlens bulk: VlensError: journal run.db was started against https://other.example: refused"
    )
    assert len(lines) == 2  # the emulator's notice, then the refusal


def test_resume_without_a_journal_hint_names_the_flag(
    tmp_path: Path,
    cli_manifest: Path,
    recording: RecordingServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--resume with no journal there: one line whose hint names --resume, nothing sent."""
    argv = ["bulk", str(cli_manifest), "--journal", str(tmp_path / "j.db"), "--resume"]
    argv += ["--out", str(tmp_path / "o.jsonl"), "--base-url", recording.base_url]
    status, _, err = run(capsys, *argv, "--api-key", "k")
    assert status == 2
    line = one_line(err)
    assert "without --resume" in line
    assert "without resume" not in line
    assert recording.api_requests == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("emulator.internal", False),
    ],
)
def test_loopback_hosts_are_told_apart(host: str, loopback: bool) -> None:
    """Only localhost and loopback addresses count as this machine alone."""
    from vlens_async.config import is_loopback_host

    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_emulator_beyond_loopback_warns(
    host: str, warned: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An emulator bound beyond loopback warns that its well-known credentials are exposed."""
    import types

    import vlens_async.emulator as emulator

    async def fake_serve(config: object, *, host: str, port: int, on_ready: Any) -> None:
        on_ready(
            types.SimpleNamespace(
                base_url=f"http://{host}:{port}",
                api_key="k",
                tenancy_name="t",
                admin_username="a",
                admin_password="p",
                viewer_username="v",
                viewer_password="w",
            )
        )

    monkeypatch.setattr(emulator, "serve_forever", fake_serve)  # nothing is bound
    assert main(["emulator", "--host", host, "--port", "0"]) == 0
    err = capsys.readouterr().err
    assert ("warning: listening on 0.0.0.0" in err) is warned
