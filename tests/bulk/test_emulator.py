"""The bulk runner end to end against the emulator: crash and resume in a subprocess, injected
faults, and the rate limit as the emulator counts it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.samples import personal_values
from vlens_async.bulk import BulkRunner, RateLimit, read_manifest, run_bulk
from vlens_async.client import VlensClient
from vlens_async.config import RetryPolicy
from vlens_async.emulator import RunningEmulator
from vlens_async.emulator.config import DEFAULT_API_KEY
from vlens_async.flow import Transaction
from vlens_async.samples import make_applicant

TERMINAL = {"verified", "not_verified", "rejected", "error", "invalid"}
FAST_RETRY = RetryPolicy(max_attempts=8, initial=0.02, max_backoff=0.2, jitter=0.02)
# 20% of requests fail, spread over every kind the issue names.
FAULTS_20 = (
    "500:0.04,502:0.03,503:0.03,429:0.03,reset_before:0.03,reset_after:0.02,"
    "malformed:0.01,truncated:0.01,retry_after=50ms"
)
HEADER = "applicant_id,front,back,face_1,face_2,face_3,name_check_value,client_transaction_id"

# The bulk job of the crash test, run as its own process so it can be SIGKILLed.
CHILD = """
import asyncio, json, sys
from vlens_async.bulk import format_summary, run_bulk
from vlens_async.client import VlensClient

async def main(base_url, api_key, manifest, journal, out, resume, signals="no-signals"):
    async with VlensClient(api_key, base_url=base_url) as client:
        summary = await run_bulk(
            client, manifest, journal=journal, out=out, concurrency=2, rate_limit="none",
            resume=resume == "resume", progress=False, signals=signals == "signals",
        )
    print(json.dumps({"pending": summary.pending, "by_outcome": dict(summary.by_outcome),
                      "interrupted": summary.interrupted, "stop_reason": summary.stop_reason,
                      "total": summary.total, "not_started": summary.not_started,
                      "complete": summary.complete, "text": format_summary(summary)}))

asyncio.run(main(*sys.argv[1:]))
"""


def write_applicants(
    folder: Path, scenarios: Sequence[str], *, distinct: int | None = None
) -> Path:
    """Synthetic applicants (``distinct`` image sets reused round-robin) and their manifest."""
    distinct = distinct or len(scenarios)
    lines = [HEADER]
    for n, scenario in enumerate(scenarios):
        images = folder / f"img{n % distinct}-{scenario}"
        if not images.exists():
            images.mkdir()
            applicant = make_applicant(100 + n % distinct, scenario=scenario)
            (images / "front.jpg").write_bytes(applicant.front)
            (images / "back.jpg").write_bytes(applicant.back)
            for i, face in enumerate(applicant.faces, start=1):
                (images / f"face_{i}.jpg").write_bytes(face)
        rel = images.name
        files = [f"{rel}/{name}.jpg" for name in ("front", "back", "face_1", "face_2", "face_3")]
        lines.append(",".join([f"p{n}", *files, "", f"{scenario}-{n}"]))
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture(scope="module")
def valid_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight valid applicants, each with images of their own."""
    return write_applicants(tmp_path_factory.mktemp("valid"), ["valid"] * 8)


def unlimited_runner(client: VlensClient, tmp_path: Path) -> BulkRunner:
    """A runner on ``client`` without a rate limit, journaling and writing results in tmp_path."""
    return BulkRunner(
        client,
        rate_limit=RateLimit.unlimited(),
        journal=tmp_path / "run.db",
        results=tmp_path / "results.jsonl",
        step_retry=FAST_RETRY,
    )


def read_results(path: Path) -> list[dict[str, Any]]:
    """The results file's lines."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def journaled_steps(journal: Path) -> set[tuple[str, str]]:
    """(transaction id, step) of every step the journal records as succeeded."""
    done: set[tuple[str, str]] = set()
    with sqlite3.connect(journal) as conn:
        rows = conn.execute("SELECT transaction_id, status, snapshot FROM applicants").fetchall()
    for transaction_id, _status, snapshot in rows:
        steps = json.loads(snapshot)["steps"] if snapshot else {}
        for step, record in steps.items():
            if record["status"] == "succeeded":
                done.add((transaction_id, step))
    return done


def count_journaled(journal: Path) -> int:
    """Successful step attempts journaled so far (0 before the journal exists)."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal) as conn:
            return int(conn.execute("SELECT count(*) FROM steps WHERE ok=1").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def count_unfinished(journal: Path) -> int:
    """Applicants the journal has not finished (claimed, maybe partly done)."""
    with sqlite3.connect(journal) as conn:
        return int(
            conn.execute("SELECT count(*) FROM applicants WHERE status != 'done'").fetchone()[0]
        )


async def run_child(*args: str) -> asyncio.subprocess.Process:
    """Start the bulk job of CHILD in a subprocess."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_crash_and_resume_never_repeats_a_journaled_step(
    vlens_emulator: RunningEmulator, valid_manifest: Path, tmp_path: Path
) -> None:
    """SIGKILL mid-job, then resume: one transaction each, no journaled step sent again."""
    # A slow liveness keeps applicants unfinished for a second after their sides are journaled,
    # so the kill lands mid-job even when this loop is slow to see the journal (a busy machine).
    vlens_emulator.set_faults(None, ["fixed:80ms", "fixed:1s@liveness"])
    journal, out = tmp_path / "run.db", tmp_path / "results.jsonl"
    args = [vlens_emulator.base_url, vlens_emulator.api_key, str(valid_manifest), str(journal)]
    child = await run_child(*args, str(out), "fresh")
    await wait_journaled(child, journal, 5)
    child.send_signal(signal.SIGKILL)
    await child.communicate()
    await asyncio.sleep(1.3)  # let requests already in the emulator finish their work there
    vlens_emulator.set_faults(None, ["fixed:80ms"])
    before = vlens_emulator.counters()["steps"]
    journaled = await asyncio.to_thread(journaled_steps, journal)
    assert len(journaled) >= 5
    assert await asyncio.to_thread(count_unfinished, journal) > 0  # killed mid-job

    child = await run_child(*args, str(out), "resume")
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    report = json.loads(stdout)
    assert report["pending"] == 0

    after = vlens_emulator.counters()
    lines = read_results(out)
    assert len(lines) == 8
    assert {line["outcome"] for line in lines} == {"verified"}
    assert after["transactions_created"] == 8
    assert set(after["steps"]) == {line["transaction_id"] for line in lines}
    for transaction_id, step in journaled:
        assert after["steps"][transaction_id][step] == before[transaction_id][step], step
    for counts in after["steps"].values():
        assert set(counts) == {"front", "back", "liveness"}


async def wait_journaled(child: asyncio.subprocess.Process, journal: Path, steps: int) -> None:
    """Wait until the child has journaled ``steps`` successful steps."""
    for _ in range(3000):  # 60 s at most, so a hung child fails here, not at pytest's timeout
        if await asyncio.to_thread(count_journaled, journal) >= steps:
            return
        assert child.returncode is None, "the job ended too early"
        await asyncio.sleep(0.02)
    raise AssertionError(f"{steps} steps were not journaled in time")


async def test_first_signal_drains_second_stops_at_once(
    vlens_emulator: RunningEmulator, valid_manifest: Path, tmp_path: Path
) -> None:
    """SIGTERM drains and journals; a second signal stops at once; resume finishes all."""
    vlens_emulator.set_faults(None, ["fixed:150ms"])
    journal, out = tmp_path / "run.db", tmp_path / "results.jsonl"
    args = [vlens_emulator.base_url, vlens_emulator.api_key, str(valid_manifest), str(journal)]

    child = await run_child(*args, str(out), "fresh", "signals")
    await wait_journaled(child, journal, 2)
    child.send_signal(signal.SIGTERM)
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    first = json.loads(stdout)
    assert first["interrupted"]
    assert first["stop_reason"] == "SIGTERM received"
    assert first["pending"] > 0
    assert {line["outcome"] for line in read_results(out)} <= TERMINAL | {"pending"}
    # Drained: every step the emulator carried out was journaled before the job exited.
    sent = {
        (tx, step)
        for tx, counts in vlens_emulator.counters()["steps"].items()
        for step, n in counts.items()
        if n
    }
    assert sent == await asyncio.to_thread(journaled_steps, journal)

    child = await run_child(*args, str(out), "resume", "signals")
    await wait_journaled(child, journal, await asyncio.to_thread(count_journaled, journal) + 1)
    child.send_signal(signal.SIGINT)
    child.send_signal(signal.SIGINT)
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    assert json.loads(stdout)["interrupted"]

    child = await run_child(*args, str(out), "resume")
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    assert json.loads(stdout)["pending"] == 0
    assert {line["outcome"] for line in read_results(out)} == {"verified"}
    assert vlens_emulator.counters()["transactions_created"] == 8


async def test_a_stopped_job_counts_the_rows_it_never_reached_and_resume_finishes_them(
    vlens_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Ctrl-C before every row is read: the total is the manifest's, the rows never reached are
    said; the results file holds the rows reached; a resume completes it, one transaction each."""
    # A slow liveness keeps the first two applicants in flight when the signal lands: the
    # other three rows are never claimed.
    vlens_emulator.set_faults(None, ["fixed:80ms", "fixed:1s@liveness"])
    manifest = await asyncio.to_thread(write_applicants, tmp_path, ["valid"] * 5)
    journal, out = tmp_path / "run.db", tmp_path / "results.jsonl"
    args = [vlens_emulator.base_url, vlens_emulator.api_key, str(manifest), str(journal)]

    child = await run_child(*args, str(out), "fresh", "signals")
    await wait_journaled(child, journal, 2)
    child.send_signal(signal.SIGINT)
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    first = json.loads(stdout)
    reached = read_results(out)
    assert first["stop_reason"] == "SIGINT received"
    assert first["total"] == 5
    assert len(reached) == 2
    assert first["not_started"] == 3
    assert sum(first["by_outcome"].values()) == 2
    assert not first["complete"]
    text = " ".join(first["text"].split())  # the table wraps long sentences
    left = f"{first['pending']} applicant(s) pending and 3 not started"
    if not first["pending"]:  # both finished their liveness before stopping
        left = "3 applicant(s) not started"
    assert f"Stopped early (SIGINT received): {left}; run again with resume" in text
    assert "0 applicant(s) pending" not in text
    assert re.search(r"not started\s*│\s*3\b", text)
    assert re.search(r"total\s*│\s*5\b", text)
    assert vlens_emulator.counters()["transactions_created"] == 2

    vlens_emulator.set_faults(None, ["fixed:20ms"])
    child = await run_child(*args, str(out), "resume")
    stdout, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()[-2000:]
    second = json.loads(stdout)
    assert (second["total"], second["not_started"], second["pending"]) == (5, 0, 0)
    assert second["complete"]
    assert "Stopped early" not in second["text"]
    assert "not started" not in second["text"]
    lines = read_results(out)
    assert [line["applicant_id"] for line in lines] == [f"p{n}" for n in range(5)]
    assert {line["outcome"] for line in lines} == {"verified"}
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 5  # nobody got a second transaction
    assert set(counters["steps"]) == {line["transaction_id"] for line in lines}


async def test_faults_leave_every_applicant_terminal_and_classified(
    vlens_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """With 20% injected faults everyone ends terminal, rightly classified, on one transaction."""
    # 5xx, 429, resets before and after, malformed and truncated bodies.
    scenarios = ["valid"] * 8 + ["expired", "back_of_other_card", "identical_frames", "valid"]
    manifest = await asyncio.to_thread(write_applicants, tmp_path, scenarios)
    vlens_emulator.set_faults(FAULTS_20, ["fixed:5ms"], seed=11)
    out = tmp_path / "results.jsonl"
    async with VlensClient(vlens_emulator.api_key, base_url=vlens_emulator.base_url) as client:
        runner = BulkRunner(
            client,
            concurrency=6,
            rate_limit=RateLimit.unlimited(),
            journal=tmp_path / "run.db",
            results=out,
            step_retry=FAST_RETRY,
        )
        summary = await runner.run(read_manifest(manifest))
    counters = vlens_emulator.counters()
    lines = {line["client_transaction_id"]: line for line in read_results(out)}
    assert len(lines) == len(scenarios)
    assert all(line["outcome"] in TERMINAL for line in lines.values())
    assert summary.pending == 0
    faults = vlens_emulator.control.faults()["injected"]
    assert sum(faults.values()) >= 5  # the faults really happened
    for key, line in lines.items():
        scenario = key.rsplit("-", 1)[0]
        if scenario == "valid":
            assert line["outcome"] == "verified", line
        elif scenario == "expired":
            assert (line["outcome"], line["error_code"]) == ("rejected", 3010)
        elif scenario == "back_of_other_card":
            assert (line["outcome"], line["error_code"]) == ("rejected", 3101)
        else:
            assert (line["outcome"], line["error_type"]) == ("rejected", "IdenticalFramesError")
    # One transaction per applicant: retries landed on the transaction they started.
    assert counters["transactions_created"] == len(scenarios)
    assert set(counters["steps"]) == {line["transaction_id"] for line in lines.values()}


@contextlib.asynccontextmanager
async def emulator_process(*options: str) -> AsyncIterator[str]:
    """An emulator in its own process (``vlens emulator``); yields its base URL.

    Its own process, so that the arrival times it counts are not delayed by this test's event
    loop: the rate-limit test measures the runner, not the loop they would share.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vlens_async",
        "emulator",
        "--port",
        "0",
        *options,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, line
        yield match.group(0)
    finally:
        proc.terminate()
        await proc.communicate()


async def test_rate_limit_holds_at_the_server(tmp_path: Path) -> None:
    """At 10/s and 60/min the emulator never counts more, and never has to refuse."""
    manifest = await asyncio.to_thread(write_applicants, tmp_path, ["valid"] * 12, distinct=2)
    async with emulator_process("--rate-limit") as base_url:
        async with VlensClient(DEFAULT_API_KEY, base_url=base_url) as client:
            summary = await run_bulk(
                client,
                manifest,
                journal=tmp_path / "run.db",
                out=tmp_path / "results.jsonl",
                concurrency=16,
                rate_limit=RateLimit(per_second=10, per_minute=60),
                progress=False,
                signals=False,
            )
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base_url}/_emulator/counters") as response,
        ):
            counters = await response.json()
    seen = {k: counters[k] for k in ("per_second", "max_per_second", "max_per_minute")}
    assert summary.by_outcome == {"verified": 12}, seen
    assert counters["requests_total"] == 36, seen
    assert max(counters["per_second"].values()) <= 10
    assert max(counters["per_minute"].values()) <= 60
    assert counters["max_per_second"] <= 10
    assert counters["max_per_minute"] <= 60
    assert counters["rate_limited"] == 0


@pytest.mark.vlens_emulator(
    tenant={"rate_limit": True, "rate_per_second": 5, "rate_per_minute": 600}
)
async def test_throttling_slows_the_job_and_everyone_still_finishes(
    vlens_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A stricter tenant answers 4003: the job slows, retries, and everyone ends verified."""
    manifest = await asyncio.to_thread(write_applicants, tmp_path, ["valid"] * 6, distinct=2)
    async with VlensClient(vlens_emulator.api_key, base_url=vlens_emulator.base_url) as client:
        runner = BulkRunner(
            client,
            concurrency=6,
            rate_limit=RateLimit(per_second=20, per_minute=None),
            journal=tmp_path / "run.db",
            step_retry=FAST_RETRY,
        )
        summary = await runner.run(read_manifest(manifest))
    counters = vlens_emulator.counters()
    assert summary.by_outcome == {"verified": 6}
    assert summary.throttled > 0
    assert counters["rate_limited"] > 0
    assert counters["transactions_created"] == 6


def journal_bytes(folder: Path) -> bytes:
    """Every byte of the journal on disk (the write-ahead log and lock file included)."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("run.db*")))


def spellings(text: str) -> list[bytes]:
    """``text`` as it could appear in a file: UTF-8, and JSON-escaped."""
    return [text.encode(), json.dumps(text)[1:-1].encode()]


async def test_journal_keeps_no_names_of_an_aml_watchlisted_applicant(
    vlens_client: VlensClient, tmp_path: Path
) -> None:
    """After an AML hit the journal holds no names, address, national ID or birth date, yet
    resume has what it needs; the results line says the applicant needs review."""
    manifest = await asyncio.to_thread(write_applicants, tmp_path, ["aml_watchlisted"])
    fields = make_applicant(100, scenario="aml_watchlisted").fields  # write_applicants' seed
    runner = unlimited_runner(vlens_client, tmp_path)
    await runner.run(read_manifest(manifest))
    (line,) = read_results(tmp_path / "results.jsonl")
    assert "aml_matched" in line["service_flags"]  # the AML case really came back
    assert line["verified"] is True
    assert line["needs_review"] is True
    raw = journal_bytes(tmp_path) + (tmp_path / "results.jsonl").read_bytes()
    for text in personal_values(fields):  # the AML case's full name among them
        for spelled in spellings(text):
            assert spelled not in raw
    with sqlite3.connect(tmp_path / "run.db") as conn:
        (snapshot,) = conn.execute("SELECT snapshot FROM applicants").fetchone()
    # What is left still rebuilds the transaction and the results line's figures.
    outcome = Transaction.restore(vlens_client, json.loads(snapshot)).result
    assert outcome.state.value == line["state"] == "COMPLETED"
    assert (outcome.validated, outcome.verified) == (line["validated"], line["verified"])
    assert [flag.value for flag in outcome.cross_check] == line["cross_check"]
    assert outcome.services is not None
    assert outcome.services.aml is not None
    assert outcome.services.aml.aml_matched
    assert outcome.needs_review
    assert outcome.front is None  # the extracted fields were never journaled


async def test_runner_accepts_a_manifest_path(vlens_client: VlensClient, tmp_path: Path) -> None:
    """run() given a path reads it as a manifest (a str is not iterated as characters)."""
    manifest = await asyncio.to_thread(write_applicants, tmp_path, ["valid", "valid"])
    runner = unlimited_runner(vlens_client, tmp_path)
    summary = await runner.run(str(manifest))
    assert summary.total == 2
    assert summary.by_outcome.get("verified") == 2
