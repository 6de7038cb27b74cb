"""The app's settings from the environment."""

from __future__ import annotations

import pytest

from examples.fastapi_kyc.app import Settings
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
