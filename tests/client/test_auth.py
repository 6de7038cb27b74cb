"""Credentials: static tokens, admin login with refresh, rotation, 401 renewal, single-flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers.client import (
    API_KEY,
    BASE,
    FRONT_URL,
    LOGIN_URL,
    OK_ENVELOPE,
    REFRESH_URL,
    body_of,
    mock_api,
    reply,
    tokens_envelope,
)
from vlens_async import errors
from vlens_async.auth import AdminLogin, AuthProvider, StaticToken
from vlens_async.client import VlensClient
from vlens_async.config import Timeouts
from vlens_async.models import Tokens


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeAPI:
    """Token endpoints that count calls, pause on demand, and rotate refresh tokens."""

    def __init__(self, lifetime: int = 3600) -> None:
        self.lifetime = lifetime
        self.logins = 0
        self.refreshes: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse_refresh = False
        self.refuse_login = False
        self.login_starts = 0

    async def login(
        self, username_or_email: str, password: str, *, tenancy_name: str | None = None
    ) -> Tokens:
        self.login_starts += 1
        await self.gate.wait()
        self.logins += 1
        if self.refuse_login:
            raise errors.AuthenticationError("wrong password", status=401)
        return Tokens(
            access_token=f"access-L{self.logins}",
            expire_in_seconds=self.lifetime,
            refresh_token=f"refresh-L{self.logins}",
        )

    async def refresh_token(self, refresh_token: str) -> Tokens:
        await self.gate.wait()
        self.refreshes.append(refresh_token)
        if self.refuse_refresh:
            raise errors.AuthenticationError("refresh token revoked", status=401)
        n = len(self.refreshes)
        return Tokens(
            access_token=f"access-R{n}",
            expire_in_seconds=self.lifetime,
            refresh_token=refresh_token,
            new_refresh_token=f"refresh-R{n}",
        )


def admin(clock: FakeClock | None = None) -> AdminLogin:
    """Admin credentials with a fake clock."""
    return AdminLogin("acme", "admin@acme.example", "s3cret-pass", clock=clock or FakeClock())


async def test_static_token_is_sent_and_never_renewed() -> None:
    """StaticToken returns its token and declines to renew after a 401."""
    auth = StaticToken("user-token")
    api = FakeAPI()
    assert await auth.get_token(api) == "user-token"
    assert await auth.on_unauthorized(api, "user-token") is False
    assert "user-token" not in repr(auth)
    assert isinstance(auth, AuthProvider)


def test_static_token_must_not_be_empty() -> None:
    """An empty token is a configuration error."""
    with pytest.raises(errors.ConfigurationError):
        StaticToken("")


async def test_admin_login_is_lazy_and_cached() -> None:
    """Nothing happens until a token is needed; then one login serves many calls."""
    api, auth = FakeAPI(), admin()
    assert api.logins == 0
    assert await auth.get_token(api) == "access-L1"
    assert await auth.get_token(api) == "access-L1"
    assert api.logins == 1
    assert auth.logins == 1


async def test_hundred_concurrent_calls_cause_exactly_one_login() -> None:
    """100 tasks needing a token at once share one login (single-flight)."""
    api, auth = FakeAPI(), admin()
    api.gate.clear()
    tasks = [asyncio.create_task(auth.get_token(api)) for _ in range(100)]
    await asyncio.sleep(0)
    api.gate.set()
    tokens = await asyncio.gather(*tasks)
    assert set(tokens) == {"access-L1"}
    assert api.logins == 1
    assert api.refreshes == []


async def test_hundred_concurrent_calls_after_expiry_cause_exactly_one_refresh() -> None:
    """When the token is near expiry, 100 concurrent callers trigger one refresh, no login."""
    clock = FakeClock()
    api, auth = FakeAPI(lifetime=3600), admin(clock)
    await auth.get_token(api)
    clock.now += 3600 - 30  # inside the renewal margin
    api.gate.clear()
    tasks = [asyncio.create_task(auth.get_token(api)) for _ in range(100)]
    await asyncio.sleep(0)
    api.gate.set()
    tokens = await asyncio.gather(*tasks)
    assert set(tokens) == {"access-R1"}
    assert api.logins == 1
    assert api.refreshes == ["refresh-L1"]


async def test_refresh_follows_rotation() -> None:
    """Each refresh uses the refresh token the previous one returned."""
    clock = FakeClock()
    api, auth = FakeAPI(lifetime=100), admin(clock)
    await auth.get_token(api)
    for _ in range(3):
        clock.now += 100
        await auth.get_token(api)
    assert api.refreshes == ["refresh-L1", "refresh-R1", "refresh-R2"]
    assert auth.refreshes == 3


async def test_refused_refresh_falls_back_to_login() -> None:
    """A refresh token the server refuses leads to a fresh login, not an error."""
    clock = FakeClock()
    api, auth = FakeAPI(lifetime=100), admin(clock)
    await auth.get_token(api)
    clock.now += 100
    api.refuse_refresh = True
    assert await auth.get_token(api) == "access-L2"
    assert api.logins == 2


async def test_expired_refresh_token_goes_straight_to_login() -> None:
    """After the refresh token's own lifetime, renewal is a login."""
    clock = FakeClock()
    api, auth = FakeAPI(lifetime=100), admin(clock)
    await auth.get_token(api)
    clock.now += 604_800
    assert await auth.get_token(api) == "access-L2"
    assert api.refreshes == []


async def test_unauthorized_renews_once_for_many_rejected_callers() -> None:
    """Many calls rejected with the same token cause one renewal; later ones just retry."""
    api, auth = FakeAPI(), admin()
    token = await auth.get_token(api)
    results = await asyncio.gather(*(auth.on_unauthorized(api, token) for _ in range(20)))
    assert all(results)
    assert len(api.refreshes) == 1
    assert await auth.get_token(api) == "access-R1"


async def test_cancelled_login_lets_the_next_caller_try() -> None:
    """Cancelling the only caller of a login leaves it running; the next caller gets its token."""
    api, auth = FakeAPI(), admin()
    api.gate.clear()
    first = asyncio.create_task(auth.get_token(api))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    api.gate.set()
    assert await auth.get_token(api) == "access-L1"
    assert api.login_starts == 1  # the cancelled caller's login went on; none was started again


async def test_failed_login_is_shared_by_every_waiting_caller() -> None:
    """A refused login is one attempt: all 20 callers waiting for it get its error.

    Otherwise each waiter would log in again in turn, and a wrong password would cost 20 attempts
    (and perhaps the account, where the server locks it after a few).
    """
    api, auth = FakeAPI(), admin()
    api.refuse_login = True
    api.gate.clear()
    waiting = [asyncio.create_task(auth.get_token(api)) for _ in range(20)]
    await asyncio.sleep(0)
    api.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, errors.AuthenticationError) for r in results)
    assert api.logins == 1
    api.refuse_login = False
    assert await auth.get_token(api) == "access-L2"  # a later call tries afresh


async def test_caller_giving_up_does_not_cancel_the_shared_login() -> None:
    """A waiter that stops waiting (cancelled, or out of time) leaves the login to the others."""
    api, auth = FakeAPI(), admin()
    api.gate.clear()
    quitter = asyncio.create_task(auth.get_token(api))
    stayer = asyncio.create_task(auth.get_token(api))
    await asyncio.sleep(0)
    quitter.cancel()
    api.gate.set()
    assert await stayer == "access-L1"
    assert quitter.cancelled()
    assert api.login_starts == 1  # the stayer did not have to start another


async def test_nonsense_lifetime_does_not_renew_on_every_call() -> None:
    """A zero or negative expireInSeconds falls back to the documented lifetime."""
    for lifetime in (0, -5):
        api, auth = FakeAPI(lifetime=lifetime), admin()
        for _ in range(3):
            assert await auth.get_token(api) == "access-L1"
        assert api.logins == 1


def test_admin_login_repr_hides_credentials() -> None:
    """Neither the user name (often an e-mail) nor the password shows in repr."""
    text = repr(admin())
    assert "s3cret-pass" not in text
    assert "admin@acme.example" not in text
    assert "acme" in text


# --- with the client ---


async def test_client_logs_in_then_sends_the_bearer(no_backoff: None) -> None:
    """AdminLogin on a client: Login (with TenancyName, no Bearer), then the call with Bearer."""
    with mock_api() as mock:
        mock.post(LOGIN_URL, payload=tokens_envelope("admin-access-1", "admin-refresh-1"))
        mock.post(FRONT_URL, payload=OK_ENVELOPE)
        async with VlensClient(
            API_KEY, base_url=BASE, auth=admin(), tenancy_name="acme", prepare_images=False
        ) as client:
            await client.scan_id_front(b"img")
        login_call = next(v for k, v in mock.requests.items() if k[1].path.endswith("Login"))[0]
        front_call = next(v for k, v in mock.requests.items() if k[1].path.endswith("front"))[0]
    assert body_of(login_call) == {
        "tenancyName": "acme",
        "userNameOrEmailAddress": "admin@acme.example",
        "password": "s3cret-pass",
    }
    assert login_call.kwargs["headers"]["TenancyName"] == "acme"
    assert "Authorization" not in login_call.kwargs["headers"]
    assert front_call.kwargs["headers"]["Authorization"] == "Bearer admin-access-1"


async def test_client_renews_once_on_401_and_retries(no_backoff: None) -> None:
    """A 401 with AdminLogin: refresh, then the same call again with the new token (same id)."""
    seen: list[tuple[str, str]] = []

    def front(url: Any, **kwargs: Any) -> Any:
        headers = kwargs["headers"]
        seen.append((headers["Authorization"], headers["X-Request-Id"]))
        if len(seen) == 1:
            return reply(401, {"error_code": None, "error_message": "token expired"})
        return reply(200, OK_ENVELOPE)

    with mock_api() as mock:
        mock.post(LOGIN_URL, payload=tokens_envelope("access-1", "refresh-1"))
        mock.post(
            REFRESH_URL,
            payload=tokens_envelope("access-2", "refresh-1", newRefreshToken="refresh-2"),
        )
        mock.post(FRONT_URL, callback=front, repeat=True)
        async with VlensClient(
            API_KEY, base_url=BASE, auth=admin(), tenancy_name="acme", prepare_images=False
        ) as client:
            await client.scan_id_front(b"img")
        refresh_call = next(v for k, v in mock.requests.items() if k[1].path.endswith("Token"))[0]
    assert body_of(refresh_call) == {"refreshToken": "refresh-1"}
    assert [auth for auth, _ in seen] == ["Bearer access-1", "Bearer access-2"]
    assert seen[0][1] == seen[1][1]


async def test_client_401_twice_raises(no_backoff: None) -> None:
    """If the renewed token is refused too, the AuthenticationError is raised (no loop)."""
    with mock_api() as mock:
        mock.post(LOGIN_URL, payload=tokens_envelope("a1", "r1"), repeat=True)
        mock.post(REFRESH_URL, payload=tokens_envelope("a2", "r2"), repeat=True)
        mock.post(FRONT_URL, status=401, payload={"error_code": None}, repeat=True)
        async with VlensClient(
            API_KEY, base_url=BASE, auth=admin(), tenancy_name="acme", prepare_images=False
        ) as client:
            with pytest.raises(errors.AuthenticationError):
                await client.scan_id_front(b"img")
        fronts = next(v for k, v in mock.requests.items() if k[1].path.endswith("front"))
    assert len(fronts) == 2


async def test_static_token_401_is_final(no_backoff: None) -> None:
    """With a static token a 401 is raised after one attempt."""
    with mock_api() as mock:
        mock.post(FRONT_URL, status=401, body=b"", repeat=True)
        async with VlensClient(
            API_KEY, base_url=BASE, access_token="user-tok", prepare_images=False
        ) as client:
            with pytest.raises(errors.AuthenticationError):
                await client.scan_id_front(b"img")
        assert sum(len(v) for v in mock.requests.values()) == 1


async def test_failed_login_raises_authentication_error(no_backoff: None) -> None:
    """Wrong admin credentials surface as AuthenticationError from the call that needed them."""
    with mock_api() as mock:
        mock.post(LOGIN_URL, status=401, payload={"error_code": None, "error_message": "bad"})
        async with VlensClient(
            API_KEY, base_url=BASE, auth=admin(), tenancy_name="acme", prepare_images=False
        ) as client:
            with pytest.raises(errors.AuthenticationError):
                await client.scan_id_front(b"img")


async def test_deadline_covers_waiting_for_credentials(no_backoff: None) -> None:
    """A call's deadline also bounds the wait for a token (a login stuck behind a slow server)."""

    class Stuck:
        async def get_token(self, api: Any) -> str | None:
            await asyncio.Event().wait()
            return None  # pragma: no cover - never reached

        async def on_unauthorized(self, api: Any, rejected: str | None) -> bool:
            return False  # pragma: no cover - no call is ever sent

    async with VlensClient(API_KEY, base_url=BASE, auth=Stuck(), prepare_images=False) as client:
        call = client.scan_id_front(b"img", timeouts=Timeouts(deadline=0.2))
        with pytest.raises(errors.APITimeoutError, match="renewing credentials") as info:
            await asyncio.wait_for(call, 10)  # a builtin TimeoutError here would fail the test
    assert info.value.path is not None
    assert info.value.path.endswith("front")
    assert info.value.__cause__ is None


async def test_hundred_concurrent_client_calls_one_login(no_backoff: None) -> None:
    """100 concurrent scans on a fresh AdminLogin client make exactly one Login request."""
    with mock_api() as mock:
        mock.post(LOGIN_URL, payload=tokens_envelope("a1", "r1"), repeat=True)
        mock.post(FRONT_URL, payload=OK_ENVELOPE, repeat=True)
        auth = admin()
        async with VlensClient(
            API_KEY, base_url=BASE, auth=auth, tenancy_name="acme", prepare_images=False
        ) as client:
            await asyncio.gather(*(client.scan_id_front(b"img") for _ in range(100)))
        logins = next(v for k, v in mock.requests.items() if k[1].path.endswith("Login"))
    assert len(logins) == 1
    assert auth.logins == 1


async def test_refresh_lost_on_the_way_falls_back_to_login() -> None:
    """A refresh that fails for any API reason (503, reset) is not retried: a login replaces it."""
    clock = FakeClock()
    api, auth = FakeAPI(lifetime=100), admin(clock)
    await auth.get_token(api)
    clock.now += 100

    async def lost(refresh_token: str) -> Tokens:
        api.refreshes.append(refresh_token)
        raise errors.APIConnectionError("reset after sending")

    api.refresh_token = lost  # type: ignore[method-assign]
    assert await auth.get_token(api) == "access-L2"
    assert (api.refreshes, api.logins) == (["refresh-L1"], 2)


def test_one_admin_login_serves_clients_in_two_event_loops() -> None:
    """One AdminLogin used by clients in two successive asyncio.run() calls, contended in each."""
    clock = FakeClock()
    auth = AdminLogin("acme", "admin@acme.example", "s3cret-pass", clock=clock)

    def slow(payload: dict[str, Any]) -> Any:
        async def answer(url: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)  # yield, so the other calls queue on the lock meanwhile
            return reply(payload=payload)

        return answer

    async def burst() -> None:
        with mock_api() as mock:
            mock.post(LOGIN_URL, callback=slow(tokens_envelope("a1", "r1", expireInSeconds=100)))
            mock.post(REFRESH_URL, callback=slow(tokens_envelope("a2", "r1", expireInSeconds=100)))
            mock.post(FRONT_URL, payload=OK_ENVELOPE, repeat=True)
            async with VlensClient(
                API_KEY, base_url=BASE, auth=auth, tenancy_name="acme", prepare_images=False
            ) as client:
                await asyncio.gather(*(client.scan_id_front(b"img") for _ in range(5)))

    asyncio.run(burst())
    clock.now += 100  # the token is stale: the second loop renews it under the lock again
    asyncio.run(burst())
    assert (auth.logins, auth.refreshes) == (1, 1)
