"""Fault injection, the rate limit, counters and the control API, over raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from tests.helpers.emulator import EXISTS, FRONT, Raw, b64, new_tx, small_jpeg
from vlens_async.emulator import EmulatorConfig, RunningEmulator, create_app
from vlens_async.emulator.faults import FaultConfig

PHONE = {"phoneNumber": "+201000000009"}


async def _front_raw(raw: Raw, tx: str | None = None) -> tuple[int, bytes, aiohttp.ClientResponse]:
    body = {"image": b64(small_jpeg()), **({"transaction_id": tx} if tx else {})}
    headers = {**raw.headers(), "Content-Type": "application/json"}
    async with raw.session.post(FRONT, data=json.dumps(body), headers=headers) as resp:
        return resp.status, await resp.read(), resp


async def test_fault_500_then_normal(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """500x1 fails the first request with the envelope, then the endpoint works again."""
    vlens_emulator.set_faults("500:1x1@id_front")
    status, body, _ = await _front_raw(raw)
    assert status == 500
    envelope = json.loads(body)
    assert envelope["error_code"] is None
    assert envelope["error_message"]
    status, _, _ = await _front_raw(raw)
    assert status == 200
    assert vlens_emulator.counters()["requests"]["id_front"] == {"500": 1, "200": 1}
    assert vlens_emulator.counters()["transactions_created"] == 1


async def test_fault_502_is_an_html_page(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """502 comes as a proxy's HTML page, not JSON."""
    vlens_emulator.set_faults("502:1")
    status, body, resp = await _front_raw(raw)
    assert status == 502
    assert resp.content_type == "text/html"
    assert body.startswith(b"<html>")


async def test_fault_503_has_an_empty_body(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """503 carries no body at all."""
    vlens_emulator.set_faults("503:1")
    status, body, _ = await _front_raw(raw)
    assert status == 503
    assert body == b""


async def test_fault_429_has_retry_after(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """429 carries Retry-After from the spec's retry_after parameter."""
    vlens_emulator.set_faults("429:1,retry_after=2s")
    status, body, resp = await _front_raw(raw)
    assert status == 429
    assert resp.headers["Retry-After"] == "2"
    assert json.loads(body)["error_message"]


async def test_reset_before_does_no_work(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """reset_before drops the connection and the transaction is not created."""
    vlens_emulator.set_faults("reset_before:1")
    tx = new_tx()
    with pytest.raises(aiohttp.ClientError):
        await _front_raw(raw, tx)
    assert vlens_emulator.transaction(tx) is None
    assert vlens_emulator.counters()["requests"]["id_front"] == {"reset": 1}


async def test_reset_after_does_the_work(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """reset_after drops the connection after the step was recorded."""
    vlens_emulator.set_faults("reset_after:1")
    tx = new_tx()
    with pytest.raises(aiohttp.ClientError):
        await _front_raw(raw, tx)
    summary = vlens_emulator.transaction(tx)
    assert summary is not None
    assert summary["steps"]["front"]["ok"] is True
    assert vlens_emulator.counters()["steps"][tx] == {"front": 1}


async def test_slow_body_still_arrives_whole(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """slow dribbles the body in pieces (read here as several chunks), complete once read; the
    same small answer without the fault comes in one piece."""

    async def chunks() -> list[bytes]:
        body = {"image": b64(small_jpeg())}
        headers = {**raw.headers(), "Content-Type": "application/json"}
        async with raw.session.post(FRONT, data=json.dumps(body), headers=headers) as resp:
            assert resp.status == 200
            return [chunk async for chunk in resp.content.iter_any()]

    assert len(await chunks()) == 1
    vlens_emulator.set_faults("slow:1,slow_duration=0.1s")
    pieces = await chunks()
    assert len(pieces) >= 2
    assert json.loads(b"".join(pieces))["data"]["idFrontData"]["transaction_id"]


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
async def test_broken_json_after_the_work(
    raw: Raw, vlens_emulator: RunningEmulator, kind: str
) -> None:
    """truncated and malformed answer 200 with a body that is not JSON, after doing the work."""
    vlens_emulator.set_faults(f"{kind}:1")
    tx = new_tx()
    status, body, _ = await _front_raw(raw, tx)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert vlens_emulator.transaction(tx) is not None


async def test_latency_spec_applies(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """A latency spec is accepted per endpoint and requests still succeed."""
    spec = vlens_emulator.set_faults(None, ["fixed:1ms@id_front", "uniform:1ms-2ms"])
    assert spec["latency"] == ["fixed:1ms@id_front", "uniform:1ms-2ms"]
    assert vlens_emulator.state.faults.delay("id_front") == pytest.approx(0.001)
    status, _, _ = await _front_raw(raw)
    assert status == 200


async def test_faults_are_reproducible(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """The same seed gives the same fault sequence on an endpoint."""

    async def run() -> list[int]:
        vlens_emulator.set_faults("500:0.5", seed=7)
        return [(await raw.post(EXISTS, PHONE))[0] for _ in range(12)]

    first, second = await run(), await run()
    assert first == second
    assert set(first) == {200, 500}


@pytest.mark.parametrize(("style", "refused_status"), [("status", 422), ("ok", 200)])
async def test_rate_limit_10_per_second(
    raw: Raw, vlens_emulator: RunningEmulator, style: str, refused_status: int
) -> None:
    """With the rate limit on, a burst of 12 gets 10 answers and 2 refusals with code 4003 only:
    422 (200 in the ok style), never 429, no Retry-After (API.md documents neither)."""
    vlens_emulator.configure_tenant(rate_limit=True, failure_style=style)
    results = await asyncio.gather(*(raw.post(EXISTS, PHONE) for _ in range(12)))
    refused = [(s, data, resp) for s, data, resp in results if data and data["error_code"]]
    answered = [s for s, data, _ in results if data and data["error_code"] is None]
    assert answered == [200] * 10
    assert len(refused) == 2
    for status, data, resp in refused:
        assert status == refused_status
        assert data is not None
        assert data["error_code"] == 4003
        assert "Retry-After" not in resp.headers
    counters = vlens_emulator.counters()
    assert counters["rate_limited"] == 2
    assert counters["max_per_second"] >= 12
    assert sum(counters["per_second"].values()) == 12


async def test_counters(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """Counters report requests per endpoint and status, transactions and steps; the rate windows
    count API calls only (not a probe of another path)."""
    tx = new_tx()
    await raw.front(small_jpeg(1), tx)
    await raw.back(small_jpeg(2), tx)
    await raw.post(EXISTS, PHONE, api_key=None)
    async with raw.session.get("/") as probe:  # a reachability probe, as `vlens bulk` sends one
        assert probe.status == 404
    counters = vlens_emulator.counters()
    assert counters["requests"] == {
        "id_front": {"200": 1},
        "id_back": {"200": 1},
        "check_existence": {"401": 1},
        "unknown": {"404": 1},
    }
    assert counters["requests_total"] == 4
    assert counters["transactions_created"] == 1
    assert counters["steps"] == {tx: {"front": 1, "back": 1}}
    assert sum(counters["per_minute"].values()) == 3  # the rate windows count API calls only


async def test_control_api_over_http(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """The /_emulator/ routes: faults, otp, tenant, clock, transactions, counters, reset."""
    s = raw.session
    async with s.put("/_emulator/faults", json={"faults": "503:1x1", "seed": 3}) as resp:
        assert resp.status == 200
        assert (await resp.json())["faults"].startswith("503:1x1")
    status, _, _ = await raw.post(EXISTS, PHONE)
    assert status == 503
    async with s.get("/_emulator/faults") as resp:
        assert (await resp.json())["injected"] == {"503": 1}
    await raw.post("/api/DigitalIdentity/Register/StepVerifyPhone", PHONE)
    async with s.get("/_emulator/otp", params={"phone": PHONE["phoneNumber"]}) as resp:
        otp = await resp.json()
        assert otp["otp"] == vlens_emulator.otp(PHONE["phoneNumber"])
    async with s.get("/_emulator/otp", params={"phone": "+209999999999"}) as resp:
        assert resp.status == 404
    async with s.patch("/_emulator/tenant", json={"ntra": False, "failure_style": "ok"}) as resp:
        view = await resp.json()
        assert (view["ntra"], view["failure_style"]) == (False, "ok")
    async with s.patch("/_emulator/tenant", json={"failure_style": "sideways"}) as resp:
        assert resp.status == 400
    for wrong in ({"seconds": 90000}, {}, {"advance": 5, "seconds": 5}):
        async with s.post("/_emulator/clock", json=wrong) as resp:
            assert resp.status == 400  # never a silent no-op
    async with s.post("/_emulator/clock", json={"advance": 301}) as resp:
        assert (await resp.json())["offset"] == 301
    assert vlens_emulator.otp(PHONE["phoneNumber"]) is None  # expired by the clock
    tx = new_tx()
    await raw.front(small_jpeg(), tx)
    async with s.get(f"/_emulator/transactions/{tx}") as resp:
        assert (await resp.json())["steps"]["front"]["ok"] is True
    async with s.post("/_emulator/reset", json={}) as resp:
        assert resp.status == 200
    async with s.get("/_emulator/counters") as resp:
        counters = await resp.json()
        assert counters["requests_total"] == 0
        assert counters["transactions_created"] == 0
    assert vlens_emulator.state.tenant().config.failure_style == "status"


@pytest.mark.parametrize(
    ("peer", "control_status"),
    [
        ("203.0.113.7", 403),
        ("::ffff:203.0.113.7", 403),
        ("::ffff:127.0.0.1", 200),  # an IPv4 loopback peer on a dual-stack listener
        ("::1", 200),
    ],
)
async def test_control_api_answers_loopback_peers_only(peer: str, control_status: int) -> None:
    """A peer that is not a loopback address (IPv4-mapped ones judged by their IPv4 address) gets
    403 from /_emulator/; the API answers everyone."""

    @web.middleware
    async def remote_peer(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return await handler(request.clone(remote=peer))

    app = create_app(EmulatorConfig())
    app.middlewares.insert(0, remote_peer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            async with session.get("/_emulator/counters") as resp:
                assert resp.status == control_status
            async with session.post("/_emulator/reset", json={}) as resp:
                assert resp.status == control_status
            headers = {"ApiKey": EmulatorConfig().tenant.api_key}
            async with session.post(EXISTS, json=PHONE, headers=headers) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()


def test_fault_config_rejects_probabilities_over_one() -> None:
    """Probabilities of one endpoint adding up to more than 1 are refused."""
    with pytest.raises(ValueError, match="add up"):
        FaultConfig.parse("500:0.6,503:0.6")
    with pytest.raises(ValueError, match="add up"):
        FaultConfig.parse("500:0.6,503:0.6@liveness")  # '*' rules apply to liveness too
    FaultConfig.parse("500:0.6@id_front,503:0.6@id_back,500:0.1@id_front")


@pytest.mark.parametrize("spec", ["none", "NONE", " none ", ""])
def test_faults_none_means_no_faults(spec: str) -> None:
    """``none`` (as ``--latency none``) and an empty spec inject nothing."""
    assert FaultConfig.parse(spec).rules == ()
