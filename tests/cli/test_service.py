"""Which service the CLI talks to: the emulator when asked, without any credentials, or for
synthetic data without a base URL; the production URL with credentials (issue 12); credentials
kept off the command line, and never empty."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import RecordingServer, one_line, run, verify_argv, write_applicant
from vlens_async import config
from vlens_async.cli import build_parser, main, resolve_service

EMULATED = "using the embedded emulator, not Vlens"


@pytest.fixture
def no_emulator(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Starting the embedded emulator is recorded and refused (the list holds the attempts)."""
    started: list[object] = []

    @contextlib.asynccontextmanager
    async def refuse(*args: Any, **kwargs: Any) -> AsyncIterator[None]:
        started.append(args)
        raise AssertionError("the embedded emulator was started")
        yield  # pragma: no cover

    monkeypatch.setattr("vlens_async.emulator.running_emulator", refuse)
    return started


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, recording: RecordingServer) -> RecordingServer:
    """The production URL (config.DEFAULT_BASE_URL) pointed at the recording server."""
    monkeypatch.setattr(config, "DEFAULT_BASE_URL", recording.base_url)
    return recording


def test_credentials_without_base_url_mean_the_production_url() -> None:
    """An API key (flag or environment) and no base URL resolve to config.DEFAULT_BASE_URL."""
    args = build_parser().parse_args(["verify", "--api-key", "k"])
    service = resolve_service(args)
    assert not service.emulator
    assert service.base_url == config.DEFAULT_BASE_URL == "https://api.vlenseg.com"
    assert "k" not in repr(service)


def test_verify_of_images_with_an_api_key_in_the_environment_never_uses_the_emulator(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    production: RecordingServer,
    no_emulator: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """VLENS_API_KEY, images and no base URL: the request goes to the production URL."""
    monkeypatch.setenv("VLENS_API_KEY", "env-key")
    status, _, err = run(capsys, *verify_argv(write_applicant(tmp_path)))
    assert status == 2  # the recording server refuses the key
    assert "AuthenticationError" in one_line(err)
    assert EMULATED not in err
    assert not no_emulator
    assert [s.api_key for s in production.api_requests] == ["env-key"]


SYNTHETIC_WHY = "synthetic data and no --base-url or VLENS_BASE_URL"


def synthetic_argv(command: str, tmp_path: Path) -> list[str]:
    """`demo` (one applicant, no latency or faults) or `verify` of a synthetic applicant."""
    if command == "verify":
        return ["verify", "--seed", "2", "--json"]
    return [
        *("demo", "--count", "1", "--folder", str(tmp_path / "d")),
        *("--latency", "none", "--faults", ""),
    ]


@pytest.mark.parametrize(
    ("env", "flags", "unused"),
    [
        ({"VLENS_API_KEY": "env-key"}, (), "VLENS_API_KEY not used"),
        (
            {"VLENS_API_KEY": "env-key", "VLENS_ACCESS_TOKEN": "env-token"},
            (),
            "VLENS_API_KEY and VLENS_ACCESS_TOKEN not used",
        ),
        ({}, ("--api-key", "flag-key"), "--api-key not used"),
        ({"VLENS_ACCESS_TOKEN": "env-token"}, (), "VLENS_ACCESS_TOKEN not used"),
    ],
)
@pytest.mark.parametrize("command", ["demo", "verify"])
def test_synthetic_data_with_credentials_but_no_base_url_stays_on_the_emulator(
    command: str,
    env: dict[str, str],
    flags: tuple[str, ...],
    unused: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    production: RecordingServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`make demo` with VLENS_API_KEY set: the emulator, said first with why; production unseen."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, _, err = run(capsys, *synthetic_argv(command, tmp_path), *flags)
    assert status == 0
    first = err.strip().splitlines()[0]
    assert first.startswith(f"vlens {command}: {EMULATED} ({SYNTHETIC_WHY}; {unused}")
    assert "env-key" not in err
    assert "flag-key" not in err
    assert production.seen == []


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("command", ["demo", "verify"])
def test_synthetic_data_goes_to_a_base_url_given_explicitly(
    command: str,
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recording: RecordingServer,
    no_emulator: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--base-url or VLENS_BASE_URL with a key: synthetic data goes there, not to an emulator."""
    monkeypatch.setenv("VLENS_API_KEY", "env-key")
    extra: tuple[str, ...] = ()
    if how == "flag":
        extra = ("--base-url", recording.base_url)
    else:
        monkeypatch.setenv("VLENS_BASE_URL", recording.base_url)
    status, _, err = run(capsys, *synthetic_argv(command, tmp_path), *extra)
    assert status == 2  # the recording server refuses the key
    assert EMULATED not in err
    assert not no_emulator
    assert recording.api_requests
    assert {s.api_key for s in recording.api_requests} == {"env-key"}


def test_bulk_with_credentials_and_no_base_url_never_uses_the_emulator(
    tmp_path: Path,
    cli_manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
    production: RecordingServer,
    no_emulator: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bulk job (or a resume) with VLENS_API_KEY and no --base-url talks to the production
    URL: the emulator is never started, so it can never answer for the real service."""
    monkeypatch.setenv("VLENS_API_KEY", "env-key")
    journal, out = str(tmp_path / "j.db"), str(tmp_path / "o.jsonl")
    argv = ("bulk", str(cli_manifest), "--journal", journal, "--out", out, "--concurrency", "1")
    status, _, err = run(capsys, *argv)
    assert status == 2  # refused credentials stop the job
    assert EMULATED not in err
    assert not no_emulator
    assert production.api_requests
    assert {s.api_key for s in production.api_requests} == {"env-key"}


@pytest.mark.parametrize("command", ["verify", "bulk", "demo"])
def test_without_credentials_the_emulator_is_used_and_said_first(
    command: str, tmp_path: Path, cli_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No credentials at all: the embedded emulator, named in the first line on stderr."""
    argv = {
        "verify": ["verify", "--seed", "2", "--json"],
        "bulk": [
            *("bulk", str(cli_manifest), "--journal", str(tmp_path / "j.db")),
            *("--out", str(tmp_path / "o.jsonl"), "--rate", "50/s,3000/min"),
        ],
        "demo": [
            *("demo", "--count", "1", "--folder", str(tmp_path / "d")),
            *("--latency", "none", "--faults", ""),
        ],
    }[command]
    status, _, err = run(capsys, *argv)
    assert status == 0
    first = err.strip().splitlines()[0]
    assert first.startswith(f"vlens {command}: {EMULATED}")
    assert "no credentials given" in first


def test_emulator_flag_wins_over_credentials_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, production: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--emulator uses the emulator even when VLENS_API_KEY and VLENS_BASE_URL are set."""
    monkeypatch.setenv("VLENS_API_KEY", "env-key")
    monkeypatch.setenv("VLENS_BASE_URL", production.base_url)
    status, out, err = run(capsys, "verify", "--emulator", "--seed", "2")
    assert status == 0
    assert err.strip().splitlines()[0] == f"vlens verify: {EMULATED} (--emulator)"
    assert "COMPLETED" in out
    assert production.seen == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--base-url", "http://127.0.0.1:9"), "--emulator and --base-url"),
        (("--api-key", "k"), "drop --api-key"),
        (("--token", "t"), "drop --token"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "bulk", "demo"])
def test_emulator_with_a_base_url_or_credentials_is_a_usage_error(
    command: str,
    extra: tuple[str, ...],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--emulator with --base-url (or credentials on the command line): one line, exit 2."""
    argv = {
        "verify": ["verify"],
        "bulk": ["bulk", "m.csv", "--journal", str(tmp_path / "j"), "--out", str(tmp_path / "o")],
        "demo": ["demo", "--folder", str(tmp_path / "d")],
    }[command]
    status, out, err = run(capsys, *argv, "--emulator", *extra)
    assert status == 2
    assert message in one_line(err)
    assert out == ""
    assert not (tmp_path / "d").exists()


def test_a_token_without_an_api_key_is_refused_before_anything_is_sent(
    tmp_path: Path, production: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token alone is a credential (no emulator) but not enough: one line, exit 2."""
    status, _, err = run(capsys, *verify_argv(write_applicant(tmp_path)), "--token", "t")
    assert status == 2
    assert "API key is needed" in one_line(err)
    assert production.seen == []


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (("--api-key", ""), {}, "--api-key is empty"),
        (("--api-key", "  "), {}, "--api-key is empty"),
        (("--token", ""), {"VLENS_API_KEY": "env-key"}, "--token is empty"),
        ((), {"VLENS_API_KEY": ""}, "VLENS_API_KEY is set but empty"),
        ((), {"VLENS_API_KEY": " "}, "VLENS_API_KEY is set but empty"),
        ((), {"VLENS_ACCESS_TOKEN": ""}, "VLENS_ACCESS_TOKEN is set but empty"),
    ],
)
@pytest.mark.parametrize("command", ["verify", "bulk", "demo"])
def test_an_empty_credential_is_a_usage_error_not_the_emulator(
    command: str,
    flags: tuple[str, ...],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    production: RecordingServer,
    no_emulator: list[object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--api-key "" or a set-but-empty VLENS_API_KEY: one line, exit 2, nothing started or sent."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = {
        "verify": ["verify"],
        "bulk": ["bulk", "m.csv", "--journal", str(tmp_path / "j"), "--out", str(tmp_path / "o")],
        "demo": ["demo", "--folder", str(tmp_path / "d")],
    }[command]
    status, out, err = run(capsys, *argv, *flags)
    assert status == 2
    assert message in one_line(err)
    assert EMULATED not in err
    assert out == ""
    assert not no_emulator
    assert production.seen == []
    assert not (tmp_path / "d").exists()


def test_emulator_with_an_empty_api_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--emulator --api-key "": an empty flag is still a flag given, so one line and exit 2."""
    status, _, err = run(capsys, "verify", "--emulator", "--api-key", "")
    assert status == 2
    assert "drop --api-key" in one_line(err)


@pytest.mark.parametrize("command", ["verify", "bulk", "demo"])
def test_help_warns_that_command_line_secrets_are_visible(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--help says --api-key, --token and a --proxy with credentials are visible in the process
    list and offers files or the environment."""
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("visible to every local user in the process list") == 3
    assert "VLENS_API_KEY or --api-key-file" in text
    assert "VLENS_ACCESS_TOKEN or --token-file" in text
    assert "prefer VLENS_PROXY" in text


def test_api_key_and_token_files_are_read_without_their_newline(
    tmp_path: Path, recording: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """--api-key-file and --token-file: the files' contents, trailing newline dropped, are sent."""
    key, token = tmp_path / "key", tmp_path / "token"
    key.write_text("file-key\n")
    token.write_text("file-token\r\n")
    argv = ["verify", "--base-url", recording.base_url, "--seed", "2"]
    status, _, err = run(capsys, *argv, "--api-key-file", str(key), "--token-file", str(token))
    assert status == 2  # refused by the recording server
    assert "file-key" not in err
    seen = recording.api_requests
    assert [(s.api_key, s.authorization) for s in seen] == [("file-key", "Bearer file-token")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "is empty"),
        ("\n", "is empty"),
        ("a\nb\n", "more than one"),
        ("k" * (64 * 1024 + 1), "over 64 KiB"),  # read no further: /dev/zero never ends
    ],
)
@pytest.mark.parametrize("flag", ["--api-key-file", "--token-file"])
def test_a_missing_or_empty_secret_file_is_one_line(
    flag: str,
    content: str | None,
    message: str,
    tmp_path: Path,
    recording: RecordingServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing, empty, multi-line or oversized secret file: one line naming the flag, exit 2,
    nothing sent."""
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    argv = ["verify", "--base-url", recording.base_url, "--api-key", "k", flag, str(path)]
    if flag == "--api-key-file":
        argv.remove("--api-key")
        argv.remove("k")
    status, out, err = run(capsys, *argv)
    assert status == 2
    line = one_line(err)
    assert f"{flag} {path}: " in line
    assert message in line
    assert out == ""
    assert recording.seen == []


def test_api_key_and_api_key_file_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key on the command line and in a file: ambiguous, so one line and exit 2."""
    (tmp_path / "key").write_text("k2\n")
    argv = ["verify", "--api-key", "k1", "--api-key-file", str(tmp_path / "key")]
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert "give --api-key or --api-key-file, not both" in one_line(err)
