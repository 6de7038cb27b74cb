"""The README's marked snippets work as written: the offline quick start as a script, the end
user's token flow against the emulator, and the pytest set-up in a fresh project.

A snippet is the fenced block right after a ``<!-- readme-test: NAME -->`` line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vlens_async import AuthenticationError, BadRequestError, VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.samples import make_applicant

README = Path(__file__).resolve().parent.parent / "README.md"
PHONE = "+201001234567"
PASSWORD = "correct horse battery"


def snippet(name: str) -> str:
    """The README's code block marked ``<!-- readme-test: name -->``."""
    text = README.read_text(encoding="utf-8")
    pattern = rf"<!-- readme-test: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```"
    found = re.findall(pattern, text, flags=re.DOTALL)
    assert len(found) == 1, f"README marks {len(found)} snippets {name!r}, expected one"
    return str(found[0]) + "\n"


def token_flow() -> dict[str, Any]:
    """The token-flow snippet's functions, defined as the README defines them."""
    namespace: dict[str, Any] = {}
    exec(compile(snippet("token-flow"), "README.md#token-flow", "exec"), namespace)
    return namespace


def test_quick_start_runs_as_a_script() -> None:
    """The offline quick start, run as a whole script, verifies a synthetic applicant."""
    done = subprocess.run(
        [sys.executable, "-c", snippet("quick-start")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "COMPLETED True True"


async def test_token_flow_signs_up_logs_in_and_verifies(
    vlens_emulator: RunningEmulator, vlens_client: VlensClient
) -> None:
    """A new phone signs up with its OTP, then logs in; its token verifies as that user."""
    flow = token_flow()
    client = vlens_client.with_options(tenancy_name=vlens_emulator.tenancy_name)

    otp_request_id = await flow["start_sign_up"](client, PHONE)
    assert otp_request_id
    otp = vlens_emulator.otp(PHONE)
    assert otp is not None
    new_token = await flow["finish_sign_up"](client, PHONE, otp_request_id, otp, PASSWORD)
    assert new_token

    assert await flow["start_sign_up"](client, PHONE) is None  # an account now: log in
    token = await flow["log_in"](client, PHONE, PASSWORD)
    applicant = make_applicant(1)
    outcome = await client.for_user(token).verify(applicant.front, applicant.back, applicant.faces)
    assert outcome.validated
    assert outcome.transaction_id is not None
    linked = vlens_emulator.transaction(outcome.transaction_id)
    assert linked is not None
    assert linked["user_id"] is not None


async def test_token_flow_errors_are_the_ones_the_readme_names(
    vlens_emulator: RunningEmulator, vlens_client: VlensClient
) -> None:
    """A wrong code is a BadRequestError for the user; a wrong password an AuthenticationError."""
    flow = token_flow()
    client = vlens_client.with_options(tenancy_name=vlens_emulator.tenancy_name)
    otp_request_id = await flow["start_sign_up"](client, PHONE)
    right = vlens_emulator.otp(PHONE)
    wrong = "000000" if right != "000000" else "111111"
    with pytest.raises(BadRequestError) as refused:
        await flow["finish_sign_up"](client, PHONE, otp_request_id, wrong, PASSWORD)
    assert refused.value.audience == "user"

    await flow["finish_sign_up"](client, PHONE, otp_request_id, right, PASSWORD)
    with pytest.raises(AuthenticationError):
        await flow["log_in"](client, PHONE, "not the password")


def test_pytest_setup_works_in_a_fresh_project(tmp_path: Path) -> None:
    """The README's pytest configuration and tests pass, warning-free, in an empty project."""
    (tmp_path / "pyproject.toml").write_text(snippet("pytest-config"), encoding="utf-8")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_onboarding.py").write_text(
        snippet("pytest-tests"), encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
