"""HTTP plumbing shared by the handlers: typed app/request keys, JSON in and out, auth lookups."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson
from aiohttp import web

from .envelopes import ApiFailure
from .payload import PayloadError, parse_body
from .state import EmulatorState, Principal, TenantState

__all__ = [
    "ENDPOINT_KEY",
    "STATE_KEY",
    "TENANT_KEY",
    "bearer_principal",
    "header_text",
    "json_response",
    "language",
    "read_body",
    "read_json",
    "require_principal",
]

STATE_KEY: Final = web.AppKey("vlens_emulator_state", EmulatorState)
TENANT_KEY: Final = web.RequestKey("vlens_emulator_tenant", TenantState)
ENDPOINT_KEY: Final = web.RequestKey("vlens_emulator_endpoint", str)

_SMALL_BODY: Final = 64 * 1024  # parsed on the loop below this size, in a thread above it


def json_response(
    obj: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def header_text(request: web.Request, name: str) -> str | None:
    """A header's value when it is text we can echo: ``None`` when missing or not UTF-8.

    aiohttp hands a header of other bytes over with surrogate escapes, which neither a response
    header nor a JSON body can carry.
    """
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def language(request: web.Request) -> str | None:
    """The language asked for: the SDKs send ``Accept_Language`` (underscore, sic)."""
    value = request.headers.get("Accept_Language") or request.headers.get("Accept-Language")
    return value.strip()[:2].lower() if value else None


async def read_body(request: web.Request) -> bytes:
    """The whole request body, at most ``client_max_size`` bytes (413 beyond).

    Collects the stream's chunks and joins them once: ``request.read()`` grows a bytearray chunk by
    chunk and copies it again at the end, which costs more than the rest of a liveness request.
    """
    limit = request.app[STATE_KEY].config.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiFailure(413, f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise ApiFailure(413, f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (big bodies parsed in a thread); 400 when it is not one."""
    body = await read_body(request)
    try:
        if len(body) > _SMALL_BODY:
            return await asyncio.to_thread(parse_body, body)
        return parse_body(body)
    except PayloadError as exc:
        raise ApiFailure(exc.status, exc.message) from None


def bearer_principal(request: web.Request, state: EmulatorState) -> Principal | None:
    """The principal of the request's bearer token; ``None`` without one; 401 when invalid."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiFailure(401, "The Authorization header must be 'Bearer <token>'.")
    principal = state.principal_for(token.strip(), request[TENANT_KEY].name)
    if principal is None:
        raise ApiFailure(401, "The access token is invalid or has expired.")
    return principal


def require_principal(request: web.Request, state: EmulatorState) -> Principal:
    """Like :func:`bearer_principal` but a missing token is a 401 too."""
    principal = bearer_principal(request, state)
    if principal is None:
        raise ApiFailure(401, "An access token is required (Authorization: Bearer <token>).")
    return principal
