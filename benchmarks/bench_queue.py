"""The PostgreSQL queue against ``vlens bulk`` on the same manifest, in one run: flows per second
and CPU per flow with 1, 2 and 4 worker processes, and the shared limiter's cost per request.

The emulator runs in its own process (``_common.Emulator``), with 200 ms fixed latency per call;
PostgreSQL is a throwaway cluster on a Unix socket (``tests/queue/pgcluster.py``; or ``--db URL``
for a server of yours: each run gets a database of its own there). Every run reports:

- ``flows_per_s``: from the job's start (for the queue: the workers' launch, so their start-up,
  about 0.5 s of imports each, is in it) to the last outcome; ``flows_per_s_steady``: from the
  first request sent to the last outcome (from the journal's attempt times, for both), the rate
  a long-running worker holds;
- ``cpu_ms_per_flow``: the job's own CPU (this process for ``vlens bulk``, the worker processes'
  rusage for the queue); ``cpu_ms_per_flow_steady`` subtracts each worker's start-up and
  shutdown CPU (measured alone, on an empty queue, as ``worker_startup_cpu_s``);
- ``emulator_ms_per_flow`` and ``postgres_ms_per_flow``: the CPU the same flows cost the emulator
  and the PostgreSQL server (the cluster's processes), which share this machine's cores;
- ``cpu_bound_flows_per_s``: the cores divided by all three CPU costs per flow: the most this
  machine could do with everything on it; ``load``: the load average when the run ended.

CPU per flow is nearly load-insensitive; flows per second are not, so the load is printed with
every run and the targets at the end, each with what this machine could reach:

1. **compliant**: synthetic applicants (compliant images), preprocessing off (``--no-prepare``),
   no rate limit, concurrency 64; bound ``64 / (3 x 200 ms)`` = 106.7 flows/s. Target: one
   worker at least 90% of ``vlens bulk``'s flows per second.
2. **12 MP**: every image scaled to 12 MP, preprocessing on; the same runs. Target: two worker
   processes at least 1.3x one on two cores. Each worker prepares in ``cores - 1`` threads (one
   on two cores), so one worker uses about one core for preparation and two use both, less what
   the emulator and PostgreSQL take: ``two_vs_one_bound`` is that ceiling.
3. **limiter**: one process asking the PostgreSQL limiter for 1,000 tokens in a row (10,000/s:
   never waits) and releasing each, against the in-process ``RateLimiter``: wall and CPU time
   per request.

    .venv/bin/python benchmarks/bench_queue.py            # all three, about 5 minutes quiet
    .venv/bin/python benchmarks/bench_queue.py --only limiter

The figures go to stdout as one JSON object; the targets, met or not, to stderr at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from _common import Emulator
from bench_bulk import cpu_seconds, write_images, write_manifest
from psycopg import conninfo

from vlens_async import queue
from vlens_async.bulk import RateLimit, RateLimiter, run_bulk
from vlens_async.client import VlensClient
from vlens_async.queue._db import connect, open_pool
from vlens_async.queue._limiter import PgRateLimiter, set_limit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.queue.pgcluster import Cluster, find_pg_bin  # noqa: E402


def fresh_db(server: str) -> str:
    """A new empty database on ``server``; its URL."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo.conninfo_to_dict(server)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


def children_cpu() -> float:
    """User + system CPU of every waited-for child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meters:
    """The CPU seconds of the emulator and of the PostgreSQL cluster (None: a server of yours,
    not measured), read before and after a run."""

    def __init__(self, emulator: Emulator, cluster: Cluster | None) -> None:
        self.emulator = emulator
        self.cluster = cluster

    def postgres(self) -> float | None:
        """The cluster's CPU: its postmaster's and every backend's, ended or not."""
        if self.cluster is None:
            return None
        pid = (self.cluster.data / "postmaster.pid").read_text().split()[0]
        total = 0.0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if proc.name == pid:  # its own, and its ended children's (backends)
                total += sum(int(f) for f in fields[11:15])
            elif fields[1] == pid:  # a backend still running
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float | None]:
        """(emulator CPU s, PostgreSQL CPU s) now."""
        return self.emulator.cpu(), self.postgres()

    def per_flow(self, before: tuple[float, float | None], flows: int) -> dict[str, Any]:
        """The emulator's and PostgreSQL's CPU ms per flow since ``before``."""
        time.sleep(0.3)  # the backends of the workers just gone end
        after = self.read()
        pg = None if after[1] is None or before[1] is None else after[1] - before[1]
        return {
            "emulator_ms_per_flow": round(1000 * (after[0] - before[0]) / flows, 1),
            "postgres_ms_per_flow": None if pg is None else round(1000 * pg / flows, 1),
        }


def finish(report: dict[str, Any], flows: int, elapsed: float, steady: float) -> dict[str, Any]:
    """Add the rates and the CPU bound to a run's ``report``."""
    report["flows"] = flows
    report["flows_per_s"] = round(flows / elapsed, 2)
    report["flows_per_s_steady"] = round(flows / steady, 2)
    cpu = sum(
        report.get(k) or 0.0
        for k in ("cpu_ms_per_flow_steady", "emulator_ms_per_flow", "postgres_ms_per_flow")
    )
    report["cpu_bound_flows_per_s"] = round(1000 * (os.cpu_count() or 1) / cpu, 1)
    report["load"] = round(os.getloadavg()[0], 1)
    return report


async def bulk_run(
    meters: Meters, base_url: str, api_key: str, manifest: Path, work: Path, args: Any
) -> dict[str, Any]:
    """``vlens bulk``'s job in this process."""
    journal = work / f"bulk-{uuid.uuid4().hex[:6]}.db"
    before, cpu, started = meters.read(), cpu_seconds(), time.time()
    async with VlensClient(api_key, base_url=base_url) as client:
        summary = await run_bulk(
            client,
            manifest,
            journal=journal,
            out=work / f"bulk-{uuid.uuid4().hex[:6]}.jsonl",
            concurrency=args.concurrency,
            rate_limit="none",
            prepare=args.prepare,
            progress=False,
            signals=False,
        )
    ended, cpu = time.time(), cpu_seconds() - cpu
    flows = max(1, summary.processed)
    with contextlib.closing(sqlite3.connect(journal)) as db:
        first, last = db.execute(
            "SELECT (SELECT min(at - duration) FROM steps), (SELECT max(updated_at)"
            " FROM applicants WHERE status = 'done')"
        ).fetchone()
    report = {"cpu_ms_per_flow": round(1000 * cpu / flows, 1)}
    report["cpu_ms_per_flow_steady"] = report["cpu_ms_per_flow"]
    report.update(meters.per_flow(before, flows))
    return finish(report, summary.processed, ended - started, last - first)


def worker_command(db: str, base_url: str, api_key: str, concurrency: int) -> list[str]:
    """``vlens queue work`` until the queue is empty."""
    return [
        sys.executable,
        "-m",
        "vlens_async",
        "queue",
        "work",
        "--db",
        db,
        "--base-url",
        base_url,
        "--api-key",
        api_key,
        "--concurrency",
        str(concurrency),
        "--until-empty",
        "--poll",
        "0.5",
    ]


async def run_workers(command: list[str], workers: int) -> float:
    """Run ``workers`` processes of ``command`` to their end; their CPU seconds."""
    cpu = children_cpu()
    procs = [
        await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])
    return children_cpu() - cpu


async def startup_cpu(server: str, base_url: str, api_key: str) -> float:
    """A worker's CPU seconds on an empty queue: imports, start-up and shutdown."""
    db = await asyncio.to_thread(fresh_db, server)
    await queue.init(db)
    runs = [await run_workers(worker_command(db, base_url, api_key, 64), 1) for _ in range(2)]
    return min(runs)


async def queue_run(
    meters: Meters,
    server: str,
    base_url: str,
    api_key: str,
    manifest: Path,
    workers: int,
    args: Any,
    startup: float,
) -> dict[str, Any]:
    """Submit the manifest to a fresh database and run ``workers`` worker processes."""
    db = await asyncio.to_thread(fresh_db, server)
    await queue.init(db)
    await queue.submit(
        db, manifest, run="bench", base_url=base_url, rate="none", prepare=args.prepare
    )
    before, started = meters.read(), time.time()
    cpu = await run_workers(worker_command(db, base_url, api_key, args.concurrency), workers)
    async with connect(db) as conn:
        row = await (
            await conn.execute(
                "SELECT count(*), max(finished_at),"
                " (SELECT min(at - duration) FROM vlens_queue_attempts)"
                " FROM vlens_queue_applicants WHERE status = 'done'"
            )
        ).fetchone()
    assert row is not None
    flows, last, first = int(row[0]), float(row[1]), float(row[2])
    report: dict[str, Any] = {
        "workers": workers,
        "cpu_ms_per_flow": round(1000 * cpu / max(1, flows), 1),
        "cpu_ms_per_flow_steady": round(1000 * (cpu - workers * startup) / max(1, flows), 1),
    }
    report.update(meters.per_flow(before, max(1, flows)))
    return finish(report, flows, last - started, last - first)


def bench_mode(
    args: argparse.Namespace, work: Path, server: str, cluster: Cluster | None, *, big: bool
) -> dict[str, Any]:
    """``vlens bulk`` then the queue with 1, 2 and 4 workers on the same manifest."""
    folder = work / ("big" if big else "plain")
    sets = write_images(folder, args.distinct_12mp if big else args.distinct, twelve_mp=big)
    manifest = write_manifest(folder, sets, args.flows_12mp if big else args.flows)
    args.prepare = big
    report: dict[str, Any] = {"prepare": big}
    emulator = Emulator(args.latency_ms)
    with emulator as (base_url, api_key):
        meters = Meters(emulator, cluster)
        startup = asyncio.run(startup_cpu(server, base_url, api_key))
        report["worker_startup_cpu_s"] = round(startup, 2)
        report["bulk"] = asyncio.run(bulk_run(meters, base_url, api_key, manifest, work, args))
        progress("bulk", report["bulk"])
        for workers in (1, 2, 4):
            name = f"queue_{workers}"
            report[name] = asyncio.run(
                queue_run(meters, server, base_url, api_key, manifest, workers, args, startup)
            )
            progress(name, report[name])
    for rate in ("flows_per_s", "flows_per_s_steady"):
        report[f"one_worker_vs_bulk_{rate}"] = round(
            report["queue_1"][rate] / report["bulk"][rate], 3
        )
        report[f"two_vs_one_{rate}"] = round(report["queue_2"][rate] / report["queue_1"][rate], 3)
    # Two workers can at most double one, and use only the cores the emulator and PostgreSQL
    # leave them (on a machine nothing else loads).
    report["two_vs_one_bound"] = round(
        min(
            2.0,
            report["queue_2"]["cpu_bound_flows_per_s"] / report["queue_1"]["flows_per_s_steady"],
        ),
        2,
    )
    return report


def progress(name: str, figures: dict[str, Any]) -> None:
    """One run's figures on stderr as they come."""
    print(f"  {name}: {json.dumps(figures)}", file=sys.stderr, flush=True)


def verdicts(report: dict[str, Any]) -> list[str]:
    """The targets, met or not, with the figures they rest on."""
    lines = []
    if "compliant" in report:
        r = report["compliant"]
        for rate, what in (("flows_per_s_steady", "steady"), ("flows_per_s", "with start-up")):
            ratio = r[f"one_worker_vs_bulk_{rate}"]
            lines.append(
                f"compliant, {what}: one worker {r['queue_1'][rate]} flows/s, vlens bulk"
                f" {r['bulk'][rate]} flows/s: {100 * ratio:.1f}% (target >= 90%):"
                f" {'MET' if ratio >= 0.9 else 'NOT MET'}"
            )
    if "12mp" in report:
        r = report["12mp"]
        for rate, what in (("flows_per_s_steady", "steady"), ("flows_per_s", "with start-up")):
            ratio = r[f"two_vs_one_{rate}"]
            lines.append(
                f"12 MP, {what}: two workers {r['queue_2'][rate]} flows/s, one"
                f" {r['queue_1'][rate]} flows/s: {ratio:.2f}x (target >= 1.3x on 2 cores;"
                f" this machine's bound {r['two_vs_one_bound']:.2f}x):"
                f" {'MET' if ratio >= 1.3 else 'NOT MET'}"
            )
    load = os.getloadavg()
    lines.append(
        f"cores {os.cpu_count()}, load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
        " (a loaded machine lowers flows per second, not CPU per flow)"
    )
    return lines


async def limiter_cost(server: str, requests: int) -> dict[str, Any]:
    """Wall and CPU microseconds per acquire + release: PostgreSQL against in-process."""
    db = await asyncio.to_thread(fresh_db, server)
    await queue.init(db)
    limit = RateLimit(per_second=10_000, per_minute=None)
    async with connect(db) as conn:
        await set_limit(conn, "bench", limit)
    pool = await open_pool(db, max_size=4)
    report: dict[str, Any] = {"requests": requests}
    try:
        pg = await PgRateLimiter(pool, "bench").open()
        local = RateLimiter(limit, pace=False)
        for name, limiter in (("postgres", pg), ("in_process", local)):
            cpu, wall = cpu_seconds(), time.perf_counter()
            for _ in range(requests):
                async with limiter.slot():
                    pass
            wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            report[name] = {
                "wall_us_per_request": round(1e6 * wall / requests, 1),
                "cpu_us_per_request": round(1e6 * cpu / requests, 1),
            }
        await pg.aclose()
    finally:
        await pool.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print one JSON object of figures, then the targets on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("compliant", "12mp", "limiter"), action="append")
    parser.add_argument("--db", default=None, help="a PostgreSQL server to use (URL)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--flows", type=int, default=640)
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--flows-12mp", type=int, default=96)
    parser.add_argument("--distinct-12mp", type=int, default=4)
    parser.add_argument("--limiter-requests", type=int, default=1000)
    args = parser.parse_args(argv)
    chosen = args.only or ["compliant", "12mp", "limiter"]
    report: dict[str, Any] = {"python": sys.version.split()[0], "cores": os.cpu_count()}
    cluster = None
    server = args.db
    if server is None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise SystemExit("initdb/pg_ctl not found: install PostgreSQL or give --db")
        cluster = Cluster(bin_dir)
        cluster.start()
        server = cluster.url
    try:
        with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
            work = Path(tmp)
            for name in chosen:
                started = time.perf_counter()
                print(f"{name}:", file=sys.stderr, flush=True)
                if name == "limiter":
                    report[name] = asyncio.run(limiter_cost(server, args.limiter_requests))
                    progress("limiter", report[name])
                else:
                    report[name] = bench_mode(args, work, server, cluster, big=name == "12mp")
                report[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps(report, indent=2))
    print("\n".join(["TARGETS:", *(f"  {line}" for line in verdicts(report))]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
