"""`vlens images --faces` explains the identical-frames verdict: each pair's measured difference."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import run
from tests.images.photo_frames import COPIES, jpeg, moved_subject_frame


def frames(folder: Path, *, copy: str | None = None) -> list[Path]:
    """Three 1280x960 frames, the subject 0.5 % further right in each; the third a copy of the
    first when ``copy`` names one of photo_frames.COPIES."""
    data = [jpeg(moved_subject_frame("busy", (1280, 960), m), 92) for m in (0.0, 0.005, 0.01)]
    if copy is not None:
        data[2] = COPIES[copy](data[0])
    paths = []
    for i, d in enumerate(data, 1):
        paths.append(folder / f"f{i}.jpg")
        paths[-1].write_bytes(d)
    return paths


def test_moving_frames_are_explained_and_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three frames of real motion: exit 0, and one line per pair with its difference."""
    paths = frames(tmp_path)
    status, out, err = run(capsys, "images", "--faces", *map(str, paths))
    assert status == 0, err
    pairs = [line for line in out.splitlines() if " vs " in line]
    assert len(pairs) == 3
    assert pairs[0].startswith(f"{paths[0]} vs {paths[1]}: face_1 and face_2 differ by ")
    assert all("grey levels" in line for line in pairs)
    assert all("different pictures" in line for line in pairs)


def test_a_copy_is_refused_with_its_measurement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-encoded copy as the third frame: exit 2, named on stderr, its difference shown."""
    paths = frames(tmp_path, copy="reencoded-q75")
    status, out, err = run(capsys, "images", "--faces", *map(str, paths))
    assert status == 2
    assert f"{paths[2]}: IdenticalFramesError: a copy of {paths[0]}" in err
    (line,) = [line for line in out.splitlines() if line.startswith(f"{paths[0]} vs {paths[2]}")]
    assert "copies of one picture" in line


def test_the_same_file_twice_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same bytes as two frames: 'the same image', and the pair says identical bytes."""
    paths = frames(tmp_path, copy="same-bytes")
    status, out, err = run(capsys, "images", "--faces", *map(str, paths))
    assert status == 2
    assert f"IdenticalFramesError: the same image as {paths[0]}" in err
    assert "identical bytes" in out
