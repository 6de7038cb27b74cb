"""Fixtures shared by the preprocessor's tests: sample photos and applicants' face frames."""

from __future__ import annotations

import pytest

from vlens_async.samples import make_applicant, make_photo

CALIBRATION_SEEDS = range(8)


@pytest.fixture
def small_jpeg() -> bytes:
    """A compliant photo-like JPEG."""
    return make_photo(320, 240, 7)


@pytest.fixture(scope="session")
def grainy() -> bytes:
    """A 2000x1500 photo with pixel-scale grain (0.55 bytes per pixel)."""
    return make_photo(2000, 1500, 4, hard=True)


@pytest.fixture(scope="session")
def clean() -> bytes:
    """A 2000x1500 photo without pixel-scale grain (0.13 bytes per pixel)."""
    return make_photo(2000, 1500, 4)


@pytest.fixture(scope="session")
def applicants() -> dict[int, tuple[bytes, bytes, bytes]]:
    """samples.make_applicant face frames for the calibration seeds."""
    return {seed: make_applicant(seed).faces for seed in CALIBRATION_SEEDS}
