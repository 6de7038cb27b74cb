"""The control API as a service on a developer's machine, over raw HTTP: only loopback hosts, no
cross-site requests, JSON on state-changing requests, and every bad input a 4xx with a reason
after which the emulator answers as before."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.emulator import EXISTS, FRONT, OTP, Raw, b64, new_tx, small_jpeg
from vlens_async.emulator import EmulatorConfig, RunningEmulator, emulator_in_thread
from vlens_async.emulator.control import MAX_CLOCK_OFFSET, TENANT_SWITCHES, is_loopback_host

PHONE = "+201000000077"


async def _control(
    raw: Raw,
    method: str,
    path: str,
    *,
    json: Any = None,
    data: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One control request; (status, parsed JSON or None)."""
    async with raw.session.request(
        method, f"/_emulator/{path}", json=json, data=data, headers=headers, params=params
    ) as resp:
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def _api_still_answers(raw: Raw) -> None:
    """A scan and an existence check answer 200 (after a bad input they made every call 500)."""
    status, data = await raw.front(small_jpeg(), new_tx())
    assert status == 200, data
    status, data, _ = await raw.post(EXISTS, {"phoneNumber": PHONE})
    assert status == 200, data


# --- who may drive the control API ---


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:65535"],
)
async def test_loopback_host_headers_are_served(raw: Raw, host: str) -> None:
    """localhost, 127.0.0.1 and [::1], with any port, get the control API."""
    assert (await _control(raw, "GET", "otps", headers={"Host": host}))[0] == 200
    status, _ = await _control(raw, "POST", "reset", json={}, headers={"Host": host})
    assert status == 200


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.0.0.1",
        "[::2]",
        "::1",
        "localhost:http",
        "user@localhost",
        "",
    ],
)
async def test_other_host_headers_are_refused(raw: Raw, host: str) -> None:
    """A Host that is not a loopback name (DNS rebinding: a web page's own host name resolved to
    127.0.0.1) gets 403 with a reason, and no OTP, from every control route."""
    await raw.post(OTP, {"phoneNumber": PHONE})
    status, body = await _control(raw, "GET", "otps", headers={"Host": host})
    assert status == 403
    assert "Host" in body["error"]
    assert PHONE not in str(body)
    status, _ = await _control(raw, "POST", "reset", json={}, headers={"Host": host})
    assert status == 403
    assert raw.emu.otp(PHONE) is not None  # not reset


def test_is_loopback_host() -> None:
    """The Host judge: loopback names and addresses with an optional numeric port, nothing else."""
    assert is_loopback_host("localhost:80")
    assert is_loopback_host("127.0.0.2")
    assert is_loopback_host("[::ffff:127.0.0.1]:9")
    assert not is_loopback_host(None)
    assert not is_loopback_host("localhost:123456")
    assert not is_loopback_host("[::1")
    assert not is_loopback_host("0.0.0.0")


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:1"},  # another local app is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
    ],
)
async def test_cross_site_requests_are_refused(raw: Raw, headers: dict[str, str]) -> None:
    """A request a browser marks as coming from another origin gets 403 and changes nothing."""
    raw.emu.set_faults("500:1@id_back")
    status, body = await _control(raw, "PUT", "faults", json={"faults": None}, headers=headers)
    assert status == 403
    assert "cross-site" in body["error"]
    assert (await _control(raw, "GET", "otps", headers=headers))[0] == 403
    assert raw.emu.state.faults.config.rules  # still in force


async def test_same_origin_requests_are_served(raw: Raw) -> None:
    """The emulator's own origin, Sec-Fetch-Site same-origin or none, or neither header: served."""
    for headers in (
        {"Origin": raw.emu.base_url},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},
    ):
        assert (await _control(raw, "POST", "reset", json={}, headers=headers))[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("POST", "reset", "text/plain"),
        ("PUT", "faults", "text/plain"),
        ("POST", "faults", "application/x-www-form-urlencoded"),
        ("PATCH", "tenant", "multipart/form-data; boundary=x"),
        ("POST", "clock", None),
    ],
)
async def test_state_changing_requests_need_json(
    raw: Raw, vlens_emulator: RunningEmulator, method: str, path: str, content_type: str | None
) -> None:
    """A form or text/plain body (what a web page can send cross-site without a preflight) is
    415 and changes nothing; the API goes on answering 200."""
    tx = new_tx()
    assert (await raw.front(small_jpeg(), tx))[0] == 200
    body = '{"faults": "500:1", "failure_style": "ok", "advance": 3600}'
    headers = {"Content-Type": content_type} if content_type else {}
    status, reply = await _control(raw, method, path, data=body.encode(), headers=headers)
    assert status == 415
    assert "application/json" in reply["error"]
    assert vlens_emulator.transaction(tx) is not None
    assert vlens_emulator.state.clock_offset == 0
    assert vlens_emulator.control.tenant()["failure_style"] == "status"
    await _api_still_answers(raw)


async def test_json_with_a_charset_is_json(raw: Raw) -> None:
    """``application/json; charset=utf-8`` is JSON."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, reply = await _control(raw, "POST", "clock", data=b'{"advance": 5}', headers=headers)
    assert (status, reply["offset"]) == (200, 5)


def test_the_python_twin_needs_no_headers() -> None:
    """BackgroundEmulator's methods act directly (no HTTP, so no Host or Content-Type) and refuse
    bad input with ValueError, leaving the state as it was."""
    with emulator_in_thread(EmulatorConfig()) as emu:
        assert emu.configure_tenant(failure_style="ok")["failure_style"] == "ok"
        assert emu.advance_clock(10) == 10
        with pytest.raises(ValueError, match="rate_per_second"):
            emu.configure_tenant(rate_limit=True, rate_per_second=0)
        with pytest.raises(ValueError, match="finite"):
            emu.advance_clock(float("nan"))
        assert emu.configure_tenant()["rate_limit"] is False
        emu.set_faults("503:1x1")
        emu.reset()
        assert emu.counters()["requests_total"] == 0
        assert emu.advance_clock(0) == 0


# --- control inputs are validated ---


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"rate_limit": True, "rate_per_second": 0}, "rate_per_second"),
        ({"rate_limit": True, "rate_per_second": "abc"}, "rate_per_second"),
        ({"rate_limit": True, "rate_per_minute": -5}, "rate_per_minute"),
        ({"rate_limit": True, "rate_per_second": 2.5}, "rate_per_second"),
        ({"rate_limit": True, "rate_per_second": True}, "rate_per_second"),
        ({"rate_limit": "yes"}, "rate_limit"),
        ({"ntra": None}, "ntra"),
        ({"aml_watchlist": "29001011234567"}, "list of strings"),
        ({"cso_rejects": [29001011234567]}, "list of strings"),
        ({"ntra_rejects": {"a": 1}}, "list of strings"),
        ({"failure_style": ["ok"]}, "failure_style"),
        ({"unknown_documents": 3}, "unknown_documents"),
        ({"name": "Other"}, "unknown tenant switch"),
    ],
)
async def test_bad_tenant_switches_are_400_and_change_nothing(
    raw: Raw, vlens_emulator: RunningEmulator, changes: dict[str, Any], reason: str
) -> None:
    """Each bad switch is a 400 naming it; the tenant is unchanged and the API answers 200."""
    before = vlens_emulator.control.tenant()
    status, reply = await _control(raw, "PATCH", "tenant", json=changes)
    assert status == 400, reply
    assert reason in reply["error"]
    assert vlens_emulator.control.tenant() == before
    await _api_still_answers(raw)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"advance": 1e12}', "100 years"),
        (b'{"advance": -1}', "forward"),
        (b'{"advance": NaN}', "JSON"),
        (b'{"advance": 1e400}', "JSON"),
        (b'{"advance": "3600"}', "number"),
        (b'{"advance": true}', "number"),
        (b"[1]", "object"),
    ],
)
async def test_bad_clock_advances_are_400(
    raw: Raw, vlens_emulator: RunningEmulator, body: bytes, reason: str
) -> None:
    """A clock moved by 1e12 s, a negative, NaN or non-number advance: 400, the clock unmoved."""
    headers = {"Content-Type": "application/json"}
    status, reply = await _control(raw, "POST", "clock", data=body, headers=headers)
    assert status == 400, reply
    assert reason in reply["error"]
    assert vlens_emulator.state.clock_offset == 0
    await _api_still_answers(raw)


async def test_the_clock_moves_up_to_its_bound(raw: Raw, vlens_emulator: RunningEmulator) -> None:
    """Up to 100 years in all is fine and the API still answers (tokens and OTPs expire)."""
    status, reply = await _control(raw, "POST", "clock", json={"advance": MAX_CLOCK_OFFSET})
    assert (status, reply["offset"]) == (200, MAX_CLOCK_OFFSET)
    status, _ = await _control(raw, "POST", "clock", json={"advance": 1})
    assert status == 400
    status, data, _ = await raw.post(EXISTS, {"phoneNumber": PHONE})
    assert status == 200, data


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"faults": 5}, "faults"),
        ({"faults": ["500:1"]}, "faults"),
        ({"faults": "500:2"}, "probability"),
        ({"faults": "429:1,retry_after=99999999999"}, "duration"),
        ({"faults": "slow:1,slow_duration=" + "9" * 400}, "duration"),
        ({"latency": [1]}, "latency"),
        ({"latency": {"fixed": "1s"}}, "latency"),
        ({"latency": "fixed:9999999s"}, "duration"),
        ({"latency": "lognormal:median=10ms,sigma=1000"}, "sigma"),
        ({"latency": "lognormal:median=10ms,sigma=nan"}, "sigma"),
        ({"latency": "uniform:10ms-1e9s"}, "duration"),
        ({"seed": "7"}, "seed"),
        ({"seed": True}, "seed"),
        ({"faults": "500:1@nowhere"}, "endpoint"),
        ({"fault": "500:1"}, "unknown field"),
    ],
)
async def test_bad_fault_specs_are_400_and_change_nothing(
    raw: Raw, vlens_emulator: RunningEmulator, body: dict[str, Any], reason: str
) -> None:
    """Each bad fault or latency spec is a 400 naming the problem; the faults in force stay."""
    vlens_emulator.set_faults("503:1@check_existence")
    status, reply = await _control(raw, "PUT", "faults", json=body)
    assert status == 400, reply
    assert reason in reply["error"]
    assert vlens_emulator.state.faults.config.spec()["faults"].startswith("503:1@check_existence")
    vlens_emulator.set_faults(None)
    await _api_still_answers(raw)


async def test_an_unknown_tenant_is_404(raw: Raw) -> None:
    """/_emulator/otp, GET and PATCH /_emulator/tenant with an unknown tenant: 404, not 500."""
    await raw.post(OTP, {"phoneNumber": PHONE})
    params = {"phone": PHONE, "tenant": "Nowhere"}
    assert await _control(raw, "GET", "otp", params=params) == (404, {"error": "unknown tenant"})
    assert (await _control(raw, "GET", "tenant", params={"name": "Nowhere"}))[0] == 404
    status, _ = await _control(raw, "PATCH", "tenant", json={}, params={"name": "Nowhere"})
    assert status == 404
    assert (await _control(raw, "GET", "otp", params={"phone": PHONE}))[0] == 200
    await _api_still_answers(raw)


async def test_bad_control_bodies_are_4xx(raw: Raw) -> None:
    """Not JSON, not an object, or over 64 KiB: 400 or 413 with a reason."""
    headers = {"Content-Type": "application/json"}
    status, reply = await _control(raw, "PATCH", "tenant", data=b"{", headers=headers)
    assert (status, "JSON" in reply["error"]) == (400, True)
    status, reply = await _control(raw, "PATCH", "tenant", data=b'"ntra"', headers=headers)
    assert (status, "object" in reply["error"]) == (400, True)
    status, reply = await _control(raw, "PATCH", "tenant", data=b"\xff\xfe", headers=headers)
    assert status == 400
    big = b'{"aml_watchlist": ["' + b"2" * 70_000 + b'"]}'
    assert (await _control(raw, "PATCH", "tenant", data=big, headers=headers))[0] == 413
    await _api_still_answers(raw)


# --- headers that are not UTF-8 ---


async def _raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes as they are (no client encodes the headers); (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_non_utf8_api_key_is_401(vlens_emulator: RunningEmulator) -> None:
    """An ApiKey header of Latin-1 bytes is a wrong key (401), not a 500."""
    head = (
        b"POST /api/DigitalIdentity/CheckExistenceOfEmailOrPhone HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nContent-Type: application/json\r\nApiKey: cl\xe9-\xff\r\n"
    )
    body = b'{"phoneNumber": "%s"}' % PHONE.encode()
    status, _ = await _raw_request(vlens_emulator.port, head, body)
    assert status == 401
    assert vlens_emulator.counters()["requests"]["check_existence"] == {"401": 1}


async def test_a_non_utf8_request_id_is_ignored(vlens_emulator: RunningEmulator) -> None:
    """An X-Request-Id of other bytes is neither echoed nor put in the JSON: the scan answers
    200 (it was a 500)."""
    head = (
        b"POST /api/DigitalIdentity/verify/id/front HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nApiKey: "
        + vlens_emulator.api_key.encode()
        + b"\r\nX-Request-Id: r\xe9q\r\n"
    )
    body = b'{"image": "%s"}' % b64(small_jpeg()).encode()
    status, answer = await _raw_request(vlens_emulator.port, head, body)
    assert status == 200, answer


# --- any JSON at all ---

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities too: json.dumps writes them, no JSON parser takes them
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_SPEC = st.text(alphabet="0123456789.:,=@%x_sm-abcdefghijklnoprtuwy*;", max_size=40)
_REQUESTS = st.one_of(
    st.tuples(
        st.just("PATCH"),
        st.just("tenant"),
        st.dictionaries(st.sampled_from(sorted(TENANT_SWITCHES)), _JSON, max_size=3),
    ),
    st.tuples(st.just("POST"), st.just("clock"), st.fixed_dictionaries({"advance": _JSON})),
    st.tuples(
        st.sampled_from(["PUT", "POST"]),
        st.just("faults"),
        st.fixed_dictionaries(
            {}, optional={"faults": _SPEC | _JSON, "latency": _SPEC | _JSON, "seed": _JSON}
        ),
    ),
    st.tuples(st.just("POST"), st.just("reset"), _JSON),
)


def test_any_control_input_is_answered_and_leaves_the_api_working() -> None:
    """Hypothesis: any JSON to any state-changing control route is answered below 500, and the
    API then answers below 500 too (a bad input used to make every call 500 until a reset)."""
    with emulator_in_thread(EmulatorConfig()) as emu, requests.Session() as http:
        scan = {"image": b64(small_jpeg()), "transaction_id": new_tx()}
        api_headers = {"ApiKey": emu.api_key, "Content-Type": "application/json"}

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(request=_REQUESTS)
        def probe(request: tuple[str, str, Any]) -> None:
            method, path, body = request
            resp = http.request(
                method,
                f"{emu.base_url}/_emulator/{path}",
                data=json.dumps(body),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert resp.status_code < 500, (resp.status_code, resp.text)
            api = http.post(
                f"{emu.base_url}{FRONT}", data=json.dumps(scan), headers=api_headers, timeout=30
            )
            assert api.status_code < 500, (api.status_code, api.text)
            emu.reset()

        probe()
