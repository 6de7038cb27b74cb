"""Fixtures of the bulk runner's offline tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bulk.scripted import jpeg


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Front, back and three different face frames shared by every scripted applicant."""
    folder = tmp_path_factory.mktemp("images")
    for n, name in enumerate(("front", "back", "face_1", "face_2", "face_3")):
        (folder / f"{name}.jpg").write_bytes(jpeg(n))
    return folder
