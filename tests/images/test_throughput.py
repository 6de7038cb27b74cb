"""Which images take the grain path's second core: images in flight, prefer_throughput()."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.images.helpers import SIDE, bounded, spy_grain_path
from vlens_async import images
from vlens_async.errors import UnsupportedImageError
from vlens_async.images import _prepare, _throughput, prepare_document_sync, prepare_faces_sync
from vlens_async.samples import make_photo


def test_grainy_image_among_others_keeps_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """The grain path takes a second core, so only an image prepared alone takes it: three
    frames at once, or an image while another is in flight, keep the 1/2-scale decode."""
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (21, 22, 23)]
    prepared = bounded(lambda: prepare_faces_sync(*frames, max_bytes=150_000, max_side=SIDE))
    assert [(p.width, p.height) for p in prepared] == [(SIDE, SIDE * 3 // 4)] * 3
    with _throughput.preparing(1):  # another image in flight
        prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert calls == []
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1
    assert _throughput._in_flight == 0


async def test_async_frames_count_as_in_flight(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """prepare_faces counts its three frames before any starts, and forgets them after, even
    when one fails."""
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (24, 25)]
    await images.prepare_faces(*frames, grainy, max_bytes=150_000, max_side=SIDE)
    assert calls == []
    with pytest.raises(UnsupportedImageError):
        await images.prepare_faces(*frames, b"not an image", max_bytes=150_000, max_side=SIDE)
    assert _throughput._in_flight == 0


def test_prefer_throughput_turns_the_grain_path_off(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Inside prefer_throughput() (nested, from another thread too) no image takes the grain
    path; after it, an image alone does again."""
    calls = spy_grain_path(monkeypatch)
    with images.prefer_throughput(), images.prefer_throughput():
        bounded(lambda: prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE))
    assert calls == []
    assert _throughput._in_flight == 0
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1


async def test_cancelled_frames_still_count_until_they_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancelled prepare_faces (a deadline) leaves its frames running in their threads; they
    keep counting as in flight until each ends, so none of them, nor another image, takes the
    grain path meanwhile."""
    calls = spy_grain_path(monkeypatch)
    frames = [make_photo(1600, 1200, seed, hard=True) for seed in (31, 32, 33)]
    started = threading.Semaphore(0)
    real = _prepare.prepare_image

    def slow(*args: object) -> object:
        started.release()
        time.sleep(0.3)  # the caller gives up while the frames are running
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_prepare, "prepare_image", slow)
    await drained()  # frames an earlier test cancelled may still be finishing
    task = asyncio.create_task(images.prepare_faces(*frames, max_bytes=150_000, max_side=SIDE))
    for _ in range(3):  # all three running (a frame not yet started would rightly be dropped)
        assert await asyncio.to_thread(started.acquire, True, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _throughput._in_flight == 3
    await drained()  # the frames end on their own, within seconds
    assert calls == []


async def drained(seconds: float = 20) -> None:
    """Wait until no image is counted in flight; fail after ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        if _throughput._in_flight == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{_throughput._in_flight} images still counted in flight")


def test_prefer_throughput_is_no_decorator() -> None:
    """Used as a decorator it would not cover a coroutine's run, so it is not one."""
    with pytest.raises(TypeError):
        images.prefer_throughput()(lambda: None)  # type: ignore[operator]


def test_count_never_goes_negative_and_resets_in_a_forked_child() -> None:
    """A block exited in a forked child that never entered it (or twice) leaves the count at 0;
    the fork hook forgets the parent's images in flight."""
    _throughput._count(-5)
    assert _throughput._in_flight == 0
    _throughput._count(2)
    _throughput._forget_in_flight()  # what the at-fork hook runs in the child
    assert _throughput._in_flight == 0
