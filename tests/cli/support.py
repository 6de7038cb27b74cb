"""Shared by the CLI tests: run `vlens` in-process, and a recording server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
from aiohttp import web

from vlens_async.cli import main
from vlens_async.samples import make_applicant


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `vlens argv...` in-process; return (status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err: str) -> str:
    """The single line on stderr (fails when there are more, or a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@attrs.frozen
class Seen:
    """One request that reached the recording server."""

    method: str
    path: str
    api_key: str | None
    authorization: str | None


class RecordingServer:
    """An aiohttp.web server on 127.0.0.1 that records every request and answers 401 with a
    JSON body, so a client stops at its first request."""

    def __init__(self, base_url: str, seen: list[Seen]) -> None:
        self.base_url = base_url
        self.seen = seen

    @property
    def api_requests(self) -> list[Seen]:
        """Requests to the API (the bulk command's reachability probe, a GET of /, left out)."""
        return [s for s in self.seen if s.path != "/"]


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    """Serve a :class:`RecordingServer` from a thread of its own for the block."""
    seen: list[Seen] = []

    async def record(request: web.Request) -> web.Response:
        await request.read()
        seen.append(
            Seen(
                request.method,
                request.path,
                request.headers.get("ApiKey"),
                request.headers.get("Authorization"),
            )
        )
        return web.json_response({"error": {"message": "refused by the test"}}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield RecordingServer(f"http://127.0.0.1:{port}", seen)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def write_applicant(folder: Path, seed: int = 5) -> dict[str, Path]:
    """A synthetic applicant's images as files: front, back, f1, f2, f3."""
    a = make_applicant(seed)
    paths = {}
    for name, data in (
        ("front", a.front),
        ("back", a.back),
        *zip(("f1", "f2", "f3"), a.faces, strict=True),
    ):
        paths[name] = folder / f"{name}.jpg"
        paths[name].write_bytes(data)
    return paths


def verify_argv(paths: dict[str, Path]) -> list[str]:
    """`verify` with the five image options for ``paths``."""
    faces = [arg for n in ("f1", "f2", "f3") for arg in ("--face", str(paths[n]))]
    return ["verify", "--front", str(paths["front"]), "--back", str(paths["back"]), *faces]
