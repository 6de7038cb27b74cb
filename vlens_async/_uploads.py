"""Image input to wire bytes: the one prepare-or-not decision, the one three-frames check.

The client, the flow and the bulk runner all hold images that are not yet bytes; each asks here.
With ``prepare`` the preprocessor makes them compliant (:mod:`vlens_async.images`: a
:class:`PreparedImage` that already fits passes through untouched, so preparing twice costs
nothing); without it they go as given: bytes as they are, a path or file read, a Pillow image
encoded losslessly, a :class:`PreparedImage` as its JPEG. The result of either is what the client
encodes: :func:`wire_bytes` of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeAlias

from .errors import FrameCountError, ImageError
from .images import (
    ImageInput,
    PreparedFaces,
    PreparedImage,
    load_image_bytes,
    prepare_document,
    prepare_document_sync,
    prepare_faces,
    prepare_faces_sync,
)

__all__ = [
    "Faces",
    "ReadyFaces",
    "ReadyImage",
    "face_bytes",
    "ready_now",
    "three_frames",
    "upload_document",
    "upload_document_sync",
    "upload_faces",
    "upload_faces_sync",
    "wire_bytes",
]

Faces: TypeAlias = Sequence[ImageInput] | PreparedFaces
"""Three liveness frames as a caller gives them."""
ReadyImage: TypeAlias = PreparedImage | bytes
"""An image ready to encode: prepared, or the bytes as given."""
ReadyFaces: TypeAlias = PreparedFaces | tuple[bytes, bytes, bytes]
"""Three frames ready to encode."""


def three_frames(faces: Faces) -> PreparedFaces | tuple[ImageInput, ImageInput, ImageInput]:
    """The three frames (any iterable of three), else :class:`FrameCountError`, before any work."""
    if isinstance(faces, PreparedFaces):
        return faces
    frames = tuple(faces)
    if len(frames) != 3:
        raise FrameCountError(f"liveness takes exactly 3 face frames, got {len(frames)}")
    return frames[0], frames[1], frames[2]


def ready_now(image: object, *, prepare: bool) -> ReadyImage | None:
    """The ready image when no thread is needed (prepared, or bytes sent as given), else None."""
    if isinstance(image, PreparedImage):
        return image
    if not prepare and isinstance(image, bytes):
        return image
    return None


def wire_bytes(image: ReadyImage) -> bytes:
    """The bytes that go on the wire."""
    return image.data if isinstance(image, PreparedImage) else image


async def upload_document(image: ImageInput, *, prepare: bool) -> ReadyImage:
    """An ID side ready to send; preprocessing and file reads run in a worker thread."""
    ready = ready_now(image, prepare=prepare)
    if ready is not None:
        return ready
    if prepare:
        return await prepare_document(image)
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    return await asyncio.to_thread(load_image_bytes, image)


def upload_document_sync(image: ImageInput, *, prepare: bool) -> ReadyImage:
    """Blocking twin of :func:`upload_document`, for worker threads."""
    ready = ready_now(image, prepare=prepare)
    if ready is not None:
        return ready
    return prepare_document_sync(image) if prepare else load_image_bytes(image)


async def upload_faces(
    faces: Faces, *, prepare: bool, capture_times: Sequence[float] | None = None
) -> ReadyFaces:
    """Three frames ready to send: prepared and checked, or as given (read in threads)."""
    frames = three_frames(faces)
    if isinstance(frames, PreparedFaces):
        return frames
    if prepare:
        return await prepare_faces(frames[0], frames[1], frames[2], capture_times=capture_times)
    a, b, c = await asyncio.gather(*(_frame_as_given(f, i) for i, f in enumerate(frames)))
    return a, b, c


def upload_faces_sync(faces: Faces, *, prepare: bool) -> ReadyFaces:
    """Blocking twin of :func:`upload_faces`, for worker threads."""
    frames = three_frames(faces)
    if isinstance(frames, PreparedFaces):
        return frames
    if prepare:
        return prepare_faces_sync(frames[0], frames[1], frames[2])
    a, b, c = (_named(i, upload_document_sync, f) for i, f in enumerate(frames))
    return wire_bytes(a), wire_bytes(b), wire_bytes(c)


async def _frame_as_given(image: ImageInput, index: int) -> bytes:
    try:
        return wire_bytes(await upload_document(image, prepare=False))
    except ImageError as exc:
        raise _renamed(exc, index) from exc


def _named(index: int, read: Callable[..., ReadyImage], image: ImageInput) -> ReadyImage:
    try:
        return read(image, prepare=False)
    except ImageError as exc:
        raise _renamed(exc, index) from exc


def _renamed(exc: ImageError, index: int) -> ImageError:
    # Named by the frame's API field, as prepare_faces names a frame it cannot prepare.
    return type(exc)(f"face_{index + 1}: {exc.reason}")


def face_bytes(faces: ReadyFaces) -> tuple[bytes, bytes, bytes]:
    """The three frames' wire bytes."""
    if isinstance(faces, PreparedFaces):
        a, b, c = faces.frames
        return a.data, b.data, c.data
    return faces
