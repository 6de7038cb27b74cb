"""Decoding is the costly part of a request: nothing is decoded for a request refused on what
needs no pixels, decodes share a pixel budget, and a client that disconnects mid-request costs
one log line, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.helpers.emulator import FRONT, LINK, LIVENESS, Raw, b64, new_tx, small_jpeg
from vlens_async.emulator import EmulatorConfig, RunningEmulator, TenantConfig, running_emulator
from vlens_async.emulator.readers import PixelBudget

SMALL_PIXELS = 64 * 48  # small_jpeg()'s size
FACES = (small_jpeg(1), small_jpeg(2), small_jpeg(3))


class CountingReader:
    """An OCR hook that counts its calls and how many run at once; it finds no code."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self.threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> Any:
        with self._lock:
            self.calls += 1
            self.threads.add(threading.current_thread())
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.pause)  # in a worker thread: stands in for a slow decode
        with self._lock:
            self.running -= 1
        return None


@contextlib.asynccontextmanager
async def _emulator(config: EmulatorConfig) -> AsyncIterator[Raw]:
    async with running_emulator(config) as emu, aiohttp.ClientSession(emu.base_url) as session:
        yield Raw(emu, session)


def _liveness_body(tx: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"image": b64(small_jpeg(9))}
    body.update({f"face_{i}": b64(face) for i, face in enumerate(FACES, start=1)})
    if tx is not None:
        body["transaction_id"] = tx
    return body


async def test_a_refused_request_decodes_nothing() -> None:
    """Liveness without transaction_id, on an unknown transaction, before the back, with the
    ApiKey alone on a linked transaction, and a scan of another tenant's transaction: refused
    before any image is decoded (four 25 MP PNGs used to cost seconds of CPU first)."""
    cards, faces = CountingReader(), CountingReader()
    other = TenantConfig(name="Other", api_key="other-key")
    config = EmulatorConfig(tenants=(TenantConfig(), other), card_reader=cards, face_reader=faces)
    async with _emulator(config) as raw:
        status, _, _ = await raw.post(LIVENESS, _liveness_body(None))
        assert status == 400
        status, data, _ = await raw.post(LIVENESS, _liveness_body(new_tx()))
        assert (status, data and data["error_code"]) == (422, 5000)
        tx = new_tx()
        assert (await raw.front(small_jpeg(0), tx))[0] == 200
        assert (cards.calls, faces.calls) == (1, 0)  # the scan itself
        status, data, _ = await raw.post(LIVENESS, _liveness_body(tx))
        assert (status, data and data["error_code"]) == (422, 5000)
        assert (cards.calls, faces.calls) == (1, 0)
        assert (await raw.back(small_jpeg(5), tx))[0] == 200
        token = await raw.register("+201000000301")
        assert (await raw.post(LINK, {"transactionId": tx}, token=token))[0] == 200
        assert (await raw.post(LIVENESS, _liveness_body(tx)))[0] == 401
        assert (await raw.front(small_jpeg(7), tx))[0] == 401
        other_tenant = {"image": b64(small_jpeg(7)), "transaction_id": tx}
        status, _, _ = await raw.post(FRONT, other_tenant, api_key="other-key")
        assert status == 422
        assert (cards.calls, faces.calls) == (2, 0)
        status, data, _ = await raw.post(LIVENESS, _liveness_body(tx), token=token)
        assert status == 200, data
        assert (cards.calls, faces.calls) == (3, 3)


async def test_decodes_share_a_pixel_budget() -> None:
    """Six scans at once with a budget of one small image: one decode at a time, every scan
    answered; the budget is whole again afterwards."""
    cards = CountingReader(pause=0.05)
    config = EmulatorConfig(card_reader=cards, decode_pixel_budget=SMALL_PIXELS)
    async with _emulator(config) as raw:
        answers = await asyncio.gather(*(raw.front(small_jpeg(i), new_tx()) for i in range(6)))
        assert [status for status, _ in answers] == [200] * 6
        assert cards.calls == 6
        assert cards.most_at_once == 1
        budget = raw.emu.state.decode_budget
        assert (budget.peak, budget.in_use, len(budget)) == (SMALL_PIXELS, 0, 0)


async def test_decodes_run_in_the_readers_own_threads() -> None:
    """Decodes run in at most decode_threads threads of the emulator's own (the memory a decode
    took stays with its thread: in the loop's six default workers 24 huge images kept 825 MiB),
    and those threads end with the emulator."""
    cards = CountingReader(pause=0.02)
    async with _emulator(EmulatorConfig(card_reader=cards, decode_threads=2)) as raw:
        await asyncio.gather(*(raw.front(small_jpeg(i), new_tx()) for i in range(8)))
        assert cards.most_at_once == 2
    assert len(cards.threads) == 2
    assert all(t.name.startswith("vlens-emulator-decode") for t in cards.threads)
    for _ in range(100):  # 2 s at most
        if not any(t.is_alive() for t in cards.threads):
            break
        await asyncio.sleep(0.02)
    assert not any(t.is_alive() for t in cards.threads)


def test_decode_settings_are_checked() -> None:
    """A budget or thread count that is not a positive whole number is refused up front."""
    for bad in ({"decode_pixel_budget": 0}, {"decode_threads": 0}, {"decode_threads": 2.0}):
        with pytest.raises(ValueError, match="decode"):
            EmulatorConfig(**bad)  # type: ignore[arg-type]


async def test_the_default_budget_lets_ordinary_scans_run_together() -> None:
    """Well-formed requests of ordinary images do not wait for one another."""
    cards = CountingReader(pause=0.05)
    async with _emulator(EmulatorConfig(card_reader=cards)) as raw:
        await asyncio.gather(*(raw.front(small_jpeg(i), new_tx()) for i in range(4)))
    assert cards.most_at_once > 1


async def test_pixel_budget_is_first_come_first_served() -> None:
    """Shares are granted in order; an image over the whole budget runs alone; a waiter that is
    cancelled leaves nothing behind."""
    budget = PixelBudget(10)
    order: list[str] = []
    release = asyncio.Event()

    async def decode(name: str, pixels: int) -> None:
        async with budget.hold(pixels):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(decode("a", 6))
    await asyncio.sleep(0)
    huge = asyncio.create_task(decode("huge", 10**9))
    small = asyncio.create_task(decode("small", 1))  # fits, but waits behind "huge"
    doomed = asyncio.create_task(decode("doomed", 5))
    await asyncio.sleep(0.01)
    assert (order, budget.in_use, len(budget)) == (["a"], 6, 3)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    release.set()
    await asyncio.gather(first, huge, small)
    assert order == ["a", "huge", "small"]
    assert (budget.in_use, len(budget), budget.peak) == (0, 0, 10)


# --- a client that disconnects mid-request ---


async def _send_half_and_leave(port: int, head: bytes) -> None:
    """Announce a 60 kB body, send a few bytes of it, and close the connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"Content-Length: 60000\r\n\r\n" + b'{"image": "AAAA')
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def _until(condition: Any) -> None:
    for _ in range(200):  # 4 s at most
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the emulator did not notice the disconnect")


async def test_a_disconnect_mid_request_is_one_log_line(
    vlens_emulator: RunningEmulator, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves while its body is read: one INFO line for the API and one for the
    control API, no traceback (aiohttp's 25-line "Error handling request"); counted as
    ``disconnected``; the emulator answers the next request as ever."""
    caplog.set_level(logging.DEBUG)
    port = vlens_emulator.port
    api = (
        b"POST /api/DigitalIdentity/verify/id/front HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nApiKey: " + vlens_emulator.api_key.encode() + b"\r\n"
    )
    await _send_half_and_leave(port, api)
    await _until(lambda: vlens_emulator.counters()["requests"].get("id_front"))
    assert vlens_emulator.counters()["requests"]["id_front"] == {"disconnected": 1}
    control = b"POST /_emulator/clock HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    control += b"Content-Type: application/json\r\n"
    await _send_half_and_leave(port, control)
    await _until(lambda: len(_disconnect_lines(caplog)) == 2)
    assert not [r for r in caplog.records if r.exc_info or "Error handling" in r.getMessage()]
    lines = _disconnect_lines(caplog)
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    assert all("\n" not in r.getMessage() for r in lines)
    assert (await raw.front(small_jpeg(), new_tx()))[0] == 200


def _disconnect_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "disconnected" in r.getMessage()]
