"""No secret or personal data in logs, reprs or exception messages; TLS and http:// rules."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tests.helpers.client import BASE, IMAGES_URL, free_port, mock_api, serve
from vlens_async import errors
from vlens_async.auth import AdminLogin
from vlens_async.client import VlensClient, configure_logging_from_env, logger
from vlens_async.config import RetryPolicy, Timeouts

API_KEY = "sk-live-SECRETAPIKEY-7f3a9c"
ADMIN_USER = "boss@acme-tenant.example"
ADMIN_PASSWORD = "Pa55w0rd!SECRETpw"
ADMIN_ACCESS = "eyJhbGciOiJIUzI1NiJ9.ADMINACCESSSECRET.sig"
ADMIN_REFRESH = "REFRESHSECRET-0d5e1c"
ROTATED_REFRESH = "ROTATEDSECRET-77aa"
USER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.USERTOKENSECRET.sig"
USER_PASSWORD = "UserPa55!SECRET"
OTP = "482913"
PHONE = "+201234567890"
EMAIL = "mona.hassan@example.com"
NATIONAL_ID = "29901011234567"
NAMES = ["Mona", "Hassan", "منى", "حسن", "Mohamed Hassan Ali"]
IMAGE = os.urandom(3000)
IMAGE_B64 = base64.b64encode(IMAGE).decode()

SECRETS = [
    API_KEY,
    ADMIN_USER,
    ADMIN_PASSWORD,
    ADMIN_ACCESS,
    ADMIN_REFRESH,
    ROTATED_REFRESH,
    USER_TOKEN,
    USER_PASSWORD,
    OTP,
    PHONE,
    PHONE[1:],
    EMAIL,
    NATIONAL_ID,
    IMAGE_B64[:40],
    IMAGE_B64[-40:-4],
    *NAMES,
]

PII_FRONT = {
    "first_name": "منى",
    "last_names": "حسن",
    "name": "منى حسن",
    "first_name_english": "Mona",
    "last_names_english": "Hassan",
    "name_english": "Mona Hassan",
    "address": "12 Street, Cairo",
    "idNumber": NATIONAL_ID,
    "idKey": "SECRETIDKEY9",
    "dateOfBirth": "1999-01-01T00:00:00Z",
    "gender": "F",
}
PII_ENVELOPE = {
    "services": {
        "validations": {"validation_errors": []},
        "AML": {
            "AML_matched": True,
            "data": [{"fullName": "Mohamed Hassan Ali", "idNumber": NATIONAL_ID, "caseNo": "7"}],
        },
    },
    "data": {
        "isVerificationProcessCompleted": True,
        "user": {
            "id": 1,
            "name": "Mona",
            "surname": "Hassan",
            "fullName": "Mona Hassan",
            "emailAddress": EMAIL,
            "phoneNumber": PHONE,
            "idNumber": NATIONAL_ID,
        },
        "idFrontData": PII_FRONT,
        "idBackData": {"husbandName": "Mohamed Hassan Ali", "idNumber": NATIONAL_ID},
    },
    "error_code": None,
}
FAIL_MESSAGE = f"Mona Hassan {NATIONAL_ID} {PHONE} {EMAIL} {USER_TOKEN} {IMAGE_B64[:200]}"


def make_app(fail: bool) -> web.Application:
    """Every endpoint, answering with personal data, or failing with it in the message."""

    def envelope(data: Any) -> web.Response:
        if fail:
            return web.json_response(
                {
                    "error_code": 3001,
                    "error_message": FAIL_MESSAGE,
                    "services": {
                        "validations": {
                            "validation_errors": [
                                {"field": "idNumber", "value": NATIONAL_ID, "errors": []}
                            ]
                        }
                    },
                },
                status=422,
            )
        return web.json_response({"data": data, "error_code": None})

    async def login(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "data": {
                    "accessToken": ADMIN_ACCESS,
                    "expireInSeconds": 86400,
                    "refreshToken": ADMIN_REFRESH,
                }
            }
        )

    async def refresh(request: web.Request) -> web.Response:
        return envelope(
            {
                "accessToken": ADMIN_ACCESS,
                "refreshToken": ADMIN_REFRESH,
                "newRefreshToken": ROTATED_REFRESH,
            }
        )

    async def verify(request: web.Request) -> web.Response:
        if fail:
            return envelope(None)
        return web.json_response(PII_ENVELOPE)

    async def images(request: web.Request) -> web.Response:
        return envelope({"idFrontImage": "front.jpg"})

    async def step_image(request: web.Request) -> web.Response:
        if fail:  # a retried failure: stamina's retry log line sees the error too
            return web.json_response(
                {"error_code": None, "error_message": FAIL_MESSAGE}, status=503
            )
        return envelope({"image": IMAGE_B64})

    async def existence(request: web.Request) -> web.Response:
        return envelope({"exists": True})

    async def phone(request: web.Request) -> web.Response:
        return envelope({"phoneNumberOtpRequestId": "otp-req-1", "isPhoneNumberConfirmed": True})

    async def register(request: web.Request) -> web.Response:
        return envelope(
            {
                "accessToken": USER_TOKEN,
                "user": {"id": 9, "emailAddress": EMAIL, "phoneNumber": PHONE},
            }
        )

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_post("/api/credentials/Login", login)
    app.router.add_post("/api/credentials/RefreshToken", refresh)
    for side in ("id/front", "id/back", "liveness/multi"):
        app.router.add_post(f"/api/DigitalIdentity/verify/{side}", verify)
    app.router.add_post("/api/DigitalIdentity/LinkUserWithExistingTransaction", verify)
    app.router.add_get("/api/DigitalIdentity/GetUserDigitalIdentityImages", images)
    app.router.add_get("/api/DigitalIdentity/GetStepImage", step_image)
    app.router.add_post("/api/DigitalIdentity/CheckExistenceOfEmailOrPhone", existence)
    app.router.add_post("/api/DigitalIdentity/Register/StepVerifyPhone", phone)
    app.router.add_post("/api/DigitalIdentity/Register", register)
    return app


async def every_endpoint(c: VlensClient) -> tuple[list[Any], list[BaseException]]:
    """Call every endpoint once; collect results and errors."""
    user = c.for_user(USER_TOKEN)
    calls = [
        lambda: c.login(ADMIN_USER, ADMIN_PASSWORD),
        lambda: c.refresh_token(ADMIN_REFRESH),
        lambda: user.scan_id_front(IMAGE, name_check_value="Mona Hassan"),
        lambda: user.scan_id_back(IMAGE, transaction_id="tx-1"),
        lambda: user.check_liveness([IMAGE, IMAGE, IMAGE], id_front=IMAGE, transaction_id="tx-1"),
        lambda: user.link_user_to_transaction("tx-1"),
        lambda: c.list_identity_images(PHONE),
        lambda: c.download_step_image("tx-1", "front.jpg"),
        lambda: c.check_existence(phone_number=PHONE, email=EMAIL),
        lambda: c.request_phone_otp(PHONE),
        lambda: c.verify_phone_otp(PHONE, "otp-req-1", OTP),
        lambda: c.register(PHONE, USER_PASSWORD, otp=OTP, otp_request_id="otp-req-1", email=EMAIL),
        lambda: c.scan_id_front(IMAGE),  # through AdminLogin (lazy login)
    ]
    results: list[Any] = []
    failures: list[BaseException] = []
    for call in calls:
        try:
            results.append(await call())
        except errors.VlensError as exc:
            failures.append(exc)
    return results, failures


def assert_clean(text: str, where: str) -> None:
    """No secret from SECRETS appears in ``text``."""
    for secret in SECRETS:
        assert secret not in text, f"{where} leaks {secret[:6]}..."


@pytest.mark.parametrize("fail", [False, True], ids=["success", "failure"])
async def test_every_endpoint_at_debug_leaks_nothing(
    fail: bool, no_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    """All endpoints at DEBUG: logs, reprs, messages and tracebacks carry no secret or PII."""
    auth = AdminLogin("acme", ADMIN_USER, ADMIN_PASSWORD)
    async with serve(make_app(fail)) as base:
        caplog.set_level(logging.DEBUG)
        async with VlensClient(
            API_KEY,
            base_url=base,
            auth=auth,
            tenancy_name="acme",
            prepare_images=False,
            retry=RetryPolicy(max_attempts=2),
        ) as c:
            results, failures = await every_endpoint(c)
            client_repr = repr(c) + repr(c.for_user(USER_TOKEN))
    if fail:
        assert len(failures) >= 10
        assert all(isinstance(f, errors.APIError) for f in failures)
        assert any(isinstance(f, errors.DocumentError) for f in failures)
    else:
        assert failures == []
        assert len(results) == 13
    lines = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert any("status=" in line and "attempt=1" in line for line in lines)
    if fail:
        assert any(r.name == "stamina" for r in caplog.records)
    assert_clean("\n".join(lines), "log")
    assert_clean(client_repr + repr(auth) + str(auth), "client/auth repr")
    for result in results:
        if isinstance(result, bytes):
            assert result == IMAGE
            continue
        assert_clean(repr(result) + str(result), f"repr of {type(result).__name__}")
    for exc in failures:
        text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
        assert_clean(text, f"{type(exc).__name__} message")


async def test_log_line_has_method_path_status_attempt_duration(
    no_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Each attempt logs one DEBUG line with method, path (no query), status, attempt, duration."""
    async with serve(make_app(False)) as base:
        caplog.set_level(logging.DEBUG, logger="vlens_async")
        async with VlensClient(API_KEY, base_url=base, access_token=USER_TOKEN) as c:
            await c.list_identity_images(PHONE)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "vlens_async"]
    assert line.startswith("GET /api/DigitalIdentity/GetUserDigitalIdentityImages status=200 ")
    assert "attempt=1" in line
    assert "duration_ms=" in line
    assert "?" not in line


def test_vlens_log_env_turns_on_debug_once() -> None:
    """VLENS_LOG=debug sets the logger to DEBUG with one stderr handler; otherwise nothing."""
    level, original = logger.level, list(logger.handlers)
    # The import already applied the developer's own VLENS_LOG, if any: start from none.
    logger.handlers[:] = [h for h in original if not getattr(h, "_vlens_env", False)]
    handlers = list(logger.handlers)
    try:
        configure_logging_from_env({})
        assert logger.handlers == handlers
        configure_logging_from_env({"VLENS_LOG": "debug"})
        configure_logging_from_env({"VLENS_LOG": "DEBUG"})
        added = [h for h in logger.handlers if h not in handlers]
        assert logger.level == logging.DEBUG
        assert len(added) == 1
    finally:
        logger.setLevel(level)
        logger.handlers[:] = original


@pytest.mark.parametrize(
    "url", ["http://api.vlenseg.com", "http://10.0.0.5:8080", "http://vlens.internal"]
)
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    """http:// is refused for non-loopback hosts unless allow_insecure_http is passed."""
    with pytest.raises(errors.ConfigurationError, match="allow_insecure_http"):
        VlensClient(API_KEY, base_url=url)
    assert VlensClient(API_KEY, base_url=url, allow_insecure_http=True).closed is False


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_certificates_are_always_verified(tmp_path: Path, no_backoff: None) -> None:
    """An https server with a self-signed certificate is refused: verification cannot be off."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = make_app(False)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with VlensClient(
            API_KEY, base_url=f"https://127.0.0.1:{port}", prepare_images=False
        ) as c:
            with pytest.raises(errors.APIConnectionError) as info:
                await c.scan_id_front(IMAGE, retry=RetryPolicy.disabled())
    finally:
        await runner.cleanup()
    assert info.value.cause_type == "ClientConnectorCertificateError"  # type: ignore[attr-defined]
    assert "certificate" in info.value.cause_reason  # type: ignore[attr-defined]


# --- transport failures: aiohttp's exception texts quote the URL, query string included ---

IMAGES_QUERY_URL = (
    "https://vlens.test/api/DigitalIdentity/GetUserDigitalIdentityImages"
    f"?emailOrPhoneNumber={PHONE.replace('+', '%2B')}"
)


def chain_text(exc: BaseException) -> str:
    """The formatted traceback plus str/repr of every exception reachable from ``exc``."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(vars(current))]
        todo += [current.__cause__, current.__context__]
    return "\n".join(parts)


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connect hangs (SYN dropped)."""
    server = socket.socket()
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port: int = server.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_connect_timeout_traceback_has_no_phone_number() -> None:
    """A connect timeout on list_identity_images(phone): no phone number anywhere in the chain."""
    with full_backlog() as port:
        await asyncio.sleep(0.05)  # let the fillers' handshakes land in the queue
        async with VlensClient(
            API_KEY, base_url=f"http://127.0.0.1:{port}", access_token=USER_TOKEN
        ) as c:
            with pytest.raises(errors.APITimeoutError) as info:
                await c.list_identity_images(
                    PHONE,
                    retry=RetryPolicy.disabled(),
                    timeouts=Timeouts(connect=0.2, per_attempt=10, deadline=10),
                )
    exc = info.value
    assert_clean(chain_text(exc), "connect-timeout traceback")
    assert exc.cause_type == "ConnectionTimeoutError"  # type: ignore[attr-defined]
    assert exc.path == "/api/DigitalIdentity/GetUserDigitalIdentityImages"
    assert exc.__cause__ is None
    assert exc.__context__ is None


async def test_connection_refused_traceback_has_no_phone_number() -> None:
    """A refused connection on list_identity_images(phone): clean traceback, cause type kept."""
    async with VlensClient(
        API_KEY, base_url=f"http://127.0.0.1:{free_port()}", access_token=USER_TOKEN
    ) as c:
        with pytest.raises(errors.APIConnectionError) as info:
            await c.list_identity_images(PHONE, retry=RetryPolicy.disabled())
    exc = info.value
    assert_clean(chain_text(exc), "connection-refused traceback")
    assert exc.cause_type == "ClientConnectorError"  # type: ignore[attr-defined]
    assert exc.__cause__ is None


def url_quoting_failures() -> list[BaseException]:
    """Every failure the transport maps, each with the full URL in its text, as aiohttp does."""
    url = URL(IMAGES_QUERY_URL, encoded=True)
    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
    key = aiohttp.client_reqrep.ConnectionKey("vlens.test", 443, True, None, None, None, None)
    return [
        aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}"),
        aiohttp.SocketTimeoutError(f"Timeout on reading data from socket {url}"),
        aiohttp.ServerTimeoutError(f"Timeout {url}"),
        TimeoutError(f"timed out {url}"),
        aiohttp.ClientConnectorError(key, OSError(111, f"Connect call failed {url}")),
        aiohttp.ClientConnectorDNSError(key, OSError(-2, f"Name not known {url}")),
        aiohttp.ClientConnectorCertificateError(key, ssl.SSLCertVerificationError(f"bad {url}")),
        aiohttp.ClientConnectorSSLError(key, ssl.SSLError(f"handshake {url}")),
        aiohttp.ClientProxyConnectionError(key, OSError(111, f"Connect call failed {url}")),
        aiohttp.ClientHttpProxyError(info, (), status=407, message=f"auth {url}"),
        aiohttp.ServerDisconnectedError(f"Server disconnected {url}"),
        aiohttp.ClientPayloadError(f"Response payload is not completed {url}"),
        aiohttp.InvalidUrlClientError(str(url)),
        aiohttp.ClientOSError(104, f"Connection reset by peer {url}"),
        aiohttp.ClientResponseError(info, (), status=400, message=f"bad {url}"),
        aiohttp.TooManyRedirects(info, ()),
        ConnectionResetError(104, f"reset {url}"),
        OSError(f"broken {url}"),
    ]


@pytest.mark.parametrize("failure", url_quoting_failures(), ids=lambda e: type(e).__name__)
async def test_no_transport_failure_chains_the_url(failure: BaseException) -> None:
    """Whatever aiohttp raises, our error neither chains nor quotes it; the type name is kept."""
    assert PHONE[1:] in str(failure) + repr(failure)  # the premise: aiohttp's text has it
    with mock_api() as mock:
        mock.get(IMAGES_URL, exception=failure)
        async with VlensClient(API_KEY, base_url=BASE, access_token=USER_TOKEN) as c:
            with pytest.raises(errors.APIConnectionError) as info:
                await c.list_identity_images(PHONE, retry=RetryPolicy.disabled())
    exc = info.value
    assert_clean(chain_text(exc), f"{type(failure).__name__} traceback")
    assert exc.cause_type == type(failure).__name__  # type: ignore[attr-defined]
    assert exc.cause_reason  # type: ignore[attr-defined]
    assert exc.__cause__ is None
    assert exc.__context__ is None
    assert isinstance(exc, errors.APITimeoutError) == isinstance(failure, TimeoutError)
