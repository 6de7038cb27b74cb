"""One applicant's images, made ready to send in the runner's own threads, each at most once.

Started when the applicant's turn comes, so nothing is read for applicants still queued; the later
images prepare while the earlier steps upload. Whether an image is prepared or sent as it is is
:mod:`vlens_async._uploads`'s decision; what is bulk's is the reporting: an empty file is refused
as such, and an error names the image (``front: ...``), never its path, since a folder is often
named after the customer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Final

from .._uploads import ReadyFaces, ReadyImage, upload_document_sync, upload_faces_sync
from ..errors import CompressionError, ImageTooLargeError, UnsupportedImageError
from ..images import PreparedFaces, PreparedImage
from ._manifest import FACE_COLUMNS, BulkApplicant

__all__ = ["ApplicantImages"]

# The refusals whose reason is renamed after the image; the frames of a liveness capture are
# named by the preprocessor itself (``face_2: ...``).
_RENAMED: Final = (UnsupportedImageError, ImageTooLargeError, CompressionError)


class ApplicantImages:
    """Makes one applicant's images ready to send, each at most once, in the runner's own
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
        self._futures: dict[str, asyncio.Future[ReadyImage | ReadyFaces]] = {}

    def start(self, *names: str) -> None:
        """Start making ``names`` (``front``, ``back``, ``faces``) ready, unless started."""
        loop = asyncio.get_running_loop()
        for name in names:
            if name not in self._futures:
                # In a copy of this task's context, as asyncio.to_thread would: the job's
                # prefer_throughput() is a context variable, which executor threads lack.
                job = functools.partial(contextvars.copy_context().run, self._job(name))
                self._futures[name] = loop.run_in_executor(self._executor, job)

    def _job(self, name: str) -> Callable[[], ReadyImage | ReadyFaces]:
        a = self._applicant
        if name == "faces":
            return functools.partial(_faces, a.faces, prepare=self._prepare)
        path = a.front if name == "front" else a.back
        return functools.partial(_document, name, path, prepare=self._prepare)

    async def document(self, name: str) -> ReadyImage:
        """The ID side ``name`` (``front`` or ``back``), ready to send."""
        self.start(name)
        result = await self._futures[name]
        assert isinstance(result, PreparedImage | bytes)
        return result

    async def faces(self) -> ReadyFaces:
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


def _document(name: str, path: Path, *, prepare: bool) -> ReadyImage:
    """One ID side ready to send (blocking; runs in a preprocessing thread)."""
    _refuse_unusable(name, path)
    try:
        return upload_document_sync(path, prepare=prepare)
    except _RENAMED as exc:
        raise type(exc)(f"{name}: {exc.reason}") from exc


def _faces(paths: tuple[Path, Path, Path], *, prepare: bool) -> ReadyFaces:
    """The three frames ready to send (blocking; runs in a preprocessing thread)."""
    for name, path in zip(FACE_COLUMNS, paths, strict=True):
        _refuse_unusable(name, path)
    return upload_faces_sync(paths, prepare=prepare)


def _refuse_unusable(name: str, path: Path) -> None:
    """Refuse, by the image's name, a file that is gone since the manifest was read, or empty.

    A stat, not a read: reading is the upload's. Not chained: an OSError's text names the path.
    """
    try:
        size = path.stat().st_size
    except OSError:
        raise UnsupportedImageError(f"{name}: cannot read the image file") from None
    if size == 0:
        raise UnsupportedImageError(f"{name}: empty file")
