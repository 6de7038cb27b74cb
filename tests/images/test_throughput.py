"""preserve_grain: its defaults, prefer_throughput(), and output nothing else running can change."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.images.helpers import SIDE, bounded, spy_grain_path
from vlens_async import images
from vlens_async.config import FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import ConfigurationError, UnsupportedImageError
from vlens_async.images import (
    _prepare,
    _throughput,
    prepare_document,
    prepare_document_sync,
    prepare_faces,
    prepare_faces_sync,
)
from vlens_async.samples import make_photo


@pytest.fixture(scope="module")
def twelve_mp_grainy() -> bytes:
    """A grainy 4000x3000 photo, as phones take them (reduced 3.1x to a face frame's side)."""
    return make_photo(4000, 3000, 13, hard=True)


@pytest.fixture(scope="module")
def grainy_frames() -> tuple[bytes, bytes, bytes]:
    """Three grainy 1600x1200 frames."""
    a, b, c = (make_photo(1600, 1200, seed, hard=True) for seed in (21, 22, 23))
    return a, b, c


# --- the defaults ---


@pytest.mark.parametrize(
    ("option", "throughput", "faces", "expected"),
    [
        (None, False, False, True),
        (None, False, True, False),
        (None, True, False, False),
        (None, True, True, False),
        (True, True, False, True),
        (True, True, True, True),
        (True, False, True, True),
        (False, False, False, False),
    ],
)
def test_option_resolves_by_kind_context_and_argument(
    option: bool | None, throughput: bool, faces: bool, expected: bool
) -> None:
    """An explicit option wins; else prefer_throughput() means False; else documents True."""
    with contextlib.ExitStack() as stack:
        if throughput:
            stack.enter_context(images.prefer_throughput())
        assert _throughput.resolve_preserve_grain(option, faces=faces) is expected


def test_documents_take_the_grain_path_by_default_frames_do_not(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes, grainy_frames: tuple[bytes, bytes, bytes]
) -> None:
    """By default a grainy document takes the grain path and three grainy frames do not."""
    calls = spy_grain_path(monkeypatch)
    prepared = bounded(lambda: prepare_faces_sync(*grainy_frames, max_bytes=150_000, max_side=SIDE))
    assert [(p.width, p.height) for p in prepared] == [(SIDE, SIDE * 3 // 4)] * 3
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE, preserve_grain=False)
    assert calls == []
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1


async def test_async_frames_follow_the_option(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes, grainy_frames: tuple[bytes, bytes, bytes]
) -> None:
    """prepare_faces keeps frames off the grain path by default, and puts them on it when asked."""
    calls = spy_grain_path(monkeypatch)
    f1, f2, _ = grainy_frames
    await prepare_faces(f1, f2, grainy, max_bytes=150_000, max_side=SIDE)
    assert calls == []
    with pytest.raises(UnsupportedImageError):
        await prepare_faces(
            f1, f2, b"not an image", max_bytes=150_000, max_side=SIDE, preserve_grain=True
        )
    assert len(calls) == 2  # the two frames that could be prepared


@pytest.mark.parametrize("value", ["yes", 1, 0.0])
async def test_option_that_is_no_bool_is_refused(value: object, small_jpeg: bytes) -> None:
    """preserve_grain takes True, False or None; anything else is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="preserve_grain"):
        prepare_document_sync(small_jpeg, preserve_grain=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="preserve_grain"):
        await prepare_faces(b"a", b"b", b"c", preserve_grain=value)  # type: ignore[arg-type]


# --- prefer_throughput() and an explicit option ---


def test_prefer_throughput_turns_the_default_off(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """Inside prefer_throughput() (nested) no document takes the grain path; after it, it does."""
    calls = spy_grain_path(monkeypatch)
    with images.prefer_throughput(), images.prefer_throughput():
        prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert calls == []
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE)
    assert len(calls) == 1


def test_explicit_option_overrides_the_context(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """preserve_grain=True takes the grain path inside prefer_throughput(); False never does."""
    calls = spy_grain_path(monkeypatch)
    with images.prefer_throughput():
        prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE, preserve_grain=True)
    assert len(calls) == 1
    prepare_document_sync(grainy, max_bytes=200_000, max_side=SIDE, preserve_grain=False)
    assert len(calls) == 1


async def test_prefer_throughput_covers_a_coroutine_and_what_it_starts(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes
) -> None:
    """prefer_throughput() in a coroutine covers its awaits, its tasks and its to_thread calls."""
    calls = spy_grain_path(monkeypatch)
    with images.prefer_throughput():
        await prepare_document(grainy, max_bytes=200_000, max_side=SIDE)
        await asyncio.create_task(prepare_document(grainy, max_bytes=200_000, max_side=SIDE))
        await asyncio.to_thread(prepare_document_sync, grainy, max_bytes=200_000, max_side=SIDE)
    assert calls == []


async def test_context_set_in_a_coroutine_reaches_the_sync_twins_frame_pool(
    monkeypatch: pytest.MonkeyPatch, grainy_frames: tuple[bytes, bytes, bytes]
) -> None:
    """prefer_throughput() entered in a coroutine decides for frames prepared in
    prepare_faces_sync's pool threads (resolved by the caller, handed to the threads)."""
    # Frames default to False already; make their default True so the context shows.
    monkeypatch.setattr(_throughput, "FACES_PRESERVE_GRAIN", True)
    calls = spy_grain_path(monkeypatch)

    def prepare() -> object:
        return prepare_faces_sync(*grainy_frames, max_bytes=150_000, max_side=SIDE)

    with images.prefer_throughput():
        await asyncio.to_thread(prepare)
    assert calls == []
    await asyncio.to_thread(prepare)
    assert len(calls) == 3


async def test_one_block_object_shared_by_concurrent_tasks() -> None:
    """One prefer_throughput() object entered by interleaved tasks works in each of them."""
    block = images.prefer_throughput()
    inside = asyncio.Event()
    seen: list[bool] = []

    async def use(wait: bool) -> None:
        with block:
            if wait:
                await inside.wait()
            else:
                inside.set()
                await asyncio.sleep(0)
            seen.append(default())
        seen.append(default())

    await asyncio.gather(use(True), use(False))
    assert seen == [False, True, False, True]
    assert default() is True


def test_prefer_throughput_restores_the_default_it_found() -> None:
    """Leaving a block, nested or by an exception, restores the default it found."""
    block = images.prefer_throughput()
    seen: list[bool] = []

    def nested_then_fail() -> None:
        with block:
            with block:  # the same object entered twice
                seen.append(default())
            seen.append(default())
            raise RuntimeError

    with pytest.raises(RuntimeError):
        nested_then_fail()
    assert seen == [False, False]
    assert default() is True


def default() -> bool:
    """The document default in this context."""
    return _throughput.resolve_preserve_grain(None, faces=False)


def test_prefer_throughput_is_no_decorator() -> None:
    """Used as a decorator it would not cover a coroutine's run, so it is not one."""
    with pytest.raises(TypeError):
        images.prefer_throughput()(lambda: None)  # type: ignore[operator]


# --- the same bytes whatever else runs ---


@contextlib.contextmanager
def others_preparing(threads: int = 2) -> Iterator[None]:
    """Other grainy images and frames prepared without pause in ``threads`` threads."""
    photos = [make_photo(1600, 1200, seed, hard=True) for seed in (41, 42, 43)]
    stop, running = threading.Event(), threading.Semaphore(0)
    errors: list[BaseException] = []

    def churn(index: int) -> None:
        running.release()
        try:
            while not stop.is_set():
                prepare_document_sync(photos[index], max_bytes=150_000, max_side=SIDE)
                prepare_faces_sync(*photos, max_bytes=150_000, max_side=SIDE, preserve_grain=True)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=churn, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert running.acquire(timeout=10)
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    assert not errors, errors
    assert not any(worker.is_alive() for worker in workers)


def document_sync(data: bytes) -> bytes:
    """The document as prepare_document_sync gives it."""
    return prepare_document_sync(data, max_bytes=FACE_MAX_BYTES, max_side=FACE_MAX_SIDE).data


def document_async(data: bytes) -> bytes:
    """The document as prepare_document gives it, on a loop of its own."""
    coroutine = prepare_document(data, max_bytes=FACE_MAX_BYTES, max_side=FACE_MAX_SIDE)
    return asyncio.run(coroutine).data


@pytest.mark.parametrize("prepare", [document_sync, document_async], ids=["sync", "async"])
def test_document_is_the_same_alone_and_among_others(
    twelve_mp_grainy: bytes, prepare: Callable[[bytes], bytes]
) -> None:
    """A grainy 12 MP document comes out byte for byte the same alone and among other images."""
    alone = prepare(twelve_mp_grainy)
    with others_preparing():
        among = prepare(twelve_mp_grainy)
    assert among == alone
    # The option decides the output, so the same bytes mean the same path was taken.
    fast = prepare_document_sync(
        twelve_mp_grainy, max_bytes=FACE_MAX_BYTES, max_side=FACE_MAX_SIDE, preserve_grain=False
    )
    assert fast.data != alone


def test_frames_are_the_same_alone_and_among_others(
    grainy_frames: tuple[bytes, bytes, bytes],
) -> None:
    """Three grainy frames on the grain path come out the same alone and among other images."""

    # Among others the helper pool is busy: a frame then decodes its colour itself.
    def prepare() -> list[bytes]:
        faces = prepare_faces_sync(
            *grainy_frames, max_bytes=150_000, max_side=SIDE, preserve_grain=True
        )
        return [p.data for p in faces]

    alone = prepare()
    with others_preparing():
        among = prepare()
    assert among == alone


async def test_cancelled_frames_leave_other_images_alone(
    monkeypatch: pytest.MonkeyPatch, grainy: bytes, grainy_frames: tuple[bytes, bytes, bytes]
) -> None:
    """Frames still running after their prepare_faces was cancelled change no other image's path."""
    calls = spy_grain_path(monkeypatch)
    started, finished = threading.Semaphore(0), threading.Semaphore(0)
    release = threading.Event()
    real = _prepare._prepare_frame

    def slow(*args: object) -> object:
        started.release()
        try:
            release.wait(10)  # the caller gives up while the frames are running
            return real(*args)  # type: ignore[arg-type]
        finally:
            finished.release()

    monkeypatch.setattr(_prepare, "_prepare_frame", slow)
    task = asyncio.create_task(prepare_faces(*grainy_frames, max_bytes=150_000, max_side=SIDE))
    for _ in range(3):
        assert await asyncio.to_thread(started.acquire, True, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await prepare_document(grainy, max_bytes=200_000, max_side=SIDE)  # three frames still running
    assert len(calls) == 1
    release.set()
    for _ in range(3):
        assert await asyncio.to_thread(finished.acquire, True, 30)
    assert len(calls) == 1  # and the frames themselves kept the fast path
