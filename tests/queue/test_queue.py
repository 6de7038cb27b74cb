"""The queue in one process against a real PostgreSQL and the emulator: schema, submit,
a worker end to end, export, retry, the shared limiter, and the refusals."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from vlens_async import cli, queue
from vlens_async.bulk import RateLimit
from vlens_async.bulk._ratelimit import LimiterClosed
from vlens_async.client import VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.queue._limiter import PgRateLimiter, set_limit
from vlens_async.queue._store import service_key

from .helpers import write_manifest

FAST = {"heartbeat": 0.5, "stalled_after": 3.0, "poll": 0.3}


async def test_bad_inputs_are_one_line_refusals(pg_url: str, tmp_path: Path) -> None:
    """Unreachable database, missing schema, unknown run: QueueError, nothing written."""
    manifest = write_manifest(tmp_path, 2)
    with pytest.raises(queue.QueueError, match="cannot connect"):
        await queue.init("postgresql:///x?host=/nonexistent&port=1")
    with pytest.raises(queue.QueueError, match="vlens queue init"):
        await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:1")
    await queue.init(pg_url)
    with pytest.raises(queue.QueueError, match="no run named"):
        await queue.status(pg_url, "missing")
    with pytest.raises(queue.QueueError, match="no run named"):
        await queue.export(pg_url, "missing", tmp_path / "out.jsonl")


async def test_submit_is_idempotent_and_checks_the_run(pg_url: str, tmp_path: Path) -> None:
    """Again adds nothing; another manifest or service for the run is refused."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 5)
    lines = manifest.read_text().splitlines()
    lines.append(lines[1])  # a duplicate id
    lines.append("bad,missing.jpg,missing.jpg,a,b,c,,")  # unreadable files
    manifest.write_text("\n".join(lines) + "\n")
    first = await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    assert (first.added, first.invalid, first.total) == (5, 2, 7)
    again = await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    assert (again.added, again.invalid, again.total) == (0, 0, 7)
    other = write_manifest(tmp_path, 3, name="other.csv")
    with pytest.raises(queue.QueueError, match="made from the manifest"):
        await queue.submit(pg_url, other, run="r", base_url="http://127.0.0.1:9")
    with pytest.raises(queue.QueueError, match="submitted for"):
        await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:10")
    with psycopg.connect(pg_url) as conn:
        jobs = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    assert jobs == (5,)


async def test_worker_end_to_end_export_and_retry(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator, vlens_client: VlensClient
) -> None:
    """A worker finishes the run; export has bulk's lines in manifest order; retry re-sends."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 6, distinct=6)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([*lines, "gone,img0/front.jpg,x.jpg,a,b,c,,"]) + "\n")
    await queue.submit(pg_url, manifest, run="r", base_url=vlens_emulator.base_url, rate="none")
    with psycopg.connect(pg_url) as conn:  # written at submit, before any request
        submitted = dict(
            conn.execute("SELECT applicant_id, transaction_id FROM vlens_queue_applicants")
        )
    (tmp_path / "img1" / "back.jpg").unlink()  # a worker cannot read it: that applicant only
    summary = await queue.run_worker(pg_url, vlens_client, concurrency=4, until_empty=True, **FAST)
    assert summary.stop_reason == "the queue is empty"
    st = await queue.status(pg_url, "r")
    assert st.pending == 0
    assert st.total == 7
    out = tmp_path / "results.jsonl"
    assert await queue.export(pg_url, "r", out) == 7
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in results] == list(range(1, 8))
    by_id = {r["applicant_id"]: r for r in results}
    assert by_id["p1"]["outcome"] == "error"  # its back scan went missing after submit
    assert (
        by_id["p1"]["error_message"]
        == "back: cannot read the image file (FileNotFoundError, ENOENT)"
    )
    assert by_id["gone"]["outcome"] == "invalid"  # its files were missing at submit
    assert by_id["p0"]["outcome"] == "verified"
    assert set(by_id["p0"]) >= {"transaction_id", "needs_review", "attempts", "timings"}
    assert vlens_emulator.counters()["transactions_created"] == 6  # p1's front was sent
    assert {r["applicant_id"]: r["transaction_id"] for r in results[:6]} == submitted
    assert set(vlens_emulator.counters()["steps"]) == set(submitted.values())
    with psycopg.connect(pg_url) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM vlens_queue_applicants WHERE inputs IS NOT NULL"
        ).fetchone()
        snapshot = conn.execute(
            "SELECT snapshot FROM vlens_queue_applicants WHERE applicant_id = 'p0'"
        ).fetchone()
        steps = conn.execute(
            "SELECT step, attempt, ok, status, duration > 0 FROM vlens_queue_attempts"
            " WHERE applicant_id = 'p0' ORDER BY id"
        ).fetchall()
        conn.execute(
            "UPDATE vlens_queue_applicants SET outcome = 'error', inputs = '{}'::jsonb"
            " WHERE applicant_id = 'p2'"
        )
    assert kept == (1,)  # only p1's row is kept (for retry), no other's paths
    assert sorted(steps) == [(step, 1, True, None, True) for step in ("back", "front", "liveness")]
    assert snapshot is not None
    assert json.loads(snapshot[0])["personal_data"] is False
    assert await queue.retry(pg_url, "r") == 2  # p1 and p2


async def test_limiter_is_shared_and_slowed_by_one_signal(pg_url: str) -> None:
    """Two limiters on one bucket share the window; a 429 seen by one pauses the other."""
    await queue.init(pg_url)
    async with queue._db.connect(pg_url) as conn:
        await set_limit(conn, "k", RateLimit(per_second=3, per_minute=None))
    pool = await queue._db.open_pool(pg_url, max_size=6)
    try:
        a = await PgRateLimiter(pool, "k").open()
        b = await PgRateLimiter(pool, "k").open()
        tokens = [await a.acquire(), await b.acquire(), await a.acquire()]
        assert all(t is not None for t in tokens)
        with pytest.raises(TimeoutError):  # three held: nobody gets a fourth
            async with asyncio.timeout(0.5):
                await b.acquire()
        await a.aclose()  # its owner lock goes: its held tokens are released by the next grant
        loop = asyncio.get_running_loop()
        started = loop.time()
        await b.acquire()
        assert loop.time() - started < 1.5
        b.throttled(retry_after=1.0)
        await asyncio.sleep(0.2)
        await b.aclose()  # waits for its throttle report; its tokens go with its owner lock
        c = await PgRateLimiter(pool, "k").open()
        started = loop.time()
        await c.acquire()
        assert loop.time() - started >= 0.7  # the other worker's 429 paused this one too
        c.close()
        with pytest.raises(LimiterClosed):
            await c.acquire()
        await c.aclose()
    finally:
        await pool.close()


def test_service_key_hides_credentials() -> None:
    """The service a URL names keeps no user or password."""
    assert service_key("https://u:p@Example.com:8443/api/") == "https://example.com:8443/api"


def test_base_import_and_cli_need_no_queue_packages() -> None:
    """``import vlens_async`` and building the CLI import neither procrastinate nor psycopg."""
    code = (
        "import sys, vlens_async, vlens_async.cli\n"
        "vlens_async.cli.build_parser()\n"
        "heavy = [m for m in ('procrastinate', 'psycopg', 'psycopg_pool') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _journaled_steps(db: str) -> set[tuple[str, str]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT transaction_id, snapshot FROM vlens_queue_applicants WHERE snapshot IS NOT NULL"
        ).fetchall()
    return {
        (tx, step)
        for tx, snapshot in rows
        for step, record in json.loads(snapshot)["steps"].items()
        if record["status"] == "succeeded"
    }


def _job_states(db: str) -> dict[str, int]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


async def test_stop_gracefully_then_at_once_and_resume(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator, vlens_client: VlensClient
) -> None:
    """A graceful stop journals the steps in flight and puts the jobs back; a second stop
    cancels at once; the next worker finishes everyone on the same transactions."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 12, distinct=4)
    await queue.submit(
        pg_url, manifest, run="r", base_url=vlens_emulator.base_url, rate="none", prepare=False
    )
    vlens_emulator.set_faults(None, ["fixed:800ms"])
    # Graceful: the fronts are done and the backs in flight at 1.2 s; they finish, are
    # journaled, and liveness is not sent. At once: the liveness calls in flight are cancelled.
    for hard, wait in ((False, 1.2), (True, 0.5)):
        worker = queue.Worker(pg_url, vlens_client, concurrency=12, **FAST)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(wait)
        live = await queue.status(pg_url, "r")  # while the run goes on
        worker.stop()
        assert (live.workers_alive, live.worker_loops) == (1, 4)  # one process, four loops
        assert live.jobs.get("doing", 0) > 0
        if hard:
            await asyncio.sleep(0.05)
            worker.stop()
        async with asyncio.timeout(10):
            summary = await task
        assert summary.stop_reason == "stopped"
        states = await asyncio.to_thread(_job_states, pg_url)
        assert "doing" not in states  # every job not finished was put back
        assert states.get("todo", 0) > 0
        if not hard:
            done = await asyncio.to_thread(_journaled_steps, pg_url)
            assert done  # the steps in flight finished and were journaled
            assert "liveness" not in {s for _, s in done}  # and nothing more was sent
            sent = vlens_emulator.counters()["steps"]
    st = await queue.status(pg_url, "r")
    assert 0 < st.pending <= 12
    assert (st.workers_alive, st.worker_loops, st.eta) == (0, 0, None)  # stopped: no ETA
    summary = await queue.run_worker(pg_url, vlens_client, concurrency=12, until_empty=True, **FAST)
    assert summary.stop_reason == "the queue is empty"
    st = await queue.status(pg_url, "r")
    assert (st.pending, st.by_outcome, st.eta) == (0, {"verified": 12}, 0.0)
    assert st.throughput > 0  # applicants finished within the last minute
    out = tmp_path / "results.jsonl"
    await queue.export(pg_url, "r", out)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["outcome"] for r in results} == {"verified"}
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 12
    assert set(counters["steps"]) == {r["transaction_id"] for r in results}
    for transaction_id, step in done:  # journaled at the graceful stop: never sent again
        assert counters["steps"][transaction_id][step] == sent[transaction_id][step]


async def test_an_unreadable_file_is_an_error_retried_on_the_same_transaction(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator, vlens_client: VlensClient
) -> None:
    """A face file gone after submit (a worker's shared folder missing) ends the applicant as
    ``error`` with a one-line reason after its sides were sent; once the file is back,
    ``retry --failed`` finishes it on the same transaction."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 2, distinct=2)
    await queue.submit(
        pg_url, manifest, run="r", base_url=vlens_emulator.base_url, rate="none", prepare=False
    )
    face = tmp_path / "img1" / "face_2.jpg"
    kept = face.read_bytes()
    face.unlink()
    first = await queue.run_worker(pg_url, vlens_client, concurrency=2, until_empty=True, **FAST)
    assert first.by_outcome == {"verified": 1, "error": 1}
    out = tmp_path / "results.jsonl"
    await queue.export(pg_url, "r", out)
    p1 = [json.loads(line) for line in out.read_text().splitlines()][1]
    assert (p1["outcome"], p1["state"]) == ("error", "ID_SCANNED")  # its sides were sent
    assert p1["error_message"] == "face_2: cannot read the image file (FileNotFoundError, ENOENT)"
    assert str(tmp_path) not in out.read_text()
    face.write_bytes(kept)
    assert await queue.retry(pg_url, "r") == 1
    await queue.run_worker(pg_url, vlens_client, concurrency=2, until_empty=True, **FAST)
    await queue.export(pg_url, "r", out)
    after = [json.loads(line) for line in out.read_text().splitlines()][1]
    assert (after["outcome"], after["transaction_id"]) == ("verified", p1["transaction_id"])
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 2  # one each: p1 continued on its own
    assert counters["steps"][p1["transaction_id"]]["front"] == 1  # never sent again


async def test_status_eta_needs_a_worker_and_is_capped_by_the_rate(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator, vlens_client: VlensClient
) -> None:
    """The ETA is unknown with no worker alive, and never faster than the run's rate limit
    allows (three requests per applicant)."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 8, distinct=2)
    await queue.submit(
        pg_url, manifest, run="r", base_url=vlens_emulator.base_url, rate="1/s", prepare=False
    )
    with psycopg.connect(pg_url) as conn:  # two finished just now: a fast throughput
        conn.execute(
            "UPDATE vlens_queue_applicants SET status = 'done', outcome = 'verified',"
            " finished_at = extract(epoch FROM now()) WHERE applicant_id IN ('p0', 'p1')"
        )
    st = await queue.status(pg_url, "r")
    assert (st.pending, st.workers_alive, st.eta) == (6, 0, None)
    worker = queue.Worker(pg_url, vlens_client, concurrency=1, **FAST)
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):  # registered within 10 s
            st = await queue.status(pg_url, "r")
            if st.workers_alive:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        worker.stop()
        await task
    assert st.workers_alive == 1
    assert st.throughput > 1 / 3
    assert st.eta is not None
    assert st.eta >= st.pending * 3  # at 1 request a second, 3 per applicant


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_workers_take_the_connection_options_of_bulk() -> None:
    """``vlens queue work`` has every connection option of ``vlens bulk`` (one function adds
    them to both): bulk has no option a worker lacks but its own job's."""
    parser = cli.build_parser()
    bulk, work = _subparser(parser, "bulk"), _subparser(parser, "queue", "work")
    connection = argparse.ArgumentParser(add_help=False)
    cli._add_connection_options(connection)
    assert _options(connection) <= _options(work)
    job_only = {"--journal", "--out", "--resume", "--retry-errors", "--no-prepare", "--rate"}
    assert _options(bulk) - _options(work) == job_only


def limits_and_rate(db: str, run: str) -> tuple[tuple[object, ...], str]:
    """The service limits rows, and the run's stored rate."""
    with psycopg.connect(db) as conn:
        limits = tuple(
            conn.execute("SELECT key, per_second, per_minute FROM vlens_queue_limits").fetchall()
        )
        row = conn.execute("SELECT rate FROM vlens_queue_runs WHERE name = %s", (run,)).fetchone()
    assert row is not None
    return limits, str(row[0])


def test_submitting_a_run_again_changes_nothing_of_its_rate(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run submitted again without --rate, or with its own, keeps the service's limit; with
    another rate it is refused in one line (exit 2), the limit and the run untouched."""
    assert cli.main(["queue", "init", "--db", pg_url]) == 0
    manifest = write_manifest(tmp_path, 3)
    base = ["queue", "submit", str(manifest), "--db", pg_url, "--run", "may"]
    base += ["--base-url", "http://127.0.0.1:9"]
    assert cli.main([*base, "--rate", "5/s,1000/min"]) == 0
    first = limits_and_rate(pg_url, "may")
    assert first[1] == "5/s,1000/min"
    assert cli.main(base) == 0
    assert cli.main([*base, "--rate", "5/s,1000/min"]) == 0
    assert limits_and_rate(pg_url, "may") == first
    capsys.readouterr()
    assert cli.main([*base, "--rate", "50/s,9000/min"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlens queue submit: ")
    assert "was submitted with the rate 5/s,1000/min" in err
    assert len(err.splitlines()) == 1
    assert limits_and_rate(pg_url, "may") == first
    june = ["queue", "submit", str(manifest), "--db", pg_url, "--run", "june"]
    assert cli.main([*june, "--base-url", "http://127.0.0.1:9"]) == 0  # a new run, no --rate
    assert limits_and_rate(pg_url, "june") == (first[0], "5/s,1000/min")  # the service's own


def test_export_refuses_the_manifest_and_another_runs_results(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export --out: the run's manifest, or a file holding another run's results (or anything
    else), is refused in one line and left as it was; its own results file is replaced."""
    assert cli.main(["queue", "init", "--db", pg_url]) == 0
    march = write_manifest(tmp_path, 2, name="march.csv")
    april = write_manifest(tmp_path, 3, name="april.csv")
    for name, manifest in (("march", march), ("april", april)):
        argv = ["queue", "submit", str(manifest), "--db", pg_url, "--run", name]
        assert cli.main([*argv, "--base-url", "http://127.0.0.1:9"]) == 0
    export = ["queue", "export", "--db", pg_url]
    results = tmp_path / "results.jsonl"
    assert cli.main([*export, "--run", "march", "--out", str(results)]) == 0
    assert cli.main([*export, "--run", "march", "--out", str(results)]) == 0  # its own: again
    notes = tmp_path / "notes.txt"
    notes.write_text("not results\n")
    capsys.readouterr()
    for run, target, message in [
        ("march", march, "is the run's manifest"),
        ("april", results, "holds something other than the results of run 'april'"),
        ("april", notes, "holds something other than the results of run 'april'"),
    ]:
        before = target.read_bytes()
        assert cli.main([*export, "--run", run, "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err
        assert len(err.splitlines()) == 1
        assert target.read_bytes() == before
