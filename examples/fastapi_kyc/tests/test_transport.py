"""The app behind an egress proxy that needs a private CA: the emulator over HTTPS (a CA made in
the test), reached through a CONNECT proxy on loopback, set up from the environment only."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from examples.fastapi_kyc import demo, walkthrough
from examples.fastapi_kyc.app import Settings, create_app
from tests.helpers.proxy import ConnectProxy
from tests.helpers.tls import TestPKI
from vlens_async.emulator import RunningEmulator

from .conftest import applicant, serve
from .test_api import assert_problem


def environment(emulator: RunningEmulator, proxy: ConnectProxy, db: Path) -> dict[str, str]:
    """What an operator sets for the app behind ``proxy`` (no CA bundle yet)."""
    return {
        "VLENS_API_KEY": emulator.api_key,
        "VLENS_BASE_URL": emulator.base_url,
        "VLENS_PROXY": proxy.url,
        "KYC_DB_PATH": str(db),
    }


async def test_a_verification_completes_through_the_proxy_trusting_the_private_ca(
    https_emulator: RunningEmulator,
    proxy: ConnectProxy,
    pki: TestPKI,
    db_path: Path,
    tmp_path: Path,
) -> None:
    """VLENS_PROXY and VLENS_CA_BUNDLE set: a test user is signed up and verified through the
    app, every request to the service through the proxy's tunnels."""
    assert https_emulator.base_url.startswith("https://127.0.0.1:")
    env = environment(https_emulator, proxy, db_path)
    env["VLENS_CA_BUNDLE"] = str(pki.write(tmp_path).ca)
    app = create_app(Settings.from_env(env), demo_on=https_emulator)
    async with serve(app) as url:
        answers = await asyncio.to_thread(walkthrough.walk, url)
    assert [a["state"] for a in answers] == ["FRONT_SCANNED", "ID_SCANNED", "COMPLETED"]
    assert answers[-1]["verified"] is True
    assert https_emulator.counters()["transactions_created"] == 1
    emulator_address = https_emulator.base_url.removeprefix("https://").rstrip("/")
    assert proxy.opened
    assert {tunnel.target for tunnel in proxy.tunnels} == {emulator_address}
    assert all(tunnel.status == 200 for tunnel in proxy.tunnels)
    # the three images went up the tunnels, over TLS
    assert sum(tunnel.up for tunnel in proxy.opened) > len(applicant(demo.SAMPLE_SEED).front)


async def test_without_the_ca_the_user_gets_the_operator_problem_and_the_log_an_alert(
    https_emulator: RunningEmulator,
    proxy: ConnectProxy,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """VLENS_CA_BUNDLE not set: the proxy's tunnel opens but the service's certificate is not
    trusted; the user reads the generic problem, the alert names UntrustedCertificateError, and
    nothing reached the service or the log that is the user's."""
    app = create_app(Settings.from_env(environment(https_emulator, proxy, db_path)))
    token = "a-users-vlens-token-5c1e"
    front = applicant(61).front
    with caplog.at_level(logging.WARNING, logger="fastapi_kyc"):
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            response = await http.post(
                "/api/kyc/front", content=front, headers={"Authorization": f"Bearer {token}"}
            )
    body = assert_problem(response, 500, "internal")
    assert body["detail"] == "We have been alerted and are looking into it. Please try again later."
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert len(alerts) == 1
    assert "UntrustedCertificateError" in alerts[0]
    assert body["instance"] in alerts[0]
    assert token not in caplog.text
    assert applicant(61).fields.national_id not in caplog.text
    assert proxy.opened  # the way out worked: the certificate was the problem
    assert https_emulator.counters()["requests_total"] == 0
