"""The journal refuses what it must (issue 12): another service or manifest, a second job through
any path, a file it does not recognise; it is owner-only and holds no national ID or birth date."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vlens_async import transaction_id_for
from vlens_async.bulk._journal import (
    AttemptRecord,
    ClaimKind,
    JobIdentity,
    Journal,
    needs_review,
)
from vlens_async.bulk._manifest import BulkApplicant
from vlens_async.errors import JournalError, JournalMismatchError

REAL = JobIdentity("https://api.vlens.example", "/data/manifest.csv", "ab" * 32)


def applicant(applicant_id: str, row: int) -> BulkApplicant:
    """An applicant whose paths do not matter to the journal."""
    p = Path("x.jpg")
    return BulkApplicant(applicant_id, p, p, (p, p, p), row=row)


async def started_journal(path: Path, identity: JobIdentity = REAL, claims: int = 2) -> None:
    """A journal started with ``identity``, ``claims`` applicants claimed, then closed."""
    journal = await Journal.open(path, identity=identity)
    for n in range(1, claims + 1):
        await journal.claim(applicant(f"a{n}", n))
    await journal.close(interrupted=True)


def dump(path: Path) -> list[str]:
    """Every row of the journal, as SQL (the logical content, whatever the page layout)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def files_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """The files of ``folder`` with their bytes and permission bits."""
    return {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in folder.iterdir()}


def crashed_journal(tmp_path: Path) -> Path:
    """A journal as a crash leaves it, in its own folder: three applicants claimed, the claims
    only in its -wal, beside its -shm."""
    folder = tmp_path / "crash"
    folder.mkdir()
    path = folder / "j.db"
    code = (
        "import asyncio, os, sys\n"
        "from pathlib import Path\n"
        "from tests.bulk.test_journal_safety import REAL, applicant\n"
        "from vlens_async.bulk._journal import Journal\n"
        "async def main():\n"
        "    journal = await Journal.open(Path(sys.argv[1]), identity=REAL)\n"
        "    for n in range(1, 4):\n"
        "        await journal.claim(applicant(f'a{n}', n))\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60, cwd=root)
    return path


def listing(folder: Path) -> dict[str, bytes]:
    """The files of ``folder`` and their bytes (b"" for a folder)."""
    return {p.name: p.read_bytes() if p.is_file() else b"" for p in folder.iterdir()}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would make new files readable by everyone (0644)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(
    ("other", "words"),
    [
        (JobIdentity("http://127.0.0.1:8080", REAL.manifest_path, REAL.manifest_sha256), "against"),
        (JobIdentity(REAL.base_url, "/data/other.csv", REAL.manifest_sha256), "manifest"),
        (JobIdentity(REAL.base_url, REAL.manifest_path, "cd" * 32), "changed"),
    ],
)
async def test_resume_against_another_service_or_manifest_is_refused_untouched(
    tmp_path: Path, other: JobIdentity, words: str
) -> None:
    """A resume with another base URL, manifest path or manifest digest raises
    JournalMismatchError saying which, and leaves the journal as it was."""
    path = tmp_path / "j.db"
    await started_journal(path)
    before = dump(path)
    with pytest.raises(JournalMismatchError, match=words) as info:
        await Journal.open(path, resume=True, identity=other)
    assert isinstance(info.value, JournalError)
    assert dump(path) == before
    resumed = await Journal.open(path, resume=True, identity=REAL)  # the same one resumes
    await resumed.close()


async def test_a_base_url_with_credentials_is_not_shown(tmp_path: Path) -> None:
    """The refusal names the services by scheme and host, never a password in the URL."""
    path = tmp_path / "j.db"
    await started_journal(path, JobIdentity("https://user:s3cret@api.vlens.example/v1"))
    with pytest.raises(JournalMismatchError) as info:
        await Journal.open(path, resume=True, identity=JobIdentity("http://127.0.0.1:9"))
    assert "s3cret" not in str(info.value)
    assert "api.vlens.example" in str(info.value)


async def test_a_second_job_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The lock is on the file itself: a job reaching the journal through a symlink while
    another holds it is refused."""
    path = tmp_path / "j.db"
    await started_journal(path)
    other = tmp_path / "other.db"
    other.symlink_to(path)
    first = await Journal.open(path, resume=True, identity=REAL)
    try:
        with pytest.raises(JournalError, match="in use"):
            await Journal.open(other, resume=True, identity=REAL)
    finally:
        await first.close()
    second = await Journal.open(other, resume=True, identity=REAL)
    await second.close()
    assert not [name for name in listing(tmp_path) if name.endswith(".lock")]  # no lock file


async def test_a_journal_with_a_second_hard_link_is_refused(tmp_path: Path) -> None:
    """A second job reaching the journal through a hard link is refused because of the link
    (through it SQLite would look for another -wal), and so is any open while the link exists."""
    path = tmp_path / "j.db"
    await started_journal(path)
    other = tmp_path / "other.db"
    first = await Journal.open(path, resume=True, identity=REAL)
    try:
        os.link(path, other)
        with pytest.raises(JournalError, match="has 2 hard links"):
            await Journal.open(other, resume=True, identity=REAL)
    finally:
        await first.close()
    for name in (other, path):
        with pytest.raises(JournalError, match="remove the other link"):
            await Journal.open(name, resume=True, identity=REAL)
    other.unlink()
    again = await Journal.open(path, resume=True, identity=REAL)
    await again.close()


async def test_a_crashed_journal_reached_through_a_hard_link_is_refused_untouched(
    tmp_path: Path,
) -> None:
    """A crashed journal (its last claims only in its -wal) resumed through a hard link is
    refused, and its files stay as they were."""
    path = crashed_journal(tmp_path)
    link = tmp_path / "crash" / "link.db"
    os.link(path, link)
    before = files_state(path.parent)
    with pytest.raises(JournalError, match="hard links"):
        await Journal.open(link, resume=True, identity=REAL)
    assert files_state(path.parent) == before


async def test_a_journal_through_a_symlink_keeps_its_wal_beside_the_target(tmp_path: Path) -> None:
    """Opened through a symlink, the journal's -wal sits beside the real file, where the next
    open finds it."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "j.db"
    link.symlink_to(real / "j.db")
    journal = await Journal.open(link, identity=REAL)
    await journal.claim(applicant("a1", 1))
    assert (real / "j.db-wal").exists()
    assert not (tmp_path / "j.db-wal").exists()
    await journal.close()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _tables_dropped(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for table in ("applicants", "steps", "invalid_rows", "runs", "meta"):
            conn.execute(f"DROP TABLE {table}")


def _one_table_dropped(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE applicants")


def _schema_not_a_number(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value='two' WHERE key='schema'")


def _schema_1(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value='1' WHERE key='schema'")


def _foreign_database(path: Path) -> None:
    path.unlink()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b'{"applicant_id": "a1", "outcome": "verified"}\n' * 200)


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _missing(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_empty, "empty"),
        (_tables_dropped, "no tables"),
        (_one_table_dropped, "applicants"),
        (_schema_not_a_number, "not a number"),
        (_schema_1, "schema 1"),
        (_foreign_database, "not a vlens journal"),
        (_not_sqlite, "not a vlens journal"),
        (_a_folder, "folder"),
        (_missing, "no journal"),
    ],
)
async def test_resume_refuses_a_journal_it_does_not_recognise(
    tmp_path: Path, damage: object, why: str
) -> None:
    """Resume on a journal it does not recognise raises JournalError saying why, and creates or
    changes nothing (it never silently starts over)."""
    path = tmp_path / "j.db"
    await started_journal(path)
    assert callable(damage)
    damage(path)
    before = listing(tmp_path)
    with pytest.raises(JournalError, match=why):
        await Journal.open(path, resume=True, identity=REAL)
    assert listing(tmp_path) == before


async def test_resume_refuses_a_journal_whose_wal_was_lost_in_a_crash(tmp_path: Path) -> None:
    """The main file of a journal whose -wal was deleted after a crash (its claims only in the
    log) is refused on resume instead of starting over."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path, identity=REAL)
    for n in range(1, 25):
        await journal.claim(applicant(f"a{n}", n))
    crashed = tmp_path / "crashed.db"
    shutil.copyfile(path, crashed)  # the file as a crash leaves it, without its -wal
    await journal.close()
    with pytest.raises(JournalError, match="resume"):
        await Journal.open(crashed, resume=True, identity=REAL)


async def test_claims_lost_with_the_wal_after_a_checkpoint_keep_their_transaction_ids(
    tmp_path: Path,
) -> None:
    """A journal whose -wal is lost after a checkpoint resumes; every applicant, the ones whose
    claim was lost with the log too, gets back its first transaction id."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path, identity=REAL)
    first = {}
    for n in range(1, 11):
        first[f"a{n}"] = (await journal.claim(applicant(f"a{n}", n))).transaction_id
        if n == 5:  # what SQLite's autocheckpoint does every 1000 pages
            await journal._call(lambda: journal._db.execute("PRAGMA wal_checkpoint").fetchall())
    crashed = tmp_path / "crashed.db"
    shutil.copyfile(path, crashed)  # the file as a crash leaves it, without its -wal
    await journal.close()
    resumed = await Journal.open(crashed, resume=True, identity=REAL)
    claims = {f"a{n}": await resumed.claim(applicant(f"a{n}", n)) for n in range(1, 11)}
    await resumed.close()
    assert {k: c.transaction_id for k, c in claims.items()} == first
    assert [c.kind for c in claims.values()] == [ClaimKind.RESUME] * 5 + [ClaimKind.NEW] * 5


async def test_a_journal_without_a_job_secret_gets_one_in_its_main_file(tmp_path: Path) -> None:
    """A journal made before there was a job secret resumes, and its new secret is written
    through to the main file at once (a -wal lost later cannot take it along)."""
    path = tmp_path / "j.db"
    await started_journal(path)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DELETE FROM meta WHERE key='job_secret'")
    journal = await Journal.open(path, resume=True, identity=REAL)
    claim = await journal.claim(applicant("a9", 9))
    main_only = tmp_path / "main.db"
    shutil.copyfile(path, main_only)
    await journal.close()
    with contextlib.closing(sqlite3.connect(f"file:{main_only}?immutable=1", uri=True)) as conn:
        (secret,) = conn.execute("SELECT value FROM meta WHERE key='job_secret'").fetchone()
    assert claim.transaction_id == transaction_id_for("a9", secret)


async def test_a_refused_resume_of_a_crashed_journal_changes_no_byte_or_mode(
    tmp_path: Path,
) -> None:
    """A crashed journal (db, -wal and -shm) resumed against another service is refused with
    JournalMismatchError, and the three files keep their bytes and modes."""
    path = crashed_journal(tmp_path)
    path.chmod(0o640)  # an earlier release's mode: a refusal must not change it either
    before = files_state(path.parent)
    assert set(before) == {"j.db", "j.db-wal", "j.db-shm"}
    with pytest.raises(JournalMismatchError):
        await Journal.open(path, resume=True, identity=JobIdentity("http://127.0.0.1:9"))
    assert files_state(path.parent) == before
    resumed = await Journal.open(path, resume=True, identity=REAL)  # still resumes as it was
    assert (await resumed.claim(applicant("a3", 3))).kind is ClaimKind.RESUME
    await resumed.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_an_open_cancelled_mid_check_leaves_the_journal_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling Journal.open while its thread checks the file does not block the event loop,
    and once the cancellation is through the same process can open the journal again."""
    path = tmp_path / "j.db"
    await started_journal(path)
    entered, gate = threading.Event(), threading.Event()
    check = Journal._check

    def slow_check(self: Journal, *args: Any) -> None:
        entered.set()
        gate.wait(3)
        check(self, *args)

    monkeypatch.setattr(Journal, "_check", slow_check)
    task = asyncio.create_task(Journal.open(path, resume=True, identity=REAL))
    await asyncio.to_thread(entered.wait, 3)
    started = time.monotonic()
    task.cancel()
    asyncio.get_running_loop().call_later(0.1, gate.set)  # runs only if the loop is free
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2
    monkeypatch.undo()
    again = await Journal.open(path, resume=True, identity=REAL)
    await again.close()


async def test_a_close_whose_update_fails_still_releases_the_lock(tmp_path: Path) -> None:
    """When close() cannot record the end of the run, it raises, but the file is closed and
    unlocked: the same process can open the journal again."""
    path = tmp_path / "j.db"
    await started_journal(path)
    journal = await Journal.open(path, resume=True, identity=REAL)
    await journal._call(lambda: journal._db.execute("PRAGMA query_only=1"))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await journal.close()
    again = await Journal.open(path, resume=True, identity=REAL)
    await again.close()


async def test_starting_afresh_on_an_empty_file_is_an_explicit_choice(tmp_path: Path) -> None:
    """Without resume an empty (0-byte) file becomes a new journal; a used one is refused."""
    path = tmp_path / "j.db"
    path.write_bytes(b"")
    journal = await Journal.open(path, identity=REAL)
    await journal.claim(applicant("a1", 1))
    await journal.close()
    with pytest.raises(JournalError, match="already holds 1"):
        await Journal.open(path, identity=REAL)


async def test_no_folder_is_created_for_a_journal(tmp_path: Path) -> None:
    """A journal in a folder that does not exist is refused; the folder is not made."""
    with pytest.raises(JournalError, match="does not exist"):
        await Journal.open(tmp_path / "missing" / "j.db", identity=REAL)
    assert not (tmp_path / "missing").exists()


@pytest.mark.usefixtures("open_umask")
async def test_journal_wal_shm_and_results_are_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a 022 umask the journal, its -wal and -shm, the results file and its temporary
    file are created 0600."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path, identity=REAL)
    await journal.claim(applicant("a1", 1))
    await journal.save_step(
        "a1", state="FRONT_SCANNED", snapshot=None, attempts=[AttemptRecord("front", 1, True, 0.1)]
    )
    files = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in listing(tmp_path)}
    assert set(files) >= {"j.db", "j.db-wal", "j.db-shm"}
    seen: list[int] = []
    replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    await journal.export_results(tmp_path / "results.jsonl")
    await journal.close()
    assert set(files.values()) == {0o600}
    assert seen == [0o600]
    assert stat.S_IMODE((tmp_path / "results.jsonl").stat().st_mode) == 0o600


@pytest.mark.usefixtures("open_umask")
async def test_an_existing_world_readable_journal_is_made_owner_only(tmp_path: Path) -> None:
    """A journal file left 0644 by an earlier release is 0600 once a job opens it."""
    path = tmp_path / "j.db"
    await started_journal(path)
    path.chmod(0o644)
    journal = await Journal.open(path, resume=True, identity=REAL)
    await journal.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_snapshot_or_result_that_is_not_json_is_never_used_as_is(tmp_path: Path) -> None:
    """A journaled snapshot that is not JSON comes back as a claim error; a finished row whose
    result is not JSON is rebuilt in the results file, not copied."""
    path = tmp_path / "j.db"
    await started_journal(path)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE applicants SET snapshot='{not json' WHERE applicant_id='a1'")
        conn.execute(
            "UPDATE applicants SET status='done', outcome='verified', result='oops\nnot json'"
            " WHERE applicant_id='a2'"
        )
    journal = await Journal.open(path, resume=True, identity=REAL)
    claim = await journal.claim(applicant("a1", 1))
    assert claim.snapshot is None
    assert claim.snapshot_error == "the journaled snapshot is not JSON"
    assert claim.state == "NEW"
    await journal.export_results(tmp_path / "results.jsonl")
    counts = await journal.counts()
    await journal.close()
    text = (tmp_path / "results.jsonl").read_text()
    assert "oops" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[1]["applicant_id"] == "a2"
    assert lines[1]["error_message"] == "the journaled result could not be read"
    assert lines[1]["needs_review"] is True
    assert counts.needs_review == 1


def test_needs_review_reads_the_line_or_its_flags() -> None:
    """needs_review counts a line's flag, or for a line without one its service flags."""
    assert needs_review('{"needs_review": true}') == 1
    assert needs_review('{"needs_review": false, "service_flags": ["aml_matched"]}') == 0
    assert needs_review('{"service_flags": ["fake_document"]}') == 1
    assert needs_review('{"service_flags": ["liveness_failed"]}') == 0
    assert needs_review(None) == 0
