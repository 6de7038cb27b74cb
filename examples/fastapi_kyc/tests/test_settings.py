"""The app's settings from the environment."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from examples.fastapi_kyc.app import Settings
from tests.helpers.tls import TestPKI
from vlens_async import ConfigurationError
from vlens_async.config import DEFAULT_BASE_URL


def test_settings_from_env_with_defaults() -> None:
    """Only the API key given: the production service, kyc.db, 24 hours."""
    settings = Settings.from_env({"VLENS_API_KEY": "secret-key", "KYC_DB_PATH": ""})
    assert settings == Settings(api_key="secret-key", base_url=DEFAULT_BASE_URL, db_path="kyc.db")
    assert "secret-key" not in repr(settings)


def test_settings_from_env_given() -> None:
    """Every variable given is used, the retention as a number."""
    settings = Settings.from_env(
        {
            "VLENS_API_KEY": "k",
            "VLENS_BASE_URL": "http://127.0.0.1:9",
            "VLENS_TENANCY_NAME": "acme",
            "KYC_DB_PATH": "/tmp/x.db",
            "KYC_RETENTION_HOURS": "2.5",
        }
    )
    assert settings.base_url == "http://127.0.0.1:9"
    assert settings.tenancy_name == "acme"
    assert settings.db_path == "/tmp/x.db"
    assert settings.retention_hours == 2.5


def test_settings_without_api_key_stop_with_a_message() -> None:
    """No API key: the app refuses to start and says what to set."""
    with pytest.raises(SystemExit, match="VLENS_API_KEY"):
        Settings.from_env({})


@pytest.mark.parametrize("hours", ["a day", "0", "-3", "nan", "inf"])
def test_settings_with_a_bad_retention_stop_with_a_message(hours: str) -> None:
    """A retention that is not a number of hours above 0: a one-line message naming the
    variable, not a traceback."""
    with pytest.raises(
        SystemExit, match=r"^KYC_RETENTION_HOURS must be a number of hours above 0$"
    ):
        Settings.from_env({"VLENS_API_KEY": "k", "KYC_RETENTION_HOURS": hours})


def test_settings_take_the_proxy_and_the_ca_bundle(pki: TestPKI, tmp_path: Path) -> None:
    """VLENS_PROXY is kept as given (credentials too, out of the repr), VLENS_CA_BUNDLE becomes a
    verifying context that trusts that CA."""
    ca = pki.write(tmp_path).ca
    settings = Settings.from_env(
        {
            "VLENS_API_KEY": "k",
            "VLENS_PROXY": "http://proxy-user:pr0xy-pw@127.0.0.1:3128",
            "VLENS_CA_BUNDLE": str(ca),
        }
    )
    assert settings.proxy == "http://proxy-user:pr0xy-pw@127.0.0.1:3128"
    assert "pr0xy-pw" not in repr(settings)
    assert settings.ssl is not None
    assert settings.ssl.verify_mode == ssl.CERT_REQUIRED
    assert settings.ssl.check_hostname
    trusted = settings.ssl.get_ca_certs(binary_form=True)
    assert trusted == [ssl.PEM_cert_to_DER_cert(ca.read_text())]


def test_settings_without_proxy_or_ca_use_the_system_defaults() -> None:
    """Neither variable set (or empty): no proxy, the system's CAs."""
    settings = Settings.from_env({"VLENS_API_KEY": "k", "VLENS_PROXY": "", "VLENS_CA_BUNDLE": ""})
    assert settings.proxy is None
    assert settings.ssl is None


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("socks5://u:s3cret-pw@127.0.0.1:1080", "must be an http:// or https:// URL"),
        ("proxy.example:3128", "must be an http:// or https:// URL"),
        ("http://u:s3cret-pw@127.0.0.1:99999", "not a valid URL"),
        ("http://u:s3cret-pw@127.0.0.1:3128/path", "without a path"),
    ],
)
def test_a_bad_proxy_stops_with_one_line_without_its_password(proxy: str, message: str) -> None:
    """A proxy URL the client would refuse: one line naming VLENS_PROXY and what is wrong, never
    the URL (it may hold a password)."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"VLENS_API_KEY": "k", "VLENS_PROXY": proxy})
    line = str(stopped.value)
    assert line.startswith("VLENS_PROXY: ")
    assert message in line
    assert "\n" not in line
    assert "s3cret-pw" not in line


def test_a_bad_ca_bundle_stops_with_one_line(tmp_path: Path) -> None:
    """VLENS_CA_BUNDLE missing, a folder, or not PEM: one line naming the variable and the file."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    cases = {
        str(tmp_path / "missing.pem"): "no such file",
        str(tmp_path): "not a file",
        str(not_pem): "not a PEM file of CA certificates",
    }
    for bundle, reason in cases.items():
        with pytest.raises(SystemExit) as stopped:
            Settings.from_env({"VLENS_API_KEY": "k", "VLENS_CA_BUNDLE": bundle})
        assert str(stopped.value) == f"VLENS_CA_BUNDLE {bundle}: {reason}"


def test_settings_refuse_a_context_that_does_not_verify() -> None:
    """Settings made in code take the client's rule: certificates are always verified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(ConfigurationError, match="does not verify certificates"):
        Settings(api_key="k", ssl=context)
