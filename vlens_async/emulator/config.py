"""Configuration of the emulator: tenants, admins, limits, storage caps, faults.

Everything is an immutable attrs value so a config can be shared, compared and evolved
(``attrs.evolve``); the running state keeps its own mutable copy of the per-tenant switches, which
the control API may change at run time.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any, Final, Literal

import attrs

from .faults import FaultConfig

__all__ = [
    "DEFAULT_ACCESS_TOKEN_TTL",
    "DEFAULT_ADMIN_PASSWORD",
    "DEFAULT_ADMIN_USERNAME",
    "DEFAULT_API_KEY",
    "DEFAULT_DECODE_PIXEL_BUDGET",
    "DEFAULT_DECODE_THREADS",
    "DEFAULT_IMAGE_STORE_MAX_BYTES",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_REFRESH_TOKEN_TTL",
    "DEFAULT_TENANCY_NAME",
    "DEFAULT_VIEWER_PASSWORD",
    "DEFAULT_VIEWER_USERNAME",
    "MAX_RATE",
    "REQUESTS_PERMISSION",
    "AdminConfig",
    "EmulatorConfig",
    "FailureStyle",
    "Reader",
    "TenantConfig",
    "UnknownDocuments",
    "server_tls_context",
]

DEFAULT_API_KEY: Final = "emulator-api-key"
DEFAULT_TENANCY_NAME: Final = "Default"
DEFAULT_ADMIN_USERNAME: Final = "admin"
DEFAULT_ADMIN_PASSWORD: Final = "admin-password"
DEFAULT_VIEWER_USERNAME: Final = "viewer"
DEFAULT_VIEWER_PASSWORD: Final = "viewer-password"
REQUESTS_PERMISSION: Final = "Requests"

DEFAULT_ACCESS_TOKEN_TTL: Final = 86_400.0  # API.md: access tokens live 24 h
DEFAULT_REFRESH_TOKEN_TTL: Final = 604_800.0  # and refresh tokens 7 days
DEFAULT_OTP_TTL: Final = 300.0
DEFAULT_MAX_IMAGE_BYTES: Final = 5 * 1024 * 1024  # 5002 above this (decoded)
DEFAULT_MAX_IMAGE_PIXELS: Final = 25_000_000  # 5003 above this
# Four images of 5 MB in base64 plus JSON overhead fit; anything larger is refused with 413.
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
DEFAULT_IMAGE_STORE_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_MAX_TRANSACTIONS: Final = 200_000
DEFAULT_READ_CACHE_SIZE: Final = 4096
# Pixels being decoded at once across requests (two images at the 25 MP limit), in this many
# threads of their own: a flood of huge images waits its turn instead of taking the process to
# gigabytes. One larger image runs alone.
DEFAULT_DECODE_PIXEL_BUDGET: Final = 2 * DEFAULT_MAX_IMAGE_PIXELS
DEFAULT_DECODE_THREADS: Final = 2
MAX_DECODE_THREADS: Final = 64
# Bounds of the per-tenant rate-limit switches (strict sliding windows need at least 1).
MAX_RATE: Final = 1_000_000

FailureStyle = Literal["status", "ok"]
"""``status``: failures carry their HTTP status (422 for an ``error_code``); ``ok``: a failure with
an ``error_code`` comes back as HTTP 200 with the code in the envelope."""

UnknownDocuments = Literal["derive", "reject"]
"""What a scan of an image without a synthetic card code gives: ``derive`` deterministic fields from
the transaction id (so a user's own photos work), ``reject`` error 3011 (card not detected)."""

Reader = Callable[[bytes], Any]
"""An OCR hook: image bytes in, a reading (or ``None``) out; defaults to ``samples.read_card`` /
``samples.read_face``. Tests inject their own to craft fields the sample generator never draws."""


def _frozen_str_set(values: Iterable[str]) -> frozenset[str]:
    """A set of strings; ``ValueError`` for a bare string (a set of its characters is never meant)
    or anything that is not an iterable of strings."""
    if isinstance(values, str | bytes | Mapping):
        raise ValueError("expected a list of strings, not a single string or a mapping")
    try:
        items = frozenset(values)
    except TypeError:
        raise ValueError("expected a list of strings") from None
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected a list of strings")
    return items


def _check_rate(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    """A rate limit is a whole number of requests from 1 to :data:`MAX_RATE` (0 admits nothing
    and used to break every call)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE:
        raise ValueError(f"{attribute.name} must be a whole number from 1 to {MAX_RATE}")


def _check_bool(_: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be true or false")


@attrs.frozen
class AdminConfig:
    """An admin user of a tenant; ``permissions`` containing ``"Requests"`` may read images."""

    username: str
    password: str = attrs.field(repr=False)
    permissions: frozenset[str] = attrs.field(
        default=frozenset({REQUESTS_PERMISSION}), converter=_frozen_str_set
    )
    email: str | None = None


def _admins(values: Iterable[AdminConfig]) -> tuple[AdminConfig, ...]:
    return tuple(values)


def _tenants(values: Iterable[TenantConfig]) -> tuple[TenantConfig, ...]:
    return tuple(values)


def _default_admins() -> tuple[AdminConfig, ...]:
    return (
        AdminConfig(DEFAULT_ADMIN_USERNAME, DEFAULT_ADMIN_PASSWORD, email="admin@emulator.local"),
        AdminConfig(DEFAULT_VIEWER_USERNAME, DEFAULT_VIEWER_PASSWORD, permissions=frozenset()),
    )


@attrs.frozen
class TenantConfig:
    """One tenant: its API key, admins and the switches that shape its answers.

    ``ntra`` / ``cso`` switch the authority checks that decide ``isDigitalIdentityVerified``; an
    enabled check fails for the national IDs listed in ``ntra_rejects`` / ``cso_rejects`` (the
    emulated registries) and passes otherwise. ``aml_watchlist`` adds IDs to the AML watchlist
    beside the cards that ``samples`` marks as watchlisted. ``rate_limit`` enforces
    ``rate_per_second`` and ``rate_per_minute`` (strict sliding windows) with code 4003 (HTTP 422,
    or 200 in the ``ok`` failure style; no 429, no ``Retry-After``).
    """

    name: str = DEFAULT_TENANCY_NAME
    api_key: str = attrs.field(default=DEFAULT_API_KEY, repr=False)
    admins: tuple[AdminConfig, ...] = attrs.field(factory=_default_admins, converter=_admins)
    ntra: bool = attrs.field(default=True, validator=_check_bool)
    cso: bool = attrs.field(default=True, validator=_check_bool)
    failure_style: FailureStyle = attrs.field(default="status")
    rate_limit: bool = attrs.field(default=False, validator=_check_bool)
    rate_per_second: int = attrs.field(default=10, validator=_check_rate)
    rate_per_minute: int = attrs.field(default=60, validator=_check_rate)
    unknown_documents: UnknownDocuments = attrs.field(default="derive")
    ntra_rejects: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen_str_set)
    cso_rejects: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen_str_set)
    aml_watchlist: frozenset[str] = attrs.field(default=frozenset(), converter=_frozen_str_set)

    @failure_style.validator
    def _check_style(self, _: attrs.Attribute[str], value: str) -> None:
        if value not in ("status", "ok"):
            raise ValueError(f"failure_style must be 'status' or 'ok', not {value!r}")

    @unknown_documents.validator
    def _check_unknown(self, _: attrs.Attribute[str], value: str) -> None:
        if value not in ("derive", "reject"):
            raise ValueError(f"unknown_documents must be 'derive' or 'reject', not {value!r}")


@attrs.frozen
class EmulatorConfig:
    """Everything :func:`~vlens_async.emulator.create_app` needs; every field has a default.

    The first tenant is the primary one (its key is what fixtures and the CLI print). Image caps:
    ``image_store_max_bytes`` / ``image_store_max_count`` bound the images kept in memory (oldest
    evicted first); with ``image_spill_dir`` evicted images are written there instead of dropped.
    ``today`` pins the date used for expiry checks (default: the real UTC date). ``tls``, a
    server-side :class:`ssl.SSLContext` (see :func:`server_tls_context`), serves HTTPS instead of
    plain HTTP; one that requires client certificates makes it a mutual TLS endpoint. Serving sets
    the context's ``sslobject_class`` (unless the caller set one) so that a client whose
    certificate it refuses gets the TLS alert a real server sends, not a bare disconnection.
    ``decode_pixel_budget`` bounds the pixels decoded at once across all requests (synthetic OCR
    waits for its share; an image larger than the budget is decoded alone), in ``decode_threads``
    threads of the emulator's own (the memory a decode took stays with its thread).
    """

    tenants: tuple[TenantConfig, ...] = attrs.field(
        factory=lambda: (TenantConfig(),), converter=_tenants
    )
    seed: int = 0
    faults: FaultConfig = attrs.field(factory=FaultConfig)
    access_token_ttl: float = DEFAULT_ACCESS_TOKEN_TTL
    refresh_token_ttl: float = DEFAULT_REFRESH_TOKEN_TTL
    otp_ttl: float = DEFAULT_OTP_TTL
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    image_store_max_bytes: int | None = DEFAULT_IMAGE_STORE_MAX_BYTES
    image_store_max_count: int | None = None
    image_spill_dir: str | os.PathLike[str] | None = None
    max_transactions: int | None = DEFAULT_MAX_TRANSACTIONS
    read_cache_size: int = DEFAULT_READ_CACHE_SIZE
    decode_pixel_budget: int = attrs.field(default=DEFAULT_DECODE_PIXEL_BUDGET)
    decode_threads: int = attrs.field(default=DEFAULT_DECODE_THREADS)
    today: date | None = None
    key_variants: bool = True
    card_reader: Reader | None = attrs.field(default=None, eq=False, repr=False)
    face_reader: Reader | None = attrs.field(default=None, eq=False, repr=False)
    tls: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)

    @tls.validator
    def _check_tls(self, _: attrs.Attribute[Any], value: ssl.SSLContext | None) -> None:
        if value is not None and not isinstance(value, ssl.SSLContext):
            raise ValueError("tls must be an ssl.SSLContext (see server_tls_context) or None")

    @decode_pixel_budget.validator
    def _check_budget(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("decode_pixel_budget must be a positive number of pixels")

    @decode_threads.validator
    def _check_threads(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("decode_threads must be a whole number")
        if not 1 <= value <= MAX_DECODE_THREADS:
            raise ValueError(f"decode_threads must be from 1 to {MAX_DECODE_THREADS}")

    @tenants.validator
    def _check_tenants(self, _: attrs.Attribute[Any], value: tuple[TenantConfig, ...]) -> None:
        if not value:
            raise ValueError("at least one tenant is required")
        keys = [t.api_key for t in value]
        names = [t.name.lower() for t in value]
        if len(set(keys)) != len(keys) or len(set(names)) != len(names):
            raise ValueError("tenant names and API keys must be unique")

    @property
    def tenant(self) -> TenantConfig:
        """The primary tenant (the first)."""
        return self.tenants[0]

    def with_tenant(self, **changes: Any) -> EmulatorConfig:
        """A copy whose primary tenant has ``changes`` applied (``ntra=False``, ...)."""
        first: TenantConfig = attrs.evolve(self.tenants[0], **changes)
        tenants: tuple[TenantConfig, ...] = (first, *self.tenants[1:])
        return attrs.evolve(self, tenants=tenants)


def server_tls_context(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
    *,
    client_ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A context that serves the emulator over HTTPS (TLS 1.2 or later).

    ``cert`` is the server's PEM certificate chain, ``key`` its private key (``None`` when the
    key is in ``cert``). With ``client_ca`` (PEM), a client must present a certificate signed by
    it (mutual TLS). The files are read here; ``OSError`` (``ssl.SSLError`` included) when one
    cannot be read or used.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
