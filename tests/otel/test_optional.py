"""The extra stays optional: nothing of OpenTelemetry is imported without it, and its absence
is named; the aiohttp instrumentation made safe for this client's URLs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import yarl
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.sdk.trace import ReadableSpan

from tests.otel.conftest import Recorded
from vlens_async.emulator import RunningEmulator
from vlens_async.otel import aiohttp_trace_config, strip_query

PHONE = "+201001234567"
IMAGES = "/api/DigitalIdentity/GetUserDigitalIdentityImages"

FLOW_WITHOUT_TELEMETRY = """
import asyncio, sys
import vlens_async
from vlens_async.emulator import EmulatorConfig, running_emulator
from vlens_async.samples import make_applicant

async def main():
    a = make_applicant(50)
    async with running_emulator(EmulatorConfig()) as emu:
        async with vlens_async.VlensClient(emu.api_key, base_url=emu.base_url) as client:
            outcome = await client.verify(a.front, a.back, a.faces)
            await client.check_existence(phone_number="+201001234567")
    assert outcome.verified, outcome

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
assert "vlens_async.otel" not in sys.modules
"""


def test_a_flow_without_telemetry_imports_no_opentelemetry() -> None:
    """``import vlens_async`` and a whole verification load no opentelemetry module."""
    subprocess.run([sys.executable, "-c", FLOW_WITHOUT_TELEMETRY], check=True, timeout=120)


def test_the_missing_extra_is_named() -> None:
    """Without opentelemetry, importing vlens_async.otel says which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import vlens_async.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "pip install 'vlens-async[otel]'" in done.stdout


def test_strip_query_keeps_the_route_only() -> None:
    """The url_filter drops the query, the fragment and credentials."""
    url = yarl.URL("https://user:pw@api.example/api/x?emailOrPhoneNumber=%2B2010#frag")
    assert strip_query(url) == "https://api.example/api/x"


async def _get_images(
    emulator: RunningEmulator, config: aiohttp.TraceConfig, limits: aiohttp.ClientTimeout
) -> None:
    """GET the images endpoint with the phone number in the query, through ``config``."""
    async with (
        aiohttp.ClientSession(trace_configs=[config]) as session,
        session.get(
            emulator.base_url + IMAGES,
            params={"emailOrPhoneNumber": PHONE},
            headers={"ApiKey": emulator.api_key},
            timeout=limits,
        ) as response,
    ):
        await response.read()


def _texts(span: ReadableSpan) -> list[str]:
    texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
    for event in span.events:
        texts.extend(str(v) for v in (event.attributes or {}).values())
    return texts


def _leaks(spans: list[ReadableSpan]) -> list[str]:
    return [t for s in spans for t in _texts(s) if "201001234567" in t or "?" in t]


CONNECT_TIMEOUT = aiohttp.ClientTimeout(connect=1e-9)  # aiohttp's text quotes the URL


@pytest.fixture
def make_config(recorded: Recorded) -> Callable[..., aiohttp.TraceConfig]:
    """Trace configs on the test's SDK providers."""

    def make(factory: Callable[..., aiohttp.TraceConfig], **options: Any) -> aiohttp.TraceConfig:
        return factory(
            tracer_provider=recorded.tracer_provider,
            meter_provider=recorded.meter_provider,
            **options,
        )

    return make


async def test_the_safe_trace_config_records_no_query(
    vlens_emulator: RunningEmulator,
    recorded: Recorded,
    make_config: Callable[..., aiohttp.TraceConfig],
) -> None:
    """A request and a connect timeout through aiohttp_trace_config: a span each, the route as
    the URL, the error's type kept, no phone number and no query anywhere."""
    config = make_config(aiohttp_trace_config)
    await _get_images(vlens_emulator, config, aiohttp.ClientTimeout(total=10))
    with pytest.raises(aiohttp.ConnectionTimeoutError) as info:
        await _get_images(vlens_emulator, make_config(aiohttp_trace_config), CONNECT_TIMEOUT)
    assert PHONE.lstrip("+") in str(info.value)  # what the stand-in keeps out of the trace
    ok, failed = recorded.spans()
    assert ok.attributes is not None
    # The old or the stable HTTP conventions (OTEL_SEMCONV_STABILITY_OPT_IN), whichever is on.
    url = ok.attributes.get("url.full", ok.attributes.get("http.url"))
    assert url == vlens_emulator.base_url + IMAGES
    [event] = failed.events
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "aiohttp.client_exceptions.ConnectionTimeoutError"
    assert _leaks(recorded.spans()) == []


async def test_the_instrumentation_alone_records_the_phone_number(
    vlens_emulator: RunningEmulator,
    recorded: Recorded,
    make_config: Callable[..., aiohttp.TraceConfig],
) -> None:
    """Why aiohttp_trace_config exists: the instrumentation records the query, and even with
    url_filter=strip_query a connect timeout's text (when this fails, the wrapper may go)."""
    await _get_images(vlens_emulator, make_config(create_trace_config), aiohttp.ClientTimeout(10))
    config = make_config(create_trace_config, url_filter=strip_query)
    with pytest.raises(aiohttp.ConnectionTimeoutError):
        await _get_images(vlens_emulator, config, CONNECT_TIMEOUT)
    plain, filtered = recorded.spans()
    assert _leaks([plain])
    assert _leaks([filtered])
