"""The quality search: the highest quality under the budget in one or two full encodes."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from tests.images.helpers import assert_compliant, decode
from vlens_async import images
from vlens_async.config import DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE, FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import CompressionError
from vlens_async.images import _quality, prepare_document_sync
from vlens_async.samples import make_photo


@pytest.fixture(scope="module")
def twelve_mp() -> dict[str, bytes]:
    """samples.make_photo 12 MP photos, normal and hard."""
    return {
        "normal": make_photo(4000, 3000, 11),
        "hard": make_photo(4000, 3000, 11, hard=True),
    }


@pytest.mark.parametrize("kind", ["normal", "hard"])
@pytest.mark.parametrize(
    ("max_bytes", "max_side"),
    [(FACE_MAX_BYTES, FACE_MAX_SIDE), (DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)],
    ids=["face", "document"],
)
def test_twelve_mp_within_limits(
    twelve_mp: dict[str, bytes], kind: str, max_bytes: int, max_side: int
) -> None:
    """A 12 MP photo and its hard variant come out under max_bytes and max_side, long side kept."""
    p = assert_compliant(
        prepare_document_sync(twelve_mp[kind], max_bytes=max_bytes, max_side=max_side),
        max_bytes,
        max_side,
    )
    assert (p.width, p.height) == (max_side, max_side * 3 // 4)
    assert p.quality is not None
    assert images.MIN_QUALITY <= p.quality <= images.MAX_QUALITY


def count_encodes(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> list[int]:
    """Record the quality of every full-size JPEG encode (stripe-sample encodes not counted)."""
    calls: list[int] = []
    real = _quality._encode

    def spy(im: Image.Image, quality: int) -> bytes:
        if im.size == size:
            calls.append(quality)
        return real(im, quality)

    monkeypatch.setattr(_quality, "_encode", spy)
    return calls


@pytest.mark.parametrize(
    ("seed", "hard", "position"),
    [
        (1, False, 0.2),
        (2, False, 0.55),
        (3, False, 0.9),
        (1, True, 0.3),
        (2, True, 0.7),
        (3, True, 0.95),
    ],
)
def test_quality_search_near_optimal_in_two_encodes(
    monkeypatch: pytest.MonkeyPatch, seed: int, hard: bool, position: float
) -> None:
    """The search finds (nearly) the highest fitting quality in at most two full encodes."""
    im = decode(make_photo(1280, 960, seed, hard=hard))
    low, high = (
        len(_quality._encode(im, images.MIN_QUALITY)),
        len(_quality._encode(im, images.MAX_QUALITY)),
    )
    budget = int(low * (high / low) ** position)
    optimum = next(
        q for q in range(images.MAX_QUALITY, 0, -1) if len(_quality._encode(im, q)) <= budget
    )
    calls = count_encodes(monkeypatch, im.size)
    found, _ = _quality._search_quality(im, budget)
    assert found is not None
    quality, data = found
    assert len(data) <= budget
    assert quality <= optimum
    # Near-optimal: within 2 steps, or on a plateau where the optimum is barely bigger.
    assert optimum - quality <= 2 or len(data) >= 0.85 * len(_quality._encode(im, optimum))
    assert len(calls) <= 2, calls


def test_fits_at_max_quality_in_one_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that fits at MAX_QUALITY costs exactly one full encode."""
    im = decode(make_photo(1280, 960, 6))
    calls = count_encodes(monkeypatch, im.size)
    found, _ = _quality._search_quality(im, FACE_MAX_BYTES)
    assert found is not None
    assert found[0] == images.MAX_QUALITY
    assert calls == [images.MAX_QUALITY]


def test_small_image_searched_directly() -> None:
    """An image too short to sample is searched with exact encodes and still fits."""
    im = decode(make_photo(400, 300, 2, hard=True))
    budget = len(_quality._encode(im, 70))
    found, _ = _quality._search_quality(im, budget)
    assert found is not None
    assert found[0] >= 70
    assert len(found[1]) <= budget


@pytest.mark.parametrize(("seed", "hard"), [(1, True), (2, True), (3, False), (5, True)])
@pytest.mark.parametrize("position", [0.35, 0.8, 0.97])
def test_early_encode_changes_nothing(seed: int, hard: bool, position: float) -> None:
    """With a spare pool the search returns the very same quality and bytes as without."""
    im = decode(make_photo(1280, 960, seed, hard=hard)).convert("YCbCr")
    low = len(_quality._encode(im, images.MIN_QUALITY))
    high = len(_quality._encode(im, images.MAX_QUALITY))
    budget = int(low * (high / low) ** position)
    with ThreadPoolExecutor(2) as spare:
        assert _quality._search_quality(im, budget, spare) == _quality._search_quality(im, budget)


@pytest.mark.parametrize(("seed", "quality"), [(1, 87), (2, 91), (3, 93)])
def test_corrected_guess_aims_at_the_budget(seed: int, quality: int) -> None:
    """The quality above the first encode is tried when predicted in the budget's last 1 %."""
    # The budget is set so that ``quality + 1`` fills 99.5 % of it: the first estimate, which keeps
    # a 1 % margin, lands on ``quality`` (filling well under 97 %), and the corrected guess, which
    # aims at the budget itself, finds ``quality + 1``.
    im = decode(make_photo(1280, 960, seed, hard=True))
    budget = int(len(_quality._encode(im, quality + 1)) / 0.995)
    assert len(_quality._encode(im, quality + 2)) > budget
    assert len(_quality._encode(im, quality)) < _quality._ACCEPT_FILL * budget
    found, _ = _quality._search_quality(im, budget)
    assert found is not None
    assert found[0] == quality + 1


def test_tight_budget_shrinks_the_side() -> None:
    """When even MIN_QUALITY is too big, the side shrinks until it fits."""
    data = make_photo(1280, 960, 9, hard=True)
    p = assert_compliant(prepare_document_sync(data, max_bytes=25_000), 25_000, 1280)
    assert p.width < 1280


def test_impossible_budget_is_compression_error() -> None:
    """A budget nothing fits, even at the smallest side, is a CompressionError."""
    rng = random.Random(3)
    noise = Image.frombytes("RGB", (400, 400), rng.randbytes(400 * 400 * 3))
    with pytest.raises(CompressionError, match="cannot fit"):
        prepare_document_sync(noise, max_bytes=1024, max_side=400)
