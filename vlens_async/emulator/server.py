"""Running the emulator: in the current event loop, in a background thread, or until Ctrl-C.

``async with running_emulator(config) as emu`` serves on 127.0.0.1 (port 0 picks a free port) and
yields a :class:`RunningEmulator`: its ``base_url``, credentials, and the control operations as
methods. ``with emulator_in_thread(config) as emu`` does the same for synchronous code, running its
own event loop in a daemon thread; its methods are thread-safe. With ``config.tls`` (a
server-side SSLContext) either serves HTTPS, and ``base_url`` says so; a client certificate it
refuses gets the TLS alert a real server sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import attrs
from aiohttp import web

from .app import create_app
from .config import REQUESTS_PERMISSION, AdminConfig, EmulatorConfig
from .control import EmulatorControl
from .faults import FaultConfig
from .httpio import STATE_KEY
from .state import EmulatorState

__all__ = [
    "BackgroundEmulator",
    "RunningEmulator",
    "emulator_in_thread",
    "running_emulator",
    "serve_forever",
]

_T = TypeVar("_T")
DEFAULT_SHUTDOWN_TIMEOUT = 2.0
DEFAULT_START_TIMEOUT = 30.0
_JOIN_TIMEOUT = 30.0


# OpenSSL's reasons for refusing a client's certificate on the server side: none was sent, or it
# did not verify (unknown CA, expired, ...). For both it has written an alert for the client.
_CLIENT_CERT_REFUSALS = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED"}
)


class _AlertingSSLObject(ssl.SSLObject):
    """An SSLObject whose refusal of a client certificate reaches the client as a TLS alert.

    asyncio's TLS server (``SSLProtocol._do_handshake``, CPython gh-98078) closes the connection
    on a failed handshake without sending what OpenSSL wrote into the outgoing BIO: the
    ``certificate_required`` (TLS 1.3) or ``handshake_failure`` (TLS 1.2) alert a real server
    sends. The client then sees a bare disconnection, which it retries, instead of the refusal.
    So the refusal is held back once: the handshake says "want read", on which every
    memory-BIO transport sends the outgoing bytes, the alert; it fails with the refusal at the
    next call: the client's next bytes or its close, at once for any client that reads the alert
    (it closes); a client that neither sends nor closes holds its connection until asyncio's
    handshake timeout (60 s), where nginx would close at once. Public API only
    (``SSLContext.sslobject_class``), on the context the emulator serves with; where asyncio
    sends the alert itself (CPython's fix), the hold is all that remains of it.
    """

    _refusal: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        """The handshake, with a refused client certificate reported one call late."""
        if self._refusal is not None:
            raise self._refusal
        try:
            super().do_handshake()
        except ssl.SSLError as exc:
            if exc.reason not in _CLIENT_CERT_REFUSALS:
                raise
            self._refusal = exc
            raise ssl.SSLWantReadError("the alert is sent first") from None


def _send_alerts(context: ssl.SSLContext) -> None:
    # A class the caller set on its own context is left alone (it would be replaced).
    if context.sslobject_class is ssl.SSLObject:
        context.sslobject_class = _AlertingSSLObject


def _admin(config: EmulatorConfig, with_permission: bool) -> AdminConfig | None:
    for admin in config.tenant.admins:
        if (REQUESTS_PERMISSION in admin.permissions) == with_permission:
            return admin
    return None


@attrs.define(repr=False)
class RunningEmulator:
    """A served emulator: where it is, how to authenticate, and its control operations.

    The control methods act directly on the state, so call them from the emulator's event loop
    (in a test, the test's loop). ``reset`` is a coroutine; the others are plain methods.
    """

    app: web.Application
    config: EmulatorConfig
    host: str
    port: int

    def __repr__(self) -> str:
        return f"RunningEmulator(base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, or ``https://`` when served with ``config.tls``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "http" if self.config.tls is None else "https"
        return f"{scheme}://{host}:{self.port}"

    @property
    def state(self) -> EmulatorState:
        """The emulator's state (users, transactions, counters)."""
        return self.app[STATE_KEY]

    @property
    def control(self) -> EmulatorControl:
        """The control operations."""
        return EmulatorControl(self.state)

    @property
    def api_key(self) -> str:
        """The primary tenant's API key."""
        return self.config.tenant.api_key

    @property
    def tenancy_name(self) -> str:
        """The primary tenant's name (``TenancyName`` header of Login)."""
        return self.config.tenant.name

    @property
    def admin_username(self) -> str | None:
        """An admin with the Requests permission."""
        admin = _admin(self.config, True)
        return admin.username if admin else None

    @property
    def admin_password(self) -> str | None:
        """That admin's password."""
        admin = _admin(self.config, True)
        return admin.password if admin else None

    @property
    def viewer_username(self) -> str | None:
        """An admin without the Requests permission (for 403 tests)."""
        admin = _admin(self.config, False)
        return admin.username if admin else None

    @property
    def viewer_password(self) -> str | None:
        """That admin's password."""
        admin = _admin(self.config, False)
        return admin.password if admin else None

    async def reset(self) -> None:
        """Forget users, transactions, images, tokens and counters."""
        await self.control.reset()

    def set_faults(
        self,
        faults: str | FaultConfig | None = None,
        latency: str | Sequence[str] = (),
        *,
        seed: int | None = None,
    ) -> dict[str, object]:
        """Replace the injected faults, e.g. ``set_faults("503:1x2@liveness")``."""
        return self.control.set_faults(faults, latency, seed=seed)

    def counters(self) -> dict[str, Any]:
        """Every counter (requests per endpoint/status, steps, per-second counts, ...)."""
        return self.control.counters()

    def otp(self, phone: str) -> str | None:
        """The live OTP sent to ``phone``."""
        return self.control.otp(phone)

    def configure_tenant(self, tenant: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change tenant switches, e.g. ``configure_tenant(ntra=False, failure_style="ok")``."""
        return self.control.configure_tenant(tenant, **changes)

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward (expire tokens and OTPs)."""
        return self.control.advance_clock(seconds)

    def transaction(self, transaction_id: str) -> dict[str, Any] | None:
        """One transaction's steps, or ``None``."""
        return self.control.transaction(transaction_id)


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator in the running event loop for the duration of the block."""
    config = config if config is not None else EmulatorConfig()
    app = create_app(config)
    # No access log: query strings carry phone numbers and e-mail addresses.
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    if config.tls is not None:
        _send_alerts(config.tls)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=config.tls)
        await site.start()
        bound = runner.addresses[0]
        yield RunningEmulator(app, config, host, int(bound[1]))
    finally:
        await runner.cleanup()
        await app[STATE_KEY].images.clear()  # spilled images (faces, ID cards) outlive nothing


class BackgroundEmulator:
    """An emulator served by its own event loop in a daemon thread (for synchronous code).

    Every method is thread-safe: it runs on the emulator's loop and waits for the result.
    """

    def __init__(self, running: RunningEmulator, loop: asyncio.AbstractEventLoop) -> None:
        self._running = running
        self._loop = loop

    def __repr__(self) -> str:
        return f"BackgroundEmulator(base_url={self.base_url!r})"

    def _call(self, fn: Callable[[], _T]) -> _T:
        async def run() -> _T:
            return fn()

        return self._run(run())

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``config.tls``)."""
        return self._running.base_url

    @property
    def api_key(self) -> str:
        """The primary tenant's API key."""
        return self._running.api_key

    @property
    def tenancy_name(self) -> str:
        """The primary tenant's name."""
        return self._running.tenancy_name

    @property
    def admin_username(self) -> str | None:
        """An admin with the Requests permission."""
        return self._running.admin_username

    @property
    def admin_password(self) -> str | None:
        """That admin's password."""
        return self._running.admin_password

    @property
    def viewer_username(self) -> str | None:
        """An admin without the Requests permission."""
        return self._running.viewer_username

    @property
    def viewer_password(self) -> str | None:
        """That admin's password."""
        return self._running.viewer_password

    @property
    def config(self) -> EmulatorConfig:
        """The configuration it was started with."""
        return self._running.config

    def reset(self) -> None:
        """Forget users, transactions, images, tokens and counters."""
        self._run(self._running.reset())

    def set_faults(
        self,
        faults: str | FaultConfig | None = None,
        latency: str | Sequence[str] = (),
        *,
        seed: int | None = None,
    ) -> dict[str, object]:
        """Replace the injected faults."""
        return self._call(lambda: self._running.set_faults(faults, latency, seed=seed))

    def counters(self) -> dict[str, Any]:
        """Every counter."""
        return self._call(self._running.counters)

    def otp(self, phone: str) -> str | None:
        """The live OTP sent to ``phone``."""
        return self._call(lambda: self._running.otp(phone))

    def configure_tenant(self, tenant: str | None = None, **changes: Any) -> dict[str, Any]:
        """Change tenant switches."""
        return self._call(lambda: self._running.configure_tenant(tenant, **changes))

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward."""
        return self._call(lambda: self._running.advance_clock(seconds))

    def transaction(self, transaction_id: str) -> dict[str, Any] | None:
        """One transaction's steps, or ``None``."""
        return self._call(lambda: self._running.transaction(transaction_id))


class _ThreadStart:
    """What the emulator thread and its starter share, and how the starter gives up on it.

    ``abandon`` and the task are guarded by one lock so that giving up works at any moment: before
    the thread's loop exists (``main`` then returns at once), or while the server is starting or
    serving (the task is cancelled, which runs the server's cleanup and ends the loop).
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.emulator: BackgroundEmulator | None = None
        self.error: BaseException | None = None

    def adopt(self, task: asyncio.Task[Any]) -> asyncio.Event | None:
        """Called on the thread's loop: record it and return the stop event; ``None`` when the
        starter already gave up."""
        with self.lock:
            if self.abandoned:
                return None
            self.task, self.loop, self.stop = task, task.get_loop(), asyncio.Event()
            return self.stop

    def request_stop(self) -> None:
        """Called by the starter at the end of the ``with`` block: a graceful stop."""
        with self.lock:
            if self.loop is not None and self.stop is not None:
                self.loop.call_soon_threadsafe(self.stop.set)

    def abandon(self) -> None:
        """Called by the starter: stop the thread whatever it is doing."""
        with self.lock:
            self.abandoned = True
            if self.task is not None and self.loop is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)


@contextlib.contextmanager
def emulator_in_thread(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    start_timeout: float = DEFAULT_START_TIMEOUT,
) -> Iterator[BackgroundEmulator]:
    """Serve the emulator from a background thread for the duration of the ``with`` block.

    ``RuntimeError`` when it fails or does not start within ``start_timeout`` seconds; the thread
    is stopped and joined before that is raised.
    """
    start = _ThreadStart()

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        stop = start.adopt(task)
        if stop is None:
            return
        try:
            async with running_emulator(config, host=host, port=port) as running:
                start.emulator = BackgroundEmulator(running, task.get_loop())
                start.started.set()
                await stop.wait()
        except BaseException as exc:
            start.error = exc
            start.started.set()
            raise

    def target() -> None:
        with contextlib.suppress(BaseException):
            asyncio.run(main())

    thread = threading.Thread(target=target, name="vlens-emulator", daemon=True)
    thread.start()
    start.started.wait(timeout=start_timeout)
    if start.error is not None or start.emulator is None:
        # Not started (yet): stop it, and wait for the thread, so nothing is left serving.
        start.abandon()
        thread.join(timeout=_JOIN_TIMEOUT)
        if start.error is not None and not isinstance(start.error, asyncio.CancelledError):
            raise RuntimeError("the emulator failed to start") from start.error
        raise RuntimeError(f"the emulator did not start within {start_timeout:g} s")
    try:
        yield start.emulator
    finally:
        start.request_stop()
        thread.join(timeout=_JOIN_TIMEOUT)


async def serve_forever(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[RunningEmulator], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (the ``vlens emulator`` command)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running_emulator(config, host=host, port=port) as running:
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
