"""make_photo (samples._photos): exact sizes, determinism, the hard variant, bad sizes."""

from __future__ import annotations

import pytest

from tests.helpers.samples import image_size
from vlens_async.samples import make_photo


@pytest.mark.parametrize("size", [(1, 1), (64, 48), (300, 2000), (1600, 1000)])
def test_make_photo_sizes(size: tuple[int, int]) -> None:
    """make_photo returns a JPEG of exactly the requested size."""
    assert image_size(make_photo(*size, seed=3)) == (*size, "JPEG")


def test_make_photo_12_megapixels() -> None:
    """A 12 MP (4000x3000) photo is made at the requested size."""
    assert image_size(make_photo(4000, 3000, 1)) == (4000, 3000, "JPEG")


def test_hard_photo_compresses_worse() -> None:
    """hard=True gives a photo whose JPEG is much larger than the ordinary one."""
    assert len(make_photo(800, 600, 1, hard=True)) > 2 * len(make_photo(800, 600, 1))


def test_make_photo_is_deterministic() -> None:
    """The same seed gives identical bytes; another seed a different photo."""
    assert make_photo(320, 240, 9) == make_photo(320, 240, 9)
    assert make_photo(320, 240, 9) != make_photo(320, 240, 10)
    assert make_photo(320, 240, 9) != make_photo(320, 240, 9, hard=True)


def test_make_photo_rejects_empty_sizes() -> None:
    """Zero or negative sizes raise ValueError."""
    with pytest.raises(ValueError, match="positive"):
        make_photo(0, 10, 1)
