"""The bulk runner with a scripted client (no network): the workers, the journal across runs,
stopping, invalid rows and duplicates, bounded tasks, progress.

The emulator-backed tests in test_emulator.py prove the same end to end over HTTP.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from tests.bulk.scripted import NID, ScriptedClient, applicants, error, results, runner
from vlens_async.bulk import BulkSummary, ProgressStats, RateLimit, format_summary
from vlens_async.bulk._manifest import BulkApplicant, InvalidRow
from vlens_async.config import RetryPolicy


def said(summary: BulkSummary) -> str:
    """The printed summary on one line (the table wraps long sentences)."""
    return " ".join(format_summary(summary).split())


async def test_every_applicant_gets_one_transaction_and_three_steps(
    tmp_path: Path, image_dir: Path
) -> None:
    """A clean job verifies everyone: one transaction each, each step sent once, in order."""
    client = ScriptedClient()
    summary = await runner(client, tmp_path).run(applicants(image_dir, 10))
    lines = results(tmp_path)
    assert [line["applicant_id"] for line in lines] == [f"a{n}" for n in range(1, 11)]
    assert {line["outcome"] for line in lines} == {"verified"}
    assert len({line["transaction_id"] for line in lines}) == 10
    for line in lines:
        steps = [s for s, tx, _ in client.calls if tx == line["transaction_id"]]
        assert steps == ["front", "back", "liveness"]
        assert line["validated"] is True
        assert line["attempts"] == 3
        assert set(line["timings"]) == {"front", "back", "liveness", "total"}
    assert summary.by_outcome == {"verified": 10}
    # The client's own retries are off: every attempt must pass the runner's rate limiter.
    assert client.options == [{"retry": RetryPolicy.disabled(), "prepare_images": False}]
    assert summary.processed == 10
    assert summary.complete
    assert summary.requests == 30
    assert set(summary.latency) == {"front", "back", "liveness"}
    # No personal data in the results file.
    assert "Secret" not in (tmp_path / "results.jsonl").read_text()
    assert NID not in (tmp_path / "results.jsonl").read_text()
    assert "verified" in format_summary(summary)


async def test_credentials_error_stops_the_job_and_keeps_applicants_pending(
    tmp_path: Path, image_dir: Path
) -> None:
    """A 401 is nobody's verdict: the job stops, the applicant stays pending for a resume."""
    client = ScriptedClient(lambda step, tx, n: error(401))
    summary = await runner(client, tmp_path, concurrency=1).run(applicants(image_dir, 5))
    assert summary.interrupted
    assert summary.stop_reason is not None
    assert summary.stop_reason.startswith("AuthenticationError")
    assert summary.by_outcome == {"pending": 1}
    assert len(client.calls) == 1
    assert summary.stopped_by_error


async def test_the_same_error_in_many_workers_is_still_a_graceful_stop(
    tmp_path: Path, image_dir: Path
) -> None:
    """Six workers refused at once stop the job once, gracefully: every step sent is journaled."""
    # Each refusal used to call stop(); the second counted as the user's second Ctrl-C and
    # cancelled the others before they journaled what they had sent.
    client = ScriptedClient(lambda step, tx, n: error(401), delay=0.05)
    client.gate = asyncio.Event()
    run = runner(client, tmp_path, concurrency=6)
    task = asyncio.create_task(run.run(applicants(image_dir, 6)))
    client.notify_in_flight = 6
    await client.reached.wait()  # all six front scans are in flight
    client.gate.set()
    summary = await task
    assert summary.stopped_by_error
    assert not run._hard_stopped
    assert len(client.calls) == 6
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        journaled = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert journaled == 6
    assert summary.by_outcome == {"pending": 6}


async def test_rows_read_before_the_manifest_fails_are_not_lost(
    tmp_path: Path, image_dir: Path
) -> None:
    """A reader that fails after three rows: those three are processed, then the job stops."""
    people = applicants(image_dir, 3)

    def manifest() -> Any:
        yield from people
        raise OSError("disk gone")

    summary = await runner(ScriptedClient(), tmp_path).run(manifest())
    assert summary.stopped_by_error
    assert summary.stop_reason is not None
    assert summary.stop_reason.startswith("cannot read the manifest")
    assert summary.by_outcome == {"verified": 3}
    # How many rows the unreadable rest holds is unknown, and said so.
    assert not summary.total_known
    assert "an unknown number of rows not started" in said(summary)


async def test_a_manifest_reader_failing_unexpectedly_stops_the_job_instead_of_hanging(
    tmp_path: Path, image_dir: Path
) -> None:
    """A reader raising something unforeseen stops the job (reason quoting no row), no hang."""
    people = applicants(image_dir, 2)

    def rows() -> Any:
        yield from people
        raise ValueError("row 3 names Secret Person")

    summary = await asyncio.wait_for(runner(ScriptedClient(), tmp_path).run(rows()), 30)
    assert summary.interrupted
    assert summary.stop_reason == "cannot read the manifest: ValueError"
    assert set(summary.by_outcome) <= {"verified", "pending"}


async def test_invalid_rows_survive_a_resume_that_stops_early(
    tmp_path: Path, image_dir: Path
) -> None:
    """A resume stopped before it reads the bad rows again keeps them in the totals."""
    people = applicants(image_dir, 3)
    items = [people[0], InvalidRow(4, "missing value(s) for face_2", "bad"), people[1], people[2]]
    first = await runner(ScriptedClient(), tmp_path).run(items)
    assert first.by_outcome == {"verified": 3, "invalid": 1}
    run = runner(ScriptedClient(), tmp_path, resume=True)
    run.stop("at once")
    second = await run.run(items)
    assert second.by_outcome == {"verified": 3, "invalid": 1}
    assert [line["outcome"] for line in results(tmp_path)].count("invalid") == 1


async def test_finished_applicant_whose_row_turned_bad_keeps_its_result(
    tmp_path: Path, image_dir: Path
) -> None:
    """Verified in run 1, its scans archived before a resume: still verified, not also invalid."""
    people = applicants(image_dir, 2)
    await runner(ScriptedClient(), tmp_path).run(people)
    archived = InvalidRow(people[0].row, "front: file not found", people[0].applicant_id)
    second = await runner(ScriptedClient(), tmp_path, resume=True).run([archived, people[1]])
    assert second.by_outcome == {"verified": 2}
    assert [line["outcome"] for line in results(tmp_path)] == ["verified", "verified"]


async def test_pending_applicant_whose_row_turned_bad_is_reported_invalid(
    tmp_path: Path, image_dir: Path
) -> None:
    """Unfinished in run 1, its row bad in run 2: invalid (not also pending), then resumable."""
    people = applicants(image_dir, 1)
    client = ScriptedClient(lambda step, tx, n: error(401) if step == "back" else None)
    first = await runner(client, tmp_path).run(people)
    assert first.by_outcome == {"pending": 1}
    moved = InvalidRow(people[0].row, "back: file not found", people[0].applicant_id)
    second = await runner(ScriptedClient(), tmp_path, resume=True).run([moved])
    assert second.by_outcome == {"invalid": 1}
    assert second.complete
    third_client = ScriptedClient()
    third = await runner(third_client, tmp_path, resume=True).run(people)
    assert third.by_outcome == {"verified": 1}
    assert [step for step, _, _ in third_client.calls] == ["back", "liveness"]  # same transaction


async def test_invalid_rows_and_duplicates_are_recorded_and_the_job_goes_on(
    tmp_path: Path, image_dir: Path
) -> None:
    """Bad rows and a second row with the same id are recorded as invalid; others proceed."""
    people = applicants(image_dir, 3)
    missing = BulkApplicant("a9", tmp_path / "nope.jpg", people[0].back, people[0].faces, row=5)
    items = [
        people[0],
        InvalidRow(2, "missing value(s) for face_2", "bad"),
        people[1],
        BulkApplicant("a1", people[0].front, people[0].back, people[0].faces, row=4),
        missing,
        people[2],
    ]
    client = ScriptedClient()
    summary = await runner(client, tmp_path, concurrency=1).run(items)
    lines = {line["row"]: line for line in results(tmp_path)}
    assert lines[2]["outcome"] == "invalid"
    assert lines[4]["outcome"] == "invalid"
    assert "duplicate applicant_id (first seen at row 1)" in lines[4]["error_message"]
    assert lines[5]["outcome"] == "invalid"
    assert lines[5]["error_message"].startswith("front:")
    assert "nope" not in lines[5]["error_message"]
    assert summary.by_outcome == {"verified": 3, "invalid": 3}


async def test_graceful_stop_then_resume_sends_no_step_twice(
    tmp_path: Path, image_dir: Path
) -> None:
    """After stop() and resume, everyone finishes on the same transaction, no step sent twice."""
    client = ScriptedClient(delay=0.002)
    run = runner(client, tmp_path)
    task = asyncio.create_task(run.run(applicants(image_dir, 30)))
    client.notify_calls = 20
    await client.reached.wait()
    run.stop("test")
    first = await task
    assert first.interrupted
    assert first.pending > 0
    assert first.by_outcome.get("verified", 0) < 30
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        active = conn.execute("SELECT count(*) FROM applicants WHERE status='active'").fetchone()
    assert active[0] == first.pending

    second = await runner(client, tmp_path, resume=True).run(applicants(image_dir, 30))
    assert second.by_outcome == {"verified": 30}
    assert second.skipped == first.by_outcome.get("verified", 0)
    assert second.resumed > 0
    assert all(n == 1 for n in client.ok_steps().values())
    assert len({tx for _, tx, _ in client.calls}) == 30


async def test_second_stop_cancels_at_once_and_journal_stays_consistent(
    tmp_path: Path, image_dir: Path
) -> None:
    """A second stop() cancels steps in flight; resume still ends everyone on one transaction."""
    client = ScriptedClient()
    client.gate = asyncio.Event()
    run = runner(client, tmp_path)
    task = asyncio.create_task(run.run(applicants(image_dir, 12)))
    client.notify_in_flight = 4
    await client.reached.wait()
    run.stop()
    run.stop()
    first = await task
    assert first.interrupted
    assert first.pending == 4  # the four in flight were claimed, none finished
    client.gate.set()
    second = await runner(client, tmp_path, resume=True).run(applicants(image_dir, 12))
    assert second.by_outcome == {"verified": 12}
    assert len({tx for _, tx, _ in client.calls}) == 12


async def test_graceful_stop_does_not_wait_for_rate_limit_tokens(
    tmp_path: Path, image_dir: Path
) -> None:
    """On stop(), flows queued for a token give up at once: nothing more is sent."""
    client = ScriptedClient()
    client.notify_calls = 2
    run = runner(client, tmp_path, rate_limit=RateLimit(per_second=1, per_minute=2))
    task = asyncio.create_task(run.run(applicants(image_dir, 6)))
    await client.reached.wait()  # two requests sent; the next token is a minute away
    run.stop("test")
    summary = await asyncio.wait_for(task, 5)
    assert summary.interrupted
    assert len(client.calls) == 2
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        journaled = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert journaled == 2


async def test_tasks_stay_bounded_by_concurrency(tmp_path: Path, image_dir: Path) -> None:
    """No task per applicant: live tasks stay near the concurrency however long the job is."""
    client = ScriptedClient()
    await runner(client, tmp_path, concurrency=3, journal=None).run(applicants(image_dir, 150))
    # Per worker: itself, its three image tasks and prepare_faces' three frame tasks; plus the
    # producer, the progress ticker and the test. 150 applicants would be far more.
    assert client.max_tasks <= 3 * 7 + 3


class RecordingProgress:
    """A progress reporter that remembers what ``start`` and ``close`` were told."""

    def __init__(self) -> None:
        self.started: list[tuple[int | None, int]] = []
        self.closed: list[ProgressStats] = []

    def start(self, total: int | None, skipped: int = 0) -> None:
        self.started.append((total, skipped))

    def update(self, stats: Any) -> None:
        """Ignored."""

    def close(self, stats: ProgressStats) -> None:
        self.closed.append(stats)


async def stopped_early(
    tmp_path: Path, image_dir: Path, *, total: int | None
) -> tuple[ScriptedClient, BulkSummary]:
    """A 30-applicant job (``total`` given or not) stopped after 8 calls."""
    client = ScriptedClient(delay=0.002)
    client.notify_calls = 8
    run = runner(client, tmp_path, concurrency=2, total=total)
    task = asyncio.create_task(run.run(iter(applicants(image_dir, 30))))
    await client.reached.wait()
    run.stop("test")
    return client, await task


async def test_a_stopped_job_of_known_length_counts_the_rows_never_reached(
    tmp_path: Path, image_dir: Path
) -> None:
    """With the rows counted, a stopped job's total is theirs and the rest are "not started";
    a resume finishes them all, each on its first transaction."""
    client, first = await stopped_early(tmp_path, image_dir, total=30)
    reached = sum(first.by_outcome.values())
    assert first.total == 30
    assert first.total_known
    assert first.not_started == 30 - reached > 0
    assert len(results(tmp_path)) == reached
    assert not first.complete
    assert first.to_json()["not_started"] == first.not_started
    text = said(first)
    assert f"{first.not_started} not started; run again with resume" in text
    assert "0 applicant(s) pending" not in text

    second = await runner(client, tmp_path, resume=True, total=30).run(applicants(image_dir, 30))
    assert (second.total, second.not_started, second.by_outcome) == (30, 0, {"verified": 30})
    assert second.complete
    assert [line["applicant_id"] for line in results(tmp_path)] == [f"a{n}" for n in range(1, 31)]
    assert len({tx for _, tx, _ in client.calls}) == 30


async def test_a_stopped_iterable_of_unknown_length_says_only_what_is_known(
    tmp_path: Path, image_dir: Path
) -> None:
    """No total and the iterable not read to its end: the rows reached, and an unknown rest."""
    _, summary = await stopped_early(tmp_path, image_dir, total=None)
    assert not summary.total_known
    assert summary.total == sum(summary.by_outcome.values())
    assert summary.not_started == 0
    assert not summary.complete
    text = said(summary)
    assert "an unknown number of rows not started; run again with resume" in text
    assert f"{summary.total} or more" in text


async def test_an_iterable_read_to_its_end_gives_the_total_to_summary_and_progress(
    tmp_path: Path, image_dir: Path
) -> None:
    """No total given, every row read: the total is the rows read, the progress ends on it."""
    progress = RecordingProgress()
    summary = await runner(ScriptedClient(), tmp_path, progress=progress).run(
        iter(applicants(image_dir, 3))
    )
    assert (summary.total, summary.not_started, summary.total_known) == (3, 0, True)
    assert summary.complete
    assert progress.started == [(None, 0)]
    assert [(s.total, s.done, s.remaining) for s in progress.closed] == [(3, 3, 0)]


async def test_a_manifest_path_is_counted_so_rows_never_reached_are_known(
    tmp_path: Path, image_dir: Path
) -> None:
    """run(path) counts the manifest: stopped before any row, all of them are not started."""
    manifest = tmp_path / "manifest.csv"
    rows = [
        f"a{n},{image_dir}/front.jpg,{image_dir}/back.jpg,{image_dir}/face_1.jpg,"
        f"{image_dir}/face_2.jpg,{image_dir}/face_3.jpg"
        for n in range(1, 5)
    ]
    manifest.write_text("applicant_id,front,back,face_1,face_2,face_3\n" + "\n".join(rows))
    progress = RecordingProgress()
    run = runner(ScriptedClient(), tmp_path, progress=progress)
    run.stop("at once")
    summary = await run.run(manifest)
    assert (summary.total, summary.not_started, summary.by_outcome) == (4, 4, {})
    assert progress.started == [(4, 0)]
    assert "Stopped early (at once): 4 applicant(s) not started;" in said(summary)


async def test_a_resumed_run_tells_the_progress_what_is_already_finished(
    tmp_path: Path, image_dir: Path
) -> None:
    """On resume, progress.start is told what earlier runs finished (for the first line, ETA)."""
    await runner(ScriptedClient(), tmp_path).run(applicants(image_dir, 3))
    progress = RecordingProgress()
    summary = await runner(ScriptedClient(), tmp_path, resume=True, progress=progress, total=5).run(
        applicants(image_dir, 5)
    )
    assert progress.started == [(5, 3)]
    assert summary.skipped == 3
    assert summary.processed == 2
