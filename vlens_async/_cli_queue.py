"""``vlens queue init|submit|work|status|export|retry``: the PostgreSQL job queue from the
command line (see :mod:`vlens_async.queue`).

Registered by :func:`add_queue` from :mod:`vlens_async.cli`; nothing here imports procrastinate
or psycopg until a queue command runs (``vlens --help`` works without the ``queue`` extra). Bad
input is one line on stderr naming the command (``vlens queue submit: ...``) and exit status 2
(:func:`_guarded`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

__all__ = ["add_queue"]

_DB_ENV = "VLENS_QUEUE_DB"
_DEFAULT_RATE = "10/s,60/min"


def _queue_module() -> ModuleType:
    """:mod:`vlens_async.queue`, or a one-line error naming the extra to install."""
    try:
        import vlens_async.queue as queue
    except ImportError as exc:
        from vlens_async import cli

        raise cli._CliError(
            f"vlens queue needs the queue extra ({exc.name or 'procrastinate'} is missing):"
            " pip install 'vlens-async[queue]'"
        ) from None
    return queue


def _db(args: argparse.Namespace) -> str:
    from vlens_async import cli

    url: str | None = args.db or os.environ.get(_DB_ENV) or None
    if not url:
        raise cli._CliError(f"give the database: --db URL (or env {_DB_ENV})")
    return url


def _guarded(
    name: str, command: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """``command`` with its refusals as one line, ``vlens queue NAME: ...``, and exit status 2:
    the queue's own errors in their words, without a class name (as the other commands print
    theirs); an OS error with its class."""

    def run(args: argparse.Namespace) -> int:
        from vlens_async import cli

        try:
            return command(args)
        except Exception as exc:
            text = cli._refusal(exc)
            if text is None:
                raise
        print(f"vlens queue {name}: {text}", file=sys.stderr, flush=True)
        return 2

    return run


def add_queue(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``vlens queue`` and its commands."""
    from vlens_async import cli

    queue = subparsers.add_parser(
        "queue",
        help="bulk beyond one machine: a PostgreSQL job queue shared by many workers",
        description=(
            "Bulk verification on a PostgreSQL job queue (procrastinate): submit a manifest "
            "once, start workers on as many machines as you like (each must reach the "
            "manifest's image files), one tenant-wide rate limit, one transaction per applicant."
        ),
    )
    commands = queue.add_subparsers(dest="queue_command", metavar="COMMAND", required=True)

    def with_db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=None,
            metavar="URL",
            help=f"PostgreSQL URL (env {_DB_ENV}); prefer the env or a .pgpass for a password",
        )

    p = commands.add_parser("init", help="create or upgrade the schema (twice is harmless)")
    with_db(p)
    p.set_defaults(func=_guarded("init", cmd_init))

    p = commands.add_parser(
        "submit", help="add a manifest's applicants to a run (again: adds only new ones)"
    )
    p.add_argument("manifest", type=Path, help="CSV or JSONL manifest, as for vlens bulk")
    with_db(p)
    p.add_argument("--run", required=True, help="the run's name")
    p.add_argument(
        "--rate",
        default=None,
        help=f"the service's rate limit, set by a new run (else its own, or {_DEFAULT_RATE})",
    )
    p.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_false",
        help="send the images as they are (scans known to be compliant)",
    )
    p.add_argument("--base-url", default=None, help="the service of the run (env VLENS_BASE_URL)")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http:// to a non-loopback host (never with real identity data)",
    )
    p.set_defaults(func=_guarded("submit", cmd_submit))

    p = commands.add_parser("work", help="run a worker (start as many as you like)")
    with_db(p)
    cli._add_connection_options(p)
    p.add_argument("--concurrency", type=int, default=16, help="applicants at once (16)")
    p.add_argument(
        "--until-empty", action="store_true", help="stop when the queue has nothing left"
    )
    p.add_argument("--prepare-threads", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--stalled-after", type=float, default=15.0, help=argparse.SUPPRESS)
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--retry-initial", type=float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_guarded("work", cmd_work))

    p = commands.add_parser("status", help="counts, throughput, ETA and workers of a run")
    with_db(p)
    p.add_argument("--run", required=True, help="the run's name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_guarded("status", cmd_status))

    p = commands.add_parser("export", help="write a run's results file (JSONL, manifest order)")
    with_db(p)
    p.add_argument("--run", required=True, help="the run's name")
    p.add_argument("--out", required=True, type=Path, help="results file to write")
    p.set_defaults(func=_guarded("export", cmd_export))

    p = commands.add_parser("retry", help="send a run's transient failures round again")
    with_db(p)
    p.add_argument("--run", required=True, help="the run's name")
    p.add_argument(
        "--failed", action="store_true", required=True, help="the applicants ended in error"
    )
    p.set_defaults(func=_guarded("retry", cmd_retry))


def cmd_init(args: argparse.Namespace) -> int:
    """``vlens queue init``."""
    queue = _queue_module()
    print(f"vlens queue init: {asyncio.run(queue.init(_db(args)))}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``vlens queue submit``: prints the run's size."""
    from vlens_async import cli, config
    from vlens_async.bulk import RateLimit

    queue = _queue_module()
    db = _db(args)
    cli._check_manifest(args.manifest)
    rate = None if args.rate is None else RateLimit.parse(args.rate)
    base_url = config.check_base_url(
        args.base_url or os.environ.get("VLENS_BASE_URL") or config.DEFAULT_BASE_URL,
        allow_insecure_http=args.allow_insecure_http,
    )
    result = asyncio.run(
        queue.submit(
            db, args.manifest, run=args.run, base_url=base_url, rate=rate, prepare=args.prepare
        )
    )
    print(
        f"vlens queue submit: run {result.run}: {result.total} rows"
        f" ({result.added} applicants added now, {result.invalid} invalid rows recorded now)"
    )
    return 0


def cmd_work(args: argparse.Namespace) -> int:
    """``vlens queue work``: 0 when it ended on its own, 130 after a signal, 2 after an error
    the user must fix (credentials, say)."""
    from vlens_async import cli
    from vlens_async.bulk import check_concurrency

    queue = _queue_module()
    db = _db(args)
    check_concurrency(args.concurrency)  # before the first request, as vlens bulk checks it
    service = cli.resolve_service(args)
    if service.emulator:
        raise cli._CliError(
            "a worker needs a service every worker reaches: give --base-url and an API key"
            " (the embedded emulator lives in one process)"
        )
    asyncio.run(cli._check_reachable(service))  # as vlens bulk does: one line, exit 2

    from vlens_async.bulk import DEFAULT_STEP_RETRY, frozen_heap

    step_retry = DEFAULT_STEP_RETRY
    if args.retry_initial is not None:  # the tests' faster backoff
        step_retry = attrs.evolve(
            step_retry, initial=args.retry_initial, max_backoff=args.retry_initial * 10
        )

    def notice(text: str) -> None:
        print(f"vlens queue work: {text}", file=sys.stderr, flush=True)

    async def work() -> Any:
        async with cli._client(service) as client:
            with frozen_heap():  # as vlens bulk: this process is the worker's
                return await queue.run_worker(
                    db,
                    client,
                    concurrency=args.concurrency,
                    until_empty=args.until_empty,
                    step_retry=step_retry,
                    prepare_threads=args.prepare_threads,
                    signals=True,
                    heartbeat=args.heartbeat,
                    stalled_after=args.stalled_after,
                    poll=args.poll,
                    notice=notice,
                )

    summary = asyncio.run(work())
    done = ", ".join(f"{n} {o}" for o, n in sorted(summary.by_outcome.items())) or "none"
    print(
        f"vlens queue work: finished {done}; {summary.requests} requests;"
        f" stopped: {summary.stop_reason or 'done'}",
        flush=True,
    )
    if summary.stopped_by_error:
        return 2
    return 0 if summary.stop_reason in (None, "the queue is empty") else 130


def cmd_status(args: argparse.Namespace) -> int:
    """``vlens queue status``."""
    queue = _queue_module()
    st = asyncio.run(queue.status(_db(args), args.run))
    if args.json:
        print(json.dumps(st.to_json(), sort_keys=True))
        return 0
    counts = ", ".join(f"{n} {o}" for o, n in sorted(st.by_outcome.items())) or "nothing"
    eta = "unknown" if st.eta is None else f"{st.eta:.0f} s"
    workers = (
        "no workers alive"
        if st.workers_alive == 0
        else f"{st.workers_alive} worker{'s' if st.workers_alive > 1 else ''} alive"
    )
    print(
        f"run {st.run}: {st.total} rows: {counts}; {st.needs_review} need review;"
        f" {st.throughput:.2f}/s over the last minute; {workers}; ETA {eta}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``vlens queue export``."""
    queue = _queue_module()
    lines = asyncio.run(queue.export(_db(args), args.run, args.out))
    print(f"vlens queue export: {lines} lines written to {args.out}", file=sys.stderr)
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """``vlens queue retry --failed``."""
    queue = _queue_module()
    count = asyncio.run(queue.retry(_db(args), args.run, failed=args.failed))
    print(f"vlens queue retry: {count} applicants sent round again")
    return 0
