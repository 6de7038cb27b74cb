"""The README's third command: ``python -m examples.fastapi_kyc.walkthrough`` against the app, an
app not up yet, no app at all, and a server that is not the example."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.fastapi_kyc import walkthrough
from examples.fastapi_kyc.app import create_app
from tests.helpers.proxy import closed_port
from vlens_async.emulator import RunningEmulator

from .conftest import serve, settings_for
from .test_api import sent

_OUTPUT_POLLS = 3000  # x 10 ms


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What the walkthrough wrote to stderr, line by line."""
    return capsys.readouterr().err.splitlines()


@contextlib.contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """Python's own file server (``python -m http.server``) on 127.0.0.1 serving ``folder``: it
    answers GET with files or 404, and POST with 501. Yields its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # no access log on the test's stderr

    handler = functools.partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


async def test_walkthrough_verifies_a_test_user(
    app_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against the running app: a test user signed up, each answer printed, verified, status 0."""
    status = await asyncio.to_thread(walkthrough.main, ["--url", app_url])
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "/api/kyc/front: We read the front of your card. Now the back, please.",
        "/api/kyc/back: We read both sides of your card. Now three quick photos of your face.",
        "/api/kyc/liveness: You are verified. Thank you!",
    ]


async def test_walkthrough_stops_at_a_problem_with_status_1(
    app_url: str,
    vlens_emulator: RunningEmulator,
    no_backoff: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The service keeps failing the front: the problem is printed in the user's words, the
    steps after it are not sent, and the status is 1."""
    vlens_emulator.set_faults("503:1@front")
    status = await asyncio.to_thread(walkthrough.main, ["--url", app_url])
    assert status == 1
    assert capsys.readouterr().out.splitlines() == [
        "/api/kyc/front: Please try again in a moment: The verification service could not be"
        " reached or was busy. Nothing was lost."
    ]
    assert sent(vlens_emulator, "id_back") == sent(vlens_emulator, "liveness") == 0


async def test_walkthrough_waits_for_the_app_to_come_up(
    vlens_emulator: RunningEmulator, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Started before the app (a fresh clone's `make example` is still installing): it says once
    that it waits, then walks the app once it is up."""
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    walking = asyncio.create_task(asyncio.to_thread(walkthrough.main, ["--url", url]))
    err = ""
    for _ in range(_OUTPUT_POLLS):
        err += capsys.readouterr().err
        if "waiting" in err or walking.done():
            break
        await asyncio.sleep(0.01)
    assert err == f"waiting for the app at {url} ...\n"
    app = create_app(settings_for(vlens_emulator, db_path), demo_on=vlens_emulator)
    async with serve(app, port=port):
        status = await walking
    assert status == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # said once
    assert captured.out.endswith("/api/kyc/liveness: You are verified. Thank you!\n")


def test_walkthrough_without_an_app_says_so_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listens at the URL for the whole wait: one line saying so and how to start the
    app, status 2, no traceback."""
    url = f"http://127.0.0.1:{closed_port()}"
    assert walkthrough.main(["--url", url, "--wait", "1"]) == 2
    assert stderr_lines(capsys) == [
        f"waiting for the app at {url} ...",
        f"walkthrough: no app answered at {url} within 1 s: start it with `make example` (in"
        " another terminal), or give --url",
    ]


@pytest.mark.parametrize(
    ("files", "answer"),
    [({}, "HTTP 404"), ({"demo/info": "<html>a page</html>"}, "not JSON")],
)
def test_walkthrough_refuses_a_server_that_is_not_the_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], answer: str
) -> None:
    """Another server on the port (here Python's file server, which answers POST with 501):
    one line saying it is not the example, status 2, nothing posted."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with static_server(tmp_path) as url:
        assert walkthrough.main(["--url", url, "--wait", "5"]) == 2
    assert stderr_lines(capsys) == [
        f"walkthrough: the server at {url} is not the example app with its embedded emulator"
        f" (GET /demo/info: {answer}): is another server using the port? Stop it, or give --url"
    ]


async def test_walkthrough_refuses_the_app_without_its_emulator(
    vlens_emulator: RunningEmulator, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app served against a real service has no demo routes (no test users to make): the
    walkthrough says it is not the example with its emulator, status 2, and sends nothing."""
    async with serve(create_app(settings_for(vlens_emulator, db_path))) as url:
        status = await asyncio.to_thread(walkthrough.main, ["--url", url, "--wait", "5"])
    assert status == 2
    (line,) = stderr_lines(capsys)
    assert "is not the example app with its embedded emulator (GET /demo/info: HTTP 404)" in line
    assert vlens_emulator.counters()["requests_total"] == 0


def test_walkthrough_refuses_a_url_that_is_not_http(capsys: pytest.CaptureFixture[str]) -> None:
    """--url without a scheme: a usage error (status 2) naming it, before any request."""
    with pytest.raises(SystemExit) as stopped:
        walkthrough.main(["--url", "127.0.0.1:8000"])
    assert stopped.value.code == 2
    assert "'127.0.0.1:8000' is not an http:// or https:// URL" in capsys.readouterr().err
