"""The CLI's transport options end to end: --proxy/VLENS_PROXY, --ca-bundle/VLENS_CA_BUNDLE,
--client-cert/--client-key against the emulator over HTTPS (a CA made in the test) through a
CONNECT proxy on loopback; `verify` and `bulk` (its reachability check included; `vlens queue
work` runs so in tests/queue/test_workers.py); bad input is one line and exit 2 before any
request; proxy credentials are never printed or written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.cli.support import RecordingServer, one_line, run
from tests.helpers.proxy import ConnectProxy, closed_port, proxy_in_thread, proxy_url
from tests.helpers.tls import PemFiles, TestPKI
from vlens_async import cli
from vlens_async.emulator import BackgroundEmulator, EmulatorConfig, emulator_in_thread

PROXY_USER, PROXY_PASSWORD = "cli-proxy-user", "cli pr0xy@s3cret"
UNTRUSTED = "certificate was not trusted"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> PemFiles:
    """The session's PKI as PEM files."""
    return pki.write(tmp_path_factory.mktemp("pem"))


@pytest.fixture
def https_emulator(pki: TestPKI) -> Iterator[BackgroundEmulator]:
    """The emulator over HTTPS (the session CA's certificate), in a thread of its own."""
    with emulator_in_thread(EmulatorConfig(tls=pki.server_context())) as emulator:
        yield emulator


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    """A CONNECT proxy on loopback, in a thread of its own."""
    with proxy_in_thread() as running:
        yield running


@pytest.fixture
def locked_proxy() -> Iterator[ConnectProxy]:
    """A CONNECT proxy that wants PROXY_USER:PROXY_PASSWORD."""
    with proxy_in_thread(credentials=(PROXY_USER, PROXY_PASSWORD)) as running:
        yield running


def service_args(emulator: BackgroundEmulator) -> list[str]:
    """--base-url and --api-key of ``emulator``."""
    return ["--base-url", emulator.base_url, "--api-key", emulator.api_key]


def verify_args(emulator: BackgroundEmulator, *extra: str) -> list[str]:
    """`verify` of a synthetic applicant at ``emulator`` (JSON out)."""
    return ["verify", "--seed", "3", "--json", *service_args(emulator), *extra]


def assert_no_secret(*texts: str) -> None:
    """The proxy's password (raw or percent-encoded) and user are in none of ``texts``."""
    for text in texts:
        for secret in (PROXY_PASSWORD, "pr0xy%40s3cret", PROXY_USER):
            assert secret not in text


# --- verify ---


def test_verify_through_the_proxy_trusting_the_ca_bundle(
    https_emulator: BackgroundEmulator,
    proxy: ConnectProxy,
    pem: PemFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--proxy and --ca-bundle: the verification passes, every request through the tunnel."""
    argv = verify_args(https_emulator, "--proxy", proxy.url, "--ca-bundle", str(pem.ca))
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    assert json.loads(out)["validated"] is True
    assert proxy.opened
    assert {t.target for t in proxy.tunnels} == {https_emulator.base_url.removeprefix("https://")}
    assert https_emulator.counters()["transactions_created"] == 1


def test_proxy_credentials_beyond_latin_1_get_through(
    https_emulator: BackgroundEmulator, pem: PemFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    """Proxy credentials with any characters ("\u20ac", accents) reach a proxy as UTF-8 (RFC
    7617), where aiohttp alone raised a UnicodeEncodeError quoting them (a traceback, exit 1)."""
    user, password = "us\u00e9r", "p\u00e4\u20acss \u4e2d"
    with proxy_in_thread(credentials=(user, password)) as proxy:
        url = proxy_url(proxy.port, user, password)
        status, out, err = run(
            capsys, *verify_args(https_emulator, "--ca-bundle", str(pem.ca)), "--proxy", url
        )
    assert status == 0, err
    assert json.loads(out)["validated"] is True
    assert proxy.opened
    assert all(t.status == 200 for t in proxy.tunnels)
    assert password not in out + err


def test_the_environment_gives_proxy_and_bundle_and_flags_beat_it(
    https_emulator: BackgroundEmulator,
    proxy: ConnectProxy,
    pem: PemFiles,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """VLENS_PROXY and VLENS_CA_BUNDLE work alone; --proxy and --ca-bundle win over them."""
    monkeypatch.setenv("VLENS_PROXY", proxy.url)
    monkeypatch.setenv("VLENS_CA_BUNDLE", str(pem.ca))
    status, _, err = run(capsys, *verify_args(https_emulator))
    assert status == 0, err
    tunnels = len(proxy.opened)
    assert tunnels >= 1
    # Wrong values in the environment, right ones on the command line: the flags are used.
    monkeypatch.setenv("VLENS_PROXY", f"http://127.0.0.1:{closed_port()}")
    other = TestPKI.make().write(tmp_path)
    monkeypatch.setenv("VLENS_CA_BUNDLE", str(other.ca))
    argv = verify_args(https_emulator, "--proxy", proxy.url, "--ca-bundle", str(pem.ca))
    status, _, err = run(capsys, *argv)
    assert status == 0, err
    assert len(proxy.opened) > tunnels


def test_an_untrusted_certificate_names_the_flag_that_fixes_it(
    https_emulator: BackgroundEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --ca-bundle: one line, exit 2, saying the certificate was not trusted and naming
    --ca-bundle and VLENS_CA_BUNDLE."""
    status, _, err = run(capsys, *verify_args(https_emulator))
    assert status == 2
    line = one_line(err)
    assert "UntrustedCertificateError" in line
    assert UNTRUSTED in line
    assert "--ca-bundle FILE (or VLENS_CA_BUNDLE)" in line
    assert https_emulator.counters()["requests_total"] == 0


@pytest.mark.parametrize("split", [True, False], ids=["cert-and-key", "combined"])
def test_mutual_tls_with_client_cert(
    split: bool, pki: TestPKI, pem: PemFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    """--client-cert (with --client-key, or a file holding both) gets through an emulator that
    requires client certificates; without it: one line naming --client-cert, exit 2."""
    config = EmulatorConfig(tls=pki.server_context(require_client_cert=True))
    cert = (
        ["--client-cert", str(pem.client_cert), "--client-key", str(pem.client_key)]
        if split
        else ["--client-cert", str(pem.client_combined)]
    )
    with emulator_in_thread(config) as emulator:
        status, out, err = run(capsys, *verify_args(emulator, "--ca-bundle", str(pem.ca), *cert))
        assert status == 0, err
        assert json.loads(out)["validated"] is True
        seen = emulator.counters()["requests_total"]
        status, _, err = run(capsys, *verify_args(emulator, "--ca-bundle", str(pem.ca)))
        assert status == 2
        line = one_line(err)
        assert "ClientCertificateError" in line
        assert "(certificate required)" in line
        assert "--client-cert FILE [--client-key FILE]" in line
        assert emulator.counters()["requests_total"] == seen  # refused in the handshake


def test_a_407_is_one_line_naming_the_flag_and_credentials_in_the_url_pass(
    https_emulator: BackgroundEmulator,
    locked_proxy: ConnectProxy,
    pem: PemFiles,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A proxy wanting credentials: without them ProxyError, exit 2, naming --proxy; with them
    in the URL the verification passes, and the password shows nowhere."""
    bundle = ("--ca-bundle", str(pem.ca))
    status, _, err = run(capsys, *verify_args(https_emulator, "--proxy", locked_proxy.url, *bundle))
    assert status == 2
    line = one_line(err)
    assert "ProxyError" in line
    assert "407" in line
    assert "user:password@ in --proxy or VLENS_PROXY" in line
    secret_url = proxy_url(locked_proxy.port, PROXY_USER, PROXY_PASSWORD)
    status, out, err = run(capsys, *verify_args(https_emulator, "--proxy", secret_url, *bundle))
    assert status == 0, err
    assert [t.status for t in locked_proxy.tunnels][:1] == [407]
    assert 200 in {t.status for t in locked_proxy.tunnels}
    assert_no_secret(out, err)


# --- bulk, its reachability check included ---


def bulk_args(manifest: Path, folder: Path, *extra: str) -> list[str]:
    """`vlens bulk` of ``manifest`` with journal and results in ``folder``."""
    return [
        *("bulk", str(manifest), "--journal", str(folder / "run.db")),
        *("--out", str(folder / "out.jsonl"), "--rate", "50/s,3000/min", *extra),
    ]


def test_bulk_goes_through_the_proxy_with_credentials_and_writes_none(
    https_emulator: BackgroundEmulator,
    locked_proxy: ConnectProxy,
    pem: PemFiles,
    cli_manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vlens bulk` with --proxy (credentials in it) and --ca-bundle: the reachability check
    and every applicant go through the proxy; the password is in no output, journal or
    results file."""
    secret_url = proxy_url(locked_proxy.port, PROXY_USER, PROXY_PASSWORD)
    argv = bulk_args(
        cli_manifest,
        tmp_path,
        *service_args(https_emulator),
        *("--proxy", secret_url, "--ca-bundle", str(pem.ca)),
    )
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    assert https_emulator.counters()["transactions_created"] == 2
    # The check's own session and the client's: at least two tunnels, all to the emulator.
    assert len(locked_proxy.opened) >= 2
    assert {t.status for t in locked_proxy.tunnels} == {200}
    assert_no_secret(out, err)
    for written in tmp_path.iterdir():
        assert_no_secret(written.read_bytes().decode("latin-1"))


@pytest.mark.parametrize("problem", ["refused", "407", "untrusted"])
def test_the_reachability_check_goes_the_same_way_as_the_job(
    problem: str,
    https_emulator: BackgroundEmulator,
    locked_proxy: ConnectProxy,
    pem: PemFiles,
    cli_manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The check before a bulk job uses the job's proxy and CA bundle: a refused proxy, a 407
    or an untrusted certificate stop the job there (exit 2, one line naming the fix), before
    any applicant, with no journal written."""
    port = closed_port()
    options = {
        "refused": ["--proxy", proxy_url(port, PROXY_USER, PROXY_PASSWORD), "--ca-bundle"],
        "407": ["--proxy", locked_proxy.url, "--ca-bundle"],
        "untrusted": ["--proxy", proxy_url(locked_proxy.port, PROXY_USER, PROXY_PASSWORD)],
    }[problem]
    extra = [*options, str(pem.ca)] if options[-1] == "--ca-bundle" else options
    argv = bulk_args(cli_manifest, tmp_path, *service_args(https_emulator), *extra)
    status, out, err = run(capsys, *argv)
    assert status == 2
    line = one_line(err)
    assert line.startswith("vlens bulk: cannot reach 127.0.0.1: ")
    expected = {
        "refused": f"could not connect to the proxy 127.0.0.1:{port}",
        "407": "user:password@ in --proxy or VLENS_PROXY",
        "untrusted": "--ca-bundle FILE (or VLENS_CA_BUNDLE)",
    }[problem]
    assert expected in line
    assert_no_secret(out, err)
    assert https_emulator.counters()["requests_total"] == 0
    assert not (tmp_path / "run.db").exists()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_reachability_check_names_a_407_and_keeps_no_password(
    scheme: str, locked_proxy: ConnectProxy
) -> None:
    """The check before a bulk job, through a proxy refusing the credentials given: a CONNECT's
    407 (https://) or the 407 answer to a plain http:// request (not the service's answer) is
    the proxy's refusal; the error chains nothing (aiohttp's texts hold the proxy URL with its
    password) and names no password."""
    password = "wrong-s3cret-73"
    service = cli.Service(
        emulator=False,
        base_url=f"{scheme}://127.0.0.1:{closed_port()}",
        api_key="k",
        connection={"proxy": proxy_url(locked_proxy.port, PROXY_USER, password)},
    )
    with pytest.raises(cli._CliError) as caught:
        asyncio.run(cli._check_reachable(service))
    error = caught.value
    assert "the proxy refused: 407" in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None
    assert password not in str(error)
    assert [t.status for t in locked_proxy.tunnels] == [407]


def test_the_ca_bundle_help_says_it_replaces_the_system_cas(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--ca-bundle's help warns that the system's CAs are no longer trusted with it."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["verify", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert caught.value.code == 0
    assert "It replaces the system's CAs: an https:// proxy (or service) with a public" in help_text


def test_the_embedded_emulator_says_the_options_are_not_used(
    proxy: ConnectProxy, pem: PemFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    """No credentials: the embedded emulator (plain HTTP in this process) is used directly, and
    the first line says --proxy and --ca-bundle were not used."""
    argv = ["verify", "--seed", "3", "--proxy", proxy.url, "--ca-bundle", str(pem.ca)]
    status, _, err = run(capsys, *argv)
    assert status == 0
    assert "--proxy, --ca-bundle not used" in err.splitlines()[0]
    assert proxy.tunnels == []


@pytest.mark.parametrize("command", [["verify", "--seed", "3"], ["demo", "--count", "1"]])
def test_a_stale_bundle_variable_does_not_stop_the_embedded_emulator(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """VLENS_CA_BUNDLE naming a missing file and a malformed VLENS_PROXY are noted as not used
    on the embedded emulator, which uses neither, instead of stopping the command."""
    monkeypatch.setenv("VLENS_CA_BUNDLE", str(tmp_path / "gone.pem"))
    monkeypatch.setenv("VLENS_PROXY", "socks5://nope")
    extra = ["--folder", str(tmp_path / "demo")] if command[0] == "demo" else []
    status, _, err = run(capsys, *command, *extra)
    assert status == 0, err
    assert "VLENS_PROXY, VLENS_CA_BUNDLE not used" in err.splitlines()[0]


# --- bad input ---


def encrypted_key(pki: TestPKI, folder: Path) -> Path:
    """The client's key, encrypted with a password."""
    key = serialization.load_pem_private_key(pki.client.private_key_pem.bytes(), None)
    path = folder / "encrypted.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a-password"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("flags", "env", "says"),
    [
        (["--ca-bundle", "MISSING"], {}, "--ca-bundle: MISSING: no such file"),
        (["--ca-bundle", "FOLDER"], {}, "--ca-bundle: FOLDER: not a file"),
        (["--ca-bundle", "JUNK"], {}, "--ca-bundle JUNK: not a PEM file of CA certificates"),
        ([], {"VLENS_CA_BUNDLE": "JUNK"}, "VLENS_CA_BUNDLE JUNK: not a PEM file"),
        (["--client-key", "CLIENT_KEY"], {}, "--client-key needs --client-cert"),
        (["--client-cert", "CLIENT_CERT"], {}, "with its key in it (or give --client-key)"),
        (["--client-cert", "CLIENT_CERT", "--client-key", "SERVER_KEY"], {}, "do not match"),
        (["--client-cert", "CLIENT_CERT", "--client-key", "ENCRYPTED"], {}, "encrypted"),
        (["--client-cert", "MISSING"], {}, "--client-cert: MISSING: no such file"),
        (["--proxy", "socks5://127.0.0.1:1080"], {}, "--proxy: proxy must be an http:// or"),
        (["--proxy", "SECRET_PROXY:99999"], {}, "--proxy: proxy is not a valid URL"),
        (["--proxy", "SECRET_PROXY/path"], {}, "--proxy: proxy must be http://host[:port]"),
        ([], {"VLENS_PROXY": "ftp://127.0.0.1:21"}, "VLENS_PROXY: proxy must be an http://"),
        (["--proxy", "127.0.0.1:3128"], {}, "--proxy: proxy must be an http:// or https:// URL"),
    ],
)
def test_bad_transport_input_is_one_line_before_any_request(
    flags: list[str],
    env: dict[str, str],
    says: str,
    recording: RecordingServer,
    pem: PemFiles,
    pki: TestPKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each bad file, pairing or proxy URL: exit 2, one line naming its flag or variable,
    nothing sent, no password echoed."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    names = {
        "MISSING": str(tmp_path / "missing.pem"),
        "FOLDER": str(tmp_path),
        "JUNK": str(junk),
        "CLIENT_KEY": str(pem.client_key),
        "CLIENT_CERT": str(pem.client_cert),
        "SERVER_KEY": str(pem.server_key),
        "ENCRYPTED": str(encrypted_key(pki, tmp_path)),
        "SECRET_PROXY": proxy_url(3128, PROXY_USER, PROXY_PASSWORD),
    }

    def named(text: str) -> str:
        for name, value in names.items():
            text = text.replace(name, value)
        return text

    for name, value in env.items():
        monkeypatch.setenv(name, named(value))
    argv = ["verify", "--seed", "3", "--base-url", recording.base_url, "--api-key", "k"]
    status, out, err = run(capsys, *argv, *(named(f) for f in flags))
    assert status == 2
    assert named(says) in one_line(err)
    assert_no_secret(out, err)
    assert recording.seen == []
