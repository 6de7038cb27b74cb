"""The values the preprocessor hands out, and the input types it accepts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO, TypeAlias, overload

import attrs
from PIL import Image

from ..errors import ConfigurationError


@attrs.frozen
class PreparedImage:
    """A JPEG ready to upload, with what the preprocessor did to it.

    ``data`` is the JPEG, ``width`` and ``height`` its dimensions, ``quality`` the JPEG quality it
    was encoded at (``None`` when the input passed through without re-encoding, ``passthrough``
    true), ``input_bytes`` the size of the input (0 for a ``PIL.Image.Image``) and ``digest`` the
    SHA-256 hex digest of ``data``. The repr never shows the bytes. Passing a ``PreparedImage``
    back to a ``prepare_*`` function returns it unchanged when it fits that call's limits.
    """

    data: bytes
    width: int
    height: int
    quality: int | None
    input_bytes: int
    digest: str
    passthrough: bool

    @property
    def size(self) -> int:
        """Length of :attr:`data` in bytes."""
        return len(self.data)

    def fits(self, max_bytes: int, max_side: int) -> bool:
        """Whether this image is within ``max_bytes`` and ``max_side``."""
        return self.size <= max_bytes and max(self.width, self.height) <= max_side

    def __repr__(self) -> str:
        return (
            f"PreparedImage(width={self.width}, height={self.height}, size={self.size}, "
            f"quality={self.quality}, input_bytes={self.input_bytes}, "
            f"digest={self.digest[:12]!r}, passthrough={self.passthrough})"
        )


def prepared(
    data: bytes, size: tuple[int, int], quality: int | None, input_bytes: int, *, passthrough: bool
) -> PreparedImage:
    """A :class:`PreparedImage` of the JPEG ``data``, its digest computed here."""
    return PreparedImage(
        data=data,
        width=size[0],
        height=size[1],
        quality=quality,
        input_bytes=input_bytes,
        digest=hashlib.sha256(data).hexdigest(),
        passthrough=passthrough,
    )


def _three_frames(
    value: Iterable[PreparedImage],
) -> tuple[PreparedImage, PreparedImage, PreparedImage]:
    frames = tuple(value)
    if len(frames) != 3 or not all(isinstance(f, PreparedImage) for f in frames):
        raise ConfigurationError("PreparedFaces needs exactly three PreparedImage frames")
    return frames[0], frames[1], frames[2]


@attrs.frozen
class PreparedFaces:
    """Three liveness frames, prepared and checked; iterable and indexable like a tuple."""

    frames: tuple[PreparedImage, PreparedImage, PreparedImage] = attrs.field(
        converter=_three_frames
    )

    def __iter__(self) -> Iterator[PreparedImage]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, index: int) -> PreparedImage: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[PreparedImage, ...]: ...

    def __getitem__(self, index: int | slice) -> PreparedImage | tuple[PreparedImage, ...]:
        return self.frames[index]


ImageInput: TypeAlias = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | Image.Image | PreparedImage
)
"""Everything the preprocessor and the client accept as an image."""
