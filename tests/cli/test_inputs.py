"""Every local input is checked before anything is sent; `vlens images` goes on past a bad file
and never overwrites (issue 12)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.support import RecordingServer, one_line, run, verify_argv, write_applicant
from vlens_async.samples import make_applicant


def service(recording: RecordingServer) -> list[str]:
    """Options pointing `vlens verify` at the recording server."""
    return ["--base-url", recording.base_url, "--api-key", "k"]


@pytest.mark.parametrize(
    ("bad", "label"),
    [("f2", "--face #2"), ("f3", "--face #3"), ("back", "--back"), ("front", "--front")],
)
def test_verify_refuses_an_unreadable_input_before_the_first_request(
    bad: str,
    label: str,
    tmp_path: Path,
    recording: RecordingServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A text file as any input: one line naming its option, exit 2, nothing sent (the front
    and the back used to go before the faces were read)."""
    paths = write_applicant(tmp_path)
    paths[bad].write_text("notes, not a photo")
    status, out, err = run(capsys, *verify_argv(paths), *service(recording))
    assert status == 2
    line = one_line(err)
    assert line.startswith(f"vlens verify: {label}: {paths[bad]}: UnsupportedImageError")
    assert out == ""
    assert recording.seen == []


def test_verify_refuses_identical_frames_before_the_first_request(
    tmp_path: Path, recording: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same photo given as two frames: one line naming both, exit 2, nothing sent."""
    paths = write_applicant(tmp_path)
    paths["f3"].write_bytes(paths["f1"].read_bytes())
    status, _, err = run(capsys, *verify_argv(paths), *service(recording))
    assert status == 2
    line = one_line(err)
    assert f"--face #1: {paths['f1']} and --face #3: {paths['f3']}" in line
    assert "IdenticalFramesError" in line
    assert recording.seen == []


def test_verify_refuses_a_missing_file_naming_its_option(
    tmp_path: Path, recording: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --back that does not exist: one line naming --back, nothing sent."""
    paths = write_applicant(tmp_path)
    paths["back"].unlink()
    status, _, err = run(capsys, *verify_argv(paths), *service(recording))
    assert status == 2
    assert one_line(err) == f"vlens verify: --back: {paths['back']}: no such file"
    assert recording.seen == []


def test_verify_with_good_files_sends_them(
    tmp_path: Path, recording: RecordingServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Good files pass the checks and reach the service (here refusing the key: exit 2)."""
    paths = write_applicant(tmp_path)
    status, _, err = run(capsys, *verify_argv(paths), *service(recording))
    assert status == 2
    assert "AuthenticationError" in one_line(err)
    assert len(recording.api_requests) == 1


def write_images(folder: Path) -> tuple[Path, Path, Path]:
    """front.jpg (a JPEG), front.png (a small PNG of the back), notes.jpg (text)."""
    a = make_applicant(2)
    jpg, png, notes = folder / "front.jpg", folder / "front.png", folder / "notes.jpg"
    jpg.write_bytes(a.front)
    with Image.open(io.BytesIO(a.back)) as back:
        back.reduce(4).save(png, compress_level=1)
    notes.write_text("meeting notes")
    return jpg, png, notes


def test_images_goes_on_past_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One unreadable file is named on stderr; the others are prepared and written; exit 2."""
    jpg, png, notes = write_images(tmp_path)
    out = tmp_path / "out"
    status, stdout, err = run(capsys, "images", str(jpg), str(notes), str(png), "--out", str(out))
    assert status == 2
    assert one_line(err).startswith(f"vlens images: {notes}: UnsupportedImageError")
    assert stdout.count("->") == 2
    assert sorted(p.name for p in out.iterdir()) == ["front-2.jpg", "front.jpg"]


def test_images_outputs_never_overwrite_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """front.jpg and front.png get distinct outputs, each its own input's JPEG."""
    jpg, png, _ = write_images(tmp_path)
    out = tmp_path / "out"
    status, stdout, _ = run(capsys, "images", str(jpg), str(png), "--out", str(out))
    assert status == 0
    assert f"written to {out / 'front.jpg'}" in stdout
    assert f"written to {out / 'front-2.jpg'}" in stdout
    assert (out / "front.jpg").read_bytes() == jpg.read_bytes()  # a compliant JPEG passes
    with Image.open(out / "front-2.jpg") as written:
        assert written.format == "JPEG"
    assert (out / "front-2.jpg").read_bytes() != jpg.read_bytes()


def test_images_outputs_are_owner_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Written images (identity documents) are readable by their owner only, an old file too."""
    jpg, png, _ = write_images(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "front.jpg").write_bytes(b"old")
    (out / "front.jpg").chmod(0o644)
    status, _, _ = run(capsys, "images", str(jpg), str(png), "--out", str(out))
    assert status == 0
    for name in ("front.jpg", "front-2.jpg"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    assert (out / "front.jpg").read_bytes() == jpg.read_bytes()


def test_images_never_writes_over_an_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out the inputs' own folder: the output that would replace an input is refused (exit
    2), the input is untouched, the other output is written."""
    jpg, png, _ = write_images(tmp_path)
    original = png.read_bytes()
    before = jpg.stat().st_mtime_ns
    status, _, err = run(capsys, "images", str(png), str(jpg), "--out", str(tmp_path))
    assert status == 2
    # front.png takes front.jpg, the name of an input: refused; front.jpg's goes to front-2.jpg.
    assert one_line(err) == (
        f"vlens images: {png}: not written: {tmp_path / 'front.jpg'} is an input file; "
        "give another --out"
    )
    assert jpg.stat().st_mtime_ns == before
    assert png.read_bytes() == original
    assert (tmp_path / "front-2.jpg").is_file()


@pytest.mark.parametrize(
    ("flag", "name"), [("--max-bytes", "--max-bytes"), ("--max-side", "--max-side")]
)
def test_images_refuses_a_zero_budget(
    flag: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-bytes 0 and --max-side 0 are refused (they were ignored): one line, nothing written."""
    jpg = tmp_path / "front.jpg"
    jpg.write_bytes(make_applicant(2).front)
    out = tmp_path / "out"
    status, stdout, err = run(capsys, "images", str(jpg), flag, "0", "--out", str(out))
    assert status == 2
    line = one_line(err)
    assert f"{name} must be" in line
    assert "max_bytes" not in line
    assert "max_side" not in line
    assert stdout == ""
    assert not out.exists()


def test_images_faces_names_an_identical_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--faces with a frame given twice: named on stderr, exit 2."""
    paths = write_applicant(tmp_path)
    argv = ["images", "--faces", str(paths["f1"]), str(paths["f2"]), str(paths["f1"])]
    status, stdout, err = run(capsys, *argv)
    assert status == 2
    assert "IdenticalFramesError" in one_line(err)
    assert stdout.count("->") == 3
