"""Face frames (samples._faces): person and pose in the code, real motion, the face scenarios."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageStat

from tests.helpers.samples import applicant, as_png, client_copy
from vlens_async.errors import IdenticalFramesError
from vlens_async.images import prepare_faces_sync
from vlens_async.samples import read_card, read_face


@pytest.mark.parametrize("transform", ["original", "client_1280_q60", "small_640_q60", "png"])
def test_read_face_round_trip(transform: str) -> None:
    """Each frame decodes to the card's person, its index and a distinct pose."""
    a = applicant("valid")
    convert = {
        "original": lambda b: b,
        "client_1280_q60": client_copy,
        "small_640_q60": lambda b: client_copy(b, 640, 60),
        "png": as_png,
    }[transform]
    readings = [read_face(convert(frame)) for frame in a.faces]
    assert all(r is not None for r in readings)
    assert [r.person_id for r in readings if r] == [a.fields.person_id] * 3
    assert [r.frame for r in readings if r] == [0, 1, 2]
    poses = {r.pose for r in readings if r}
    assert len(poses) == 3
    assert all(abs(p[0]) <= 24 and abs(p[1]) <= 24 and abs(p[2]) <= 3.0 for p in poses)


def test_valid_frames_differ_slightly() -> None:
    """Valid frames are different bytes but close pictures (small motion, same person)."""
    a = applicant("valid")
    assert len(set(a.faces)) == 3
    with Image.open(io.BytesIO(a.faces[0])) as f0, Image.open(io.BytesIO(a.faces[1])) as f1:
        diff = ImageStat.Stat(ImageChops.difference(f0.convert("L"), f1.convert("L"))).mean[0]
    assert 0.5 < diff < 25


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_valid_frames_pass_the_clients_identical_frame_check(seed: int) -> None:
    """The client's preprocessing accepts valid frames and rejects identical_frames."""
    prepare_faces_sync(*applicant("valid", seed).faces)
    with pytest.raises(IdenticalFramesError):
        prepare_faces_sync(*applicant("identical_frames", seed).faces)


def test_identical_frames_are_identical() -> None:
    """identical_frames repeats one frame's bytes three times."""
    a = applicant("identical_frames")
    assert a.faces[0] == a.faces[1] == a.faces[2]
    assert a.faces[0] == applicant("valid").faces[0]


def test_different_person_faces_belong_to_someone_else() -> None:
    """different_person frames carry another person id than the card (and look different)."""
    a = applicant("different_person")
    readings = [read_face(client_copy(f)) for f in a.faces]
    ids = {r.person_id for r in readings if r}
    assert len(ids) == 1
    assert a.fields.person_id not in ids
    assert a.faces[0] != applicant("valid").faces[0]


def test_card_photo_and_frames_share_a_person() -> None:
    """The valid applicant's frames carry the same person id as the card code."""
    a = applicant("valid")
    card, face = read_card(a.front), read_face(a.faces[2])
    assert card is not None
    assert face is not None
    assert card.fields.person_id == face.person_id == a.fields.person_id
