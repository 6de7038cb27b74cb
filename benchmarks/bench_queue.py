"""The PostgreSQL queue against ``vlens bulk`` on the same manifest, in one run: flows per second
and CPU per flow with 1, 2 and 4 worker processes, and the shared limiter's cost per request.

The emulator runs in its own process (as in ``bench_bulk.py``), with 200 ms fixed latency per
call; PostgreSQL is a throwaway cluster on a Unix socket (``tests/queue/pgcluster.py``; or
``--db URL`` for a server of yours: each run gets a database of its own there). Neither the
emulator's nor PostgreSQL's CPU is counted in "CPU per flow": only the job's own (this process
for ``vlens bulk``; the worker processes for the queue, from their rusage).

1. **compliant**: synthetic applicants (compliant images), preprocessing off (``--no-prepare``),
   no rate limit; ``vlens bulk`` at concurrency 64, then 1, 2 and 4 workers of concurrency 64
   each. Target: one worker at least 90% of ``vlens bulk``'s flows per second.
2. **12 MP**: every image scaled to 12 MP, preprocessing on; the same runs. Target: two worker
   processes at least 1.3x one on two cores.
3. **limiter**: one process asking the PostgreSQL limiter for 1,000 tokens in a row (10,000/s:
   never waits) and releasing each, against the in-process ``RateLimiter``: wall and CPU time
   per request.

Queue flows per second are counted from the first worker's start to the last applicant's end (as
the database records it), so the workers' start-up (about 0.5 s each) is included.

    .venv/bin/python benchmarks/bench_queue.py            # all three, ~4 minutes
    .venv/bin/python benchmarks/bench_queue.py --only limiter
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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


async def bulk_run(
    base_url: str, api_key: str, manifest: Path, work: Path, concurrency: int, prepare: bool
) -> dict[str, Any]:
    """``vlens bulk``'s job in this process: flows/s and CPU ms per flow."""
    cpu = cpu_seconds()
    async with VlensClient(api_key, base_url=base_url) as client:
        summary = await run_bulk(
            client,
            manifest,
            journal=work / f"bulk-{uuid.uuid4().hex[:6]}.db",
            out=work / f"bulk-{uuid.uuid4().hex[:6]}.jsonl",
            concurrency=concurrency,
            rate_limit="none",
            prepare=prepare,
            progress=False,
            signals=False,
        )
    cpu = cpu_seconds() - cpu
    flows = max(1, summary.processed)
    return {
        "flows": summary.processed,
        "flows_per_s": round(summary.throughput, 2),
        "cpu_ms_per_flow": round(1000 * cpu / flows, 1),
    }


async def queue_run(
    server: str,
    base_url: str,
    api_key: str,
    manifest: Path,
    workers: int,
    concurrency: int,
    prepare: bool,
) -> dict[str, Any]:
    """Submit the manifest to a fresh database and run ``workers`` worker processes."""
    db = await asyncio.to_thread(fresh_db, server)
    await queue.init(db)
    await queue.submit(db, manifest, run="bench", base_url=base_url, rate="none", prepare=prepare)
    cpu = children_cpu()
    started = time.time()
    procs = [
        await asyncio.create_subprocess_exec(
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
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])
    cpu = children_cpu() - cpu
    async with connect(db) as conn:
        row = await (
            await conn.execute(
                "SELECT count(*), max(finished_at) FROM vlens_queue_applicants"
                " WHERE status = 'done'"
            )
        ).fetchone()
    assert row is not None
    flows, last = int(row[0]), float(row[1])
    return {
        "workers": workers,
        "flows": flows,
        "flows_per_s": round(flows / (last - started), 2),
        "cpu_ms_per_flow": round(1000 * cpu / max(1, flows), 1),
    }


def bench_mode(
    args: argparse.Namespace, work: Path, server: str, *, twelve_mp: bool
) -> dict[str, Any]:
    """``vlens bulk`` then the queue with 1, 2 and 4 workers on the same manifest."""
    folder = work / ("big" if twelve_mp else "plain")
    sets = write_images(
        folder, args.distinct_12mp if twelve_mp else args.distinct, twelve_mp=twelve_mp
    )
    manifest = write_manifest(folder, sets, args.flows_12mp if twelve_mp else args.flows)
    prepare = twelve_mp
    report: dict[str, Any] = {"prepare": prepare}
    with Emulator(args.latency_ms) as (base_url, api_key):
        report["bulk"] = asyncio.run(
            bulk_run(base_url, api_key, manifest, work, args.concurrency, prepare)
        )
        for workers in (1, 2, 4):
            report[f"queue_{workers}"] = asyncio.run(
                queue_run(server, base_url, api_key, manifest, workers, args.concurrency, prepare)
            )
    report["one_worker_vs_bulk"] = round(
        report["queue_1"]["flows_per_s"] / report["bulk"]["flows_per_s"], 3
    )
    report["two_vs_one"] = round(
        report["queue_2"]["flows_per_s"] / report["queue_1"]["flows_per_s"], 3
    )
    return report


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
    """Run the benchmarks and print one JSON object of figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("compliant", "12mp", "limiter"), action="append")
    parser.add_argument("--db", default=None, help="a PostgreSQL server to use (URL)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--flows", type=int, default=640)
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--flows-12mp", type=int, default=48)
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
                if name == "limiter":
                    report[name] = asyncio.run(limiter_cost(server, args.limiter_requests))
                else:
                    report[name] = bench_mode(args, work, server, twelve_mp=name == "12mp")
                report[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
                print(f"{name}: {json.dumps(report[name])}", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
