"""Helpers for the preprocessor's tests: encode and decode, compare colours, check outputs, spy
on the grain path, and bound a call that could hang."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from PIL import Image

from vlens_async.images import PreparedImage, _grain
from vlens_async.samples import make_photo

T = TypeVar("T")
SIDE = 640  # 2000x1500 inputs are reduced more than 2x: the grain path's condition


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode ``im`` with Pillow."""
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    """Decode fully."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def halves(
    size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...], mode: str
) -> Image.Image:
    """An image whose left half is ``left`` and right half ``right``."""
    im = Image.new(mode, size, left)
    im.paste(Image.new(mode, (size[0] - size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return im


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    """Two colours within ``tol`` per channel (JPEG is lossy)."""
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def pixel(p: PreparedImage, xy: tuple[int, int]) -> tuple[int, ...]:
    """The RGB colour of the prepared JPEG at ``xy``."""
    value = decode(p.data).getpixel(xy)
    assert isinstance(value, tuple)
    return value


def assert_compliant(p: object, max_bytes: int, max_side: int) -> PreparedImage:
    """``p`` is a compliant, metadata-free RGB JPEG within the limits, with truthful fields."""
    assert isinstance(p, PreparedImage)
    assert p.data.startswith(b"\xff\xd8")
    assert len(p.data) <= max_bytes
    assert max(p.width, p.height) <= max_side
    assert p.digest == hashlib.sha256(p.data).hexdigest()
    im = decode(p.data)
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert im.size == (p.width, p.height)
    assert not im.getexif()
    for key in ("exif", "icc_profile", "xmp", "comment", "photoshop"):
        assert key not in im.info
    assert b"Exif\x00\x00" not in p.data
    assert (p.quality is None) == p.passthrough
    return p


def photo(width: int, height: int, seed: int = 1, **params: object) -> bytes:
    """A photo-like JPEG, optionally re-saved with Pillow parameters (EXIF, ICC...)."""
    data = make_photo(width, height, seed)
    return encode(decode(data), "JPEG", quality=90, **params) if params else data


def spy_grain_path(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the target size of every grain-preserving downscale."""
    calls: list[tuple[int, int]] = []
    real = _grain._grain_preserving_downscale

    def spy(im: Image.Image, data: bytes, target: tuple[int, int]) -> Image.Image:
        calls.append(target)
        return real(im, data, target)  # type: ignore[arg-type]

    monkeypatch.setattr(_grain, "_grain_preserving_downscale", spy)
    return calls


def bounded(call: Callable[[], T], seconds: float = 60) -> T:
    """Run ``call`` in a daemon thread and return its result or raise its error; a hang fails
    the test instead of hanging the run (a daemon thread is not joined at exit)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if failure:
        raise failure[0]
    return outcome[0]
