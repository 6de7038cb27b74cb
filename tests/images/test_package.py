"""The package itself: its public names, their docstrings, and modules that never import upward."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from vlens_async import images

PUBLIC = [
    "ACCEPTED_FORMATS",
    "IDENTICAL_FRAME_THRESHOLD",
    "MAX_INPUT_BYTES",
    "MAX_QUALITY",
    "MIN_QUALITY",
    "MIN_SIDE",
    "THUMBNAIL_SIDE",
    "FrameComparison",
    "ImageInput",
    "PreparedFaces",
    "PreparedImage",
    "capture_spread",
    "compare_frames",
    "frame_difference",
    "load_image_bytes",
    "prefer_throughput",
    "prepare_document",
    "prepare_document_sync",
    "prepare_faces",
    "prepare_faces_sync",
]

# Lowest first: a module may import only those before it.
LAYERS = [
    "_values",
    "_colour",
    "_jpeg",
    "_pools",
    "_resize",
    "_throughput",
    "_input",
    "_decode",
    "_quality",
    "_frames",
    "_grain",
    "_pipeline",
    "_prepare",
]


def test_all_is_the_public_names_sorted() -> None:
    """__all__ is exactly the public names, sorted as before the split, each one defined."""
    exported = {
        name
        for name, value in vars(images).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert images.__all__ == PUBLIC
    assert exported - {"annotations"} == set(PUBLIC)


@pytest.mark.parametrize("name", [n for n in PUBLIC if not n.isupper() and n != "ImageInput"])
def test_public_names_are_documented(name: str) -> None:
    """Every public function and class carries a docstring."""
    assert (getattr(images, name).__doc__ or "").strip()


def test_modules_never_import_upward() -> None:
    """Each module imports only modules of the package below it in LAYERS."""
    folder = Path(images.__file__).parent
    assert sorted(p.stem for p in folder.glob("_*.py") if p.stem != "__init__") == sorted(LAYERS)
    for index, name in enumerate(LAYERS):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        assert imported <= set(LAYERS[:index]), (name, imported - set(LAYERS[:index]))
