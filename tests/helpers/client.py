"""Helpers for the client's tests: golden fixtures, canned responses, servers, small images."""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aioresponses import CallbackResult, aioresponses
from PIL import Image

GOLDEN = Path(__file__).parent.parent / "golden"
BASE = "https://vlens.test"
API_KEY = "test-api-key-5f1d2c9a"

FRONT_URL = f"{BASE}/api/DigitalIdentity/verify/id/front"
BACK_URL = f"{BASE}/api/DigitalIdentity/verify/id/back"
LIVENESS_URL = f"{BASE}/api/DigitalIdentity/verify/liveness/multi"
LINK_URL = f"{BASE}/api/DigitalIdentity/LinkUserWithExistingTransaction"
LOGIN_URL = f"{BASE}/api/credentials/Login"
REFRESH_URL = f"{BASE}/api/credentials/RefreshToken"
EXISTENCE_URL = f"{BASE}/api/DigitalIdentity/CheckExistenceOfEmailOrPhone"
PHONE_URL = f"{BASE}/api/DigitalIdentity/Register/StepVerifyPhone"
REGISTER_URL = f"{BASE}/api/DigitalIdentity/Register"
IMAGES_URL = re.compile(
    re.escape(f"{BASE}/api/DigitalIdentity/GetUserDigitalIdentityImages") + r".*"
)
STEP_IMAGE_URL = re.compile(re.escape(f"{BASE}/api/DigitalIdentity/GetStepImage") + r".*")

OK_ENVELOPE: dict[str, Any] = {
    "services": {"validations": {"validation_errors": []}},
    "data": {"isVerificationProcessCompleted": None},
    "error_code": None,
    "error_message": None,
    "error_descriptions": None,
}


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer``: supply one."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _NoWriter())
        super().__init__(method, url, **kwargs)


class _NoWriter:
    output_size = 0


class mock_api(aioresponses):
    """aioresponses whose canned responses work with the installed aiohttp."""

    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:  # type: ignore[override]
        """Register a canned response (see aioresponses.add)."""
        kwargs.setdefault("response_class", CompatResponse)
        super().add(url, method, **kwargs)


def reply(
    status: int = 200, payload: Any = None, body: bytes | str = "", **headers: str
) -> CallbackResult:
    """A callback's canned response (aioresponses), compatible with the installed aiohttp."""
    return CallbackResult(
        status=status,
        payload=payload,
        body=body,
        headers=headers or None,
        response_class=CompatResponse,
    )


def golden(name: str) -> Any:
    """Load a golden fixture (copied from the seeds) by file name."""
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def tokens_envelope(access: str, refresh: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Login/RefreshToken response envelope as API.md describes it."""
    data: dict[str, Any] = {"accessToken": access, "expireInSeconds": 86400, **extra}
    if refresh is not None:
        data["refreshToken"] = refresh
    return {"data": data, "error_code": None, "error_message": None}


def jpeg(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small valid JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def body_of(call: Any) -> Any:
    """The JSON body of a request recorded by aioresponses."""
    return orjson.loads(call.kwargs["data"])


def free_port() -> int:
    """A free loopback port (for a server that is started and stopped in a test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1, port 0; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
