"""The demo's synthetic applicants and their manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlens_async.bulk import write_demo_manifest
from vlens_async.bulk._manifest import BulkApplicant, iter_manifest
from vlens_async.errors import ConfigurationError


async def test_demo_manifest_is_readable_and_deterministic(tmp_path: Path) -> None:
    """write_demo_manifest writes images and a manifest every row of which is valid."""
    manifest = await write_demo_manifest(tmp_path / "demo", 3, seed=5, scenarios_mix={"valid": 1})
    rows = list(iter_manifest(manifest))
    assert len(rows) == 3
    assert all(isinstance(r, BulkApplicant) for r in rows)
    again = await write_demo_manifest(tmp_path / "again", 3, seed=5, scenarios_mix={"valid": 1})
    assert (tmp_path / "demo/applicant-00001/front.jpg").read_bytes() == (
        tmp_path / "again/applicant-00001/front.jpg"
    ).read_bytes()
    assert again.read_text() == manifest.read_text()


async def test_demo_manifest_rejects_unknown_scenarios(tmp_path: Path) -> None:
    """A scenario name that samples does not know is a configuration error."""
    with pytest.raises(ConfigurationError, match="nope"):
        await write_demo_manifest(tmp_path, 1, scenarios_mix={"nope": 1.0})
