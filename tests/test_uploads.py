"""_uploads: the one prepare-or-not decision and the one three-frames check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.client import jpeg
from tests.helpers.emulator import applicant
from vlens_async import _uploads
from vlens_async.errors import FrameCountError, UnsupportedImageError
from vlens_async.images import PreparedFaces, PreparedImage, prepare_document_sync

IMG = jpeg(64, 48)


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_other_than_three_frames_are_refused(count: int) -> None:
    """Any number of frames but three raises FrameCountError naming the count."""
    with pytest.raises(FrameCountError, match=f"got {count}"):
        _uploads.three_frames([IMG] * count)


def test_three_frames_from_any_iterable() -> None:
    """A generator of three frames is accepted and becomes a tuple."""
    assert _uploads.three_frames(f for f in (IMG, IMG, IMG)) == (IMG, IMG, IMG)


async def test_as_given_means_the_same_bytes(tmp_path: Path) -> None:
    """Without prepare, bytes go as they are and a path is read as it is."""
    path = tmp_path / "front.jpg"
    path.write_bytes(IMG + b"trailer")
    assert await _uploads.upload_document(IMG + b"x", prepare=False) == IMG + b"x"
    assert await _uploads.upload_document(path, prepare=False) == IMG + b"trailer"
    assert _uploads.upload_document_sync(bytearray(b"ab"), prepare=False) == b"ab"


async def test_prepare_gives_a_prepared_image_and_passes_one_through() -> None:
    """With prepare, an input becomes a PreparedImage; a PreparedImage goes as it is either way."""
    prepared = await _uploads.upload_document(IMG, prepare=True)
    assert isinstance(prepared, PreparedImage)
    done = prepare_document_sync(IMG)
    for prepare in (True, False):
        assert await _uploads.upload_document(done, prepare=prepare) is done
        assert _uploads.wire_bytes(_uploads.upload_document_sync(done, prepare=prepare)) == (
            done.data
        )


async def test_frames_prepared_or_as_given() -> None:
    """Frames come back as PreparedFaces when prepared, as their bytes when not."""
    a, b, c = applicant(1).faces
    frames = (a, b, c)
    prepared = await _uploads.upload_faces(frames, prepare=True)
    assert isinstance(prepared, PreparedFaces)
    assert _uploads.face_bytes(prepared) == tuple(f.data for f in prepared)
    assert await _uploads.upload_faces(frames, prepare=False) == frames
    assert _uploads.upload_faces_sync(frames, prepare=False) == frames


async def test_a_frame_that_cannot_be_read_is_named_by_its_field(tmp_path: Path) -> None:
    """Sent as given, an unreadable second frame fails as ``face_2: ...``, never naming its path."""
    missing = tmp_path / "Mona-Hassan-frame.jpg"
    frames = (IMG, missing, IMG)
    with pytest.raises(UnsupportedImageError, match=r"^face_2: cannot read") as info:
        await _uploads.upload_faces(frames, prepare=False)
    assert "Mona" not in str(info.value)
    with pytest.raises(UnsupportedImageError, match=r"^face_2: cannot read"):
        _uploads.upload_faces_sync(frames, prepare=False)
