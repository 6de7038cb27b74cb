"""A forward proxy on 127.0.0.1 for the tests: ``CONNECT`` tunnels (asyncio streams) to loopback
only, each one recorded with the bytes it carried; with ``credentials`` it answers 407 to a
``CONNECT`` without the right ``Proxy-Authorization``; with ``tls`` it is an ``https://`` proxy (TLS
between the client and the proxy, as well as inside the tunnel). A request that is not a
``CONNECT`` (a plain ``http://`` one) is never forwarded: 407 without the right credentials, else
405.

``async with running_proxy() as proxy`` serves it in the running loop; ``with proxy_in_thread()
as proxy`` from a thread of its own (for the CLI, which runs its own loops).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import attrs

_MAX_HEAD_LINES = 64
_MAX_LINE = 8192
_HEAD_TIMEOUT = 10.0
_CHUNK = 64 * 1024
_THREAD_TIMEOUT = 30.0


@attrs.define
class Tunnel:
    """One ``CONNECT`` the proxy answered: its target, its status and the bytes each way."""

    target: str
    status: int
    authorization: str | None = attrs.field(default=None, repr=False)
    up: int = 0  # client to server
    down: int = 0  # server to client


class ConnectProxy:
    """The proxy; ``tunnels`` records every ``CONNECT`` in order (refused ones included)."""

    def __init__(
        self, *, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.credentials = credentials
        self.tls = tls
        self.tunnels: list[Tunnel] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def opened(self) -> list[Tunnel]:
        """The tunnels it opened (answered 200)."""
        return [t for t in self.tunnels if t.status == 200]

    async def start(self) -> None:
        """Listen on 127.0.0.1, a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)

    async def close(self) -> None:
        """Stop listening and end every tunnel (closing its sockets, not cancelling its task:
        Python 3.11's streams log a cancelled connection task as an error)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        async with asyncio.timeout(_THREAD_TIMEOUT):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_HEAD_TIMEOUT):
            method, target, headers = await _read_head(reader)
        authorization = headers.get("proxy-authorization")
        status = self._decide(method, target, authorization)
        self.tunnels.append(Tunnel(target, status, authorization))
        if status != 200:
            extra = 'Proxy-Authenticate: Basic realm="test"\r\n' if status == 407 else ""
            writer.write(f"HTTP/1.1 {status} No\r\n{extra}Content-Length: 0\r\n\r\n".encode())
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), port)
        self._writers.add(upstream_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        tunnel = self.tunnels[-1]
        try:
            await asyncio.gather(
                _pipe(reader, upstream_writer, tunnel, "up"),
                _pipe(upstream_reader, writer, tunnel, "down"),
            )
        finally:
            self._writers.discard(upstream_writer)
            upstream_writer.close()

    def _decide(self, method: str, target: str, authorization: str | None) -> int:
        if self.credentials is not None:
            user, password = self.credentials
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if authorization != expected:
                return 407
        if method != "CONNECT":
            return 405
        host, _, port = target.rpartition(":")
        if not port.isdigit() or not _loopback(host.strip("[]")):
            return 403  # the tests reach loopback only
        return 200


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    request_line = (await reader.readuntil(b"\r\n"))[:_MAX_LINE].decode("latin-1").split()
    if len(request_line) != 3:
        raise ValueError("not an HTTP request line")
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEAD_LINES):
        line = (await reader.readuntil(b"\r\n"))[:_MAX_LINE].decode("latin-1").strip()
        if not line:
            return request_line[0], request_line[1], headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many header lines")


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, tunnel: Tunnel, way: str
) -> None:
    # Counted before forwarding: once the far side has the bytes, the count includes them.
    with contextlib.suppress(OSError):
        while data := await source.read(_CHUNK):
            setattr(tunnel, way, getattr(tunnel, way) + len(data))
            sink.write(data)
            await sink.drain()
    with contextlib.suppress(OSError, RuntimeError):
        sink.write_eof()


@contextlib.asynccontextmanager
async def running_proxy(
    *, credentials: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[ConnectProxy]:
    """A :class:`ConnectProxy` served in the running loop for the block."""
    proxy = ConnectProxy(credentials=credentials, tls=tls)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@contextlib.contextmanager
def proxy_in_thread(*, credentials: tuple[str, str] | None = None) -> Iterator[ConnectProxy]:
    """A :class:`ConnectProxy` served by its own loop in a daemon thread for the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-proxy", daemon=True)
    thread.start()
    proxy = ConnectProxy(credentials=credentials)
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(_THREAD_TIMEOUT)
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(_THREAD_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_THREAD_TIMEOUT)
        loop.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_url(port: int, user: str, password: str) -> str:
    """``http://user:password@127.0.0.1:port``, both percent-encoded."""
    return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"
