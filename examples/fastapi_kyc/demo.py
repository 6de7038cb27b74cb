"""Routes for trying the app against the emulator only: a test user and a synthetic card.

Never mounted against Vlens (``create_app(..., demo_on=emulator)`` only). A team copying the
example drops this file: its own sign-up gives users their Vlens tokens.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from typing import Final, Literal

from fastapi import APIRouter, Request, Response

from vlens_async import VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.samples import Applicant, make_applicant

__all__ = ["register_test_user", "router"]

SAMPLE_SEED: Final = 1


@functools.cache
def _applicant(seed: int) -> Applicant:
    return make_applicant(seed)


async def register_test_user(
    client: VlensClient,
    emulator: RunningEmulator,
    phone: str | None = None,
    password: str | None = None,
) -> str:
    """Sign a test user up, as the service's sign-up goes: no account for the phone number yet
    (a random new one unless given), an OTP to it (read back from the emulator instead of an
    SMS), confirmed, then registered (with a random password unless given). Returns the user's
    access token."""
    phone = phone or f"+2010{secrets.randbelow(10**8):08d}"
    if (await client.check_existence(phone_number=phone)).exists:
        raise ValueError("an account already uses this phone number: log in instead")
    sent = await client.request_phone_otp(phone)
    request_id = sent.phone_number_otp_request_id or ""
    otp = emulator.otp(phone) or ""
    await client.verify_phone_otp(phone, request_id, otp)
    password = password or secrets.token_urlsafe(12)
    registered = await client.register(phone, password, otp=otp, otp_request_id=request_id)
    return registered.access_token


def router(emulator: RunningEmulator) -> APIRouter:
    """The demo routes for ``emulator``."""
    demo = APIRouter(prefix="/demo", tags=["demo (emulator only)"])

    @demo.get("/info")
    async def info() -> dict[str, str]:
        """Tells the page it runs against the emulator, and where the sample card is."""
        return {
            "service": "emulator",
            "front": "/demo/applicant/front.jpg",
            "back": "/demo/applicant/back.jpg",
        }

    @demo.post("/test-user")
    async def test_user(request: Request) -> dict[str, str]:
        """A new test user's Vlens access token."""
        return {"token": await register_test_user(request.state.client, emulator)}

    @demo.get("/applicant/{side}.jpg")
    async def sample_side(side: Literal["front", "back"]) -> Response:
        """A synthetic applicant's card side: the emulator reads only synthetic cards."""
        applicant = await asyncio.to_thread(_applicant, SAMPLE_SEED)
        data = applicant.front if side == "front" else applicant.back
        return Response(data, media_type="image/jpeg")

    return demo
