"""Worker processes against a real PostgreSQL and the emulator over loopback: three workers
with injected faults, workers SIGKILLed mid-job, two workers under the tenant's limit, 4003s
that slow every worker, a worker of another service, and the command line's refusals.

Scaled to this machine (2 cores, the whole module in well under a minute): 300 applicants for
the three workers, five kills over 40 applicants, 20 applicants (60 requests,
the per-minute quota) under 10/s and 60/min.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from tests.helpers.proxy import proxy_in_thread
from tests.helpers.tls import TestPKI
from vlens_async import queue
from vlens_async.cli import main
from vlens_async.emulator import EmulatorConfig, RunningEmulator, emulator_in_thread

from .helpers import start_worker, write_manifest

TERMINAL = {"verified", "not_verified", "rejected", "error", "invalid"}
FAULTS_10 = (
    "500:0.02,502:0.02,503:0.02,429:0.01,reset_before:0.01,reset_after:0.01,"
    "malformed:0.005,truncated:0.005,retry_after=50ms"
)
FAST_RETRY = ("--retry-initial", "0.02")


async def finish(*workers: asyncio.subprocess.Process, status: int = 0) -> list[str]:
    """Wait for every worker (90 s at most); their stdout and stderr (each must exit with
    ``status``)."""
    outs = []
    async with asyncio.timeout(90):
        for w in workers:
            stdout, stderr = await w.communicate()
            assert w.returncode == status, stderr.decode()[-3000:]
            outs.append(stdout.decode() + stderr.decode())
    return outs


async def export_lines(db: str, run: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The run's results lines."""
    out = tmp_path / f"{run}.jsonl"
    await queue.export(db, run, out)
    return [json.loads(line) for line in out.read_text().splitlines()]


def journaled(db: str, run: str) -> set[tuple[str, str]]:
    """(transaction id, step) of every step the journal holds as succeeded."""
    done = set()
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT a.transaction_id, a.snapshot FROM vlens_queue_applicants a"
            " JOIN vlens_queue_runs r ON r.id = a.run WHERE r.name = %s AND a.snapshot IS NOT NULL",
            (run,),
        ).fetchall()
    for transaction_id, snapshot in rows:
        for step, record in json.loads(snapshot)["steps"].items():
            if record["status"] == "succeeded":
                done.add((transaction_id, step))
    return done


def last_worker(db: str) -> int:
    """The id of the last worker registered (a worker registers after installing its signal
    handlers; a killed one's row stays until pruned), 0 for none."""
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers").fetchone()
    return int(row[0]) if row else 0


def count_ok(db: str) -> int:
    """Successful attempts journaled so far."""
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM vlens_queue_attempts WHERE ok").fetchone()
    return int(row[0]) if row else 0


async def holding_half_done(
    db: str, worker: asyncio.subprocess.Process, after: int, successes: int = 0
) -> None:
    """Wait (30 s at most, else kill ``worker`` and fail) until a worker loop registered after
    ``after`` holds a half-done applicant and ``successes`` attempts have succeeded in all."""
    for _ in range(1500):
        if await asyncio.to_thread(count_ok, db) >= successes and await asyncio.to_thread(
            holds_journaled_job, db, after
        ):
            return
        await asyncio.sleep(0.02)
    worker.kill()
    await worker.communicate()
    pytest.fail("the worker held no half-done applicant within 30 s")


def holds_journaled_job(db: str, after: int) -> bool:
    """Whether a worker loop registered after ``after`` holds a job whose applicant has a
    journaled step (a kill then leaves a half-done applicant to put back)."""
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs j"
            " JOIN vlens_queue_attempts a ON a.ok"
            " AND a.run = (j.args->>'run')::bigint AND a.applicant_id = j.args->>'applicant'"
            " WHERE j.status = 'doing' AND j.worker_id > %s",
            (after,),
        ).fetchone()
    return bool(row and row[0])


async def test_three_workers_with_faults(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator
) -> None:
    """Three worker processes, 10% faults: every applicant terminal, exported once, one
    transaction each."""
    count = 300
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, count, distinct=6)
    await queue.submit(
        pg_url, manifest, run="faults", base_url=vlens_emulator.base_url, rate="none", prepare=False
    )
    vlens_emulator.set_faults(FAULTS_10, ["fixed:30ms"], seed=16)
    args = (vlens_emulator.base_url, vlens_emulator.api_key, "--until-empty", *FAST_RETRY)
    workers = [await start_worker(pg_url, *args, "--concurrency", "12") for _ in range(3)]
    await finish(*workers)
    lines = await export_lines(pg_url, "faults", tmp_path)
    assert [line["row"] for line in lines] == list(range(1, count + 1))
    assert len({line["applicant_id"] for line in lines}) == count
    assert {line["outcome"] for line in lines} <= TERMINAL
    counters = vlens_emulator.counters()
    assert sum(counters["faults"].values()) > 0
    assert counters["transactions_created"] == count
    assert set(counters["steps"]) == {line["transaction_id"] for line in lines}


async def test_sigkill_workers_resume_on_the_same_transactions(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator
) -> None:
    """SIGKILL a worker mid-job five times: its jobs finish on the same transactions and no
    journaled step is sent again."""
    count = 40  # five victims hold at most 4 at a time: jobs are left for the steady worker
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, count, distinct=6)
    await queue.submit(
        pg_url, manifest, run="kill", base_url=vlens_emulator.base_url, rate="none", prepare=False
    )
    # A slow liveness keeps applicants unfinished after their sides are journaled.
    vlens_emulator.set_faults(None, ["fixed:60ms", "fixed:500ms@liveness"])
    args = (vlens_emulator.base_url, vlens_emulator.api_key, *FAST_RETRY, "--concurrency", "4")
    seen: dict[tuple[str, str], int] = {}
    killed = ""  # what the killed workers said: any of them may be the one that swept
    for _ in range(5):
        # Each victim is killed once it holds a half-done applicant, however slowly it started
        # (a worker taking jobs beside it could otherwise empty the queue first).
        before = await asyncio.to_thread(last_worker, pg_url)
        target = await asyncio.to_thread(count_ok, pg_url) + 4  # its four jobs under way
        victim = await start_worker(pg_url, *args)
        await holding_half_done(pg_url, victim, before, target)
        victim.send_signal(signal.SIGKILL)
        killed += b"".join(await victim.communicate()).decode()
        await asyncio.sleep(0.6)  # its requests in the emulator end there
        done = await asyncio.to_thread(journaled, pg_url, "kill")  # before the counters
        steps = vlens_emulator.counters()["steps"]
        for transaction_id, step in done:
            seen.setdefault((transaction_id, step), steps[transaction_id][step])
    vlens_emulator.set_faults(None, ["fixed:20ms"])
    before = await asyncio.to_thread(last_worker, pg_url)
    victim = await start_worker(pg_url, *args)
    for _ in range(1500):  # the last victim handles signals once it is registered (30 s at most)
        if await asyncio.to_thread(last_worker, pg_url) > before:
            break
        await asyncio.sleep(0.02)
    steady = await start_worker(pg_url, *args, "--until-empty")
    said = (await finish(steady))[0]
    victim.send_signal(signal.SIGTERM)
    said += (await finish(victim, status=130))[0]
    assert "SIGTERM received" in said
    put_back = re.findall(
        r"^vlens queue work: (\d+) jobs? of a stopped worker w", said + killed, re.M
    )
    assert put_back  # one line per sweep, with a count
    assert all(int(n) >= 1 for n in put_back)
    assert "queue: a job" not in said + killed
    lines = await export_lines(pg_url, "kill", tmp_path)
    assert {line["outcome"] for line in lines} == {"verified"}
    after = vlens_emulator.counters()
    assert after["transactions_created"] == count
    assert set(after["steps"]) == {line["transaction_id"] for line in lines}
    assert len(seen) >= 10
    for (transaction_id, step), sent in seen.items():
        assert after["steps"][transaction_id][step] == sent, step


async def test_two_workers_stay_under_the_tenant_limit(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator
) -> None:
    """Two workers of concurrency 32 under 10/s and 60/min: the emulator counts nothing over."""
    vlens_emulator.configure_tenant(rate_limit=True, rate_per_second=10, rate_per_minute=60)
    vlens_emulator.set_faults(None, ["fixed:50ms"])
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 20, distinct=4)
    await queue.submit(
        pg_url,
        manifest,
        run="limit",
        base_url=vlens_emulator.base_url,
        rate="10/s,60/min",
        prepare=False,
    )
    args = (vlens_emulator.base_url, vlens_emulator.api_key, "--until-empty", *FAST_RETRY)
    workers = [await start_worker(pg_url, *args, "--concurrency", "32") for _ in range(2)]
    await finish(*workers)
    counters = vlens_emulator.counters()
    assert counters["rate_limited"] == 0
    assert counters["max_per_second"] <= 10
    assert counters["max_per_minute"] <= 60  # the workers' reachability probes are not API calls
    lines = await export_lines(pg_url, "limit", tmp_path)
    assert {line["outcome"] for line in lines} == {"verified"}


def test_cli_bad_inputs_exit_2(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreachable, unreadable or wrong database URL, missing schema, unknown run, another
    manifest: one line, exit 2, no password echoed."""
    manifest = write_manifest(tmp_path, 2)
    other = write_manifest(tmp_path, 3, name="other.csv")
    bad_db = "postgresql:///x?host=/nonexistent&port=1"
    submit = ["queue", "submit", "--base-url", "http://127.0.0.1:9", "--run", "r"]
    wrong_name = conninfo.make_conninfo(pg_url, dbname="no_such_database")
    cases = [
        (["queue", "init", "--db", bad_db], "cannot connect"),
        (["queue", "init", "--db", "secretpw-not-a-url"], "bad database URL"),
        (["queue", "init", "--db", wrong_name], 'database "no_such_database" does not exist'),
        ([*submit, str(manifest), "--db", pg_url], "vlens queue init"),
        (["queue", "status", "--db", pg_url, "--run", "r"], "vlens queue init"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err
        assert err.startswith(f"vlens queue {argv[1]}: ")
        assert "Error:" not in err
        assert len(err.splitlines()) == 1
        assert "secretpw" not in err
    assert main(["queue", "init", "--db", pg_url]) == 0
    assert main([*submit, str(manifest), "--db", pg_url]) == 0
    assert "2 rows" in capsys.readouterr().out
    for argv, message in [
        ([*submit, str(other), "--db", pg_url], "made from the manifest"),
        (["queue", "export", "--db", pg_url, "--run", "nope", "--out", "x"], "no run named"),
        (["queue", "work", "--db", pg_url, "--emulator"], "needs a service"),
        (
            ["queue", "work", "--db", pg_url, "--concurrency", "1001", "--base-url", "http://x"],
            "--concurrency must be a whole number from 1 to 1000, got 1001",
        ),
        (["queue", "submit", "nosuch.csv", "--db", pg_url, "--run", "r"], "no such manifest"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err
        assert err.startswith(f"vlens queue {argv[1]}: ")  # the command, no class name
        assert "Error:" not in err
        assert len(err.splitlines()) == 1
    assert main(["queue", "status", "--db", pg_url, "--run", "r", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["pending"], st["workers_alive"], st["eta"]) == (2, 0, None)
    assert main(["queue", "status", "--db", pg_url, "--run", "r"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; no workers alive; ETA unknown")


async def test_throttles_seen_by_one_worker_slow_all(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator
) -> None:
    """Submitted at 20/s for a tenant the emulator holds to 5/s: the 4003s slow the shared
    bucket (its signals are counted in PostgreSQL) and every applicant still ends verified."""
    vlens_emulator.configure_tenant(rate_limit=True, rate_per_second=5, rate_per_minute=600)
    vlens_emulator.set_faults(None, ["fixed:20ms"])
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 15, distinct=3)
    await queue.submit(
        pg_url, manifest, run="slow", base_url=vlens_emulator.base_url, rate="20/s", prepare=False
    )
    args = (vlens_emulator.base_url, vlens_emulator.api_key, "--until-empty", *FAST_RETRY)
    workers = [await start_worker(pg_url, *args, "--concurrency", "16") for _ in range(2)]
    await finish(*workers)
    assert vlens_emulator.counters()["rate_limited"] > 0
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT sum(signals) FROM vlens_queue_limits").fetchone()
    assert row is not None
    assert row[0] > 0
    lines = await export_lines(pg_url, "slow", tmp_path)
    assert {line["outcome"] for line in lines} == {"verified"}


async def test_a_worker_of_another_service_refuses_the_run(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator
) -> None:
    """A worker pointed at another service says which it serves, takes none of the run's jobs
    and says it refuses that run (never the API key): with --until-empty it exits 2, without
    it says so once and waits. An unreachable service is refused before it starts. A worker
    that served its own run ends with status 0, naming the other services' runs."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 3, distinct=3)
    await queue.submit(
        pg_url, manifest, run="mine", base_url=vlens_emulator.base_url, rate="none", prepare=False
    )
    host = vlens_emulator.base_url.removeprefix("http://")
    other = f"http://{host}/other"  # the same server: reachable, another service
    key = vlens_emulator.api_key
    err = (await finish(await start_worker(pg_url, other, key, "--until-empty"), status=2))[0]
    serves = f"this worker serves {vlens_emulator.base_url}/other"
    assert f"vlens queue work: serving {vlens_emulator.base_url}/other" in err
    assert f"refused: run mine was submitted for {vlens_emulator.base_url}, {serves}" in err
    assert key not in err
    waiting = await start_worker(pg_url, other, key, "--poll", "0.2")
    assert waiting.stderr is not None
    lines = []
    async with asyncio.timeout(30):
        while "refused" not in (lines or [""])[-1]:
            lines.append((await waiting.stderr.readline()).decode())
        await asyncio.sleep(1.0)  # five more polls: said once only
        waiting.send_signal(signal.SIGTERM)
        rest = (await waiting.communicate())[1].decode()
    assert waiting.returncode == 130
    assert lines[-1].startswith("vlens queue work: waiting: refused: run mine was submitted")
    assert "refused" not in rest
    st = await queue.status(pg_url, "mine")
    assert (st.pending, st.jobs) == (3, {"todo": 3})
    assert vlens_emulator.counters()["transactions_created"] == 0
    unreachable = await start_worker(pg_url, "http://127.0.0.1:9", key, "--until-empty")
    err = (await finish(unreachable, status=2))[0]
    assert err.startswith("vlens queue work: cannot reach 127.0.0.1")
    assert len(err.strip().splitlines()) == 1
    # A worker that served its own run ends as usual, naming the run it leaves to others.
    await queue.submit(
        pg_url, manifest, run="theirs", base_url="http://127.0.0.1:9", rate="none", prepare=False
    )
    mine = await start_worker(pg_url, vlens_emulator.base_url, key, "--until-empty", *FAST_RETRY)
    said = (await finish(mine))[0]
    assert (
        "vlens queue work: done; refused: run theirs was submitted for http://127.0.0.1:9" in said
    )
    assert "finished 3 verified" in said


def test_a_worker_goes_through_the_proxy_trusting_the_ca_bundle(
    pg_url: str, tmp_path: Path, pki: TestPKI, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vlens queue work --until-empty --proxy URL --ca-bundle FILE` against the emulator over
    HTTPS (a CA made in the test): every request of the run goes through the proxy's tunnels,
    and the run is verified."""
    pem = pki.write(tmp_path)
    manifest = write_manifest(tmp_path, 2, distinct=2)
    with (
        emulator_in_thread(EmulatorConfig(tls=pki.server_context())) as emulator,
        proxy_in_thread() as proxy,
    ):
        asyncio.run(queue.init(pg_url))
        asyncio.run(
            queue.submit(
                pg_url, manifest, run="tls", base_url=emulator.base_url, rate="none", prepare=False
            )
        )
        status = main(
            [
                *("queue", "work", "--db", pg_url, "--until-empty", *FAST_RETRY),
                *("--base-url", emulator.base_url, "--api-key", emulator.api_key),
                *("--proxy", proxy.url, "--ca-bundle", str(pem.ca)),
            ]
        )
        counters = emulator.counters()
        target = emulator.base_url.removeprefix("https://")
    assert status == 0, capsys.readouterr().err
    lines = asyncio.run(export_lines(pg_url, "tls", tmp_path))
    assert {line["outcome"] for line in lines} == {"verified"}
    assert counters["transactions_created"] == 2
    assert proxy.opened
    assert {t.target for t in proxy.tunnels} == {target}
    assert all(t.status == 200 for t in proxy.tunnels)


def applicant_rows(db: str, run: str) -> list[tuple[Any, ...]]:
    """Every applicant row of ``run`` as journaled: status, attempts, outcome, result, finish."""
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT a.applicant_id, a.status, a.attempts, a.outcome, a.result, a.finished_at"
            " FROM vlens_queue_applicants a JOIN vlens_queue_runs r ON r.id = a.run"
            " WHERE r.name = %s ORDER BY a.row",
            (run,),
        ).fetchall()


async def test_a_worker_paused_past_its_lease_sends_and_writes_nothing_more(
    pg_url: str, tmp_path: Path, vlens_emulator: RunningEmulator
) -> None:
    """A worker stopped (SIGSTOP) until its jobs were put back and finished by another, then
    continued: it overwrites no result and sends no further step (its lease is gone), says so
    in one line, and exits without a traceback."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 8, distinct=4)
    await queue.submit(
        pg_url, manifest, run="pause", base_url=vlens_emulator.base_url, rate="none", prepare=False
    )
    vlens_emulator.set_faults(None, ["fixed:60ms", "fixed:1500ms@liveness"])
    args = (vlens_emulator.base_url, vlens_emulator.api_key, *FAST_RETRY, "--concurrency", "4")
    before = await asyncio.to_thread(last_worker, pg_url)
    paused = await start_worker(pg_url, *args, "--until-empty")
    await holding_half_done(pg_url, paused, before)
    paused.send_signal(signal.SIGSTOP)
    try:
        vlens_emulator.set_faults(None, ["fixed:20ms"])
        steady = await start_worker(pg_url, *args, "--until-empty")
        said = (await finish(steady))[0]
        assert "of a stopped worker" in said  # its jobs were put back
        rows = await asyncio.to_thread(applicant_rows, pg_url, "pause")
        assert {row[1] for row in rows} == {"done"}
        sent = vlens_emulator.counters()["steps"]
    finally:
        paused.send_signal(signal.SIGCONT)
    resumed = (await finish(paused))[0]
    assert "taken over by another worker" in resumed
    assert "Traceback" not in resumed, resumed[-4000:]
    assert await asyncio.to_thread(applicant_rows, pg_url, "pause") == rows
    # Its lease is checked before each attempt: at most a step already past that check when it
    # was stopped goes out again (as after a crash), never a step more.
    after = vlens_emulator.counters()["steps"]
    extra = {t: sum(after[t].values()) - sum(sent[t].values()) for t in after}
    assert all(0 <= n <= 1 for n in extra.values()), extra
