"""The control API under ``/_emulator/`` (loopback only), and its Python twin.

It runs on a developer's machine beside their browser, so besides a loopback peer (else 403) it
asks for what a web page cannot forge: a ``Host`` header naming a loopback host (``localhost``,
``127.0.0.1``, ``[::1]``, any port; else 403, which stops DNS rebinding), no cross-site request
(an ``Origin`` other than the emulator's own, or a ``Sec-Fetch-Site`` other than ``same-origin``
or ``none``: 403), and ``Content-Type: application/json`` on every state-changing request (else
415: a cross-site form or ``text/plain`` POST cannot send it without a CORS preflight, which is
never granted). Every input is validated before anything changes: a bad one is a 4xx with a
reason, and the emulator goes on answering as before. A client that disconnects mid-request
costs one log line.

Routes (JSON in and out):

- ``GET  /_emulator/health``                    ``{"ok": true}``
- ``POST /_emulator/reset``                     forget users, transactions, images, tokens,
  counters; faults and tenant switches back to the configuration
- ``GET  /_emulator/faults``                    the fault and latency specs in force
- ``PUT  /_emulator/faults``                    ``{"faults": "500:0.1,...",
  "latency": ["fixed:50ms"], "seed": 7}`` (all optional; omitted means none); the dice restart
- ``GET  /_emulator/counters``                  requests per endpoint and status, faults, rate
  limited, transactions created, steps per transaction, per-second/minute counts, image store
- ``GET  /_emulator/otp?phone=+20...``          the live OTP of a phone number (404 if none)
- ``GET  /_emulator/otps``                      every OTP
- ``GET  /_emulator/tenant[?name=]``            a tenant's switches
- ``PATCH /_emulator/tenant[?name=]``           change them: ``ntra``, ``cso``, ``failure_style``,
  ``rate_limit``, ``rate_per_second``, ``rate_per_minute``, ``unknown_documents``,
  ``ntra_rejects``, ``cso_rejects``, ``aml_watchlist``
- ``POST /_emulator/clock``                     ``{"advance": 86400}``: move the emulator's clock
  forward (expire tokens and OTPs without sleeping), at most 100 years in all
- ``GET  /_emulator/transactions/{id}``         one transaction's steps (no personal data)
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import attrs
import orjson
from aiohttp import web

from .config import TenantConfig
from .faults import FaultConfig
from .httpio import STATE_KEY, json_response
from .state import EmulatorState

__all__ = [
    "CONTROL_PREFIX",
    "MAX_CLOCK_OFFSET",
    "EmulatorControl",
    "create_control_app",
    "is_loopback_host",
]

log = logging.getLogger("vlens_async.emulator")

CONTROL_PREFIX: Final = "/_emulator/"
# How far the clock may be moved in all: far enough to expire any token, OTP or card, near enough
# that every date stays representable (1e12 s made every API call fail).
MAX_CLOCK_OFFSET: Final = 100 * 365.25 * 86_400.0
MAX_CONTROL_BODY: Final = 64 * 1024  # control bodies are a few switches
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_ORIGIN_FETCH: Final = frozenset({"same-origin", "none"})
_HOST: Final = re.compile(
    r"^(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[^:\[\]/@\s]+))(?::(?P<port>[0-9]{1,5}))?$",
    re.IGNORECASE | re.ASCII,
)
TENANT_SWITCHES: Final = frozenset(
    {
        "ntra",
        "cso",
        "failure_style",
        "rate_limit",
        "rate_per_second",
        "rate_per_minute",
        "unknown_documents",
        "ntra_rejects",
        "cso_rejects",
        "aml_watchlist",
    }
)


def _tenant_view(config: TenantConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "ntra": config.ntra,
        "cso": config.cso,
        "failure_style": config.failure_style,
        "rate_limit": config.rate_limit,
        "rate_per_second": config.rate_per_second,
        "rate_per_minute": config.rate_per_minute,
        "unknown_documents": config.unknown_documents,
        "ntra_rejects": sorted(config.ntra_rejects),
        "cso_rejects": sorted(config.cso_rejects),
        "aml_watchlist": sorted(config.aml_watchlist),
    }


class EmulatorControl:
    """The control operations, callable from Python on the emulator's event loop thread."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def reset(self) -> None:
        """Forget everything that happened; back to the configuration."""
        await self.state.reset()

    def set_faults(
        self,
        faults: str | FaultConfig | None = None,
        latency: str | Sequence[str] = (),
        *,
        seed: int | None = None,
    ) -> dict[str, object]:
        """Replace the injected faults (a spec string or a :class:`FaultConfig`).

        ``ValueError`` for a bad spec, latency or seed; the faults in force stay then.
        """
        if faults is not None and not isinstance(faults, str | FaultConfig):
            raise ValueError("faults must be a fault spec string")
        if not isinstance(latency, str) and not (
            isinstance(latency, Sequence) and all(isinstance(x, str) for x in latency)
        ):
            raise ValueError("latency must be a latency spec string or a list of them")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        config = faults if isinstance(faults, FaultConfig) else FaultConfig.parse(faults, latency)
        self.state.set_faults(config, seed)
        return config.spec()

    def faults(self) -> dict[str, object]:
        """The fault and latency specs in force, and how many of each were injected."""
        out = self.state.faults.config.spec()
        out["seed"] = self.state.faults.seed
        out["injected"] = dict(self.state.faults.injected)
        return out

    def counters(self) -> dict[str, Any]:
        """Every counter (see :meth:`EmulatorState.counters`)."""
        return self.state.counters()

    def otp(self, phone: str, tenant: str | None = None) -> str | None:
        """The live OTP code sent to ``phone``, or ``None`` (none, expired, or dead after too many
        wrong codes)."""
        view = self.state.otp_view(phone, tenant)  # KeyError: unknown tenant
        return None if view is None or view["expired"] or view["dead"] else str(view["otp"])

    def configure_tenant(self, tenant: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change a tenant's switches (see the module docstring for the names)."""
        unknown = set(changes) - TENANT_SWITCHES
        if unknown:
            raise ValueError(f"unknown tenant switch(es): {', '.join(sorted(unknown))}")
        try:
            # The new config is built and validated before it replaces the old one.
            return _tenant_view(self.state.configure_tenant(tenant, **changes))
        except (TypeError, attrs.exceptions.FrozenError) as exc:
            raise ValueError(str(exc)) from None

    def tenant(self, tenant: str | None = None) -> dict[str, Any]:
        """A tenant's switches."""
        return _tenant_view(self.state.tenant(tenant).config)

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward; returns the new offset.

        ``ValueError`` for anything but a finite, non-negative number of seconds that keeps the
        total offset within :data:`MAX_CLOCK_OFFSET` (100 years); nothing changes then.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError("advance must be a number of seconds")
        if not math.isfinite(seconds):
            raise ValueError("advance must be a finite number of seconds")
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        offset = self.state.clock_offset + float(seconds)
        if offset > MAX_CLOCK_OFFSET:
            raise ValueError(
                f"the clock may move at most {MAX_CLOCK_OFFSET:.0f} s (100 years) in all"
            )
        self.state.clock_offset = offset
        return offset

    def transaction(self, transaction_id: str) -> dict[str, Any] | None:
        """One transaction's steps (no personal data), or ``None``."""
        tx = self.state.transactions.get(transaction_id.lower())
        return None if tx is None else tx.summary()


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(remote: str | None) -> bool:
    """Whether the peer is a loopback address, IPv4-mapped ones included."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    # A dual-stack listener reports an IPv4 peer as ::ffff:127.0.0.1, which ipaddress (before
    # Python 3.13) does not call loopback: judge the IPv4 address it carries.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names a loopback host: ``localhost`` or a loopback address
    (``127.0.0.1``, ``[::1]``, ...), with or without a port."""
    if not host:
        return False
    match = _HOST.match(host.strip())
    if match is None:
        return False
    name = match.group("v6") or match.group("name")
    if name.lower() == "localhost":
        return True
    if match.group("name") is not None and ":" in name:
        return False  # an IPv6 address must be bracketed
    return _is_loopback(name)


def _cross_site(request: web.Request, host: str) -> bool:
    """Whether a browser says the request comes from another origin (a web page)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.strip().lower() not in _SAME_ORIGIN_FETCH:
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = {f"{scheme}://{host.strip().lower()}" for scheme in ("http", "https")}
    return origin.strip().lower() not in own  # "null" (a sandboxed page, a file) included


def _refusal(request: web.Request) -> web.Response | None:
    """The answer to a request the control API must not serve, or ``None``."""
    if not _is_loopback(request.remote):
        return json_response({"error": "the control API answers loopback peers only"}, status=403)
    host = request.headers.get("Host")
    if host is None or not is_loopback_host(host):
        return json_response(
            {"error": "the control API answers only to Host localhost, 127.0.0.1 or [::1]"},
            status=403,
        )
    if _cross_site(request, host):
        return json_response(
            {"error": "the control API refuses cross-site requests (Origin, Sec-Fetch-Site)"},
            status=403,
        )
    if request.method not in _SAFE_METHODS and request.content_type != "application/json":
        return json_response(
            {"error": "a state-changing control request needs Content-Type: application/json"},
            status=415,
        )
    return None


@web.middleware
async def loopback_only(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Serve the control API only to loopback, same-origin, JSON requests (see module doc)."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    try:
        return await handler(request)
    except ValueError as exc:
        return json_response({"error": str(exc)}, status=400)
    except ConnectionResetError:
        log.info("control API: the client disconnected mid-request (%s)", request.path)
        return web.Response(status=499)  # never sent: the connection is gone


def _control(request: web.Request) -> EmulatorControl:
    return EmulatorControl(request.app[STATE_KEY])


async def _json(request: web.Request) -> dict[str, Any]:
    declared = request.content_length
    if declared is not None and declared > MAX_CONTROL_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_CONTROL_BODY, actual_size=declared)
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.readany():  # ends: the body is at most the cap
        total += len(chunk)
        if total > MAX_CONTROL_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_CONTROL_BODY, actual_size=total)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


async def _health(_: web.Request) -> web.Response:
    return json_response({"ok": True})


async def _reset(request: web.Request) -> web.Response:
    await _control(request).reset()
    return json_response({"ok": True})


async def _get_faults(request: web.Request) -> web.Response:
    return json_response(_control(request).faults())


async def _put_faults(request: web.Request) -> web.Response:
    body = await _json(request)
    unknown = set(body) - {"faults", "latency", "seed"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    latency = body.get("latency") or ()
    spec = _control(request).set_faults(body.get("faults"), latency, seed=body.get("seed"))
    return json_response(spec)


async def _counters(request: web.Request) -> web.Response:
    return json_response(_control(request).counters())


async def _otp(request: web.Request) -> web.Response:
    phone = request.query.get("phone", "").strip()
    if phone and phone[0].isdigit():
        phone = "+" + phone  # an unencoded '+' arrives as a space
    try:
        view = request.app[STATE_KEY].otp_view(phone, request.query.get("tenant"))
    except KeyError:
        return json_response({"error": "unknown tenant"}, status=404)
    if view is None:
        return json_response({"error": "no OTP was sent to this number"}, status=404)
    return json_response(view)


async def _otps(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    views = [state.otp_view(phone, tenant) for tenant, phone in state.otps]
    return json_response({"otps": views})


async def _get_tenant(request: web.Request) -> web.Response:
    try:
        return json_response(_control(request).tenant(request.query.get("name")))
    except KeyError:
        return json_response({"error": "unknown tenant"}, status=404)


async def _patch_tenant(request: web.Request) -> web.Response:
    body = await _json(request)
    try:
        view = _control(request).configure_tenant(request.query.get("name"), **body)
    except KeyError:
        return json_response({"error": "unknown tenant"}, status=404)
    return json_response(view)


async def _clock(request: web.Request) -> web.Response:
    body = await _json(request)
    if set(body) != {"advance"}:  # {"seconds": ...} would otherwise be a silent no-op
        raise ValueError('the body must be {"advance": SECONDS}')
    offset = _control(request).advance_clock(body["advance"])
    return json_response({"offset": offset, "now": request.app[STATE_KEY].now()})


async def _transaction(request: web.Request) -> web.Response:
    view = _control(request).transaction(request.match_info["transaction_id"])
    if view is None:
        return json_response({"error": "unknown transaction"}, status=404)
    return json_response(view)


def create_control_app(state: EmulatorState) -> web.Application:
    """The sub-application mounted at :data:`CONTROL_PREFIX`."""
    app = web.Application(middlewares=[loopback_only])
    app[STATE_KEY] = state
    app.router.add_get("/health", _health)
    app.router.add_post("/reset", _reset)
    app.router.add_get("/faults", _get_faults)
    app.router.add_put("/faults", _put_faults)
    app.router.add_post("/faults", _put_faults)
    app.router.add_get("/counters", _counters)
    app.router.add_get("/otp", _otp)
    app.router.add_get("/otps", _otps)
    app.router.add_get("/tenant", _get_tenant)
    app.router.add_patch("/tenant", _patch_tenant)
    app.router.add_post("/clock", _clock)
    app.router.add_get("/transactions/{transaction_id}", _transaction)
    return app
