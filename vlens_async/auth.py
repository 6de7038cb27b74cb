"""Credentials: where the ``Authorization: Bearer`` token of a call comes from.

- :class:`StaticToken`: a token you already hold (an end user's, from ``Register`` or your app's
  own login). A 401 is final: there is nothing to refresh it with.
- :class:`AdminLogin`: tenant admin credentials. Logs in lazily on first use, renews the access
  token shortly before it expires (with the refresh token, falling back to a fresh login), follows
  refresh-token rotation, and renews once more when the server answers 401 anyway.

Renewal is single-flight: however many calls find the token stale at once, one login or refresh
goes out, as a task of its own, and every caller waits for that task and gets its outcome, a
failure included (so a wrong password costs one login attempt, not one per waiting call). A
caller that is cancelled, or whose deadline passes, stops waiting; the renewal goes on for the
others. The task belongs to the running event loop (a new loop starts its own), so one
:class:`AdminLogin` can serve clients in successive ``asyncio.run()`` calls.

Providers talk to the API through :class:`TokenEndpoints` (the client passes itself), so this
module does not depend on the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import attrs

from .config import (
    DEFAULT_ACCESS_TOKEN_LIFETIME,
    DEFAULT_REFRESH_TOKEN_LIFETIME,
    DEFAULT_TOKEN_REFRESH_MARGIN,
    check_header_value,
)
from .errors import APIError, ConfigurationError
from .models import Tokens

__all__ = ["AdminLogin", "AuthProvider", "StaticToken", "TokenEndpoints"]


class TokenEndpoints(Protocol):
    """The two API calls an :class:`AuthProvider` may need (``VlensClient`` provides them)."""

    async def login(
        self, username_or_email: str, password: str, *, tenancy_name: str | None = None
    ) -> Tokens:
        """``POST /api/credentials/Login``."""
        ...

    async def refresh_token(self, refresh_token: str) -> Tokens:
        """``POST /api/credentials/RefreshToken``."""
        ...


@runtime_checkable
class AuthProvider(Protocol):
    """Supplies bearer tokens to a client. Implement it to plug in your own token source."""

    async def get_token(self, api: TokenEndpoints) -> str | None:
        """The token for the next call (``None`` to send no ``Authorization`` header)."""
        ...

    async def on_unauthorized(self, api: TokenEndpoints, rejected: str | None) -> bool:
        """The server refused ``rejected`` with a 401: renew and return True to retry once."""
        ...


@attrs.frozen
class StaticToken:
    """A bearer token you already hold; it is sent as is and never renewed."""

    token: str = attrs.field(repr=lambda _: "'<redacted>'")

    def __attrs_post_init__(self) -> None:
        if not self.token:
            raise ConfigurationError("the access token is empty")
        check_header_value(self.token, "the access token")

    async def get_token(self, api: TokenEndpoints) -> str | None:
        """Return the token."""
        return self.token

    async def on_unauthorized(self, api: TokenEndpoints, rejected: str | None) -> bool:
        """A static token cannot be renewed: the 401 stands."""
        return False


def _retrieve(task: asyncio.Task[None]) -> None:
    # Every waiter may have given up; the failure must not be logged as never retrieved.
    if not task.cancelled():
        task.exception()


def _lifetime(given: int | None, default: float) -> float:
    # Missing, zero or negative (a server's bug) would renew before every call: use the default.
    return float(given) if given is not None and given > 0 else float(default)


def _margin(lifetime: float, configured: float) -> float:
    # Renew ``configured`` seconds early, but never more than a tenth of the lifetime, so a
    # short-lived token (an emulator's 30 s, say) is still used rather than renewed every call.
    return min(configured, lifetime / 10)


@attrs.define(repr=False)
class AdminLogin:
    """Tenant admin credentials: lazy login, renewal before expiry and on 401, single-flight.

    ``refresh_margin`` is how many seconds before expiry the access token is renewed; ``clock`` is
    a monotonic clock in seconds (tests pass a fake one). The password and user name never appear
    in ``repr``.
    """

    tenancy_name: str
    username_or_email: str
    password: str
    refresh_margin: float = DEFAULT_TOKEN_REFRESH_MARGIN
    clock: Callable[[], float] = time.monotonic
    _access: str | None = attrs.field(default=None, init=False)
    _access_renew_at: float = attrs.field(default=0.0, init=False)
    _refresh: str | None = attrs.field(default=None, init=False)
    _refresh_expires_at: float = attrs.field(default=0.0, init=False)
    # The renewal in flight, if any: a task of the loop that started it.
    _renewal: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    logins: int = attrs.field(default=0, init=False)
    refreshes: int = attrs.field(default=0, init=False)

    def __repr__(self) -> str:
        return (
            f"AdminLogin(tenancy_name={self.tenancy_name!r}, username_or_email='<redacted>', "
            f"password='<redacted>', logged_in={self._access is not None})"
        )

    def _fresh(self) -> bool:
        return self._access is not None and self.clock() < self._access_renew_at

    async def get_token(self, api: TokenEndpoints) -> str | None:
        """A valid access token, logging in or refreshing first when needed (single-flight)."""
        if not self._fresh():
            await self._join_renewal(api)
        return self._access

    async def on_unauthorized(self, api: TokenEndpoints, rejected: str | None) -> bool:
        """Renew after a 401, unless another task already replaced the rejected token."""
        if self._in_flight() is None and self._access is not None and self._access != rejected:
            return True
        if self._in_flight() is None:
            self._access = None
        await self._join_renewal(api)
        return True

    def _in_flight(self) -> asyncio.Task[None] | None:
        task = self._renewal
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    async def _join_renewal(self, api: TokenEndpoints) -> None:
        task = self._in_flight()
        if task is None:
            task = asyncio.get_running_loop().create_task(self._renew(api))
            task.add_done_callback(_retrieve)
            self._renewal = task
        # The shield keeps one caller's cancellation (or deadline) from cancelling the renewal
        # every other caller is waiting for.
        await asyncio.shield(task)

    async def _renew(self, api: TokenEndpoints) -> None:
        now = self.clock()
        if self._refresh is not None and now < self._refresh_expires_at:
            try:
                tokens = await api.refresh_token(self._refresh)
            except APIError:
                # Refused (expired, revoked, already rotated), or the reply was lost: a refresh is
                # not retried (the server may have rotated the token already), so log in again.
                self._refresh = None
            else:
                self.refreshes += 1
                self._store(tokens, now)
                return
        tokens = await api.login(
            self.username_or_email, self.password, tenancy_name=self.tenancy_name
        )
        self.logins += 1
        # A fresh login starts a new session: a refresh token of the old one is not kept.
        self._refresh = None
        self._store(tokens, now)

    def _store(self, tokens: Tokens, now: float) -> None:
        lifetime = _lifetime(tokens.expire_in_seconds, DEFAULT_ACCESS_TOKEN_LIFETIME)
        self._access = tokens.access_token
        self._access_renew_at = now + lifetime - _margin(lifetime, self.refresh_margin)
        rotated = tokens.current_refresh_token
        if rotated:
            # Rotation: the server may hand out a new refresh token and void the old one.
            refresh_life = _lifetime(
                tokens.refresh_token_expire_in_seconds, DEFAULT_REFRESH_TOKEN_LIFETIME
            )
            if rotated != self._refresh or tokens.refresh_token_expire_in_seconds:
                self._refresh_expires_at = now + refresh_life - _margin(refresh_life, 60.0)
            self._refresh = rotated
