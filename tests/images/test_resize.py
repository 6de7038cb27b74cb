"""Geometry: the downscale."""

from __future__ import annotations

from PIL import Image

from tests.images.helpers import close
from vlens_async.images import _resize


def test_big_factor_downscale_pre_reduces() -> None:
    """A large non-JPEG downscale is box-reduced first and still lands on the exact size."""
    im = Image.new("RGB", (3000, 2000), (10, 20, 30))
    out = _resize.downscale(im, (300, 200))
    assert out.size == (300, 200)
    assert close(tuple(out.getpixel((150, 100))), (10, 20, 30), 1)  # type: ignore[arg-type]
