"""The ``vlens`` command: one subcommand per function, ``main(argv) -> int`` as the entry point.

Subcommands register themselves in :func:`build_parser` through an ``_add_<name>`` function that
sets ``func`` to a ``cmd_<name>(args) -> int``: ``demo`` (the main job), ``verify``, ``bulk``,
``images`` and ``emulator``. Heavy imports happen inside the commands, so ``vlens --help`` is quick.

Which service a command talks to is decided in one place, :func:`resolve_service`: the embedded
emulator when asked (``--emulator``), when no credentials are given at all, or when the command
sends only synthetic data (``demo``, ``verify`` without images) and no base URL is given; with
credentials the given base URL, else the production URL (``config.DEFAULT_BASE_URL``). A command
that uses the emulator says so, and why, in the first line it writes (on stderr). Every local
input is checked before the first request; every failure is one line on stderr naming the CLI's
own flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import attrs

from vlens_async._version import version
from vlens_async.errors import VlensError

if TYPE_CHECKING:
    import ssl

    from vlens_async.bulk import BulkSummary, RateLimit
    from vlens_async.client import VlensClient
    from vlens_async.emulator import EmulatorConfig
    from vlens_async.flow import VerificationOutcome
    from vlens_async.images import PreparedFaces, PreparedImage

__all__ = [
    "Service",
    "build_parser",
    "cmd_bulk",
    "cmd_demo",
    "cmd_emulator",
    "cmd_images",
    "cmd_verify",
    "format_outcome",
    "main",
    "resolve_service",
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
    p.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate chain (its key in it or in --tls-key)",
    )
    p.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="the key of --tls-cert (PEM)"
    )
    p.add_argument(
        "--tls-client-ca",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --tls-cert: require client certificates signed by this PEM CA (mutual TLS)",
    )
    p.set_defaults(func=cmd_emulator)


def _emulator_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server context of ``--tls-cert``/``--tls-key``/``--tls-client-ca``, files checked."""
    import ssl

    from vlens_async.emulator import server_tls_context

    if args.tls_cert is None:
        extra = "--tls-key" if args.tls_key is not None else "--tls-client-ca"
        if args.tls_key is not None or args.tls_client_ca is not None:
            raise _CliError(f"{extra} needs --tls-cert")
        return None
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca"):
        path = getattr(args, flag[2:].replace("-", "_"))
        if path is not None:
            _check_file(flag, path)
    try:
        return server_tls_context(args.tls_cert, args.tls_key, client_ca=args.tls_client_ca)
    except ssl.SSLError:
        files = "--tls-cert/--tls-key" if args.tls_key is not None else "--tls-cert"
        problem = (
            "not PEM, or the key does not match the certificate"
            if args.tls_key is not None
            else "not PEM, or it holds no private key (give it with --tls-key FILE)"
        )
        if args.tls_client_ca is not None:
            problem += "; or --tls-client-ca is not a PEM CA certificate"
        raise _CliError(f"{files}: {problem}") from None
    except OSError as exc:
        raise _CliError(f"--tls-cert/--tls-key: cannot read them ({type(exc).__name__})") from None


def _emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    from vlens_async.emulator import EmulatorConfig, FaultConfig

    faults = FaultConfig.parse(args.faults, args.latency)
    config = EmulatorConfig(
        seed=args.seed, faults=faults, image_spill_dir=args.spill_dir, tls=_emulator_tls(args)
    )
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
    if args.api_key is not None:
        if not args.api_key.strip():
            raise ValueError("--api-key is empty: give a key, or leave --api-key out")
        tenant["api_key"] = args.api_key
    return config.with_tenant(**tenant)


def cmd_emulator(args: argparse.Namespace) -> int:
    """``vlens emulator``: serve until Ctrl-C, after printing where and how to connect."""
    from vlens_async.config import is_loopback_host
    from vlens_async.emulator import RunningEmulator, serve_forever

    if not 0 <= args.port <= _MAX_PORT:
        raise _CliError(
            f"--port must be from 0 to {_MAX_PORT} (0 picks a free one), got {args.port}"
        )
    try:
        config = _emulator_config(args)
    except ValueError as exc:  # a bad --faults or --latency spec, or a cap out of range
        raise _CliError(str(exc)) from None

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
        if args.tls_client_ca is not None:
            lines.append("  mutual TLS:    clients must present a certificate (--tls-client-ca)")
        lines.append("Press Ctrl-C to stop.")
        print("\n".join(lines), flush=True)
        if not is_loopback_host(args.host):
            print(
                f"warning: listening on {args.host}, beyond this machine: whoever reaches it can"
                " use these well-known credentials (the control API still answers loopback only)",
                file=sys.stderr,
                flush=True,
            )

    try:
        asyncio.run(serve_forever(config, host=args.host, port=args.port, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except (OSError, OverflowError) as exc:  # the port is taken, or the host is not ours
        raise _CliError(f"cannot listen on {args.host}:{args.port}: {_one_line(exc)}") from None
    return 0


_MAX_PORT = 65_535


# --- shared by the commands that talk to the service ---


class _CliError(Exception):
    """A problem reported as one line with exit status 2."""


# Python names in the library's messages, and the flags a CLI user knows them by.
_FLAG_NAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), flag)
    for pattern, flag in (
        (r"\ballow_insecure_http(?:=True)?", "--allow-insecure-http"),
        (r"\bbase_url\b", "--base-url"),
        (r"\bapi_key\b", "--api-key"),
        (r"\baccess_token or auth\b", "--token"),
        (r"\baccess_token\b", "--token"),
        (r"\btenancy_name\b", "--tenancy-name"),
        (r"\bretry_errors(?:=True)?", "--retry-errors"),
        (r"\bprepare=False\b", "--no-prepare"),
        (r"\bresume=True\b", "--resume"),
        (r"\bresume it\b", "continue it with --resume"),
        (r"(?<!-)\bwith resume\b", "with --resume"),
        (r"(?<!-)\bwithout resume\b", "without --resume"),
        (r"\bmax_bytes\b", "--max-bytes"),
        (r"\bmax_side\b", "--max-side"),
        (
            r"ssl=ssl\.create_default_context\(cafile=\.\.\.\)",
            "--ca-bundle FILE (or VLENS_CA_BUNDLE)",
        ),
        (
            r"ssl= a context on which load_cert_chain\(certfile, keyfile\) was called",
            "--client-cert FILE [--client-key FILE]",
        ),
        (
            r"\bproxy_auth or user:password@ in the proxy URL",
            "user:password@ in --proxy or VLENS_PROXY",
        ),
        (r"^concurrency\b", "--concurrency"),
    )
)


def cli_words(text: str) -> str:
    """``text`` with the library's Python argument names replaced by the CLI's flags."""
    for pattern, flag in _FLAG_NAMES:
        text = pattern.sub(flag, text)
    return text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = cli_words(text)
    return text if isinstance(exc, _CliError) else f"{type(exc).__name__}: {text}"


def _refusal(exc: BaseException) -> str | None:
    """The one line of an error a user must fix, our own errors in our words without their
    class name (as ``vlens queue`` prints them), or None for any other exception."""
    if isinstance(exc, VlensError):
        return _one_line(_CliError(str(exc)))
    return _one_line(exc) if isinstance(exc, _CliError | OSError) else None


_SECRET_WARNING = "visible to every local user in the process list"


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--emulator",
        action="store_true",
        help="use an emulator started in-process, never a real service (not with --base-url)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help=(
            "API base URL (env VLENS_BASE_URL); with credentials and no base URL the production "
            "service is used, except for synthetic applicants (the embedded emulator)"
        ),
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=f"API key; on the command line it is {_SECRET_WARNING}: prefer env VLENS_API_KEY "
        "or --api-key-file",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="read the API key from PATH (its trailing newline is dropped)",
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token of the user; on the command line it is {_SECRET_WARNING}: prefer "
        "env VLENS_ACCESS_TOKEN or --token-file",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="read the bearer token from PATH (its trailing newline is dropped)",
    )
    p.add_argument("--tenancy-name", default=None, help="the tenant (env VLENS_TENANCY_NAME)")
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http:// to a non-loopback host (never with real identity data)",
    )
    p.add_argument(
        "--proxy",
        default=None,
        metavar="URL",
        help="send every request through this http:// or https:// proxy (env VLENS_PROXY); "
        "credentials go in it as user:password@ (percent-encoded) and are never printed, but "
        f"on the command line they are {_SECRET_WARNING}: prefer VLENS_PROXY",
    )
    p.add_argument(
        "--ca-bundle",
        type=Path,
        default=None,
        metavar="FILE",
        help="trust the CA certificates in this PEM file instead of the system's, e.g. a "
        "TLS-inspecting proxy's (env VLENS_CA_BUNDLE); certificates are always verified. It "
        "replaces the system's CAs: an https:// proxy (or service) with a public certificate "
        "then fails unless its CA is in the file too",
    )
    p.add_argument(
        "--client-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="present this PEM certificate (mutual TLS); its key in it or in --client-key",
    )
    p.add_argument(
        "--client-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the private key of --client-cert (PEM, not encrypted)",
    )


@attrs.frozen
class Service:
    """The service a command talks to: the embedded emulator (``emulator`` true, and ``why``), or
    ``base_url`` with its credentials and ``connection``, the client's keyword arguments for the
    way there (``proxy``, ``ssl``). Its repr never shows the credentials or the connection."""

    emulator: bool
    why: str = ""
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)
    tenancy_name: str | None = None
    allow_insecure_http: bool = False
    connection: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


_SECRET_MAX_BYTES = 64 * 1024  # an API key or a token is far smaller; /dev/zero is endless


def _read_secret(path: Path | None, flag: str) -> str | None:
    """The secret in ``path`` (``flag`` names it in errors) without its trailing newline."""
    if path is None:
        return None
    try:
        with path.open("rb") as fh:
            data = fh.read(_SECRET_MAX_BYTES + 1)
        if len(data) > _SECRET_MAX_BYTES:
            raise _CliError(f"{flag} {path}: over {_SECRET_MAX_BYTES // 1024} KiB; not a secret")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise _CliError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise _CliError(f"{flag} {path}: is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _CliError(f"{flag} {path}: cannot read it ({type(exc).__name__})") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret.strip():
        raise _CliError(f"{flag} {path}: the file is empty")
    if any(c in secret for c in "\r\n"):
        raise _CliError(f"{flag} {path}: holds more than one line")
    return secret


def _credential(
    args: argparse.Namespace, name: str, env_name: str
) -> tuple[str | None, str | None]:
    """A credential and where it came from: ``--NAME``, ``--NAME-file`` or the environment, in
    that order; ``(None, None)`` when none is given.

    A credential given but empty (``--api-key ""``, ``VLENS_API_KEY=``) is a usage error, never
    taken for "no credentials": that would quietly pick the embedded emulator.
    """
    flag = "--" + name.replace("_", "-")
    given, path = getattr(args, name), getattr(args, f"{name}_file")
    if given is not None and path is not None:
        raise _CliError(f"give {flag} or {flag}-file, not both")
    if given is not None:
        if not given.strip():
            raise _CliError(f"{flag} is empty: give a value, or leave {flag} out")
        return given, flag
    secret = _read_secret(path, f"{flag}-file")
    if secret is not None:
        return secret, f"{flag}-file"
    value = os.environ.get(env_name)
    if value is None:
        return None, None
    if not value.strip():
        raise _CliError(f"{env_name} is set but empty: unset it, or set it to the value")
    return value, env_name


def resolve_service(args: argparse.Namespace, *, synthetic: bool = False) -> Service:
    """Which service the command talks to, from its options and the environment.

    The embedded emulator when ``--emulator`` is given, when no credentials are given at all (no
    ``--api-key``/``--api-key-file``/``--token``/``--token-file``, no ``VLENS_API_KEY``/
    ``VLENS_ACCESS_TOKEN``), or, for a command that sends only ``synthetic`` data (``demo``,
    ``verify`` without images), when no base URL is given (no ``--base-url``, no
    ``VLENS_BASE_URL``) whatever the credentials: made-up cards reach a real service only when
    it is named. Otherwise ``--base-url``, ``VLENS_BASE_URL``, or the production URL.
    ``--emulator`` with ``--base-url`` or credentials on the command line is a usage error, and so
    is a credential given or set but empty.
    """
    from vlens_async import config
    from vlens_async.config import check_base_url

    given = _connection_sources(args)  # read and checked only for a real service (below)
    unused = f"; {', '.join(given)} not used" if given else ""
    if args.emulator:
        if args.base_url:
            raise _CliError("--emulator and --base-url exclude each other: give one of them")
        given = [
            f
            for f in ("api_key", "api_key_file", "token", "token_file")
            if getattr(args, f) is not None
        ]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise _CliError(f"--emulator takes no credentials (it has its own): drop {flag}")
        return Service(emulator=True, why="--emulator" + unused)
    api_key, key_source = _credential(args, "api_key", "VLENS_API_KEY")
    token, token_source = _credential(args, "token", "VLENS_ACCESS_TOKEN")
    base_url = args.base_url or os.environ.get("VLENS_BASE_URL") or None
    if base_url is None and api_key is None and token is None:
        return Service(emulator=True, why="no credentials given" + unused)
    if base_url is None and synthetic:
        sources = (key_source, token_source, *given)
        return Service(
            emulator=True,
            why="synthetic data and no --base-url or VLENS_BASE_URL; "
            f"{' and '.join(s for s in sources if s is not None)} not used",
        )
    if api_key is None:
        raise _CliError(
            "an API key is needed for a real service: set VLENS_API_KEY or give --api-key-file "
            "(or --emulator for the embedded emulator)"
        )
    base_url = check_base_url(
        base_url or config.DEFAULT_BASE_URL, allow_insecure_http=args.allow_insecure_http
    )
    connection, _ = _connection_options(args)
    return Service(
        emulator=False,
        base_url=base_url,
        api_key=api_key,
        token=token,
        tenancy_name=args.tenancy_name or os.environ.get("VLENS_TENANCY_NAME") or None,
        allow_insecure_http=args.allow_insecure_http,
        connection=connection,
    )


def _connection_options(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The client's keyword arguments for the way to the service (``proxy``, ``ssl``) from
    ``--proxy``/``VLENS_PROXY``, ``--ca-bundle``/``VLENS_CA_BUNDLE``, ``--client-cert`` and
    ``--client-key`` (a flag beats its variable), every file read and checked now; and the
    flags or variables that gave them. The one place the CLI decides how it connects: every
    client it makes (:func:`_client`, so ``vlens queue work`` too) and the reachability check
    before a bulk job use these."""
    options: dict[str, Any] = {}
    given: list[str] = []
    proxy, source = _flag_or_env(args.proxy, "--proxy", "VLENS_PROXY")
    if proxy is not None:
        from vlens_async.config import check_proxy_url
        from vlens_async.errors import ConfigurationError

        try:
            check_proxy_url(proxy)
        except ConfigurationError as exc:  # never the URL: it may hold a password
            raise _CliError(f"{source}: {exc}") from None
        options["proxy"] = proxy
        given.append(source)
    bundle, bundle_source = _flag_or_env(args.ca_bundle, "--ca-bundle", "VLENS_CA_BUNDLE")
    context = _tls_context(
        None if bundle is None else Path(bundle), bundle_source, args.client_cert, args.client_key
    )
    if context is not None:
        options["ssl"] = context
        given += [bundle_source] if bundle is not None else []
        given += ["--client-cert"] if args.client_cert is not None else []
    return options, given


def _connection_sources(args: argparse.Namespace) -> list[str]:
    """The connection options given (flags or variables), by name, without reading them: for
    the embedded emulator, which uses none, a stale ``VLENS_CA_BUNDLE`` is noted, not fatal."""
    sources = [
        source
        for value, source in (
            _flag_or_env(args.proxy, "--proxy", "VLENS_PROXY"),
            _flag_or_env(args.ca_bundle, "--ca-bundle", "VLENS_CA_BUNDLE"),
        )
        if value is not None
    ]
    return sources + [f for f in ("--client-cert", "--client-key") if _given(args, f)]


def _given(args: argparse.Namespace, flag: str) -> bool:
    return getattr(args, flag[2:].replace("-", "_")) is not None


def _flag_or_env(flag_value: object, flag: str, env_name: str) -> tuple[str | None, str]:
    """A flag's value, else its variable's (empty counts as unset), and which one it was."""
    if flag_value is not None:
        return str(flag_value), flag
    return os.environ.get(env_name) or None, env_name


class _EncryptedKey(Exception):
    """A private key asks for a password (the CLI never prompts for one)."""


def _no_password() -> str:
    raise _EncryptedKey


def _tls_context(
    bundle: Path | None, bundle_source: str, cert: Path | None, key: Path | None
) -> ssl.SSLContext | None:
    """A verifying context trusting ``bundle`` (else the system's CAs) and presenting ``cert``;
    ``None`` when neither is given. Each file is checked, with one line naming its flag."""
    import ssl

    if key is not None and cert is None:
        raise _CliError("--client-key needs --client-cert (the certificate it belongs to)")
    if bundle is None and cert is None:
        return None
    context = ssl.create_default_context() if bundle is None else _trust(bundle, bundle_source)
    if cert is not None:
        _present(context, cert, key)
    return context


def _trust(bundle: Path, source: str) -> ssl.SSLContext:
    """A verifying context that trusts the CA certificates in ``bundle`` only."""
    import ssl

    _check_file(source, bundle)
    try:
        return ssl.create_default_context(cafile=bundle)
    except ssl.SSLError:
        raise _CliError(f"{source} {bundle}: not a PEM file of CA certificates") from None
    except OSError as exc:
        raise _CliError(f"{source} {bundle}: cannot read it ({type(exc).__name__})") from None


def _present(context: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    """Load the client certificate ``cert`` (and ``key``, unless it is in ``cert``)."""
    import ssl

    _check_file("--client-cert", cert)
    if key is not None:
        _check_file("--client-key", key)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise _CliError("--client-key: the private key is encrypted; give it unencrypted") from None
    except ssl.SSLError:
        where = f"with --client-key {key}" if key else "with its key in it (or give --client-key)"
        raise _CliError(
            f"--client-cert {cert}: not a PEM certificate {where}, or they do not match"
        ) from None
    except OSError as exc:
        raise _CliError(
            f"--client-cert/--client-key: cannot read them ({type(exc).__name__})"
        ) from None


def _announce(command: str, service: Service, detail: str = "") -> None:
    """The first line of a command that uses the emulator: it is not Vlens."""
    if service.emulator:
        extra = f"; {detail}" if detail else ""
        print(
            f"vlens {command}: using the embedded emulator, not Vlens ({service.why}{extra})",
            file=sys.stderr,
            flush=True,
        )


@contextlib.asynccontextmanager
async def _client(
    service: Service, emulator: EmulatorConfig | None = None
) -> AsyncIterator[VlensClient]:
    """A client for ``service``: its base URL, or an emulator started in-process."""
    from vlens_async import VlensClient
    from vlens_async.emulator import EmulatorConfig, running_emulator

    if not service.emulator:
        assert service.base_url is not None
        assert service.api_key is not None
        async with VlensClient(
            service.api_key,
            base_url=service.base_url,
            access_token=service.token,
            tenancy_name=service.tenancy_name,
            allow_insecure_http=service.allow_insecure_http,
            **service.connection,
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
            "images a synthetic applicant is verified. Every image is read and checked before "
            "the first request. With no credentials at all, with --emulator, or for a synthetic "
            "applicant without --base-url or VLENS_BASE_URL, it runs against an emulator started "
            "in-process, and says so; with credentials and no --base-url, your images go to the "
            "production service. Exit status: 0 validated, 1 not validated, 2 error."
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


Inputs = tuple["PreparedImage", "PreparedImage", "PreparedFaces"]


def _check_file(label: str, path: Path) -> None:
    if not path.exists():
        raise _CliError(f"{label}: {path}: no such file")
    if not path.is_file():
        raise _CliError(f"{label}: {path}: not a file")


def _check_transaction_id(value: str | None) -> None:
    """``--transaction-id``: a UUID, as the service's transaction ids are (it refuses others)."""
    import uuid

    if value is None:
        return
    try:
        uuid.UUID(value)
    except ValueError:
        raise _CliError(
            "--transaction-id must be a UUID, as the service's transaction ids are"
        ) from None


def _verify_inputs(args: argparse.Namespace) -> Inputs:
    """Every input read and prepared (checked) before the first request: the given files, or a
    synthetic applicant. A refused input is one line naming its flag (``--face #2: ...``)."""
    given = [args.front, args.back, *args.face]
    if not any(given):
        from vlens_async.samples import SCENARIOS, make_applicant

        if args.scenario not in SCENARIOS:
            raise _CliError(f"unknown scenario {args.scenario!r}; one of {', '.join(SCENARIOS)}")
        a = make_applicant(args.seed, scenario=args.scenario)
        labels = ("the synthetic front", "the synthetic back")
        face_labels = tuple(f"the synthetic face_{i}" for i in (1, 2, 3))
        return _prepare_inputs(a.front, a.back, a.faces, labels, face_labels)
    if args.front is None or args.back is None or len(args.face) != 3:
        raise _CliError("give --front, --back and three --face, or none for a synthetic applicant")
    labels = (f"--front: {args.front}", f"--back: {args.back}")
    face_labels = tuple(f"--face #{i}: {path}" for i, path in enumerate(args.face, 1))
    for label, path in zip(
        ("--front", "--back", "--face #1", "--face #2", "--face #3"), given, strict=True
    ):
        _check_file(label, path)
    return _prepare_inputs(args.front, args.back, args.face, labels, face_labels)


_FACE_PREFIX = re.compile(r"^face_([123]): ")


def _prepare_inputs(
    front: Any, back: Any, faces: Sequence[Any], labels: Sequence[str], face_labels: Sequence[str]
) -> Inputs:
    """Prepare both sides and the three frames as the client would; name whichever is refused."""
    from vlens_async.errors import IdenticalFramesError, ImageError
    from vlens_async.images import prepare_document_sync, prepare_faces_sync

    sides = []
    for label, image in zip(labels, (front, back), strict=True):
        try:
            sides.append(prepare_document_sync(image))
        except ImageError as exc:
            raise _CliError(f"{label}: {_one_line(exc)}") from None
    try:
        frames = prepare_faces_sync(faces[0], faces[1], faces[2])
    except IdenticalFramesError as exc:
        i, j = exc.pair
        what = "the same image" if exc.difference == 0.0 else "nearly identical"
        raise _CliError(
            f"{face_labels[i]} and {face_labels[j]}: IdenticalFramesError: the frames are {what}"
            " (three different moments are needed)"
        ) from None
    except ImageError as exc:
        # prepare_faces names the refused frame by its API field: "face_2: <reason>".
        found = _FACE_PREFIX.match(exc.reason)
        label = face_labels[int(found.group(1)) - 1] if found else "a --face"
        reason = _FACE_PREFIX.sub("", exc.reason)
        raise _CliError(f"{label}: {type(exc).__name__}: {cli_words(reason)}") from None
    return sides[0], sides[1], frames


async def _verify(
    args: argparse.Namespace, service: Service, inputs: Inputs
) -> VerificationOutcome:
    front, back, faces = inputs
    async with _client(service) as client:
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
    """``vlens verify``: 0 when validated, 1 when the verification did not pass, 2 on error.

    The service is resolved and every input prepared before anything is sent.
    """
    from vlens_async.flow import FlowState

    synthetic = not (args.front or args.back or args.face)
    _check_transaction_id(args.transaction_id)
    service = resolve_service(args, synthetic=synthetic)
    inputs = _verify_inputs(args)
    _announce("verify", service)
    outcome = asyncio.run(_verify(args, service, inputs))
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


def _pick(services: dict[str, Any], name: str, key: str) -> object:
    part = services.get(name)
    return part.get(key) if isinstance(part, dict) else None


def _service_lines(services: dict[str, Any]) -> list[str]:
    return [
        f"  liveness          {services.get('liveness')}",
        f"  spoofing (fake)   {_pick(services, 'spoofing', 'fake')}",
        f"  document type     {_pick(services, 'classification', 'doc_type')}",
        f"  AML matched       {_pick(services, 'aml', 'aml_matched')}",
        f"  SRC valid         {_pick(services, 'src', 'is_valid')}",
        f"  validation errors {len(services.get('validations') or [])}",
    ]


_REVIEW_WORDS = {
    "aml_matched": "AML match",
    "fake_document": "spoofing",
    "src_invalid": "SRC failed",
}


def _review(outcome: VerificationOutcome, services: dict[str, Any] | None) -> str | None:
    """``yes (AML match / spoofing / SRC failed)``, naming what was flagged, or ``no``; None
    when the outcome does not say."""
    needs_review = getattr(outcome, "needs_review", None)
    if needs_review is None:
        return None
    if not needs_review:
        return "no"
    given = getattr(outcome, "review_reasons", None)
    if given is not None:
        reasons = [_REVIEW_WORDS.get(str(r), str(r)) for r in given]
    else:
        services = services or {}
        flagged = (
            ("AML match", _pick(services, "aml", "aml_matched") is True),
            ("spoofing", _pick(services, "spoofing", "fake") is True),
            ("SRC failed", _pick(services, "src", "is_valid") is False),
        )
        reasons = [reason for reason, hit in flagged if hit]
    return f"yes ({' / '.join(reasons or _REVIEW_WORDS.values())})"


def format_outcome(outcome: VerificationOutcome, *, show_pii: bool = False) -> str:
    """A readable summary of a verification; national IDs masked unless ``show_pii``.

    ``needs review`` is shown when the outcome carries it: "verified" is Vlens's word, and an AML
    match, a detected spoof or a failed SRC check must be reviewed whatever it says.
    """
    data = outcome.to_json(show_pii=show_pii)
    lines = [
        f"transaction {data['transaction_id']}: {data['state']}",
        f"  validated: {_yes(data['validated'])}   verified: {_yes(data['verified'])}",
    ]
    review = _review(outcome, data["services"])
    if review is not None:
        lines.append(f"  needs review: {review}")
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
            "with --faces) and print what it made; --out writes the prepared JPEGs (one per "
            "input, never over an input). With --faces it also prints, for each pair of frames, "
            "the difference the identical-frames check measured and its verdict. A file that "
            "cannot be prepared, or a frame that is a copy of another, is named on stderr and "
            "the others go on; the exit status is then 2."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, help="image files")
    p.add_argument("--faces", action="store_true", help="treat three paths as liveness frames")
    p.add_argument("--max-bytes", type=int, default=None, help="byte budget per image")
    p.add_argument("--max-side", type=int, default=None, help="longest side in pixels")
    p.add_argument("--out", type=Path, default=None, help="folder to write prepared JPEGs to")
    p.set_defaults(func=cmd_images)


def _output_names(paths: Sequence[Path]) -> list[str]:
    """One distinct ``.jpg`` name per input: its stem, then ``-2``, ``-3`` for a stem seen before
    (``front.jpg`` and ``front.png`` become ``front.jpg`` and ``front-2.jpg``)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, n = f"{path.stem}.jpg", 2
        while name.lower() in used:
            name, n = f"{path.stem}-{n}.jpg", n + 1
        used.add(name.lower())
        names.append(name)
    return names


def _write_owner_only(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only: these are identity documents and
    faces (an existing file is made owner-only too, before it is written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)
        file.write(data)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def cmd_images(args: argparse.Namespace) -> int:
    """``vlens images``: prepare images and report sizes, dimensions and quality.

    Each file is prepared on its own: one that fails is named on stderr and the others go on
    (exit status 2 when any failed). ``--out`` gets one distinct JPEG per input and never
    overwrites an input file. With ``--faces`` each pair's measured difference and verdict is
    printed after the files, and a frame that is a copy of another is refused on stderr.
    """
    from vlens_async.config import (
        DOCUMENT_MAX_BYTES,
        DOCUMENT_MAX_SIDE,
        FACE_MAX_BYTES,
        FACE_MAX_SIDE,
    )
    from vlens_async.errors import IdenticalFramesError, ImageError
    from vlens_async.images import compare_frames, prepare_document_sync, prepare_faces_sync

    paths: list[Path] = args.paths
    if args.faces and len(paths) != 3:
        raise _CliError("--faces needs exactly three frames")
    # "is None", not "or": --max-bytes 0 is refused by the preprocessor, not ignored.
    default_bytes, default_side = (
        (FACE_MAX_BYTES, FACE_MAX_SIDE) if args.faces else (DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)
    )
    max_bytes: int = default_bytes if args.max_bytes is None else args.max_bytes
    max_side: int = default_side if args.max_side is None else args.max_side
    out: Path | None = args.out
    if out is not None and out.exists() and not out.is_dir():
        raise _CliError(f"--out {out}: is a file, not a folder")

    prepared: list[PreparedImage | None] = []
    failed = 0

    def refuse(path: Path, message: str) -> None:
        nonlocal failed
        failed += 1
        print(f"vlens images: {path}: {message}", file=sys.stderr)

    for path in paths:
        try:
            # A budget out of range raises ConfigurationError before any file is read: the
            # whole run stops with one line (main), nothing written.
            done = prepare_document_sync(
                path,
                max_bytes=max_bytes,
                max_side=max_side,
                preserve_grain=False if args.faces else None,  # as prepare_faces does
            )
            prepared.append(done)
        except ImageError as exc:
            prepared.append(None)
            refuse(path, _one_line(exc))
    verdicts: list[str] = []
    if args.faces and all(p is not None for p in prepared):
        frames = [p for p in prepared if p is not None]
        # The identical-frames check explained: each pair's measured difference and verdict.
        try:
            for c in compare_frames([f.data for f in frames]):
                i, j = c.pair
                verdicts.append(f"{paths[i]} vs {paths[j]}: {c.explain()}")
        except ImageError as exc:  # pragma: no cover - the frames were just prepared
            verdicts.append(f"frames not compared: {_one_line(exc)}")
        try:
            prepare_faces_sync(
                frames[0], frames[1], frames[2], max_bytes=max_bytes, max_side=max_side
            )
        except IdenticalFramesError as exc:
            i, j = exc.pair
            how = "the same image as" if exc.difference == 0.0 else "a copy of"
            refuse(paths[j], f"IdenticalFramesError: {how} {paths[i]}")
    if out is not None and any(p is not None for p in prepared):
        out.mkdir(parents=True, exist_ok=True)
    for path, name, image in zip(paths, _output_names(paths), prepared, strict=True):
        if image is None:
            continue
        how = "passed through" if image.passthrough else f"quality {image.quality}"
        line = (
            f"{path}: {image.input_bytes:,} B -> {len(image.data):,} B, "
            f"{image.width}x{image.height}, {how}"
        )
        if out is not None:
            target = out / name
            if any(_same_file(target, p) for p in paths):
                refuse(path, f"not written: {target} is an input file; give another --out")
                print(line)
                continue
            try:
                _write_owner_only(target, image.data)
            except OSError as exc:
                refuse(path, f"cannot write {target} ({type(exc).__name__})")
                print(line)
                continue
            line += f", written to {target}"
        print(line)
    for verdict in verdicts:
        print(verdict)
    return 2 if failed else 0


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
            "continues a stopped run without opening a second transaction for anyone. With no "
            "credentials at all (or --emulator) it runs against an emulator started in-process, "
            "and says so. Exit status: 0 when every applicant reached an outcome, 2 for bad "
            "input, an unreachable service or an error that stopped the job (credentials "
            "refused, say), 130 when stopped early."
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
        help="with --resume (only), also retry applicants that ended with a transient error",
    )
    p.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_false",
        help="send the scans as they are (only for images known to be compliant JPEGs)",
    )
    _add_connection_options(p)
    p.set_defaults(func=cmd_bulk)


def _job_options(args: argparse.Namespace) -> RateLimit:
    """``--concurrency`` and ``--rate`` checked before anything is read or sent."""
    from vlens_async.bulk import RateLimit, check_concurrency
    from vlens_async.errors import ConfigurationError

    try:
        check_concurrency(args.concurrency)
        return RateLimit.parse(args.rate)
    except ConfigurationError as exc:
        text = cli_words(str(exc))
        raise _CliError(text if text.startswith("--") else f"--rate {args.rate}: {text}") from None


def _check_output_path(flag: str, path: Path) -> None:
    """A file the job will write: not a folder, in a folder that exists (none is created)."""
    if path.is_dir():
        raise _CliError(f"{flag} {path}: is a folder; give a file path")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise _CliError(f"{flag} {path}: the folder {folder} does not exist")


def _check_manifest(path: Path) -> None:
    """A manifest given on the command line is a file (one line, exit 2, if not)."""
    if path.is_dir():
        raise _CliError(f"{path} is a folder: give the manifest file in it")
    if not path.is_file():
        raise _CliError(f"no such manifest: {path}")


def _check_job_paths(args: argparse.Namespace) -> None:
    """The manifest exists; the journal and the results are files apart from it and each other."""
    _check_manifest(args.manifest)
    _check_output_path("--journal", args.journal)
    _check_output_path("--out", args.out)
    manifest = args.manifest.resolve()
    journal, out = args.journal.resolve(), args.out.resolve()
    if journal == out:
        raise _CliError("--journal and --out name the same file")
    for flag, path in (("--journal", journal), ("--out", out)):
        if path == manifest or _same_file(path, manifest):
            raise _CliError(f"{flag} names the manifest; it would be overwritten")
    # A resumed job rewrites its own results from its journal; a new one must not replace another's.
    # A journal with content and no --resume is refused by the runner, with the --resume hint.
    used = journal.is_file() and journal.stat().st_size > 0
    if not args.resume and not used and out.is_file() and out.stat().st_size:
        raise _CliError(
            f"--out {args.out}: holds results already; a new job would replace them"
            " (give another path, or remove the file)"
        )


async def _bulk(
    args: argparse.Namespace,
    service: Service,
    rate: RateLimit,
    emulator: EmulatorConfig | None = None,
) -> BulkSummary:
    from vlens_async.bulk import frozen_heap, run_bulk

    # This process is the job's: what it imported stays out of the collector's full scans.
    async with _client(service, emulator) as client:
        with frozen_heap():
            return await run_bulk(
                client,
                args.manifest,
                journal=args.journal,
                out=args.out,
                concurrency=args.concurrency,
                rate_limit=rate,
                resume=args.resume,
                retry_errors=args.retry_errors,
                prepare=args.prepare,
                progress=True,
            )


async def _check_reachable(service: Service) -> None:
    """Refuse to start a job against a service that does not answer at all (exit status 2).

    Without this every applicant would retry its way to ``error`` and the job would exit 0. Any
    HTTP answer but a proxy's 407, even a 404 or a 401, proves the service is there. It goes the
    way the job's client goes (the same ``connection``: proxy, CA bundle, client certificate),
    through the session the client would open, and says what failed in the client's words.
    """
    import aiohttp

    from vlens_async._transport import (
        describe_failure,
        describe_proxy_refusal,
        is_proxy_refusal,
        open_session,
        uses_proxy,
    )
    from vlens_async.config import TransportOptions

    assert service.base_url is not None
    host = urlsplit(service.base_url).hostname or service.base_url
    proxied = False
    try:
        async with open_session(
            TransportOptions.of(**service.connection),
            base_url=service.base_url,
            limit=1,
            timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT),
        ) as session:
            proxied = uses_proxy(session)
            async with session.get(service.base_url, allow_redirects=False) as response:
                status = response.status
                refused = is_proxy_refusal(status, session, service.base_url)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # No URL (aiohttp's texts quote it whole, proxy credentials included), and raised below,
        # outside this block, so that not even ``__context__`` holds aiohttp's error.
        problem = describe_failure(exc, service_url=service.base_url, via_proxy=proxied)
    else:
        if not refused:
            return
        problem = describe_proxy_refusal(status)
    raise _CliError(f"cannot reach {host}: {cli_words(problem)}")


_RESUME_HINT = re.compile(r"run again with (?:--)?resume\b(?P<rest> to finish them)?")


def _summary_text(text: str, command: str) -> str:
    """The summary with the CLI's own hints: ``--resume`` for ``bulk``; ``demo``, which has no
    ``--resume`` and starts afresh each time, says to run it again."""
    if command == "demo":
        return _RESUME_HINT.sub("run vlens demo again (it starts over)", text)
    return _RESUME_HINT.sub(lambda m: "run again with --resume" + (m["rest"] or ""), text)


def _report(summary: BulkSummary, command: str) -> int:
    from vlens_async.bulk import format_summary

    print(_summary_text(format_summary(summary), command))
    if summary.stopped_by_error:
        return 2  # credentials, permissions or the manifest: the user has something to fix
    return 0 if summary.complete else 130


def cmd_bulk(args: argparse.Namespace) -> int:
    """``vlens bulk``: run (or ``--resume``) a manifest; print the summary table.

    Options, paths and the service are checked before the first request.
    """
    if args.retry_errors and not args.resume:
        raise _CliError("--retry-errors needs --resume: it retries the errors of a journaled run")
    service = resolve_service(args)
    _check_job_paths(args)
    rate = _job_options(args)
    if service.base_url is not None:
        asyncio.run(_check_reachable(service))
    _announce("bulk", service)
    if args.resume and service.emulator:
        # Its transactions lived in an emulator that stopped with the run (the journal's check
        # would only say that the address differs).
        raise _CliError(
            "--resume: a job cannot be resumed on the embedded emulator (each run starts a new"
            " one, without the journal's transactions); run without --resume on a new journal"
        )
    return _report(asyncio.run(_bulk(args, service, rate)), "bulk")


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
            "bar, and print the summary. It uses the embedded emulator unless a base URL is "
            "given (--base-url or VLENS_BASE_URL), whatever credentials are set; with a base URL "
            "and credentials (VLENS_API_KEY, --api-key-file) it runs against that tenant. Each "
            "run starts afresh."
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
    with contextlib.suppress(OSError, ValueError):
        if stamp.is_file() and manifest.is_file() and json.loads(stamp.read_text()) == wanted:
            return manifest
    print(f"writing {args.count} synthetic applicants to {folder} ...", file=sys.stderr)
    manifest = asyncio.run(write_demo_manifest(folder, args.count, args.seed))
    stamp.write_text(json.dumps(wanted))
    return manifest


def cmd_demo(args: argparse.Namespace) -> int:
    """``vlens demo``: the bulk job on synthetic applicants against the embedded emulator, or
    against a real service only when its base URL is given (``--base-url``, ``VLENS_BASE_URL``).

    Every option (count, concurrency, rate, latency, faults, the service) is checked before the
    applicants are drawn.
    """
    from vlens_async.emulator import EmulatorConfig, FaultConfig

    service = resolve_service(args, synthetic=True)
    if args.count < 1:
        raise _CliError(f"--count must be at least 1, got {args.count}")
    rate = _job_options(args)
    try:
        emulator = EmulatorConfig(faults=FaultConfig.parse(args.faults, [args.latency]))
    except ValueError as exc:  # an unknown latency or fault spec
        raise _CliError(f"--latency/--faults: {exc}") from None
    if args.folder.exists() and not args.folder.is_dir():
        raise _CliError(f"--folder {args.folder}: is a file, not a folder")
    if service.base_url is not None:
        asyncio.run(_check_reachable(service))
    _announce("demo", service, f"latency {args.latency}, faults {args.faults or 'none'}")
    if service.base_url is not None:
        print(
            f"vlens demo: verifying {args.count} applicants at {service.base_url}", file=sys.stderr
        )
    args.manifest = _demo_manifest(args)
    args.journal = args.folder / "journal.db"
    args.out = args.folder / "results.jsonl"
    for stale in (args.journal, args.out, *args.folder.glob("journal.db-*")):
        stale.unlink(missing_ok=True)
    summary = asyncio.run(_bulk(args, service, rate, emulator))
    status = _report(summary, "demo")
    where = f"journal: {args.journal}"
    if summary.results is None:  # the summary names the results file when it wrote one
        where = f"results: {args.out}  {where}"
    print(where)
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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (argparse prints the usage block too)."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``vlens`` argument parser with every subcommand (they inherit its one-line errors)."""
    parser: argparse.ArgumentParser = _Parser(
        prog="vlens", description="Tools for the Vlens Digital Identity API."
    )
    parser.add_argument("--version", action=_PrintVersion, help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(subparsers)
    _add_verify(subparsers)
    _add_bulk(subparsers)
    _add_images(subparsers)
    _add_emulator(subparsers)
    from vlens_async._cli_queue import add_queue

    add_queue(subparsers)
    return parser


# Options whose value may start with "-" (argparse would take "--rate -5/s" for two options).
_DASHED_VALUES = frozenset({"--rate"})


def _glue_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--rate -5/s`` as ``--rate=-5/s``, so that the value reaches its check."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        if item in _DASHED_VALUES:
            value = next(items, None)
            if value is not None and value.startswith("-") and not value.startswith("--"):
                out.append(f"{item}={value}")
                continue
            out.append(item)
            if value is not None:
                out.append(value)
            continue
        out.append(item)
    return out


def _stdout_closed() -> int:
    """The reader of stdout went away (``vlens verify | head -1``): end quietly, as a program
    killed by SIGPIPE would. Further writes, the interpreter's last flush included, go nowhere."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return _SIGPIPE_STATUS


_SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a program ended by a closed pipe


def _is_sqlite_error(exc: BaseException) -> bool:
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(exc, sqlite3.Error)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vlens`` command; returns the exit status.

    Failures print one line on stderr, never a traceback: 2 for bad input, configuration or an
    unreachable service (argparse's own usage errors exit 2 too), 130 after Ctrl-C; a closed
    stdout (a pipe to ``head``) ends quietly with 141.
    """
    parser = build_parser()
    args = parser.parse_args(_glue_dashed_values(sys.argv[1:] if argv is None else argv))
    try:
        with _quiet_retry_logs():
            status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        print(f"vlens {args.command}: interrupted", file=sys.stderr)
        return 130
    except (_CliError, VlensError, OSError) as exc:
        print(f"vlens {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_sqlite_error(exc):
            raise
        print(f"vlens {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    return status
