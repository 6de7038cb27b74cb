"""The ``vlens`` command: one subcommand per function, ``main(argv) -> int`` as the entry point.

Subcommands register themselves in :func:`build_parser` through an ``_add_<name>`` function that
sets ``func`` to a ``cmd_<name>(args) -> int``; ``vlens emulator`` is the first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from vlens_async.emulator import EmulatorConfig

__all__ = ["build_parser", "cmd_emulator", "main"]

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


def build_parser() -> argparse.ArgumentParser:
    """The ``vlens`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vlens", description="Tools for the Vlens Digital Identity API."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_emulator(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlens`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status
