"""Reading inputs: bytes-likes, paths and file objects, the size cap, load_image_bytes."""

from __future__ import annotations

import base64
import io
import traceback
from pathlib import Path

import pytest
from PIL import Image

from tests.images.helpers import decode, halves, photo
from vlens_async.errors import ImageTooLargeError, UnsupportedImageError
from vlens_async.images import _input, load_image_bytes, prepare_document_sync


def test_input_types_agree(tmp_path: Path, small_jpeg: bytes) -> None:
    """bytes, bytearray, memoryview, str and Path paths and file objects give the same result."""
    path = tmp_path / "img.jpg"
    path.write_bytes(small_jpeg)
    expected = prepare_document_sync(small_jpeg)
    with path.open("rb") as fh:
        from_file = prepare_document_sync(fh)
    results = [
        prepare_document_sync(bytearray(small_jpeg)),
        prepare_document_sync(memoryview(small_jpeg)),
        prepare_document_sync(str(path)),
        prepare_document_sync(path),
        prepare_document_sync(io.BytesIO(small_jpeg)),
        from_file,
    ]
    assert all(r == expected for r in results)
    assert expected.input_bytes == len(small_jpeg)


def test_missing_file_is_unsupported(tmp_path: Path) -> None:
    """A missing file is a typed error whose message leaves the path out."""
    with pytest.raises(UnsupportedImageError, match="FileNotFoundError") as info:
        prepare_document_sync(tmp_path / "nadia-ibrahim.jpg")
    assert "nadia" not in str(info.value)


def test_text_mode_file_object(tmp_path: Path) -> None:
    """A file object opened in text mode is refused with a clear reason."""
    path = tmp_path / "x.jpg"
    path.write_text("hello")
    with path.open() as fh, pytest.raises(UnsupportedImageError, match="binary mode"):
        prepare_document_sync(fh)  # type: ignore[arg-type]


def test_wrong_type() -> None:
    """Something that is not an image input is a TypeError."""
    with pytest.raises(TypeError, match="int"):
        prepare_document_sync(42)  # type: ignore[arg-type]


def test_oversized_input_refused_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs over MAX_INPUT_BYTES are refused as too large."""
    monkeypatch.setattr(_input, "MAX_INPUT_BYTES", 1000)
    with pytest.raises(ImageTooLargeError, match="over 1000 bytes"):
        prepare_document_sync(io.BytesIO(b"\xff" * 5000))


def test_unreadable_path_names_no_file(tmp_path: Path) -> None:
    """A missing file (or base64 taken for a path) is refused without its name anywhere."""
    # The OSError is not chained: its text carries the path, which a traceback would print.
    name = "Ahmed_Mohamed_29001011234567.jpg"
    b64 = base64.b64encode(photo(64, 48)).decode()
    for path in (str(tmp_path / name), tmp_path / name, b64, "bad\x00path"):
        with pytest.raises(UnsupportedImageError, match="cannot read the image file") as info:
            prepare_document_sync(path)
        shown = "".join(traceback.format_exception(info.value))
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__
        assert "Ahmed" not in shown
        assert b64[:40] not in shown


def test_closed_file_object_is_typed() -> None:
    """A closed file object is an UnsupportedImageError, not a bare ValueError."""
    fh = io.BytesIO(photo(64, 48))
    fh.close()
    with pytest.raises(UnsupportedImageError, match="cannot read the file object"):
        prepare_document_sync(fh)


# --- load_image_bytes (preprocessing off) ---


def test_load_image_bytes(tmp_path: Path, small_jpeg: bytes) -> None:
    """load_image_bytes returns the input's bytes untouched, for every input type."""
    path = tmp_path / "a.jpg"
    path.write_bytes(small_jpeg)
    assert load_image_bytes(small_jpeg) == small_jpeg
    assert load_image_bytes(memoryview(small_jpeg)) == small_jpeg
    assert load_image_bytes(path) == small_jpeg
    assert load_image_bytes(io.BytesIO(small_jpeg)) == small_jpeg
    p = prepare_document_sync(small_jpeg, max_side=100)
    assert load_image_bytes(p) == p.data


def test_load_image_bytes_pil_is_lossless_png() -> None:
    """A PIL image is encoded as PNG, pixel for pixel; CMYK becomes RGB."""
    im = halves((20, 10), (1, 2, 3), (200, 100, 50), "RGB")
    data = load_image_bytes(im)
    assert decode(data).format == "PNG"
    assert decode(data).tobytes() == im.tobytes()
    assert decode(load_image_bytes(Image.new("CMYK", (4, 4)))).mode == "RGB"


def test_load_image_bytes_empty() -> None:
    """load_image_bytes refuses empty input."""
    with pytest.raises(UnsupportedImageError, match="empty"):
        load_image_bytes(b"")
