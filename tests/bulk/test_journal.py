"""Unit tests for the bulk journal: claims, step records, resume round trips, export."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from vlens_async.bulk._journal import AttemptRecord, ClaimKind, Journal, strip_snapshot
from vlens_async.bulk._manifest import BulkApplicant, InvalidRow
from vlens_async.errors import BulkInputError


def applicant(applicant_id: str, row: int) -> BulkApplicant:
    """An applicant whose paths do not matter to the journal."""
    p = Path("x.jpg")
    return BulkApplicant(applicant_id, p, p, (p, p, p), row=row)


def result(applicant_id: str, row: int, outcome: str, **extra: object) -> dict[str, object]:
    """A results-file line as the runner builds it."""
    return {"applicant_id": applicant_id, "row": row, "outcome": outcome, **extra}


def files_bytes(folder: Path, pattern: str) -> bytes:
    """The bytes of every file in ``folder`` matching ``pattern``, joined."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob(pattern)))


async def test_new_applicant_gets_a_transaction_id_before_any_step(tmp_path: Path) -> None:
    """Claiming a new applicant journals a fresh transaction id at once."""
    journal = await Journal.open(tmp_path / "j.db")
    claim = await journal.claim(applicant("a", 1))
    await journal.close()
    assert claim.kind is ClaimKind.NEW
    assert claim.transaction_id
    with sqlite3.connect(tmp_path / "j.db") as conn:
        stored = conn.execute("SELECT transaction_id, state FROM applicants").fetchone()
    assert stored == (claim.transaction_id, "NEW")


async def test_resume_round_trip_restores_snapshot_and_transaction(tmp_path: Path) -> None:
    """What one run journals after a step, the next run gets back to continue from."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    first = await journal.claim(applicant("a", 1))
    done = await journal.claim(applicant("b", 2))
    snapshot = {"state": "FRONT_SCANNED", "transaction_id": first.transaction_id, "steps": {}}
    await journal.save_step(
        "a",
        state="FRONT_SCANNED",
        snapshot=snapshot,
        attempts=[
            AttemptRecord("front", 1, False, 0.1, status=503),
            AttemptRecord("front", 2, True, 0.2),
        ],
    )
    await journal.finish(
        "b", state="COMPLETED", snapshot=None, attempts=[], result=result("b", 2, "verified")
    )
    await journal.close(interrupted=True)

    journal = await Journal.open(path, resume=True)
    again = await journal.claim(applicant("a", 1))
    skipped = await journal.claim(applicant("b", 2))
    await journal.close()
    assert again.kind is ClaimKind.RESUME
    assert again.transaction_id == first.transaction_id
    assert again.snapshot == snapshot
    assert again.attempts == 2
    assert skipped.kind is ClaimKind.DONE
    assert skipped.transaction_id == done.transaction_id
    assert skipped.outcome == "verified"


async def test_duplicate_ids_are_detected_within_a_run_only(tmp_path: Path) -> None:
    """A second row with the same id in one run is a duplicate; the same row on resume is not."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    assert (await journal.claim(applicant("a", 1))).kind is ClaimKind.NEW
    dup = await journal.claim(applicant("a", 7))
    assert dup.kind is ClaimKind.DUPLICATE
    assert dup.first_row == 1
    await journal.close()
    journal = await Journal.open(path, resume=True)
    assert (await journal.claim(applicant("a", 1))).kind is ClaimKind.RESUME
    assert (await journal.claim(applicant("a", 7))).kind is ClaimKind.DUPLICATE
    await journal.close()


async def test_reusing_a_journal_without_resume_is_refused(tmp_path: Path) -> None:
    """Starting over on a used journal would open second transactions, so it is refused."""
    path = tmp_path / "j.db"
    journal = await Journal.open(path)
    await journal.claim(applicant("a", 1))
    await journal.close()
    with pytest.raises(BulkInputError, match="resume"):
        await Journal.open(path)


async def test_counts_latencies_and_export(tmp_path: Path) -> None:
    """Totals, percentiles and the results file come from the journal, in manifest order."""
    journal = await Journal.open(tmp_path / "j.db")
    for n in (3, 1, 2):
        await journal.claim(applicant(f"a{n}", n))
    await journal.record_invalid(InvalidRow(4, "front: file not found", "a4"))
    attempts = [AttemptRecord("front", 1, True, d / 100) for d in range(1, 101)]
    await journal.finish(
        "a1",
        state="COMPLETED",
        snapshot=None,
        attempts=attempts,
        result=result("a1", 1, "verified"),
    )
    await journal.finish(
        "a2",
        state="FAILED",
        snapshot=None,
        attempts=[AttemptRecord("back", 1, False, 0.5, error_code=3010)],
        result=result("a2", 2, "rejected", error_code=3010, error_type="DocumentExpiredError"),
    )
    counts = await journal.counts()
    latencies = await journal.latencies()
    (tmp_path / "out").mkdir()  # the journal creates no folder
    lines = await journal.export_results(tmp_path / "out" / "results.jsonl")
    await journal.close()
    assert counts.by_outcome == {"verified": 1, "rejected": 1, "pending": 1, "invalid": 1}
    assert counts.by_error == {"3010": 1}
    assert latencies["front"].count == 100
    assert (latencies["front"].p50, latencies["front"].p95, latencies["front"].p99) == (
        0.5,
        0.95,
        0.99,
    )
    assert latencies["back"].p99 == 0.5
    rows = [
        json.loads(line)
        for line in (tmp_path / "out" / "results.jsonl").read_text().split("\n")
        if line
    ]
    assert lines == 4
    assert [(r["row"], r["outcome"]) for r in rows] == [
        (1, "verified"),
        (2, "rejected"),
        (3, "pending"),
        (4, "invalid"),
    ]
    assert rows[3]["error_message"] == "front: file not found"
    assert [r["needs_review"] for r in rows] == [False, False, False, False]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["results.jsonl"]  # no .tmp left


async def test_snapshot_is_stripped_of_names_before_journaling(tmp_path: Path) -> None:
    """Only the allow-listed parts of a snapshot reach the journal: no names, national ID, birth
    date or free text, even from a snapshot taken with personal data."""
    # Extracted fields (names, addresses, ID numbers, birth dates), AML case names, validation
    # values, the name check, server messages and unknown keys are dropped; transaction ids,
    # states, service flags and the cross-check's result stay.
    front = {
        "first_name": "Secret",
        "address": "Street 1",
        "id_number": "29901011234567",
        "date_of_birth": "1999-01-01T00:00:00",
        "gender": "M",
        "transaction_id": "t-1",
    }
    services = {
        "aml": {"aml_matched": True, "cases": [{"full_name": "Secret Name", "case_no": "9"}]},
        "validations": [{"field": "idNumber", "value": "Secret", "errors": []}],
        "spoofing": {"fake": False},
        "classification": {"doc_type": "id"},
        "liveness": True,
        "src": {"is_valid": True, "error_message": "Secret"},
    }
    snapshot = {
        "version": 2,
        "personal_data": True,
        "transaction_id": "t-1",
        "state": "FAILED",
        "name_check_value": "Secret",
        "cross_check": ["birth_date_mismatch"],
        "failure": {"error_type": "DocumentError", "error_code": 3001, "error_message": "Secret"},
        "steps": {"front": {"status": "failed", "attempts": 1, "error_message": "Secret"}},
        "responses": {
            "front": {
                "services": services,
                "data": {"id_front_data": front, "user": {"name": "Secret"}},
                "error_message": "Secret",
            }
        },
        "timings": {"front": 0.5},
        "added_later": {"anything": "Secret"},
    }
    journal = await Journal.open(tmp_path / "j.db")
    await journal.claim(applicant("a", 1))
    await journal.save_step("a", state="FAILED", snapshot=snapshot, attempts=[])
    await journal.close()
    # Every byte on disk, the write-ahead log included if it is still there.
    raw = files_bytes(tmp_path, "j.db*")
    assert b"Secret" not in raw
    assert b"Street" not in raw
    assert b"29901011234567" not in raw
    assert b"1999-01-01" not in raw
    with sqlite3.connect(tmp_path / "j.db") as conn:
        (stored,) = conn.execute("SELECT snapshot FROM applicants").fetchone()
    assert json.loads(stored)["personal_data"] is False  # what is left holds none
    assert json.loads(stored)["name_check"] is True  # resume asks the manifest for it
    assert strip_snapshot(snapshot) == {
        "version": 2,
        "personal_data": True,
        "cross_check": ["birth_date_mismatch"],
        "transaction_id": "t-1",
        "state": "FAILED",
        "failure": {"error_type": "DocumentError", "error_code": 3001},
        "steps": {"front": {"status": "failed", "attempts": 1}},
        "responses": {
            "front": {
                "services": {
                    "aml": {"aml_matched": True},
                    "validations": [{"field": "idNumber", "errors": []}],
                    "spoofing": {"fake": False},
                    "classification": {"doc_type": "id"},
                    "liveness": True,
                    "src": {"is_valid": True},
                },
                "data": {},
            }
        },
        "timings": {"front": 0.5},
    }


async def test_in_memory_journal_works_without_a_path() -> None:
    """journal=None keeps the journal in memory (no resume, same behaviour)."""
    journal = await Journal.open(None)
    claim = await journal.claim(applicant("a", 1))
    assert claim.kind is ClaimKind.NEW
    assert (await journal.counts()).by_outcome == {"pending": 1}
    await journal.close()


async def test_a_journal_in_use_by_another_job_is_refused(tmp_path: Path) -> None:
    """A second job on a journal in use is refused until the first closes it."""
    # Two jobs on one journal would send the same steps twice.
    first = await Journal.open(tmp_path / "j.db")
    with pytest.raises(BulkInputError, match="in use"):
        await Journal.open(tmp_path / "j.db", resume=True)
    await first.close()
    second = await Journal.open(tmp_path / "j.db", resume=True)
    await second.close()


async def test_a_queued_write_survives_its_caller_being_cancelled(tmp_path: Path) -> None:
    """A hard stop cancels the worker waiting for its step's write; the write still lands."""
    journal = await Journal.open(tmp_path / "j.db")
    await journal.claim(applicant("a", 1))
    gate = threading.Event()
    busy = asyncio.ensure_future(journal._call(gate.wait, 5))  # holds the journal thread
    write = asyncio.ensure_future(
        journal.save_step(
            "a",
            state="FRONT_SCANNED",
            snapshot=None,
            attempts=[AttemptRecord("front", 1, True, 0.1)],
        )
    )
    await asyncio.sleep(0.01)  # the write is queued behind the busy call
    write.cancel()
    gate.set()
    await busy
    await journal.close(interrupted=True)
    with sqlite3.connect(tmp_path / "j.db") as conn:
        steps = conn.execute("SELECT step, ok FROM steps").fetchall()
        state = conn.execute("SELECT state FROM applicants").fetchone()
    assert steps == [("front", 1)]
    assert state == ("FRONT_SCANNED",)
