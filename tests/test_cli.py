"""The `vlens` command: verify, images, bulk and demo, with exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.client import free_port
from vlens_async.cli import main
from vlens_async.emulator import BackgroundEmulator
from vlens_async.samples import make_applicant


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `vlens argv...` in-process; return (status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_verify_synthetic_applicant_passes(capsys: pytest.CaptureFixture[str]) -> None:
    """`vlens verify` with no images verifies a synthetic applicant and exits 0."""
    status, out, _ = run(capsys, "verify", "--seed", "3")
    assert status == 0
    assert "COMPLETED" in out
    assert "validated: yes" in out
    nid = make_applicant(3).fields.national_id
    assert nid not in out
    assert nid[-4:] in out


def test_verify_json_and_show_pii(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the outcome; --show-pii reveals the full national ID only when asked."""
    nid = make_applicant(4).fields.national_id
    status, out, _ = run(capsys, "verify", "--seed", "4", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["state"] == "COMPLETED"
    assert data["front"]["id_number"] != nid
    status, out, _ = run(capsys, "verify", "--seed", "4", "--json", "--show-pii")
    assert json.loads(out)["front"]["id_number"] == nid


def test_verify_failed_verification_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """An expired card ends FAILED with its code, and the command exits 1."""
    status, out, _ = run(capsys, "verify", "--scenario", "expired", "--json")
    assert status == 1
    data = json.loads(out)
    assert data["state"] == "FAILED"
    assert data["error_code"] == 3010
    assert data["error_type"] == "DocumentExpiredError"


def test_verify_with_image_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Image paths on the command line are read and verified."""
    a = make_applicant(5)
    paths = {}
    for name, data in (
        ("front", a.front),
        ("back", a.back),
        *zip(("f1", "f2", "f3"), a.faces, strict=False),
    ):
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(data)
    faces = [arg for n in ("f1", "f2", "f3") for arg in ("--face", str(paths[n]))]
    status, out, _ = run(
        capsys, "verify", "--front", str(paths["front"]), "--back", str(paths["back"]), *faces
    )
    assert status == 0
    assert "COMPLETED" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("verify", "--front", "missing.jpg"), "give --front, --back and three --face"),
        (("verify", "--scenario", "nonsense"), "unknown scenario"),
        (("verify", "--transaction-id", "not-a-uuid"), "--transaction-id must be a UUID"),
        (("emulator", "--api-key", " "), "--api-key is empty"),
        (("verify", "--base-url", "https://vlens.example"), "--api-key"),
        (("verify", "--base-url", "http://10.1.2.3", "--api-key", "k"), "plain http://"),
        (("bulk", "nowhere.csv", "--journal", "j.db", "--out", "o.jsonl"), "no such manifest"),
        (("bulk", "tests", "--journal", "j.db", "--out", "o.jsonl"), "tests is a folder"),
        (("images", "missing.jpg"), "missing.jpg"),
    ],
)
def test_errors_are_one_line_with_status_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    """Bad input or configuration prints one line on stderr, no traceback, and exits 2."""
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_images_reports_and_writes_prepared_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vlens images` prepares documents and frames and writes the JPEGs to --out."""
    a = make_applicant(6)
    faces = []
    for i, data in enumerate(a.faces):
        faces.append(tmp_path / f"face{i}.jpg")
        faces[-1].write_bytes(data)
    status, out, _ = run(
        capsys, "images", "--faces", *map(str, faces), "--out", str(tmp_path / "o")
    )
    assert status == 0
    assert out.count("->") == 3
    assert len(list((tmp_path / "o").glob("*.jpg"))) == 3


def test_demo_runs_the_bulk_job_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vlens demo` writes applicants, runs them on the emulator, and prints the summary."""
    folder = tmp_path / "demo"
    argv = ("demo", "--count", "8", "--folder", str(folder), "--latency", "none", "--faults", "")
    status, out, _ = run(capsys, *argv)
    assert status == 0
    results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(results) == 8
    assert {r["applicant_id"] for r in results} == {f"applicant-{i:05d}" for i in range(8)}
    assert "total" in out
    # A second run reuses the applicants and starts a fresh journal.
    status, _, err = run(capsys, *argv)
    assert status == 0
    assert "writing" not in err


def test_bulk_command_runs_and_resumes(
    tmp_path: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`vlens bulk` verifies a manifest; --resume on a finished journal (against the same
    service: an embedded emulator forgets its transactions) sends nothing new."""
    folder = tmp_path / "demo"
    argv = ("demo", "--count", "4", "--folder", str(folder), "--latency", "none", "--faults", "")
    assert run(capsys, *argv)[0] == 0
    manifest = folder / "applicants" / "manifest.csv"
    journal, out = tmp_path / "run.db", tmp_path / "results.jsonl"
    service = ("--base-url", vlens_emulator_thread.base_url, "--api-key")
    service += (vlens_emulator_thread.api_key, "--rate", "50/s,3000/min")
    base = ("bulk", str(manifest), "--journal", str(journal), "--out", str(out), *service)
    status, stdout, _ = run(capsys, *base)
    assert status == 0
    assert len(out.read_text().splitlines()) == 4
    status, stdout, _ = run(capsys, *base, "--resume")
    assert status == 0
    assert "4 skipped" in stdout
    before = out.read_bytes()
    fresh = ("bulk", str(manifest), "--journal", str(tmp_path / "raw.db"))
    status, _, err = run(capsys, *fresh, "--out", str(out), "--no-prepare", *service)
    assert status == 2  # a new job never replaces another job's results
    assert "holds results already" in err
    assert out.read_bytes() == before
    assert not (tmp_path / "raw.db").exists()
    other = tmp_path / "raw.jsonl"
    status, _, _ = run(capsys, *fresh, "--out", str(other), "--no-prepare", *service)
    assert status == 0
    outcomes = [json.loads(line)["outcome"] for line in other.read_text().splitlines()]
    assert len(outcomes) == 4


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-applicant manifest with its images (written by `vlens demo`, which also runs it)."""
    folder = tmp_path_factory.mktemp("manifest")
    argv = ["demo", "--count", "2", "--folder", str(folder), "--latency", "none", "--faults", ""]
    with pytest.MonkeyPatch.context() as env:  # the embedded emulator, never a real tenant
        for name in ("VLENS_BASE_URL", "VLENS_API_KEY", "VLENS_ACCESS_TOKEN", "VLENS_TENANCY_NAME"):
            env.delenv(name, raising=False)
        for name in ("VLENS_PROXY", "VLENS_CA_BUNDLE"):  # a bad one would stop the demo
            env.delenv(name, raising=False)
        assert main(argv) == 0
    return folder / "applicants" / "manifest.csv"


def bulk_argv(manifest: Path, folder: Path, *extra: str) -> tuple[str, ...]:
    """`vlens bulk` on ``manifest`` with its journal and results in ``folder``."""
    journal, out = str(folder / "run.db"), str(folder / "out.jsonl")
    return ("bulk", str(manifest), "--journal", journal, "--out", out, *extra)


def test_bulk_against_an_unreachable_service_exits_2(
    tmp_path: Path, small_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing answers at --base-url: one line and exit 2 before any applicant is tried."""
    url = f"http://127.0.0.1:{free_port()}"
    argv = bulk_argv(small_manifest, tmp_path, "--base-url", url, "--api-key", "k")
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert "cannot reach 127.0.0.1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run.db").exists()


def test_bulk_with_refused_credentials_exits_2(
    tmp_path: Path,
    small_manifest: Path,
    vlens_emulator_thread: BackgroundEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A wrong API key stops the job (applicants kept pending) with exit 2, not 130."""
    url = vlens_emulator_thread.base_url
    argv = bulk_argv(small_manifest, tmp_path, "--base-url", url, "--api-key", "wrong-key")
    status, out, _ = run(capsys, *argv)
    assert status == 2
    assert "AuthenticationError" in out
    assert "fix that" in out


def test_bulk_refuses_a_journal_that_is_not_one(
    tmp_path: Path, small_manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An old results file given as --journal: exit 2 with a reason, and the file untouched."""
    journal = tmp_path / "run.db"
    journal.write_text('{"applicant_id": "a1", "outcome": "verified"}\n')
    before = journal.read_bytes()
    status, _, err = run(capsys, *bulk_argv(small_manifest, tmp_path))
    assert status == 2
    assert "not a vlens journal" in err
    assert journal.read_bytes() == before


def test_python_dash_m_entry_point() -> None:
    """`python -m vlens_async --help` lists every subcommand."""
    result = subprocess.run(
        [sys.executable, "-m", "vlens_async", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for command in ("demo", "verify", "bulk", "images", "emulator"):
        assert command in result.stdout


def test_verify_unreadable_image_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text files given as images are refused before any upload: one line, exit 2."""
    paths = []
    for name in ("front", "back", "f1", "f2", "f3"):
        paths.append(tmp_path / f"{name}.jpg")
        paths[-1].write_text("not an image")
    faces = [arg for p in paths[2:] for arg in ("--face", str(p))]
    status, out, err = run(
        capsys, "verify", "--front", str(paths[0]), "--back", str(paths[1]), *faces
    )
    assert status == 2
    assert "UnsupportedImageError" in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`vlens --version` prints the distribution's version (the one source) and exits 0."""
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vlens-async {version('vlens-async')}"
