"""Helpers for the emulator tests: raw-HTTP calls (no client code), small images, applicants, and
the sign-up through the client."""

from __future__ import annotations

import base64
import functools
import io
import json
import uuid
from typing import Any

import aiohttp
from PIL import Image

from vlens_async import VlensClient, samples
from vlens_async.emulator import RunningEmulator

API = "/api/DigitalIdentity"
FRONT = f"{API}/verify/id/front"
BACK = f"{API}/verify/id/back"
LIVENESS = f"{API}/verify/liveness/multi"
LINK = f"{API}/LinkUserWithExistingTransaction"
IMAGES = f"{API}/GetUserDigitalIdentityImages"
STEP_IMAGE = f"{API}/GetStepImage"
LOGIN = "/api/credentials/Login"
REFRESH = "/api/credentials/RefreshToken"
OTP = f"{API}/Register/StepVerifyPhone"
REGISTER = f"{API}/Register"
EXISTS = f"{API}/CheckExistenceOfEmailOrPhone"


def b64(data: bytes) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


@functools.lru_cache(maxsize=32)
def small_jpeg(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A tiny JPEG without any synthetic code (a user's own photo, as far as OCR goes)."""
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120))
    for x in range(0, size[0], 8):
        for y in range(0, size[1], 8):
            if (x + y + seed) % 16 == 0:
                img.paste((255 - seed % 256, 30, 200), (x, y, x + 8, y + 8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


@functools.lru_cache(maxsize=32)
def applicant(seed: int, scenario: str = "valid") -> samples.Applicant:
    """A synthetic applicant (cached: drawing one takes ~0.1-0.4 s)."""
    return samples.make_applicant(seed, scenario=scenario)


def new_tx() -> str:
    """A fresh transaction id, as the iOS demo makes client-side."""
    return str(uuid.uuid4())


class Raw:
    """Raw HTTP to the emulator with aiohttp: no client code involved."""

    def __init__(self, emu: RunningEmulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.session = session

    def headers(self, token: str | None = None, api_key: str | None = "default") -> dict[str, str]:
        """ApiKey (the tenant's unless given; None omits it) and an optional bearer token."""
        out: dict[str, str] = {}
        if api_key is not None:
            out["ApiKey"] = self.emu.api_key if api_key == "default" else api_key
        if token is not None:
            out["Authorization"] = f"Bearer {token}"
        return out

    async def post(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        api_key: str | None = "default",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any] | None, aiohttp.ClientResponse]:
        """POST JSON; returns (status, parsed JSON or None, response)."""
        all_headers = {
            **self.headers(token, api_key),
            "Content-Type": "application/json",
            **(headers or {}),
        }
        # A file object, not bytes: aiohttp warns (an error here) about bodies over 1 MiB.
        payload = io.BytesIO(json.dumps(body or {}).encode())
        async with self.session.post(path, data=payload, headers=all_headers) as resp:
            raw = await resp.read()
        data = _json(raw, resp)
        return resp.status, data, resp

    async def get(
        self, path: str, params: dict[str, str], *, token: str | None = None
    ) -> tuple[int, dict[str, Any] | None, aiohttp.ClientResponse]:
        """GET with query parameters."""
        async with self.session.get(path, params=params, headers=self.headers(token)) as resp:
            raw = await resp.read()
        return resp.status, _json(raw, resp), resp

    async def front(
        self, image: bytes, tx: str | None = None, *, token: str | None = None, **extra: Any
    ) -> Any:
        """Scan a front; returns (status, json)."""
        body = {"image": b64(image), "getExtractedData": True, **extra}
        if tx is not None:
            body["transaction_id"] = tx
        status, data, _ = await self.post(FRONT, body, token=token)
        return status, data

    async def back(
        self, image: bytes, tx: str | None = None, *, token: str | None = None, **extra: Any
    ) -> Any:
        """Scan a back; returns (status, json)."""
        body = {"image": b64(image), "getExtractedData": True, **extra}
        if tx is not None:
            body["transaction_id"] = tx
        status, data, _ = await self.post(BACK, body, token=token)
        return status, data

    async def liveness(
        self,
        front: bytes,
        faces: tuple[bytes, bytes, bytes] | list[bytes],
        tx: str,
        *,
        token: str | None = None,
        **extra: Any,
    ) -> Any:
        """Send liveness; returns (status, json)."""
        body = {
            "image": b64(front),
            "face_1": b64(faces[0]),
            "face_2": b64(faces[1]),
            "face_3": b64(faces[2]),
            "transaction_id": tx,
            **extra,
        }
        status, data, _ = await self.post(LIVENESS, body, token=token)
        return status, data

    async def scan_both(self, app: samples.Applicant, tx: str | None = None) -> str:
        """Front and back of an applicant; returns the transaction id."""
        tx = tx or new_tx()
        status, data = await self.front(app.front, tx)
        assert status == 200, data
        status, data = await self.back(app.back, tx)
        assert status == 200, data
        return tx

    async def admin_token(self, username: str | None = None, password: str | None = None) -> str:
        """Log in as an admin (the one with the Requests permission by default)."""
        status, data = await self.login(
            username or self.emu.admin_username or "", password or self.emu.admin_password or ""
        )
        assert status == 200, data
        assert data is not None
        return str(data["data"]["accessToken"])

    async def login(self, username: str, password: str) -> tuple[int, dict[str, Any] | None]:
        """Log in with the TenancyName header and the tenancyName field; (status, json)."""
        body = {
            "tenancyName": self.emu.tenancy_name,
            "userNameOrEmailAddress": username,
            "password": password,
        }
        headers = {"TenancyName": self.emu.tenancy_name}
        status, data, _ = await self.post(LOGIN, body, headers=headers)
        return status, data

    async def confirmed_otp(self, phone: str) -> dict[str, str]:
        """Send an OTP, read it through the control API and confirm it; the Register fields."""
        status, data, _ = await self.post(OTP, {"phoneNumber": phone})
        assert status == 200, data
        assert data is not None
        otp = {
            "phoneNumber": phone,
            "phoneNumberOtpRequestId": data["data"]["phoneNumberOtpRequestId"],
            "phoneNumberOtp": self.emu.otp(phone) or "",
        }
        status, data, _ = await self.post(OTP, otp)
        assert status == 200, data
        return otp

    async def register(
        self, phone: str, password: str = "secret-pw", email: str | None = None
    ) -> str:
        """Confirm an OTP, register; returns the user token."""
        body = {**await self.confirmed_otp(phone), "password": password}
        if email:
            body["email"] = email
        status, data, _ = await self.post(REGISTER, body)
        assert status == 200, data
        assert data is not None
        return str(data["data"]["accessToken"])


async def sign_up(
    client: VlensClient, emulator: RunningEmulator, phone: str, password: str = "S3cret-pass!"
) -> str:
    """The documented sign-up of a new phone number through the client: existence check, OTP
    (read from the emulator), its confirmation, register. Returns the user's access token."""
    assert not (await client.check_existence(phone_number=phone)).exists
    sent = await client.request_phone_otp(phone)
    assert sent.phone_number_otp_request_id
    otp = emulator.otp(phone)
    assert otp is not None
    confirmed = await client.verify_phone_otp(phone, sent.phone_number_otp_request_id, otp)
    assert confirmed.is_phone_number_confirmed
    registered = await client.register(
        phone, password, otp=otp, otp_request_id=sent.phone_number_otp_request_id
    )
    return registered.access_token


def _json(raw: bytes, resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    if not raw or "json" not in (resp.content_type or ""):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
