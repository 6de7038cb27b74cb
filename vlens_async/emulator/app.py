"""The aiohttp.web application: routes, and the one middleware every API request goes through.

The middleware, in order: count the arrival; add the configured latency; roll the fault dice (a
pre-work fault answers now, without touching state); resolve the tenant from ``ApiKey`` (401);
apply the tenant's rate limit (code 4003 only: 422, or 200 in the ``ok`` failure style; API.md
documents no 429 and no rate-limit header); run the handler; turn refusals into envelopes in the
tenant's failure style; apply a post-work fault (reset, slow, truncated,
malformed); count the outcome. A client that disconnects before its request was read is counted
(``disconnected``) and logged in one line, not with aiohttp's traceback. The control API
(``/_emulator/``) bypasses all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from . import accounts, admin, verify
from .config import EmulatorConfig
from .control import CONTROL_PREFIX, create_control_app
from .endpoints import ENDPOINTS
from .envelopes import ApiFailure, envelope
from .faults import PRE_WORK_FAULTS, FaultKind
from .httpio import ENDPOINT_KEY, STATE_KEY, TENANT_KEY, header_text, json_response, language
from .state import EmulatorState, TenantState

__all__ = ["create_app"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("vlens_async.emulator")

HANDLERS: Final[dict[str, _Handler]] = {
    "login": accounts.login,
    "refresh": accounts.refresh,
    "check_existence": accounts.check_existence,
    "verify_phone": accounts.verify_phone,
    "register": accounts.register,
    "id_front": verify.scan_front,
    "id_back": verify.scan_back,
    "liveness": verify.liveness,
    "link": verify.link_transaction,
    "identity_images": admin.identity_images,
    "step_image": admin.step_image,
}

_PROXY_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_SLOW_PIECES: Final = 8


class _Reset(Exception):
    """The connection was reset on purpose; there is no response to count."""


def _reset_connection(request: web.Request) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed peer would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _pre_work_response(fault: FaultKind, state: EmulatorState) -> web.Response:
    if fault is FaultKind.HTTP_502:
        return web.Response(body=_PROXY_502, status=502, content_type="text/html")
    if fault is FaultKind.HTTP_503:
        return web.Response(status=503)
    if fault is FaultKind.HTTP_429:
        retry_after = str(max(0, math.ceil(state.faults.config.retry_after)))
        body = envelope(error_message="Too many requests; retry later.")
        return json_response(body, status=429, headers={"Retry-After": retry_after})
    body = envelope(error_message="An internal error occurred during your request!")
    return json_response(body, status=500)


async def _post_work_response(
    request: web.Request, response: web.StreamResponse, fault: FaultKind, state: EmulatorState
) -> web.StreamResponse:
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes):
        return response
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    content_type = response.content_type
    if fault is FaultKind.TRUNCATED:
        cut = body[: max(1, len(body) // 2)]
        return web.Response(
            body=cut, status=response.status, headers=headers, content_type=content_type
        )
    if fault is FaultKind.MALFORMED:
        broken = body[:-1] + b",,}" if body.endswith(b"}") else b"{" + body
        return web.Response(
            body=broken, status=response.status, headers=headers, content_type=content_type
        )
    # SLOW: headers now, then the body in pieces over slow_duration.
    slow = web.StreamResponse(status=response.status, headers=headers)
    slow.content_type = content_type
    slow.content_length = len(body)
    await slow.prepare(request)
    step = max(1, math.ceil(len(body) / _SLOW_PIECES))
    pause = state.faults.config.slow_duration / _SLOW_PIECES
    try:
        for start in range(0, len(body), step):
            await asyncio.sleep(pause)
            await slow.write(body[start : start + step])
        await slow.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client gave up waiting, which is what this fault tests
    return slow


def _failure_response(
    request: web.Request, failure: ApiFailure, tenant: TenantState | None
) -> web.Response:
    style = tenant.config.failure_style if tenant is not None else "status"
    return json_response(
        failure.body(language(request)),
        status=failure.http_status(style),
        headers=failure.headers or None,
    )


@web.middleware
async def api_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Counters, latency, faults, ApiKey, rate limit and failure envelopes (see module doc)."""
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    state = request.app[STATE_KEY]
    route_name = request.match_info.route.name
    endpoint = route_name if route_name in ENDPOINTS else "unknown"
    request[ENDPOINT_KEY] = endpoint
    if endpoint != "unknown":  # the rate windows count API calls, not probes of other paths
        state.metrics.arrival()
    try:
        response = await _handle(request, handler, state, endpoint)
    except _Reset:
        state.metrics.response(endpoint, "reset")
        return web.Response(status=499)  # never sent: the connection is gone
    except ConnectionResetError:
        # The client went away while its body was read: nothing to answer, nothing to debug.
        state.metrics.response(endpoint, "disconnected")
        log.info("the client disconnected mid-request (%s)", endpoint)
        return web.Response(status=499)  # never sent either
    state.metrics.response(endpoint, response.status)
    return response


async def _handle(
    request: web.Request, handler: _Handler, state: EmulatorState, endpoint: str
) -> web.StreamResponse:
    fault: FaultKind | None = None
    if endpoint != "unknown":
        delay = state.faults.delay(endpoint)
        if delay > 0:
            await asyncio.sleep(delay)
        fault = state.faults.draw(endpoint)
    if fault is FaultKind.RESET_BEFORE:
        _reset_connection(request)
        raise _Reset
    if fault in PRE_WORK_FAULTS:
        assert fault is not None
        return _pre_work_response(fault, state)
    tenant: TenantState | None = None
    response: web.StreamResponse
    try:
        if endpoint == "unknown":
            routing = request.match_info.http_exception  # 404 or 405 from the router
            status = routing.status if routing is not None else 404
            raise ApiFailure(status, routing.reason if routing is not None else "Not Found")
        tenant = state.tenant_by_key(request.headers.get("ApiKey"))
        if tenant is None:
            raise ApiFailure(401, "A valid ApiKey header is required.")
        request[TENANT_KEY] = tenant
        if tenant.limiter is not None and tenant.limiter.acquire(time.monotonic()) is not None:
            state.metrics.rate_limited += 1
            # API.md: "code 4003 (too many attempts) is the only throttling signal", so no 429
            # and no Retry-After; an injected 429 fault (a proxy's) is another matter.
            raise ApiFailure(
                422, "Too many requests for this tenant; retry later.", error_code=4003
            )
        response = await handler(request)
    except ApiFailure as failure:
        response = _failure_response(request, failure, tenant)
    except web.HTTPException as exc:  # 405 from routing, 413 from reading a huge body
        response = _failure_response(request, ApiFailure(exc.status, exc.reason), tenant)
    request_id = header_text(request, "X-Request-Id")
    if request_id and not response.prepared:
        response.headers["X-Request-Id"] = request_id[:100]
    if fault is FaultKind.RESET_AFTER:
        _reset_connection(request)
        raise _Reset
    if fault is not None:
        return await _post_work_response(request, response, fault, state)
    return response


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    """A Vlens-compatible application for ``config`` (default: :class:`EmulatorConfig()`).

    The state is reachable as ``app[STATE_KEY]`` (:class:`~.state.EmulatorState`).
    """
    config = config if config is not None else EmulatorConfig()
    state = EmulatorState(config)
    app = web.Application(middlewares=[api_middleware], client_max_size=config.max_body_bytes)
    app[STATE_KEY] = state
    for name, (method, path) in ENDPOINTS.items():
        app.router.add_route(method, path, HANDLERS[name], name=name)
    app.add_subapp(CONTROL_PREFIX.rstrip("/"), create_control_app(state))
    app.on_cleanup.append(_close_state)
    return app


async def _close_state(app: web.Application) -> None:
    app[STATE_KEY].close()
