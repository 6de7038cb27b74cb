"""The emulator over HTTPS: EmulatorConfig.tls, the pytest plugin with a CA made in the test,
mutual TLS, and `vlens emulator --tls-cert/--tls-key/--tls-client-ca` (raw HTTP here: aiohttp
and requests, no client code, except where the plugin's client fixture is the subject)."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from tests.helpers.tls import PemFiles, TestPKI
from vlens_async.emulator import (
    EmulatorConfig,
    RunningEmulator,
    emulator_in_thread,
    running_emulator,
    server_tls_context,
)

HEALTH = "/_emulator/health"


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> PemFiles:
    """The session's PKI as PEM files."""
    return pki.write(tmp_path_factory.mktemp("pem"))


@pytest.fixture
def vlens_emulator_config(pki: TestPKI) -> EmulatorConfig:
    """This module's emulators serve HTTPS with the session CA's certificate."""
    return EmulatorConfig(tls=pki.server_context())


@pytest.fixture
def vlens_client_options(pki: TestPKI) -> dict[str, Any]:
    """This module's client fixture trusts the session CA."""
    return {"ssl": pki.client_context()}


async def health(base_url: str, context: ssl.SSLContext | None) -> Any:
    """GET the health endpoint with ``context`` (``None``: the system's CAs)."""
    connector = aiohttp.TCPConnector(ssl=True if context is None else context)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(base_url + HEALTH) as response,
    ):
        return await response.json()


async def test_the_plugin_serves_https_and_its_client_trusts_the_ca(
    vlens_emulator: RunningEmulator, vlens_client: Any, pki: TestPKI
) -> None:
    """vlens_emulator_config with tls= serves HTTPS; vlens_client_options reaches the client."""
    assert vlens_emulator.base_url.startswith("https://127.0.0.1:")
    assert await health(vlens_emulator.base_url, pki.client_context()) == {"ok": True}
    result = await vlens_client.check_existence(phone_number="+201001234567")
    assert result.exists is False
    assert vlens_emulator.counters()["requests_total"] == 1


async def test_a_client_without_the_ca_is_refused_by_tls(vlens_emulator: RunningEmulator) -> None:
    """The certificate comes from the test's CA: the system's CAs do not trust it."""
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await health(vlens_emulator.base_url, None)


async def test_mutual_tls_requires_a_client_certificate(pki: TestPKI) -> None:
    """With client_ca, a client certificate from that CA gets through, none is refused."""
    config = EmulatorConfig(tls=pki.server_context(require_client_cert=True))
    async with running_emulator(config) as emulator:
        answer = await health(emulator.base_url, pki.client_context(with_cert=True))
        assert answer == {"ok": True}
        with pytest.raises(aiohttp.ClientError):
            await health(emulator.base_url, pki.client_context())


async def tls_exchange(port: int, context: ssl.SSLContext) -> str:
    """Handshake with ``context``, send a request and read: the reason of the alert the server
    sent (OpenSSL's name), else "answered" or the OS error's type name."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        try:
            writer.write(f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return "answered" if await reader.read() else "closed"
        finally:
            writer.close()
    except ssl.SSLError as exc:
        return str(exc.reason)
    except OSError as exc:
        return type(exc).__name__


@pytest.mark.parametrize(
    ("version", "missing", "untrusted"),
    [
        (ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA"),
        (ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE", "TLSV1_ALERT_UNKNOWN_CA"),
    ],
    ids=["tls1.3", "tls1.2"],
)
async def test_a_refused_client_certificate_gets_the_alert_a_real_server_sends(
    pki: TestPKI, version: ssl.TLSVersion, missing: str, untrusted: str
) -> None:
    """No client certificate, or one from another CA: the handshake fails with OpenSSL's alert
    (certificate_required under TLS 1.3), every time, as from nginx or `openssl s_server`, not
    a bare disconnection (asyncio drops the alert, CPython gh-98078); nothing reaches the app."""
    config = EmulatorConfig(tls=pki.server_context(require_client_cert=True))
    stranger = TestPKI.make()
    async with running_emulator(config) as emulator:

        def context(cert_from: TestPKI | None) -> ssl.SSLContext:
            made = pki.client_context()
            made.maximum_version = version
            if cert_from is not None:
                cert_from.client.configure_cert(made)
            return made

        for _ in range(3):  # the alert must win every time, not now and then
            assert await tls_exchange(emulator.port, context(None)) == missing
            assert await tls_exchange(emulator.port, context(stranger)) == untrusted
        assert await tls_exchange(emulator.port, context(pki)) == "answered"
        assert emulator.counters()["requests_total"] == 0  # health is not an API request


async def test_other_handshake_failures_still_close_at_once(pki: TestPKI) -> None:
    """Plain HTTP to the mutual TLS port (no certificate involved) is closed as before, not held
    open waiting for more bytes: the read ends (the socket's timeout is only a bound)."""
    config = EmulatorConfig(tls=pki.server_context(require_client_cert=True))
    async with running_emulator(config) as emulator:

        def plain_http() -> bytes:
            with socket.create_connection(("127.0.0.1", emulator.port), timeout=20) as sock:
                sock.sendall(f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                try:
                    return sock.recv(100)
                except ConnectionResetError:
                    return b""

        assert await asyncio.to_thread(plain_http) == b""


async def test_a_context_with_its_own_sslobject_class_is_left_alone(pki: TestPKI) -> None:
    """A caller's own SSLObject class on the context stays (serving replaces only the default)."""

    class Own(ssl.SSLObject):
        """The caller's class."""

    context = pki.server_context()
    context.sslobject_class = Own
    async with running_emulator(EmulatorConfig(tls=context)) as emulator:
        assert await health(emulator.base_url, pki.client_context()) == {"ok": True}
    assert context.sslobject_class is Own


def test_the_emulator_in_a_thread_serves_https_too(pki: TestPKI, pem: PemFiles) -> None:
    """emulator_in_thread with tls: its base_url is https and it answers over TLS."""
    with emulator_in_thread(EmulatorConfig(tls=pki.server_context())) as emulator:
        assert emulator.base_url.startswith("https://")
        # Connection: close, so the server's TLS shutdown ends while its loop still runs.
        answer = requests.get(
            emulator.base_url + HEALTH,
            verify=str(pem.ca),
            headers={"Connection": "close"},
            timeout=10,
        )
        assert answer.json() == {"ok": True}


def test_tls_must_be_an_ssl_context() -> None:
    """A path (or anything else) where the context belongs is refused at once."""
    with pytest.raises(ValueError, match="SSLContext"):
        EmulatorConfig(tls="server.pem")  # type: ignore[arg-type]


def test_server_tls_context_reads_the_key_inside_the_certificate_file(
    pki: TestPKI, tmp_path: Path
) -> None:
    """One PEM file holding key and chain is enough; a client CA makes it mutual TLS."""
    both = tmp_path / "both.pem"
    pki.server.private_key_and_cert_chain_pem.write_to_path(str(both))
    assert server_tls_context(both).verify_mode == ssl.CERT_NONE
    ca = tmp_path / "ca.pem"
    pki.ca.cert_pem.write_to_path(str(ca))
    assert server_tls_context(both, client_ca=ca).verify_mode == ssl.CERT_REQUIRED


def serve(*flags: str) -> subprocess.Popen[str]:
    """`python -m vlens_async emulator --port 0 FLAGS...`."""
    return subprocess.Popen(
        [sys.executable, "-m", "vlens_async", "emulator", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGINT, then the exit status (killed when it does not stop)."""
    try:
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_the_cli_serves_https_with_tls_cert_and_key(pem: PemFiles, mutual: bool) -> None:
    """`vlens emulator --tls-cert F --tls-key F` prints an https:// base URL and serves it;
    with --tls-client-ca a request without a client certificate is refused by a TLS alert."""
    flags = ["--tls-cert", str(pem.server_cert), "--tls-key", str(pem.server_key)]
    if mutual:
        flags += ["--tls-client-ca", str(pem.ca)]
    proc = serve(*flags)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Vlens emulator listening on https://127.0.0.1:"), first
        base_url = first.rsplit(" ", 1)[1].strip()
        cert = (str(pem.client_cert), str(pem.client_key)) if mutual else None
        answer = requests.get(base_url + HEALTH, verify=str(pem.ca), cert=cert, timeout=10)
        assert answer.json() == {"ok": True}
        if mutual:
            with pytest.raises(requests.exceptions.SSLError, match="certificate required"):
                requests.get(base_url + HEALTH, verify=str(pem.ca), timeout=10)
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--tls-key", "KEY"], "--tls-key needs --tls-cert"),
        (["--tls-client-ca", "CA"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "MISSING"], "--tls-cert: MISSING: no such file"),
        (["--tls-cert", "CA"], "holds no private key (give it with --tls-key FILE)"),
        (["--tls-cert", "CERT"], "holds no private key (give it with --tls-key FILE)"),
        (["--tls-cert", "CERT", "--tls-key", "CLIENT_KEY"], "the key does not match"),
    ],
)
def test_bad_tls_flags_are_one_line_errors(
    pem: PemFiles, flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Missing, mismatched or lone TLS files: one line, exit 2, nothing served."""
    from vlens_async.cli import main

    names = {
        "KEY": str(pem.server_key),
        "CA": str(pem.ca),
        "CERT": str(pem.server_cert),
        "CLIENT_KEY": str(pem.client_key),
        "MISSING": "MISSING",
    }
    assert main(["emulator", "--port", "0", *(names.get(f, f) for f in flags)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert says in err
