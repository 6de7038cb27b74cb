"""The ``vlens`` command: one subcommand per function, ``main(argv) -> int`` as the entry point.

Subcommands register themselves in :func:`build_parser` through an ``_add_<name>`` function that
sets ``func`` to a ``cmd_<name>(args) -> int``: ``demo`` (the main job), ``verify``, ``bulk``,
``images`` and ``emulator``. Heavy imports happen inside the commands, so ``vlens --help`` is quick.
Without ``--base-url`` the commands that talk to the service start the emulator in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from vlens_async._version import version
from vlens_async.errors import VlensError

if TYPE_CHECKING:
    from vlens_async.bulk import BulkSummary
    from vlens_async.client import VlensClient
    from vlens_async.emulator import EmulatorConfig
    from vlens_async.flow import VerificationOutcome

__all__ = [
    "build_parser",
    "cmd_bulk",
    "cmd_demo",
    "cmd_emulator",
    "cmd_images",
    "cmd_verify",
    "format_outcome",
    "main",
]

_FAULTS_HELP = (
    "faults to inject, comma-separated KIND:PROB[xCOUNT][@ENDPOINT] items, KIND one of "
    "500 502 503 429 reset_before reset_after slow truncated malformed; plus retry_after=1s and "
    "slow_duration=2s. Example: 500:0.05,429:0.05,reset_after:0.02@liveness"
)
_LATENCY_HELP = (
    "added latency, repeatable: fixed:200ms | uniform:50ms-150ms | "
    "lognormal:median=200ms,sigma=0.5 | none, optionally @ENDPOINT"
)


def _add_emulator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "emulator",
        help="run the local Vlens emulator",
        description="Serve a stateful Vlens-compatible emulator until Ctrl-C.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    p.add_argument("--latency", action="append", default=[], metavar="SPEC", help=_LATENCY_HELP)
    p.add_argument("--faults", default=None, metavar="SPEC", help=_FAULTS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed for faults and OTPs (default 0)")
    p.add_argument(
        "--rate-limit", action="store_true", help="enforce 10 requests/s and 60/min per tenant"
    )
    p.add_argument(
        "--failure-style",
        choices=("status", "ok"),
        default="status",
        help="coded failures as HTTP 422 (status) or as 200 with error_code (ok)",
    )
    p.add_argument("--no-ntra", action="store_true", help="switch the NTRA check off")
    p.add_argument("--no-cso", action="store_true", help="switch the CSO check off")
    p.add_argument(
        "--reject-unknown-documents",
        action="store_true",
        help="answer 3011 for images without a synthetic card code (default: derive fields)",
    )
    p.add_argument("--api-key", default=None, help="the tenant's API key")
    p.add_argument(
        "--image-cap-bytes",
        type=int,
        default=None,
        metavar="N",
        help="keep at most N bytes of images in memory (default 256 MiB)",
    )
    p.add_argument(
        "--image-cap-count",
        type=int,
        default=None,
        metavar="N",
        help="keep at most N images in memory",
    )
    p.add_argument(
        "--spill-dir",
        default=None,
        metavar="DIR",
        help="write images evicted by the caps to DIR instead of dropping them",
    )
    p.set_defaults(func=cmd_emulator)


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    from vlens_async.emulator import EmulatorConfig, FaultConfig

    faults = FaultConfig.parse(args.faults, args.latency)
    config = EmulatorConfig(seed=args.seed, faults=faults, image_spill_dir=args.spill_dir)
    if args.image_cap_bytes is not None:
        config = attrs.evolve(config, image_store_max_bytes=args.image_cap_bytes)
    if args.image_cap_count is not None:
        config = attrs.evolve(config, image_store_max_count=args.image_cap_count)
    tenant: dict[str, object] = {
        "rate_limit": args.rate_limit,
        "failure_style": args.failure_style,
        "ntra": not args.no_ntra,
        "cso": not args.no_cso,
        "unknown_documents": "reject" if args.reject_unknown_documents else "derive",
    }
    if args.api_key:
        tenant["api_key"] = args.api_key
    return config.with_tenant(**tenant)


def cmd_emulator(args: argparse.Namespace) -> int:
    """``vlens emulator``: serve until Ctrl-C, after printing where and how to connect."""
    from vlens_async.emulator import RunningEmulator, serve_forever

    try:
        config = _emulator_config(args)
    except ValueError as exc:
        print(f"vlens emulator: {exc}", file=sys.stderr)
        return 2

    def ready(emu: RunningEmulator) -> None:
        lines = [
            f"Vlens emulator listening on {emu.base_url}",
            f"  API key:       {emu.api_key}",
            f"  TenancyName:   {emu.tenancy_name}",
            f"  admin:         {emu.admin_username} / {emu.admin_password}  (Requests permission)",
            f"  admin (no Requests permission): {emu.viewer_username} / {emu.viewer_password}",
            f"  control API:   {emu.base_url}/_emulator/ (counters, otp?phone=, faults, reset)",
        ]
        faults = config.faults.spec()
        if config.faults.rules or config.faults.latency:
            lines.append(f"  faults:        {faults['faults']}  latency: {faults['latency']}")
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)

    try:
        asyncio.run(serve_forever(config, host=args.host, port=args.port, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"vlens emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


# --- shared by the commands that talk to the service ---


class _CliError(Exception):
    """A problem reported as one line with exit status 2."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, _CliError) else f"{type(exc).__name__}: {text}"


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument(
        "--base-url",
        default=env("VLENS_BASE_URL"),
        help="API base URL (env VLENS_BASE_URL); without it an emulator is started in-process",
    )
    p.add_argument("--api-key", default=env("VLENS_API_KEY"), help="API key (env VLENS_API_KEY)")
    p.add_argument(
        "--token",
        default=env("VLENS_ACCESS_TOKEN"),
        help="bearer token of the user (env VLENS_ACCESS_TOKEN)",
    )
    p.add_argument(
        "--tenancy-name", default=env("VLENS_TENANCY_NAME"), help="env VLENS_TENANCY_NAME"
    )
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http:// to a non-loopback host (never with real identity data)",
    )


@contextlib.asynccontextmanager
async def _client(
    args: argparse.Namespace, emulator: EmulatorConfig | None = None
) -> AsyncIterator[VlensClient]:
    """A client for ``--base-url``, or for an emulator started in-process when there is none."""
    from vlens_async import VlensClient
    from vlens_async.emulator import EmulatorConfig, running_emulator

    if args.base_url:
        if not args.api_key:
            raise _CliError("--api-key (or VLENS_API_KEY) is required with --base-url")
        async with VlensClient(
            args.api_key,
            base_url=args.base_url,
            access_token=args.token,
            tenancy_name=args.tenancy_name,
            allow_insecure_http=args.allow_insecure_http,
        ) as client:
            yield client
        return
    async with (
        running_emulator(emulator or EmulatorConfig()) as emu,
        VlensClient(emu.api_key, base_url=emu.base_url) as client,
    ):
        yield client


# --- vlens verify ---


def _add_verify(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "verify",
        help="verify one applicant: ID front, ID back, three face frames",
        description=(
            "Run the whole verification (front, back, liveness) and print a summary. With no "
            "images a synthetic applicant is verified; with no --base-url, against an emulator "
            "started in-process. Exit status: 0 validated, 1 not validated, 2 error."
        ),
    )
    p.add_argument("--front", type=Path, help="image of the ID card's front")
    p.add_argument("--back", type=Path, help="image of the ID card's back")
    p.add_argument(
        "--face", type=Path, action="append", default=[], help="a face frame (give three)"
    )
    p.add_argument(
        "--scenario",
        default="valid",
        help="the synthetic applicant's scenario when no image is given (default valid)",
    )
    p.add_argument("--seed", type=int, default=1, help="the synthetic applicant's seed")
    p.add_argument("--transaction-id", default=None, help="use this transaction id")
    p.add_argument("--client-transaction-id", default=None, help="your own reference")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.add_argument(
        "--show-pii",
        action="store_true",
        help="show personal data: names, addresses, birth date, full ID numbers",
    )
    _add_connection_options(p)
    p.set_defaults(func=cmd_verify)


Inputs = tuple[Any, Any, tuple[Any, Any, Any]]


def _require_files(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise _CliError(f"no such file: {path}")


def _verify_inputs(args: argparse.Namespace) -> Inputs:
    given = [args.front, args.back, *args.face]
    if not any(given):
        from vlens_async.samples import SCENARIOS, make_applicant

        if args.scenario not in SCENARIOS:
            raise _CliError(f"unknown scenario {args.scenario!r}; one of {', '.join(SCENARIOS)}")
        a = make_applicant(args.seed, scenario=args.scenario)
        return a.front, a.back, a.faces
    if args.front is None or args.back is None or len(args.face) != 3:
        raise _CliError("give --front, --back and three --face, or none for a synthetic applicant")
    _require_files(given)
    return args.front, args.back, (args.face[0], args.face[1], args.face[2])


async def _verify(args: argparse.Namespace) -> VerificationOutcome:
    front, back, faces = await asyncio.to_thread(_verify_inputs, args)
    async with _client(args) as client:
        return await client.verify(
            front,
            back,
            faces,
            transaction_id=args.transaction_id,
            client_transaction_id=args.client_transaction_id,
        )


def _no_verdict(outcome: VerificationOutcome) -> bool:
    """True when the service judged nothing about this applicant: the error is not the user's
    to act on (unreachable, throttled, credentials, bundle, configuration), or an input was
    refused before the first upload (an unreadable image)."""
    from vlens_async._classify import Kind, kind
    from vlens_async.flow import FlowState

    if outcome.error is None:
        return False
    found = kind(outcome.error)
    refused_input = outcome.state is FlowState.NEW and found is Kind.INPUT
    return found not in (Kind.VERDICT, Kind.INPUT) or refused_input


def cmd_verify(args: argparse.Namespace) -> int:
    """``vlens verify``: 0 when validated, 1 when the verification did not pass, 2 on error."""
    from vlens_async.flow import FlowState

    outcome = asyncio.run(_verify(args))
    if _no_verdict(outcome) and outcome.error is not None:
        raise _CliError(_one_line(outcome.error))
    if args.json:
        print(json.dumps(outcome.to_json(show_pii=args.show_pii), ensure_ascii=False, indent=2))
    else:
        print(format_outcome(outcome, show_pii=args.show_pii))
    return 0 if outcome.state is FlowState.COMPLETED and outcome.validated else 1


_HIDDEN_KEYS = frozenset({"transaction_id", "request_id", "client_transaction_id"})


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _service_lines(services: dict[str, Any]) -> list[str]:
    def pick(name: str, key: str) -> object:
        part = services.get(name)
        return part.get(key) if isinstance(part, dict) else None

    return [
        f"  liveness          {services.get('liveness')}",
        f"  spoofing (fake)   {pick('spoofing', 'fake')}",
        f"  document type     {pick('classification', 'doc_type')}",
        f"  AML matched       {pick('aml', 'aml_matched')}",
        f"  SRC valid         {pick('src', 'is_valid')}",
        f"  validation errors {len(services.get('validations') or [])}",
    ]


def format_outcome(outcome: VerificationOutcome, *, show_pii: bool = False) -> str:
    """A readable summary of a verification; national IDs masked unless ``show_pii``."""
    data = outcome.to_json(show_pii=show_pii)
    lines = [
        f"transaction {data['transaction_id']}: {data['state']}",
        f"  validated: {_yes(data['validated'])}   verified: {_yes(data['verified'])}",
    ]
    if data["error_type"]:
        code = "" if data["error_code"] is None else f" (code {data['error_code']})"
        lines.append(f"  error: {data['error_type']}{code}: {data['error_message']}")
    for side in ("front", "back"):
        fields = data[side] or {}
        shown = {k: v for k, v in fields.items() if v not in (None, "") and k not in _HIDDEN_KEYS}
        if shown:
            lines.append(f"{side}:")
            lines.extend(f"  {key:<24} {value}" for key, value in shown.items())
    if data["services"]:
        lines.append("services:")
        lines.extend(_service_lines(data["services"]))
    lines.append("cross-check: " + (", ".join(data["cross_check"]) or "no disagreement"))
    timings = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in data["timings"].items())
    lines.append(f"timings: {timings}")
    return "\n".join(lines)


# --- vlens images ---


def _add_images(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "images",
        help="prepare images as the client would before upload",
        description=(
            "Run the preprocessor on images (documents by default, or three liveness frames "
            "with --faces) and print what it made; --out writes the prepared JPEGs."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="image files")
    p.add_argument("--faces", action="store_true", help="treat three paths as liveness frames")
    p.add_argument("--max-bytes", type=int, default=None, help="byte budget per image")
    p.add_argument("--max-side", type=int, default=None, help="longest side in pixels")
    p.add_argument("--out", type=Path, default=None, help="folder to write prepared JPEGs to")
    p.set_defaults(func=cmd_images)


def cmd_images(args: argparse.Namespace) -> int:
    """``vlens images``: prepare images and report sizes, dimensions and quality."""
    from vlens_async.images import prepare_document_sync, prepare_faces_sync

    _require_files(args.paths)
    limits = {k: v for k, v in (("max_bytes", args.max_bytes), ("max_side", args.max_side)) if v}
    if args.faces:
        if len(args.paths) != 3:
            raise _CliError("--faces needs exactly three frames")
        prepared = list(prepare_faces_sync(*args.paths, **limits))
    else:
        prepared = [prepare_document_sync(path, **limits) for path in args.paths]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for path, image in zip(args.paths, prepared, strict=True):
        how = "passed through" if image.passthrough else f"quality {image.quality}"
        print(
            f"{path}: {image.input_bytes:,} B -> {len(image.data):,} B, "
            f"{image.width}x{image.height}, {how}"
        )
        if args.out is not None:
            (args.out / f"{path.stem}.jpg").write_bytes(image.data)
    return 0


# --- vlens bulk and vlens demo ---


def _add_bulk_options(p: argparse.ArgumentParser, *, concurrency: int, rate: str) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=concurrency,
        help=f"applicants in flight at once (default {concurrency})",
    )
    p.add_argument(
        "--rate",
        default=rate,
        help=f"requests per second and per minute, shared by all flows (default {rate})",
    )


def _add_bulk(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from vlens_async.bulk import DEFAULT_CONCURRENCY

    p = subparsers.add_parser(
        "bulk",
        help="verify every applicant of a CSV or JSONL manifest",
        description=(
            "Bounded, rate-limited bulk verification with a crash-safe journal: --resume "
            "continues a stopped run without opening a second transaction for anyone. Exit "
            "status: 0 when every applicant reached an outcome, 2 for bad input, an unreachable "
            "service or an error that stopped the job (credentials refused, say), 130 when "
            "stopped early."
        ),
    )
    p.add_argument("manifest", type=Path, help="CSV or JSONL: applicant_id, front, back, face_1..3")
    p.add_argument("--journal", type=Path, required=True, help="SQLite journal file")
    p.add_argument("--out", type=Path, required=True, help="results file (JSONL)")
    _add_bulk_options(p, concurrency=DEFAULT_CONCURRENCY, rate="10/s,60/min")
    p.add_argument("--resume", action="store_true", help="continue the run in --journal")
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="with --resume, also retry applicants that ended with a transient error",
    )
    p.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_false",
        help="send the scans as they are (only for images known to be compliant JPEGs)",
    )
    _add_connection_options(p)
    p.set_defaults(func=cmd_bulk)


async def _bulk(args: argparse.Namespace, emulator: EmulatorConfig | None = None) -> BulkSummary:
    from vlens_async.bulk import run_bulk

    if args.base_url:
        await _check_reachable(args.base_url)
    async with _client(args, emulator) as client:
        return await run_bulk(
            client,
            args.manifest,
            journal=args.journal,
            out=args.out,
            concurrency=args.concurrency,
            rate_limit=args.rate,
            resume=args.resume,
            retry_errors=args.retry_errors,
            prepare=args.prepare,
            progress=True,
        )


async def _check_reachable(base_url: str) -> None:
    """Refuse to start a job against a service that does not answer at all (exit status 2).

    Without this every applicant would retry its way to ``error`` and the job would exit 0. Any
    HTTP answer, even a 404 or a 401, proves the service is there.
    """
    import aiohttp

    host = urlsplit(base_url).hostname or base_url
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT)) as session,
            session.get(base_url, allow_redirects=False),
        ):
            return
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # Not chained, and no URL: aiohttp's texts quote it whole.
        raise _CliError(f"cannot reach {host} ({type(exc).__name__})") from None


def _report(summary: BulkSummary) -> int:
    from vlens_async.bulk import format_summary

    print(format_summary(summary))
    if summary.stopped_by_error:
        return 2  # credentials, permissions or the manifest: the user has something to fix
    return 0 if summary.complete else 130


def cmd_bulk(args: argparse.Namespace) -> int:
    """``vlens bulk``: run (or ``--resume``) a manifest; print the summary table."""
    if not args.manifest.is_file():
        raise _CliError(f"no such manifest: {args.manifest}")
    return _report(asyncio.run(_bulk(args)))


_PROBE_TIMEOUT = 15.0  # seconds for the reachability check before a bulk job
_DEMO_LATENCY = "lognormal:median=150ms,sigma=0.4"
_DEMO_FAULTS = "503:0.02,502:0.005,429:0.002,reset_after:0.01,malformed:0.01"


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job: bulk onboarding of synthetic applicants (what `make demo` runs)",
        description=(
            "Write synthetic applicants of mixed scenarios and a manifest to --folder, start the "
            "emulator with realistic latency and a few faults, run the bulk job with a progress "
            "bar, and print the summary. --base-url and --api-key point it at a real tenant."
        ),
    )
    p.add_argument("--count", type=int, default=300, help="applicants (default 300)")
    p.add_argument("--seed", type=int, default=7, help="seed for the applicants (default 7)")
    p.add_argument(
        "--folder", type=Path, default=Path("demo-run"), help="work folder (default ./demo-run)"
    )
    _add_bulk_options(p, concurrency=32, rate="100/s,6000/min")
    p.add_argument("--latency", default=_DEMO_LATENCY, help=_LATENCY_HELP)
    p.add_argument("--faults", default=_DEMO_FAULTS, help=_FAULTS_HELP)
    _add_connection_options(p)
    p.set_defaults(func=cmd_demo, resume=False, retry_errors=False, prepare=True)


def _demo_manifest(args: argparse.Namespace) -> Path:
    """Write the applicants once; a later run with the same count and seed reuses them."""
    from vlens_async.bulk import write_demo_manifest

    folder: Path = args.folder / "applicants"
    stamp, manifest = folder / "demo.json", folder / "manifest.csv"
    wanted = {"count": args.count, "seed": args.seed}
    if stamp.is_file() and manifest.is_file() and json.loads(stamp.read_text()) == wanted:
        return manifest
    print(f"writing {args.count} synthetic applicants to {folder} ...", file=sys.stderr)
    manifest = asyncio.run(write_demo_manifest(folder, args.count, args.seed))
    stamp.write_text(json.dumps(wanted))
    return manifest


def cmd_demo(args: argparse.Namespace) -> int:
    """``vlens demo``: the bulk job on synthetic applicants against the embedded emulator."""
    from vlens_async.emulator import EmulatorConfig, FaultConfig

    emulator = EmulatorConfig(faults=FaultConfig.parse(args.faults, [args.latency]))
    args.manifest = _demo_manifest(args)
    args.journal = args.folder / "journal.db"
    args.out = args.folder / "results.jsonl"
    for stale in (args.journal, args.out, *args.folder.glob("journal.db-*")):
        stale.unlink(missing_ok=True)
    where = args.base_url or f"the embedded emulator (latency {args.latency}, faults {args.faults})"
    print(f"verifying {args.count} applicants against {where}", file=sys.stderr)
    status = _report(asyncio.run(_bulk(args, emulator)))
    print(f"results: {args.out}  journal: {args.journal}")
    return status


@contextlib.contextmanager
def _quiet_retry_logs() -> Iterator[None]:
    # stamina logs each scheduled retry at WARNING; with no logging configured Python would print
    # bare "stamina.retry_scheduled" lines between our output. VLENS_LOG=debug shows them. The
    # level is restored afterwards, since main() may run inside a larger program (or a test).
    stamina_logger = logging.getLogger("stamina")
    previous = stamina_logger.level
    if os.environ.get("VLENS_LOG", "").lower() != "debug":
        stamina_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        stamina_logger.setLevel(previous)


class _PrintVersion(argparse.Action):
    """``--version``: the installed version, read only when asked (it costs an import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"vlens-async {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``vlens`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vlens", description="Tools for the Vlens Digital Identity API."
    )
    parser.add_argument("--version", action=_PrintVersion, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(subparsers)
    _add_verify(subparsers)
    _add_bulk(subparsers)
    _add_images(subparsers)
    _add_emulator(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlens`` command; returns the exit status.

    Failures print one line on stderr, never a traceback: 2 for bad input, configuration or an
    unreachable service, 130 after Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _quiet_retry_logs():
            status: int = args.func(args)
    except KeyboardInterrupt:
        print(f"vlens {args.command}: interrupted", file=sys.stderr)
        return 130
    except (_CliError, VlensError, OSError) as exc:
        print(f"vlens {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    return status
