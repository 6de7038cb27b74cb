"""One applicant's images, read or prepared in the runner's own threads, each at most once.

Started when the applicant's turn comes, so nothing is read for applicants still queued; the later
images prepare while the earlier steps upload. Errors name the side or frame (``front: ...``),
never the path: a folder is often named after the customer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CompressionError, ImageTooLargeError, UnsupportedImageError
from ..images import PreparedFaces, PreparedImage, prepare_document_sync, prepare_faces_sync
from ._manifest import BulkApplicant

__all__ = ["ApplicantImages"]


class ApplicantImages:
    """Reads and prepares one applicant's images, each at most once, in the runner's own
    preprocessing threads.

    Not in the loop's default executor: the client encodes request bodies there *after* a
    request took its rate-limit token, and queueing that behind seconds of Pillow work would
    bunch requests up at the server.
    """

    def __init__(
        self, applicant: BulkApplicant, executor: concurrent.futures.Executor, *, prepare: bool
    ) -> None:
        self._applicant = applicant
        self._executor = executor
        self._prepare = prepare
        self._futures: dict[str, asyncio.Future[Any]] = {}

    def start(self, *names: str) -> None:
        """Start reading ``names`` (``front``, ``back``, ``faces``) unless already started."""
        loop = asyncio.get_running_loop()
        a = self._applicant
        for name in names:
            if name in self._futures:
                continue
            job: Callable[[], object]
            if name == "faces" and self._prepare:
                job = functools.partial(prepare_faces_sync, *a.faces)
            elif name == "faces":
                job = functools.partial(_read_faces, a.faces)
            else:
                path = a.front if name == "front" else a.back
                reader = _prepare_side if self._prepare else _read_side
                job = functools.partial(reader, name, path)
            self._futures[name] = loop.run_in_executor(self._executor, job)

    async def document(self, name: str) -> PreparedImage | bytes:
        """The ID side ``name`` (``front`` or ``back``), ready to send."""
        self.start(name)
        result = await self._futures[name]
        assert isinstance(result, PreparedImage | bytes)
        return result

    async def faces(self) -> PreparedFaces | tuple[bytes, bytes, bytes]:
        """The three face frames, ready to send."""
        self.start("faces")
        result = await self._futures["faces"]
        assert isinstance(result, PreparedFaces | tuple)
        return result

    async def close(self) -> None:
        """Cancel what is not needed any more and collect every outcome (no unobserved errors)."""
        for future in self._futures.values():
            future.cancel()
        await asyncio.gather(*self._futures.values(), return_exceptions=True)


def _prepare_side(name: str, path: Path) -> PreparedImage:
    """Prepare one ID side (blocking; runs in a preprocessing thread)."""
    try:
        return prepare_document_sync(path)
    except (UnsupportedImageError, ImageTooLargeError, CompressionError) as exc:
        # Name the side, as prepare_faces names the frame; never the path (it may name a person).
        raise type(exc)(f"{name}: {exc.reason}") from exc


def _read_side(name: str, path: Path) -> bytes:
    """Read an image as it is, for ``prepare=False`` (blocking; runs in a preprocessing thread)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnsupportedImageError(f"{name}: cannot read the image file") from exc
    if not data:
        raise UnsupportedImageError(f"{name}: empty file")
    return data


def _read_faces(paths: tuple[Path, Path, Path]) -> tuple[bytes, bytes, bytes]:
    """Read the three frames as they are, for ``prepare=False``."""
    return (
        _read_side("face_1", paths[0]),
        _read_side("face_2", paths[1]),
        _read_side("face_3", paths[2]),
    )
