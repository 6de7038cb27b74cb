"""Transport options end to end: the emulator over HTTPS with a CA made in the test, mutual TLS,
a CONNECT proxy on loopback (explicit, with credentials, from the environment), their typed
errors, and that verification can never be switched off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.helpers.proxy import ConnectProxy, closed_port, proxy_url, running_proxy
from tests.helpers.tls import TestPKI
from vlens_async import (
    AdminLogin,
    APIConnectionError,
    APIError,
    ClientCertificateError,
    ConfigurationError,
    ProxyError,
    RetryPolicy,
    UntrustedCertificateError,
    VlensClient,
)
from vlens_async import client as client_module
from vlens_async._transport import Request, connection_error, describe_failure
from vlens_async.cli import Service, _check_reachable, cli_words
from vlens_async.config import TransportOptions
from vlens_async.emulator import EmulatorConfig, RunningEmulator, running_emulator
from vlens_async.samples import make_applicant

PHONE = "+201001234567"
PROXY_USER, PROXY_PASSWORD = "proxy-user", "pr0xy s3cret@pw/"


def basic_auth(user: str, password: str) -> aiohttp.BasicAuth:
    """aiohttp's BasicAuth, whose deprecation warning (aiohttp 3.14) is the caller's own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return aiohttp.BasicAuth(user, password)


@pytest.fixture
async def locked_proxy() -> AsyncIterator[ConnectProxy]:
    """A CONNECT proxy on loopback that wants PROXY_USER:PROXY_PASSWORD (407 otherwise)."""
    async with running_proxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as running:
        yield running


def requests_seen(emulator: RunningEmulator) -> int:
    """How many API requests reached the emulator."""
    return int(emulator.counters()["requests_total"])


def attempts_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The client's per-attempt DEBUG lines."""
    return [r.getMessage() for r in caplog.records if "attempt=" in r.getMessage()]


# --- TLS ---


async def test_a_client_trusting_the_private_ca_verifies_over_https(
    https_emulator: RunningEmulator, pki: TestPKI
) -> None:
    """ssl= a context trusting the test's CA: a whole verification over HTTPS passes."""
    assert https_emulator.base_url.startswith("https://127.0.0.1:")
    a = make_applicant(3)
    async with VlensClient(
        https_emulator.api_key, base_url=https_emulator.base_url, ssl=pki.client_context()
    ) as client:
        outcome = await client.verify(a.front, a.back, a.faces)
    assert outcome.validated
    assert https_emulator.counters()["transactions_created"] == 1


async def test_the_default_trust_refuses_the_private_ca_with_a_typed_error(
    https_emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ssl=, the system's CAs do not trust the test's CA: UntrustedCertificateError,
    an APIConnectionError naming the option that fixes it, for the operators, tried once."""
    caplog.set_level(logging.DEBUG, logger="vlens_async")
    async with VlensClient(https_emulator.api_key, base_url=https_emulator.base_url) as client:
        with pytest.raises(UntrustedCertificateError) as caught:
            await client.check_existence(phone_number=PHONE)
    error = caught.value
    assert isinstance(error, APIConnectionError)
    assert "certificate was not trusted" in str(error)
    assert "ssl=ssl.create_default_context(cafile=...)" in str(error)
    assert error.cause_type == "ClientConnectorCertificateError"
    assert error.audience == "operator"
    assert error.__cause__ is None
    assert error.__context__ is None
    assert len(attempts_logged(caplog)) == 1  # never retried: the same certificate comes back
    assert requests_seen(https_emulator) == 0


async def test_a_context_trusting_another_ca_is_refused_too(
    https_emulator: RunningEmulator,
) -> None:
    """A context trusting some other private CA does not trust this one."""
    other = TestPKI.make()
    async with VlensClient(
        https_emulator.api_key, base_url=https_emulator.base_url, ssl=other.client_context()
    ) as client:
        with pytest.raises(UntrustedCertificateError):
            await client.check_existence(phone_number=PHONE)


@pytest.mark.usefixtures("no_backoff")
@pytest.mark.parametrize(
    ("version", "alert"),
    [
        (ssl.TLSVersion.TLSv1_3, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
        (ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ],
    ids=["tls1.3", "tls1.2"],
)
async def test_mutual_tls_with_a_client_certificate(
    pki: TestPKI, version: ssl.TLSVersion, alert: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An emulator requiring client certificates: the client's certificate gets through; without
    one the emulator's alert makes it a ClientCertificateError naming load_cert_chain, tried
    once per call (default retries), and no request reaches the emulator."""
    caplog.set_level(logging.DEBUG)
    config = EmulatorConfig(tls=pki.server_context(require_client_cert=True))
    without = pki.client_context()
    without.maximum_version = version
    async with running_emulator(config) as emulator:
        async with VlensClient(
            emulator.api_key,
            base_url=emulator.base_url,
            ssl=pki.client_context(with_cert=True),
        ) as client:
            assert not (await client.check_existence(phone_number=PHONE)).exists
        assert requests_seen(emulator) == 1
        caplog.clear()
        async with VlensClient(emulator.api_key, base_url=emulator.base_url, ssl=without) as client:
            for _ in range(3):  # the alert wins every time, not now and then
                with pytest.raises(ClientCertificateError) as caught:
                    await client.check_existence(phone_number=PHONE)
                assert caught.value.cause_reason == alert
        assert len(attempts_logged(caplog)) == 3  # one attempt per call: never retried
        assert requests_seen(emulator) == 1
    assert "load_cert_chain(certfile, keyfile)" in str(caught.value)
    assert caught.value.audience == "operator"


@pytest.mark.usefixtures("no_backoff")
async def test_a_client_certificate_from_another_ca_is_a_client_certificate_error(
    pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    """A client certificate the server's CA did not sign: its unknown_ca alert makes a
    ClientCertificateError, tried once, and nothing reaches the emulator."""
    caplog.set_level(logging.DEBUG)
    stranger = TestPKI.make()
    context = pki.client_context()
    stranger.client.configure_cert(context)
    config = EmulatorConfig(tls=pki.server_context(require_client_cert=True))
    async with running_emulator(config) as emulator:
        async with VlensClient(emulator.api_key, base_url=emulator.base_url, ssl=context) as client:
            with pytest.raises(ClientCertificateError) as caught:
                await client.check_existence(phone_number=PHONE)
        assert requests_seen(emulator) == 0
    assert caught.value.cause_reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert "(unknown CA)" in str(caught.value)
    assert len(attempts_logged(caplog)) == 1


@contextlib.contextmanager
def alerting_mtls_server(pki: TestPKI) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTPS server on OpenSSL's blocking sockets (which, unlike asyncio's, send the
    alert before closing) that requires a client certificate from ``pki``'s CA; yields its base
    URL and, per connection, "ok" or the reason its handshake failed."""
    context = pki.server_context(require_client_cert=True)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    outcomes: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_EXISTS), _EXISTS)
                    )
                    outcomes.append("ok")
            except (ssl.SSLError, OSError) as exc:
                outcomes.append(str(getattr(exc, "reason", None) or type(exc).__name__))

    thread = threading.Thread(target=serve, name="test-mtls", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}", outcomes
    finally:
        stop.set()
        thread.join(10)
        listener.close()


@pytest.mark.usefixtures("no_backoff")
async def test_a_missing_client_certificate_is_a_typed_operator_error(pki: TestPKI) -> None:
    """A server requiring a client certificate answers TLS 1.2 without one with a "handshake
    failure" alert: ClientCertificateError (an APIConnectionError) naming the option that
    presents one, for the operators, tried once; with the certificate the call goes through."""
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with alerting_mtls_server(pki) as (base_url, outcomes):
        async with VlensClient("key", base_url=base_url, ssl=context) as client:
            with pytest.raises(ClientCertificateError) as caught:
                await client.check_existence(phone_number=PHONE)
        async with VlensClient(
            "key", base_url=base_url, ssl=pki.client_context(with_cert=True)
        ) as client:
            assert not (await client.check_existence(phone_number=PHONE)).exists
    error = caught.value
    assert isinstance(error, APIConnectionError)
    assert "may want a client certificate (mutual TLS)" in str(error)
    assert "or shares no cipher or TLS version" in str(error)  # a handshake failure is ambiguous
    assert "load_cert_chain(certfile, keyfile)" in str(error)
    assert error.cause_reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert error.audience == "operator"
    assert outcomes == ["PEER_DID_NOT_RETURN_A_CERTIFICATE", "ok"]


def test_a_tls13_certificate_required_alert_is_recognised_too() -> None:
    """Under TLS 1.3 the alert arrives at the first read, after the request was written, as
    aiohttp's ClientOSError caused by the SSLError (when it wins the race with a reset, which
    stays a plain APIConnectionError): a ClientCertificateError, in the CLI's words too."""
    alert = ssl.SSLError(1, "tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    failure = aiohttp.ClientOSError(1, "tlsv13 alert certificate required")
    failure.__cause__ = alert
    request = Request(method="POST", path="/api/x", headers={}, request_id="r")
    error = connection_error(request, failure)
    assert isinstance(error, ClientCertificateError)
    assert "(certificate required)" in str(error)
    assert error.cause_reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert "--client-cert FILE [--client-key FILE]" in cli_words(describe_failure(failure))
    reset = connection_error(request, aiohttp.ClientOSError(104, "reset"))
    assert type(reset) is APIConnectionError


@pytest.mark.parametrize(
    "path", [value for name, value in vars(client_module).items() if name.endswith("_PATH")]
)
@pytest.mark.parametrize(
    ("reason", "proxy"),
    [("TLSV13_ALERT_CERTIFICATE_REQUIRED", False), ("SSLV3_ALERT_HANDSHAKE_FAILURE", True)],
)
def test_the_fix_survives_on_every_endpoint(path: str, reason: str, proxy: bool) -> None:
    """However long the call's path, the message keeps the option that fixes it (the cut that
    keeps a server's text short never reaches it)."""
    alert = ssl.SSLError(1, "alert")
    alert.reason = reason
    failure = aiohttp.ClientOSError(1, "alert")
    failure.__cause__ = alert
    request = Request(method="POST", path=path, headers={}, request_id="r" * 36)
    error = connection_error(request, failure)
    assert error.message.endswith("load_cert_chain(certfile, keyfile) was called"), error.message
    key = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)
    untrusted = aiohttp.ClientConnectorCertificateError(key, ssl.SSLCertVerificationError(1, "x"))
    url = "https://proxy.example:3128" if proxy else None
    message = str(connection_error(request, untrusted, service_url=url))
    assert "ssl.create_default_context(cafile=...)" in message, message


def insecure_contexts() -> list[Any]:
    """Every way of asking for no verification."""
    no_verify = ssl.create_default_context()
    no_verify.check_hostname = False
    no_verify.verify_mode = ssl.CERT_NONE
    no_hostname = ssl.create_default_context()
    no_hostname.check_hostname = False
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fingerprint = aiohttp.Fingerprint(b"\0" * 32)
    return [False, no_verify, no_hostname, server_side, fingerprint, "/etc/ssl/ca.pem"]


@pytest.mark.parametrize("value", insecure_contexts(), ids=repr)
def test_verification_can_never_be_switched_off(value: Any) -> None:
    """ssl=False, a CERT_NONE or hostname-blind context, aiohttp's Fingerprint: refused."""
    with pytest.raises(ConfigurationError) as caught:
        VlensClient("key", base_url="https://vlens.test", ssl=value)
    assert "ssl" in str(caught.value)


async def test_a_context_switched_off_after_it_was_given_is_refused_at_open() -> None:
    """The SSLContext is checked again when the session opens (a context is mutable)."""
    context = ssl.create_default_context()
    client = VlensClient("key", base_url="https://vlens.test", ssl=context)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(ConfigurationError):
        async with client:
            pass
    assert client.closed is False  # never opened


async def test_a_context_switched_off_while_the_client_is_open_is_refused_at_the_next_call(
    pki: TestPKI,
) -> None:
    """The SSLContext is checked again before every send: switched to CERT_NONE after the client
    opened, the next call to a server whose certificate it does not trust raises
    ConfigurationError and sends nothing (not a success)."""
    other = TestPKI.make()
    async with running_emulator(EmulatorConfig(tls=other.server_context())) as emulator:
        context = pki.client_context()
        async with VlensClient(emulator.api_key, base_url=emulator.base_url, ssl=context) as client:
            with pytest.raises(UntrustedCertificateError):
                await client.check_existence(phone_number=PHONE)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with pytest.raises(ConfigurationError, match="does not verify certificates"):
                await client.check_existence(phone_number=PHONE)
        assert requests_seen(emulator) == 0


@pytest.mark.parametrize("value", [None, True])
async def test_ssl_true_and_none_mean_the_default_verification(
    value: Any, https_emulator: RunningEmulator
) -> None:
    """aiohttp's spellings of "verify with the system's CAs" are both accepted and mean exactly
    that: no context of the caller's, and the system's CAs refuse the test's private CA."""
    client = VlensClient(https_emulator.api_key, base_url=https_emulator.base_url, ssl=value)
    assert client._shared.transport == TransportOptions()
    async with client:
        with pytest.raises(UntrustedCertificateError):
            await client.check_existence(phone_number=PHONE)


# --- the proxy ---


async def test_every_request_goes_through_the_proxy(
    https_emulator: RunningEmulator, proxy: ConnectProxy, pki: TestPKI
) -> None:
    """proxy=: the whole verification is tunnelled through CONNECT to the emulator; a view made
    with for_user shares the session and so the proxy."""
    a = make_applicant(4)
    target = f"127.0.0.1:{https_emulator.port}"
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        proxy=proxy.url,
    ) as client:
        outcome = await client.verify(a.front, a.back, a.faces)
        before = sum(t.up for t in proxy.opened)
        await client.for_user("user-token").check_existence(phone_number=PHONE)
    assert outcome.validated
    assert proxy.opened
    assert {t.target for t in proxy.tunnels} == {target}
    # Three uploads of images went through the tunnels (both ways), then the view's call.
    assert sum(t.up for t in proxy.opened) > before > 100_000
    assert sum(t.down for t in proxy.opened) > 0
    assert requests_seen(https_emulator) == 4


@pytest.mark.parametrize("how", ["url", "proxy_auth"])
async def test_proxy_credentials_get_through_and_never_show(
    how: str,
    https_emulator: RunningEmulator,
    locked_proxy: ConnectProxy,
    pki: TestPKI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials in the URL or as proxy_auth reach the proxy (Proxy-Authorization), and appear
    in no repr and no log line."""
    caplog.set_level(logging.DEBUG)
    options: dict[str, Any] = (
        {"proxy": proxy_url(locked_proxy.port, PROXY_USER, PROXY_PASSWORD)}
        if how == "url"
        else {
            "proxy": locked_proxy.url,
            "proxy_auth": basic_auth(PROXY_USER, PROXY_PASSWORD),
        }
    )
    client = VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        **options,
    )
    async with client:
        assert not (await client.check_existence(phone_number=PHONE)).exists
        shown = repr(client) + repr(client.for_user("t")) + repr(client._shared)
    assert [t.status for t in locked_proxy.tunnels] == [200]
    assert locked_proxy.tunnels[0].authorization is not None
    assert locked_proxy.url in shown
    for secret in (PROXY_PASSWORD, quote(PROXY_PASSWORD, safe=""), PROXY_USER):
        assert secret not in shown
        assert secret not in caplog.text


@pytest.mark.parametrize("how", ["url", "proxy_auth"])
async def test_proxy_credentials_go_as_utf_8(
    how: str, https_emulator: RunningEmulator, pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials beyond ASCII (Latin-1 accents, "\u20ac", CJK) reach the proxy as the UTF-8
    of RFC 7617 (as curl and browsers send them), from the URL or proxy_auth, and show in no log."""
    caplog.set_level(logging.DEBUG)
    user, password = "us\u00e9r", "p\u00e4\u20acss \u4e2d"
    async with running_proxy(credentials=(user, password)) as locked:
        options: dict[str, Any] = (
            {"proxy": proxy_url(locked.port, user, password)}
            if how == "url"
            else {"proxy": locked.url, "proxy_auth": basic_auth(user, password)}
        )
        async with VlensClient(
            https_emulator.api_key,
            base_url=https_emulator.base_url,
            ssl=pki.client_context(),
            **options,
        ) as client:
            assert not (await client.check_existence(phone_number=PHONE)).exists
        assert [t.status for t in locked.tunnels] == [200]
    assert password not in caplog.text


@pytest.mark.parametrize("password", [None, "wrong-password-71"])
async def test_a_407_is_a_typed_operator_error_without_credentials_in_it(
    password: str | None,
    https_emulator: RunningEmulator,
    locked_proxy: ConnectProxy,
    pki: TestPKI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No or wrong proxy credentials: ProxyError with proxy_status 407 that says what to give,
    for the operators, not retried, and the password given is nowhere in it or in the logs."""
    caplog.set_level(logging.DEBUG)
    url = locked_proxy.url if password is None else proxy_url(locked_proxy.port, "me", password)
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        proxy=url,
    ) as client:
        with pytest.raises(ProxyError) as caught:
            await client.check_existence(phone_number=PHONE)
    error = caught.value
    assert isinstance(error, APIConnectionError)
    assert error.proxy_status == 407
    assert "407" in str(error)
    assert "proxy_auth" in str(error)
    assert error.audience == "operator"
    assert [t.status for t in locked_proxy.tunnels] == [407]  # tried once
    assert requests_seen(https_emulator) == 0
    if password is not None:
        assert password not in str(error) + repr(error) + caplog.text


@pytest.mark.usefixtures("no_backoff")
async def test_a_call_that_is_not_idempotent_never_retries_a_fatal_error(
    https_emulator: RunningEmulator, locked_proxy: ConnectProxy, proxy: ConnectProxy, pki: TestPKI
) -> None:
    """request_phone_otp (an SMS each time) through a proxy answering 407, or to a server whose
    certificate is not trusted: one CONNECT, one handshake, though neither request was sent."""
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        proxy=proxy_url(locked_proxy.port, "me", "wrong"),
    ) as client:
        with pytest.raises(ProxyError):
            await client.request_phone_otp(PHONE)
    assert [t.status for t in locked_proxy.tunnels] == [407]
    async with VlensClient(
        https_emulator.api_key, base_url=https_emulator.base_url, proxy=proxy.url
    ) as client:
        with pytest.raises(UntrustedCertificateError):
            await client.request_phone_otp(PHONE)
    assert [t.status for t in proxy.tunnels] == [200]
    assert requests_seen(https_emulator) == 0


async def test_a_407_to_a_plain_http_request_is_a_proxy_error_too(
    locked_proxy: ConnectProxy,
) -> None:
    """To an http:// service (loopback) through a proxy there is no CONNECT: the proxy's 407 is
    the response's status. It is a ProxyError all the same (not the service's answer), for the
    operators, tried once."""
    async with running_emulator(EmulatorConfig()) as emulator:
        async with VlensClient(
            emulator.api_key,
            base_url=emulator.base_url,
            proxy=proxy_url(locked_proxy.port, "me", "wrong-password-72"),
        ) as client:
            with pytest.raises(ProxyError) as caught:
                await client.check_existence(phone_number=PHONE)
        assert requests_seen(emulator) == 0
    error = caught.value
    assert error.proxy_status == 407
    assert "the proxy refused: 407" in str(error)
    assert error.audience == "operator"
    assert [t.status for t in locked_proxy.tunnels] == [407]
    assert "wrong-password-72" not in str(error) + repr(error)


async def test_an_https_proxys_own_certificate_is_named_as_the_proxys(pki: TestPKI) -> None:
    """An https:// proxy whose certificate the context does not trust: the message says the
    proxy's certificate, not the server's; trusting both CAs, the call goes through it (TLS to
    the proxy, TLS inside the tunnel)."""
    service_pki = TestPKI.make()
    config = EmulatorConfig(tls=service_pki.server_context())
    async with (
        running_emulator(config) as emulator,
        running_proxy(tls=pki.server_context()) as tls_proxy,
    ):
        assert tls_proxy.url.startswith("https://")
        options: dict[str, Any] = {"base_url": emulator.base_url, "proxy": tls_proxy.url}
        async with VlensClient(
            emulator.api_key, ssl=service_pki.client_context(), **options
        ) as client:
            with pytest.raises(UntrustedCertificateError) as caught:
                await client.check_existence(phone_number=PHONE)
        assert "the proxy's TLS certificate was not trusted" in str(caught.value)
        assert tls_proxy.tunnels == []
        both = service_pki.client_context()
        pki.ca.configure_trust(both)
        async with VlensClient(emulator.api_key, ssl=both, **options) as client:
            assert not (await client.check_existence(phone_number=PHONE)).exists
        assert [t.status for t in tls_proxy.tunnels] == [200]


async def test_a_refused_proxy_connection_names_the_proxy_only(
    https_emulator: RunningEmulator, pki: TestPKI, no_backoff: None
) -> None:
    """Nothing listening at the proxy's port: ProxyError naming host:port, never the
    credentials; transient, so retried like any refused connection."""
    port = closed_port()
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        proxy=proxy_url(port, PROXY_USER, PROXY_PASSWORD),
        retry=RetryPolicy(max_attempts=2),
    ) as client:
        with pytest.raises(ProxyError) as caught:
            await client.check_existence(phone_number=PHONE)
    error = caught.value
    assert f"could not connect to the proxy 127.0.0.1:{port}" in str(error)
    assert error.proxy_status is None
    assert error.audience == "retry"
    for secret in (PROXY_PASSWORD, quote(PROXY_PASSWORD, safe=""), PROXY_USER):
        assert secret not in str(error) + repr(error)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_name_that_does_not_resolve_names_the_proxy(
    scheme: str, https_emulator: RunningEmulator, pki: TestPKI, no_backoff: None
) -> None:
    """A proxy whose host name does not resolve (.invalid never does): ProxyError naming the
    proxy's host and port, not the service's, and no credentials; to an http:// and an https://
    service alike."""
    async with running_emulator(EmulatorConfig()) as plain:
        service = https_emulator if scheme == "https" else plain
        async with VlensClient(
            service.api_key,
            base_url=service.base_url,
            ssl=pki.client_context(),
            proxy=proxy_url(3128, PROXY_USER, PROXY_PASSWORD).replace(
                "127.0.0.1", "proxy.corp.invalid"
            ),
            retry=RetryPolicy.disabled(),
        ) as client:
            with pytest.raises(ProxyError) as caught:
                await client.check_existence(phone_number=PHONE)
    message = str(caught.value)
    assert "could not connect to the proxy proxy.corp.invalid:3128" in message
    assert "127.0.0.1" not in message.split(" failed: ", 1)[1]
    for secret in (PROXY_PASSWORD, quote(PROXY_PASSWORD, safe=""), PROXY_USER):
        assert secret not in message + repr(caught.value)


async def test_an_unreachable_service_without_a_proxy_is_never_blamed_on_one() -> None:
    """No proxy, a service whose (internationalised) name does not resolve: a plain
    APIConnectionError, not a ProxyError naming its IDNA spelling as a proxy."""
    async with VlensClient(
        "key", base_url="https://bücher.invalid", retry=RetryPolicy.disabled()
    ) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.check_existence(phone_number=PHONE)
    assert not isinstance(caught.value, ProxyError)
    assert "proxy" not in str(caught.value)


async def test_trust_env_takes_https_proxy_and_honours_no_proxy(
    https_emulator: RunningEmulator,
    proxy: ConnectProxy,
    pki: TestPKI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """trust_env=True: HTTPS_PROXY is used (without a scheme too, as http://, as curl reads it);
    with the host in NO_PROXY it is bypassed. Without trust_env the environment is ignored."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)

    async def call(**options: Any) -> None:
        async with VlensClient(
            https_emulator.api_key,
            base_url=https_emulator.base_url,
            ssl=pki.client_context(),
            **options,
        ) as client:
            await client.check_existence(phone_number=PHONE)

    await call()
    assert proxy.tunnels == []
    await call(trust_env=True)
    assert [t.target for t in proxy.opened] == [f"127.0.0.1:{https_emulator.port}"]
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.removeprefix("http://"))  # no scheme: http://
    await call(trust_env=True)
    assert len(proxy.tunnels) == 2
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    await call(trust_env=True)
    assert len(proxy.tunnels) == 2
    assert requests_seen(https_emulator) == 4


@pytest.fixture
def netrc_with_a_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NETRC names a file whose default entry matches every host (as curl and aiohttp read it);
    no proxy in the environment."""
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)


_EXISTS = b'{"data":{"exists":false},"error_code":null,"error_message":null}'


@contextlib.asynccontextmanager
async def recording_server(status: bytes = b"200 OK") -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering every request with ``status`` and a check_existence
    envelope; yields its base URL and the request heads it received."""
    heads: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append((await reader.readuntil(b"\r\n\r\n")).decode("latin-1"))
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (status, len(_EXISTS), _EXISTS)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", heads
    finally:
        server.close()
        await server.wait_closed()


async def test_a_407_without_a_proxy_is_the_services_answer() -> None:
    """A service that answers 407 itself, no proxy configured: an API error with that status,
    not a ProxyError telling the operator to give proxy credentials; and the reachability
    check before a bulk job takes it as the service being there."""
    async with recording_server(b"407 Proxy Authentication Required") as (base_url, heads):
        async with VlensClient("key", base_url=base_url, retry=RetryPolicy.disabled()) as client:
            with pytest.raises(APIError) as caught:
                await client.check_existence(phone_number=PHONE)
        await _check_reachable(Service(emulator=False, base_url=base_url, api_key="key"))
    assert not isinstance(caught.value, ProxyError)
    assert caught.value.status == 407
    assert "the proxy refused" not in str(caught.value)
    assert len(heads) == 2


async def test_a_407_inside_an_https_tunnel_is_the_services_answer(
    proxy: ConnectProxy, pki: TestPKI
) -> None:
    """Through a proxy to an https:// service, the proxy's 407 would fail the CONNECT: a 407
    after the tunnel opened is the service's own answer, not a ProxyError."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_EXISTS), _EXISTS)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=pki.server_context())
    base_url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with VlensClient(
            "key",
            base_url=base_url,
            proxy=proxy.url,
            ssl=pki.client_context(),
            retry=RetryPolicy.disabled(),
        ) as client:
            with pytest.raises(APIError) as caught:
                await client.check_existence(phone_number=PHONE)
    finally:
        server.close()
        await server.wait_closed()
    assert not isinstance(caught.value, ProxyError)
    assert caught.value.status == 407
    assert [t.status for t in proxy.tunnels] == [200]
    assert len(seen) == 1


def authorization_lines(head: str) -> list[str]:
    """The Authorization header lines of a request head."""
    return [line for line in head.splitlines() if line.lower().startswith("authorization:")]


@pytest.mark.usefixtures("netrc_with_a_default")
async def test_trust_env_never_sends_netrc_credentials_to_the_api() -> None:
    """trust_env=True with a ~/.netrc default entry: an API-key call carries no Authorization
    header (aiohttp's trust_env would send the netrc login as Basic)."""
    async with recording_server() as (base_url, heads):
        client = VlensClient("key", base_url=base_url, trust_env=True)
        async with client:
            assert not (await client.check_existence(phone_number=PHONE)).exists
    assert len(heads) == 1
    assert "ApiKey: key" in heads[0]
    assert authorization_lines(heads[0]) == []


@pytest.mark.usefixtures("netrc_with_a_default")
async def test_trust_env_and_netrc_leave_an_end_users_token_working(
    https_emulator: RunningEmulator, pki: TestPKI
) -> None:
    """trust_env=True with a ~/.netrc default entry: calls with a bearer token (an admin login
    here) work, where aiohttp refused to combine the netrc login with the Authorization header."""
    admin = AdminLogin(
        https_emulator.tenancy_name,
        https_emulator.admin_username or "",
        https_emulator.admin_password or "",
    )
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        trust_env=True,
        auth=admin,
    ) as client:
        front = await client.scan_id_front(make_applicant(5).front)
    assert front.transaction_id


async def test_trust_env_takes_the_proxy_credentials_from_https_proxy(
    https_emulator: RunningEmulator,
    locked_proxy: ConnectProxy,
    pki: TestPKI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """trust_env=True, HTTPS_PROXY with user:password@: the credentials reach the proxy as an
    explicit proxy's do, and show nowhere; a malformed HTTPS_PROXY is a ConfigurationError that
    names the variable, not its value."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HTTPS_PROXY", proxy_url(locked_proxy.port, PROXY_USER, PROXY_PASSWORD))
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        trust_env=True,
    ) as client:
        assert not (await client.check_existence(phone_number=PHONE)).exists
    assert [t.status for t in locked_proxy.tunnels] == [200]
    assert PROXY_PASSWORD not in caplog.text
    monkeypatch.setenv("HTTPS_PROXY", f"socks5://{PROXY_USER}:s3cret@127.0.0.1:1080")
    client = VlensClient(https_emulator.api_key, base_url=https_emulator.base_url, trust_env=True)
    with pytest.raises(ConfigurationError, match="HTTPS_PROXY") as caught:
        async with client:
            pass
    assert "s3cret" not in str(caught.value)


async def test_trace_configs_reach_the_session(
    https_emulator: RunningEmulator, pki: TestPKI
) -> None:
    """trace_configs: aiohttp calls the given TraceConfig for each request."""
    started: list[str] = []

    async def on_start(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        started.append(params.method)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with VlensClient(
        https_emulator.api_key,
        base_url=https_emulator.base_url,
        ssl=pki.client_context(),
        trace_configs=[trace],
    ) as client:
        await client.check_existence(phone_number=PHONE)
    assert started == ["POST"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"proxy": "socks5://127.0.0.1:1080"}, "http:// or https://"),
        ({"proxy": "127.0.0.1:3128"}, "http:// or https://"),
        ({"proxy": "http://:3128"}, "no host"),
        ({"proxy": "http://127.0.0.1:99999"}, "not a valid URL"),
        ({"proxy": "http://[::1"}, "not a valid URL"),
        ({"proxy": "http://127.0.0.1:3128/path?q=1"}, "without a path"),
        ({"proxy": ""}, "must be a URL"),
        (
            {
                "proxy": proxy_url(3128, "u", PROXY_PASSWORD),
                "proxy_auth": basic_auth("u", PROXY_PASSWORD),
            },
            "given twice",
        ),
        ({"proxy_auth": basic_auth("u", PROXY_PASSWORD)}, "needs a proxy"),
        ({"proxy": "http://127.0.0.1:3128", "proxy_auth": ("u", "p")}, "BasicAuth"),
        ({"trust_env": "yes"}, "trust_env"),
        ({"trace_configs": [object()]}, "TraceConfig"),
    ],
)
def test_bad_transport_options_are_configuration_errors(options: dict[str, Any], says: str) -> None:
    """Each bad option is refused when the client is made, saying why, never echoing a
    password."""
    with pytest.raises(ConfigurationError) as caught:
        VlensClient("key", base_url="https://vlens.test", **options)
    assert says in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "proxy", ["http://u:s3cret\uff03x@127.0.0.1:3128", "http://u:s3cret@127.0.0.1:99999"]
)
def test_an_unparsable_proxy_url_chains_nothing(proxy: str) -> None:
    """Python's own ValueError for a URL that does not parse may quote its netloc, password
    included (NFKC check): the ConfigurationError neither chains it nor names the password."""
    with pytest.raises(ConfigurationError, match="not a valid URL") as caught:
        VlensClient("key", base_url="https://vlens.test", proxy=proxy)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert "s3cret" not in str(caught.value)


def test_transport_options_take_credentials_out_of_the_proxy_url() -> None:
    """TransportOptions.of keeps the bare proxy URL (shown in its repr) and the decoded
    credentials aside (never shown); built directly, it refuses a URL with credentials."""
    options = TransportOptions.of(proxy=proxy_url(3128, PROXY_USER, PROXY_PASSWORD))
    assert options.proxy == "http://127.0.0.1:3128"
    assert options.proxy_credentials == (PROXY_USER, PROXY_PASSWORD)
    assert "http://127.0.0.1:3128" in repr(options)
    assert PROXY_USER not in repr(options)
    with pytest.raises(ConfigurationError, match="bare proxy URL"):
        TransportOptions(proxy=proxy_url(3128, PROXY_USER, PROXY_PASSWORD))
