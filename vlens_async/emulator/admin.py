"""Admin endpoints: GetUserDigitalIdentityImages and GetStepImage.

Both need an admin token with the ``Requests`` permission: no token or a bad one is a 401, any
other token (an admin without the permission, an end user) a 403.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from .config import REQUESTS_PERMISSION
from .envelopes import ApiFailure, envelope
from .httpio import STATE_KEY, TENANT_KEY, json_response, require_principal
from .state import EmulatorState

__all__ = ["identity_images", "step_image"]

_IMAGE_KEYS = (
    "idFrontImage",
    "idBackImage",
    "livenessImage",
    "livenessFace01Image",
    "livenessFace02Image",
    "livenessFace03Image",
)


def _require_admin(request: web.Request, state: EmulatorState) -> None:
    principal = require_principal(request, state)
    if principal.kind != "admin" or REQUESTS_PERMISSION not in principal.permissions:
        raise ApiFailure(403, "This token lacks the Requests permission.")


def _query(request: web.Request, name: str) -> str | None:
    # ASP.NET binds query parameters case-insensitively; so do we.
    wanted = name.lower()
    for key, value in request.query.items():
        if key.lower() == wanted and value.strip():
            return value.strip()
    return None


async def identity_images(request: web.Request) -> web.Response:
    """GET /api/DigitalIdentity/GetUserDigitalIdentityImages?emailOrPhoneNumber=..."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    _require_admin(request, state)
    who = _query(request, "emailOrPhoneNumber")
    if who is None:
        raise ApiFailure(400, "'emailOrPhoneNumber' is required.")
    if who[0].isdigit() and "+" in request.rel_url.raw_query_string:
        who = "+" + who  # an unencoded '+' arrives as a space, which strip() removed
    user = state.find_user(tenant.name, phone=who, email=who)
    if user is None:
        raise ApiFailure(404, "User not found.")
    tx = state.latest_transaction(user)
    files: dict[str, str] = {}
    if tx is not None:
        for record in tx.steps.values():
            files.update(record.files)
    data = {key: files.get(key) for key in _IMAGE_KEYS}
    return json_response(envelope(data=data))


async def step_image(request: web.Request) -> web.Response:
    """GET /api/DigitalIdentity/GetStepImage?TransactionId=...&FileName=..."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    _require_admin(request, state)
    tx_id, name = _query(request, "TransactionId"), _query(request, "FileName")
    if tx_id is None or name is None:
        raise ApiFailure(400, "'TransactionId' and 'FileName' are required.")
    tx = state.transaction(tx_id.lower(), tenant.name)
    if tx is None:
        raise ApiFailure(404, "Transaction not found.")
    if name not in {n for r in tx.steps.values() for n in r.files.values()}:
        raise ApiFailure(404, "No such file in this transaction.")
    b64 = await state.images.get(tx.id, name)
    if b64 is None:
        raise ApiFailure(
            404, "The image is no longer stored (evicted by the emulator's image cap)."
        )
    # A stored image is megabytes of base64: build the JSON off the loop.
    body = await asyncio.to_thread(
        lambda: orjson.dumps(envelope(data={"image": b64.decode("ascii")}))
    )
    return web.Response(body=body, content_type="application/json")
