"""The identical-frames check calibrated on frames made from real photographs (issue 14).

Refused always: the same bytes, copies re-encoded at quality 50 and up, resized by any factor,
converted to PNG or to grayscale and back, with metadata added or stripped, with brightness or
contrast changed by up to 10 %. Accepted always: a subject moved by 0.5 % of the frame width or
more, on a plain and on a busy background, from 640 px to 12 MP, and portraits cut from a
photograph with small shifts, zooms and turns. Each frame is prepared as ``prepare_faces`` would
(long side at most 1280 px) before it is compared. The margins asserted here (1.5x either side of
the threshold) are what the measurements in ``_frames``' docstring show.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from tests.images.photo_frames import (
    COPIES,
    PHOTOS,
    jpeg,
    moved_subject_frame,
    portrait_frame,
)
from vlens_async.config import FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.errors import IdenticalFramesError
from vlens_async.images import (
    IDENTICAL_FRAME_THRESHOLD,
    PreparedImage,
    compare_frames,
    frame_difference,
    prepare_document_sync,
    prepare_faces_sync,
)

MARGIN = 1.5
SIZES = {"640": (640, 480), "1280": (1280, 960), "12mp": (4032, 3024)}
# 12 MP copies are slow to make (a 12 MP encode each): a subset of them, on one frame.
COPIES_12MP = (
    "reencoded-q50",
    "resized-x0.25",
    "resized-x0.37",
    "grey-then-rgb",
    "metadata-stripped",
    "brightness+10%",
    "contrast-10%",
)
MOTIONS: dict[str, dict[str, object]] = {
    "shift-x-0.5%": {"shift": (0.005, 0.0)},
    "shift-y-0.5%": {"shift": (0.0, 0.005)},
    "zoom-1%": {"zoom": 1.01},
    "turn-0.5deg": {"angle": 0.5},
    "mixed": {"shift": (0.003, 0.003), "zoom": 1.005, "angle": 0.3},
}


@functools.cache
def prepared(data: bytes) -> PreparedImage:
    """A frame prepared as prepare_faces prepares each frame."""
    return prepare_document_sync(
        data, max_bytes=FACE_MAX_BYTES, max_side=FACE_MAX_SIDE, preserve_grain=False
    )


def difference(a: bytes, b: bytes) -> float:
    """The check's difference between two frames, once both are prepared."""
    return frame_difference(prepared(a).data, prepared(b).data)


@functools.cache
def original(kind: str, size_name: str) -> bytes:
    """A still frame: a portrait of one of PHOTOS (3:4), or a plain or busy scene (4:3)."""
    width, height = SIZES[size_name]
    if kind in PHOTOS:
        return jpeg(portrait_frame(kind, (height, width)), 92)
    return jpeg(moved_subject_frame(kind, (width, height), 0.0), 92)


def copy_cases() -> list[tuple[str, str, str]]:
    """(original kind, size, copy) for every copy the check must refuse."""
    cases = [
        (kind, size, copy)
        for kind in (*PHOTOS, "plain", "busy")
        for size in ("640", "1280")
        for copy in COPIES
    ]
    cases += [("astronaut", "12mp", copy) for copy in COPIES_12MP]
    cases += [("busy", "12mp", copy) for copy in ("reencoded-q50", "resized-x0.25")]
    return cases


def motion_cases() -> list[tuple[str, Callable[[], tuple[bytes, bytes]]]]:
    """(name, make two frames) for every pair of real motion the check must accept."""
    cases: list[tuple[str, Callable[[], tuple[bytes, bytes]]]] = []
    for size_name, size in SIZES.items():
        for background in ("plain", "busy"):
            for moved in (0.005, 0.01):

                def scene(b: str = background, s: tuple[int, int] = size, m: float = moved):
                    return (
                        jpeg(moved_subject_frame(b, s, 0.0), 92),
                        jpeg(moved_subject_frame(b, s, m), 92),
                    )

                cases.append((f"{background}-{size_name}-moved-{moved:.1%}", scene))
        photos = PHOTOS if size_name != "12mp" else ("astronaut",)
        for name in photos:
            for motion, options in MOTIONS.items():

                def view(
                    n: str = name, s: tuple[int, int] = size, o: dict[str, object] = options
                ) -> tuple[bytes, bytes]:
                    portrait = (s[1], s[0])
                    return (
                        jpeg(portrait_frame(n, portrait), 92),
                        jpeg(portrait_frame(n, portrait, **o), 92),  # type: ignore[arg-type]
                    )

                cases.append((f"{name}-{size_name}-{motion}", view))
    return cases


@functools.cache
def copy_differences() -> dict[tuple[str, str, str], float]:
    """Every copy case's difference (computed once for the module's tests)."""
    out = {}
    for kind, size, copy in copy_cases():
        frame = original(kind, size)
        out[(kind, size, copy)] = difference(frame, COPIES[copy](frame))
    return out


@functools.cache
def motion_differences() -> dict[str, float]:
    """Every motion case's difference (computed once for the module's tests)."""
    return {name: difference(*make()) for name, make in motion_cases()}


def test_every_copy_is_refused_with_margin() -> None:
    """Every copy scores under the threshold divided by the margin."""
    found = copy_differences()
    worst = sorted(found.items(), key=lambda item: item[1])[-3:]
    assert all(d < IDENTICAL_FRAME_THRESHOLD / MARGIN for d in found.values()), worst


def test_every_motion_is_accepted_with_margin() -> None:
    """Every pair of real motion scores over the threshold times the margin."""
    found = motion_differences()
    least = sorted(found.items(), key=lambda item: item[1])[:3]
    assert all(d > IDENTICAL_FRAME_THRESHOLD * MARGIN for d in found.values()), least


@pytest.mark.parametrize("copy", ["same-bytes", "reencoded-q50", "resized-x0.37", "png"])
def test_prepare_faces_names_the_copy(copy: str) -> None:
    """prepare_faces refuses a copy as the third frame, naming the pair and why it is a copy."""
    first, moved = motion_cases()[0][1]()
    with pytest.raises(IdenticalFramesError) as info:
        prepare_faces_sync(first, moved, COPIES[copy](first))
    assert info.value.pair == (0, 2)
    message = str(info.value)
    assert message.startswith("face_1 and face_3 ")
    if copy == "same-bytes":
        assert "identical bytes" in message
    else:
        assert "copies of one picture" in message
        assert "grey levels" in message


@pytest.mark.parametrize("size_name", sorted(SIZES))
@pytest.mark.parametrize("background", ["plain", "busy"])
def test_a_burst_moving_half_a_percent_passes(size_name: str, background: str) -> None:
    """Three frames, the subject 0.5 % of the width further right in each, are accepted."""
    size = SIZES[size_name]
    frames = [jpeg(moved_subject_frame(background, size, m), 92) for m in (0.0, 0.005, 0.01)]
    faces = prepare_faces_sync(*frames)
    assert len(faces) == 3
    assert not any(c.copy for c in compare_frames([f.data for f in faces]))


def test_compare_frames_explains_each_pair() -> None:
    """compare_frames measures every pair and says its verdict in words."""
    first, moved = motion_cases()[0][1]()
    copy = COPIES["reencoded-q75"](first)
    frames = [prepared(f).data for f in (first, moved, copy)]
    found = compare_frames(frames)
    assert [c.pair for c in found] == [(0, 1), (1, 2), (0, 2)]
    assert [c.copy for c in found] == [False, False, True]
    assert "different pictures" in found[0].explain()
    assert found[2].explain().startswith("face_1 and face_3 differ by ")
    assert "copies of one picture" in found[2].explain()
    same = compare_frames([frames[0], frames[0], frames[1]])[0]
    assert same.same_bytes
    assert same.copy
    assert "identical bytes" in same.explain()


def test_frames_of_other_shapes_are_never_copies() -> None:
    """A portrait and a landscape crop of one photograph are not compared as copies."""
    tall = jpeg(portrait_frame("coffee", (480, 640)), 92)
    wide = jpeg(portrait_frame("coffee", (640, 480)), 92)
    assert frame_difference(tall, wide) == float("inf")
    (comparison,) = [c for c in compare_frames([tall, wide, tall]) if c.pair == (0, 1)]
    assert not comparison.copy
    assert "differ in shape" in comparison.explain()
