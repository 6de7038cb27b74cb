"""`vlens verify` shows whether an outcome needs a person's review (issue 12)."""

from __future__ import annotations

import pytest

from tests.cli.support import run


def test_an_aml_match_needs_review(capsys: pytest.CaptureFixture[str]) -> None:
    """A watchlisted applicant is verified by Vlens, and shown as needing review for the match."""
    status, out, _ = run(capsys, "verify", "--scenario", "aml_watchlisted")
    assert status == 0
    assert "verified: yes" in out
    assert "  needs review: yes (AML match)\n" in out


def test_a_clean_applicant_needs_no_review(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid applicant: needs review: no."""
    status, out, _ = run(capsys, "verify", "--seed", "3")
    assert status == 0
    assert "  needs review: no\n" in out
