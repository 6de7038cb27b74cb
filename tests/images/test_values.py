"""PreparedImage and PreparedFaces."""

from __future__ import annotations

import pytest

from vlens_async.errors import ConfigurationError
from vlens_async.images import PreparedFaces, prepare_document_sync, prepare_faces_sync


def test_prepared_image_repr_hides_bytes(small_jpeg: bytes) -> None:
    """The repr shows sizes and a digest prefix, never the bytes."""
    p = prepare_document_sync(small_jpeg)
    text = repr(p)
    assert "b'" not in text
    assert "\\x" not in text
    assert f"size={p.size}" in text
    assert len(text) < 200


def test_prepared_image_fits(small_jpeg: bytes) -> None:
    """fits() checks both the byte budget and the side."""
    p = prepare_document_sync(small_jpeg)
    assert p.fits(p.size, max(p.width, p.height))
    assert not p.fits(p.size - 1, 10_000)
    assert not p.fits(10**9, max(p.width, p.height) - 1)


def test_prepared_faces_behaves_like_a_tuple(
    applicants: dict[int, tuple[bytes, bytes, bytes]],
) -> None:
    """PreparedFaces indexes, slices, iterates and refuses anything but three frames."""
    faces = prepare_faces_sync(*applicants[3])
    assert faces[0] is faces.frames[0]
    assert faces[-1] is faces.frames[2]
    assert faces[1:] == faces.frames[1:]
    assert list(faces) == list(faces.frames)
    assert "b'" not in repr(faces)
    with pytest.raises(ConfigurationError, match="exactly three"):
        PreparedFaces(faces.frames[:2])
    with pytest.raises(ConfigurationError, match="exactly three"):
        PreparedFaces((faces[0], faces[1], b"x"))  # type: ignore[arg-type]
