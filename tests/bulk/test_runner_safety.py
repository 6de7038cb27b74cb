"""The bulk runner refuses bad outputs and a mismatched resume before anything is sent, loses no
job to one applicant's trouble, and reports review flags (issue 12), with a scripted client."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.bulk.scripted import (
    NID,
    ScriptedClient,
    applicants,
    error,
    journal_bytes,
    results,
    runner,
)
from vlens_async import VlensClient
from vlens_async.bulk import (
    MAX_CONCURRENCY,
    BulkRunner,
    NullProgress,
    check_concurrency,
    format_summary,
    run_bulk,
)
from vlens_async.bulk._journal import JobIdentity, Journal
from vlens_async.bulk._manifest import BulkApplicant
from vlens_async.errors import (
    BulkInputError,
    ConfigurationError,
    JournalError,
    JournalMismatchError,
)
from vlens_async.flow import Transaction
from vlens_async.models import VerificationResponse

HEADER = "applicant_id,front,back,face_1,face_2,face_3"


def write_manifest(folder: Path, image_dir: Path, count: int, name: str = "m.csv") -> Path:
    """A CSV manifest of ``count`` applicants on the shared images."""
    files = [str(image_dir / f"{n}.jpg") for n in ("front", "back", "face_1", "face_2", "face_3")]
    lines = [HEADER, *(",".join([f"a{n}", *files]) for n in range(1, count + 1))]
    manifest = folder / name
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def failing(step: str) -> Any:
    """A fault: every attempt of ``step`` gets a 503 (the applicant ends in error after its
    retries, its earlier steps journaled)."""
    return lambda s, who, n: error(503) if s == step else None


def names(folder: Path) -> set[str]:
    """The names in ``folder``."""
    return {p.name for p in folder.iterdir()}


class OtherService(ScriptedClient):
    """The same scripted answers from another base URL."""

    base_url = "http://127.0.0.1:9"


class DeepClient(ScriptedClient):
    """Answers a2's liveness with a free-form field nested far deeper than any JSON encoder or
    recursive copy allows."""

    async def _answer(self, step: str, tx: str, **options: Any) -> VerificationResponse:
        response = await super()._answer(step, tx, **options)
        if options.get("client_transaction_id") != "a2":
            return response
        deep: Any = "bottom"
        for _ in range(5000):
            deep = [deep]
        return attrs.evolve(response, data=attrs.evolve(response.data, device_info=deep))


@pytest.mark.parametrize("case", ["folder", "missing_folder", "manifest"])
async def test_a_bad_results_path_is_refused_before_anything_is_sent(
    tmp_path: Path, image_dir: Path, case: str
) -> None:
    """--out that is a folder, in a missing folder or the manifest itself raises BulkInputError
    before any request; no folder, journal or .tmp is created."""
    manifest = write_manifest(tmp_path, image_dir, 2)
    out = {
        "folder": tmp_path / "outdir",
        "missing_folder": tmp_path / "nowhere" / "results.jsonl",
        "manifest": manifest,
    }[case]
    if case == "folder":
        out.mkdir()
    before = names(tmp_path)
    client = ScriptedClient()
    with pytest.raises(BulkInputError):
        await runner(client, tmp_path, results=out).run(manifest)
    assert client.calls == []
    assert names(tmp_path) == before
    assert manifest.read_text().startswith(HEADER)


async def test_run_bulk_refuses_a_journal_in_a_missing_folder(
    tmp_path: Path, image_dir: Path
) -> None:
    """run_bulk with a journal in a folder that does not exist raises JournalError, sends
    nothing and makes no folder."""
    manifest = write_manifest(tmp_path, image_dir, 2)
    client = ScriptedClient()
    with pytest.raises(JournalError, match="does not exist"):
        await run_bulk(
            client,  # type: ignore[arg-type]
            manifest,
            journal=tmp_path / "missing" / "run.db",
            out=tmp_path / "results.jsonl",
            progress=False,
            signals=False,
        )
    assert client.calls == []
    assert not (tmp_path / "missing").exists()


async def test_a_journal_that_is_the_manifest_is_refused(tmp_path: Path, image_dir: Path) -> None:
    """A journal path naming the manifest is refused before the manifest is touched."""
    manifest = write_manifest(tmp_path, image_dir, 1)
    text = manifest.read_text()
    with pytest.raises(JournalError, match="manifest"):
        await runner(ScriptedClient(), tmp_path, journal=manifest).run(manifest)
    assert manifest.read_text() == text


async def test_resume_against_another_service_is_refused_and_sends_nothing(
    tmp_path: Path, image_dir: Path
) -> None:
    """A job started against one service and resumed against another is refused before any
    request, the journal untouched."""
    manifest = write_manifest(tmp_path, image_dir, 3)
    await runner(ScriptedClient(failing("back")), tmp_path).run(manifest)
    journal = tmp_path / "journal.db"
    with sqlite3.connect(journal) as conn:
        before = list(conn.iterdump())
    other = OtherService()
    with pytest.raises(JournalMismatchError, match=r"127\.0\.0\.1:9"):
        await runner(other, tmp_path, resume=True).run(manifest)
    assert other.calls == []
    with sqlite3.connect(journal) as conn:
        assert list(conn.iterdump()) == before


async def test_resume_against_a_changed_manifest_is_refused(
    tmp_path: Path, image_dir: Path
) -> None:
    """A resume whose manifest's bytes changed since the job started is refused."""
    manifest = write_manifest(tmp_path, image_dir, 2)
    await runner(ScriptedClient(), tmp_path).run(manifest)
    write_manifest(tmp_path, image_dir, 3)
    client = ScriptedClient()
    with pytest.raises(JournalMismatchError, match="changed"):
        await runner(client, tmp_path, resume=True).run(manifest)
    assert client.calls == []


async def test_one_applicant_whose_snapshot_cannot_be_taken_does_not_stop_the_job(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """snapshot() raising for one applicant makes that applicant an error; the others finish."""
    real = Transaction.snapshot

    def snapshot(self: Transaction, **kwargs: Any) -> dict[str, Any]:
        if self._client_transaction_id == "a2":
            raise RuntimeError("cannot snapshot")
        return real(self, **kwargs)

    monkeypatch.setattr(Transaction, "snapshot", snapshot)
    summary = await runner(ScriptedClient(), tmp_path).run(applicants(image_dir, 4))
    outcomes = {line["applicant_id"]: line["outcome"] for line in results(tmp_path)}
    assert outcomes == {"a1": "verified", "a2": "error", "a3": "verified", "a4": "verified"}
    assert summary.complete


async def test_a_deeply_nested_free_form_field_does_not_stop_the_job(
    tmp_path: Path, image_dir: Path
) -> None:
    """A response with a free-form field nested 5000 deep is journaled without it; every
    applicant finishes."""
    summary = await runner(DeepClient(), tmp_path).run(applicants(image_dir, 3))
    assert summary.by_outcome == {"verified": 3}


async def test_a_snapshot_that_cannot_be_restored_is_an_error_and_the_job_goes_on(
    tmp_path: Path, image_dir: Path
) -> None:
    """On resume, applicants whose journaled snapshot is not JSON, of another version or of
    the wrong types are errors whose lines keep their journaled state; the rest continue, and
    the job is complete (no stop by error)."""
    people = applicants(image_dir, 4)
    states = await pending_after_a_refused_liveness(tmp_path, people)
    damage_snapshots(tmp_path / "journal.db")
    client = ScriptedClient()
    summary = await runner(client, tmp_path, resume=True).run(people)
    lines = {line["applicant_id"]: line for line in results(tmp_path)}
    assert {k: v["outcome"] for k, v in lines.items()} == {
        "a1": "error",
        "a2": "error",
        "a3": "error",
        "a4": "verified",
    }
    assert {k: lines[k]["state"] for k in ("a1", "a2")} == {k: states[k] for k in ("a1", "a2")}
    assert lines["a3"]["state"] == "FAILED"
    assert "--retry-errors" in lines["a1"]["error_message"]
    assert "cannot be started over" in lines["a3"]["error_message"]
    assert {tx for _, tx, _ in client.calls} == {lines["a4"]["transaction_id"]}
    assert summary.complete
    assert not summary.stopped_by_error


async def test_retry_errors_starts_an_unreadable_snapshot_over_on_its_transaction(
    tmp_path: Path, image_dir: Path
) -> None:
    """With retry_errors, an applicant recorded as an error for its unreadable snapshot sends
    every step again on its journaled transaction and finishes; one whose journaled transaction
    is closed (FAILED) stays an error and sends nothing."""
    people = applicants(image_dir, 4)
    await pending_after_a_refused_liveness(tmp_path, people)
    damage_snapshots(tmp_path / "journal.db")
    await runner(ScriptedClient(), tmp_path, resume=True).run(people)
    first = {line["applicant_id"]: line["transaction_id"] for line in results(tmp_path)}
    client = ScriptedClient()
    summary = await runner(client, tmp_path, resume=True, retry_errors=True).run(people)
    lines = {line["applicant_id"]: line for line in results(tmp_path)}
    assert {k: v["outcome"] for k, v in lines.items()} == {
        "a1": "verified",
        "a2": "verified",
        "a3": "error",
        "a4": "verified",
    }
    assert {k: v["transaction_id"] for k, v in lines.items()} == first
    assert sorted((tx, step) for step, tx, _ in client.calls) == sorted(
        (first[who], step) for who in ("a1", "a2") for step in ("front", "back", "liveness")
    )
    assert summary.complete


async def pending_after_a_refused_liveness(
    tmp_path: Path, people: list[BulkApplicant]
) -> dict[str, str]:
    """Run ``people`` until liveness is refused (401): the job stops with every applicant
    pending after one or both ID sides; return their journaled states."""
    client = ScriptedClient(lambda step, who, n: error(401) if step == "liveness" else None)
    client.gate = asyncio.Event()
    client.notify_in_flight = len(people)
    task = asyncio.create_task(runner(client, tmp_path).run(people))
    await client.reached.wait()  # every applicant's front scan is in flight
    client.gate.set()
    summary = await task
    assert summary.stopped_by_error
    assert summary.by_outcome == {"pending": len(people)}
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        return dict(conn.execute("SELECT applicant_id, state FROM applicants").fetchall())


def damage_snapshots(journal: Path) -> None:
    """a1's snapshot becomes text that is not JSON, a2's of another version, a3's of the wrong
    types and its journaled state FAILED (its transaction closed)."""
    with contextlib.closing(sqlite3.connect(journal)) as conn, conn:
        conn.execute("UPDATE applicants SET snapshot='not json' WHERE applicant_id='a1'")
        conn.execute(
            "UPDATE applicants SET snapshot=json_set(snapshot, '$.version', 99)"
            " WHERE applicant_id='a2'"
        )
        conn.execute(
            "UPDATE applicants SET snapshot=json_set(snapshot, '$.steps', json('[1]')),"
            " state='FAILED' WHERE applicant_id='a3'"
        )


async def test_a_progress_reporter_that_fails_leaves_the_journal_unlocked(
    tmp_path: Path, image_dir: Path
) -> None:
    """A run that fails after opening its journal (here its progress reporter raises) closes the
    journal: the same process can open it again."""

    class Broken(NullProgress):
        """A reporter that cannot start."""

        def start(self, total: int | None, skipped: int = 0) -> None:
            raise RuntimeError("no terminal")

    with pytest.raises(RuntimeError, match="no terminal"):
        await runner(ScriptedClient(), tmp_path, progress=Broken()).run(applicants(image_dir, 2))
    journal = await Journal.open(
        tmp_path / "journal.db", resume=True, identity=JobIdentity(ScriptedClient.base_url)
    )
    await journal.close()


async def test_an_applicant_given_without_an_id_is_an_invalid_row(
    tmp_path: Path, image_dir: Path
) -> None:
    """An applicant given in code with an empty id (its transaction id is derived from it) is
    recorded as an invalid row; the others finish."""
    people = applicants(image_dir, 2)
    people[0] = attrs.evolve(people[0], applicant_id="")
    summary = await runner(ScriptedClient(), tmp_path).run(people)
    assert summary.by_outcome == {"invalid": 1, "verified": 1}
    assert results(tmp_path)[0]["error_message"] == "missing value(s) for applicant_id"


async def test_needs_review_is_in_every_line_and_counted(tmp_path: Path, image_dir: Path) -> None:
    """An AML match sets needs_review in its results line; every line, invalid and pending ones
    included, has the field; the summary counts and explains it."""
    from vlens_async.bulk._manifest import InvalidRow

    client = ScriptedClient()
    client.unverified = {"a2"}  # the scripted AML match
    people = applicants(image_dir, 3)
    summary = await runner(client, tmp_path).run([*people, InvalidRow(4, "front: missing", "a4")])
    lines = {line["applicant_id"]: line for line in results(tmp_path)}
    assert {k: v["needs_review"] for k, v in lines.items()} == {
        "a1": False,
        "a2": True,
        "a3": False,
        "a4": False,
    }
    assert summary.needs_review == 1
    assert "Needs review: 1" in format_summary(summary)


async def test_the_journal_keeps_no_national_id_or_birth_date(
    tmp_path: Path, image_dir: Path
) -> None:
    """The journal of applicants stopped before liveness holds neither their national ID nor
    any part of it beyond the last digits, and a resume still completes them."""
    await runner(ScriptedClient(failing("liveness")), tmp_path).run(applicants(image_dir, 2))
    raw = journal_bytes(tmp_path)
    assert NID.encode() not in raw
    assert NID[:10].encode() not in raw
    await runner(ScriptedClient(), tmp_path, resume=True, retry_errors=True).run(
        applicants(image_dir, 2)
    )
    assert {line["outcome"] for line in results(tmp_path)} == {"verified"}


async def test_a_journal_that_cannot_write_stops_the_job_gracefully(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the journal fails to record any outcome (a full disk), the job stops as for an
    error, the applicants pending for a resume, instead of ending in a traceback."""

    async def full_disk(self: Journal, *args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Journal, "finish", full_disk)
    summary = await runner(ScriptedClient(), tmp_path).run(applicants(image_dir, 3))
    assert summary.stopped_by_error
    assert summary.stop_reason == "the journal failed: OperationalError"
    assert summary.by_outcome == {"pending": 3}


@pytest.mark.parametrize("concurrency", [0, -1, 1001, 10**20, True, 2.5])
def test_concurrency_out_of_bounds_is_refused(concurrency: Any) -> None:
    """A concurrency outside 1..MAX_CONCURRENCY (a task per slot is made up front: 10**9 ran the
    machine out of memory) is a ConfigurationError before anything starts."""
    client = VlensClient("key", base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match=f"from 1 to {MAX_CONCURRENCY}"):
        BulkRunner(client, concurrency=concurrency)
    assert check_concurrency(MAX_CONCURRENCY) == MAX_CONCURRENCY
