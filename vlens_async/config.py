"""Client configuration: timeouts, retry policy, and every default as a named constant.

Per-call overrides use the :data:`NOT_GIVEN` marker rather than ``None``, because ``None`` is a
meaningful value for some options (no deadline, no token).
"""

from __future__ import annotations

import enum
import ipaddress
import ssl as _ssl
from collections.abc import Iterable
from typing import Any, Final, Literal, TypeAlias, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

import aiohttp
import attrs

from .errors import ConfigurationError

__all__ = [
    "CLIENT_CERT_HINT",
    "DEFAULT_ACCESS_TOKEN_LIFETIME",
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECTOR_LIMIT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_REFRESH_TOKEN_LIFETIME",
    "DEFAULT_TOKEN_REFRESH_MARGIN",
    "DOCUMENT_MAX_BYTES",
    "DOCUMENT_MAX_SIDE",
    "FACE_MAX_BYTES",
    "FACE_MAX_SIDE",
    "MAX_FRAME_SPREAD_SECONDS",
    "MAX_IMAGE_PIXELS",
    "NOT_GIVEN",
    "OFFLOAD_THRESHOLD_BYTES",
    "SERVER_MAX_IMAGE_BYTES",
    "TRUST_CA_HINT",
    "ClientConfig",
    "NotGiven",
    "NotGivenOr",
    "RetryPolicy",
    "Timeouts",
    "TransportOptions",
    "check_base_url",
    "check_header_value",
    "check_proxy_url",
    "check_ssl",
    "given_or",
    "header_safe",
    "is_loopback_host",
]

DEFAULT_BASE_URL: Final = "https://api.vlenseg.com"
DEFAULT_CONNECTOR_LIMIT: Final = 100

# Timeouts, in seconds. ``per_attempt`` bounds one request; ``deadline`` bounds all retries of it.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 60.0
DEFAULT_ATTEMPT_TIMEOUT: Final = 90.0
DEFAULT_DEADLINE: Final = 180.0

# Retries: exponential backoff with jitter, capped; Retry-After honoured up to a cap.
DEFAULT_MAX_ATTEMPTS: Final = 4
DEFAULT_BACKOFF_INITIAL: Final = 0.25
DEFAULT_BACKOFF_MAX: Final = 8.0
DEFAULT_BACKOFF_JITTER: Final = 0.5
DEFAULT_RETRY_AFTER_CAP: Final = 30.0
# Every 5xx is transient (a proxy's 520-524 included) except those that say the request itself
# can never work here: 501 Not Implemented, 505 HTTP version, 506, 508 loop, 510, 511 proxy login.
RETRYABLE_STATUSES: Final = frozenset(
    {408, 429} | set(range(500, 600)) - {501, 505, 506, 508, 510, 511}
)

# Tokens: lifetimes the API documents (used when a response omits them), and how long before
# expiry a token is renewed (capped at a tenth of its lifetime, so short-lived tokens still work).
DEFAULT_ACCESS_TOKEN_LIFETIME: Final = 86_400
DEFAULT_REFRESH_TOKEN_LIFETIME: Final = 604_800
DEFAULT_TOKEN_REFRESH_MARGIN: Final = 60.0

# Bodies (base64 + JSON) and responses bigger than this are encoded/decoded in a worker thread;
# below it, the hop to a thread costs more than the work and the loop is not held noticeably.
OFFLOAD_THRESHOLD_BYTES: Final = 256 * 1024

# The most a response body may be, as sent and once inflated (gzip/deflate): past it the client
# stops reading and raises ResponseTooLargeError. The largest real answer is a downloaded step
# image: at most 5 MB (SERVER_MAX_IMAGE_BYTES), about 7 MB as base64 in JSON; 64 MiB leaves a wide
# margin and still bounds what a broken or hostile server can make the client hold.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024

# Image limits. The server refuses over 5 MB (5002) and 25 MP (5003); the OCR docs say 3 MB, so the
# document budget stays under that. Liveness frames go under 500 KB, as the Vlens docs advise.
SERVER_MAX_IMAGE_BYTES: Final = 5 * 1024 * 1024
MAX_IMAGE_PIXELS: Final = 25_000_000
DOCUMENT_MAX_BYTES: Final = 3_000_000
DOCUMENT_MAX_SIDE: Final = 2000
FACE_MAX_BYTES: Final = 500_000
FACE_MAX_SIDE: Final = 1280
MAX_FRAME_SPREAD_SECONDS: Final = 0.5


class NotGiven(enum.Enum):
    """The type of :data:`NOT_GIVEN`: marks a per-call option the caller did not pass."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> Literal[False]:
        return False


NOT_GIVEN: Final = NotGiven.NOT_GIVEN
_T = TypeVar("_T")
NotGivenOr: TypeAlias = "_T | NotGiven"


def given_or(value: _T | NotGiven, default: _T) -> _T:
    """Return ``value`` unless it is :data:`NOT_GIVEN`, else ``default``."""
    return default if isinstance(value, NotGiven) else value


def _positive(instance: object, attribute: attrs.Attribute[float], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigurationError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class Timeouts:
    """Timeouts in seconds: ``connect``, ``read`` (between bytes), ``per_attempt`` (one request),
    and ``deadline`` (all attempts of one call, retries and their sleeps included; ``None`` for
    none). A call never outlives its deadline: it raises :class:`APITimeoutError` instead."""

    connect: float = attrs.field(default=DEFAULT_CONNECT_TIMEOUT, validator=_positive)
    read: float = attrs.field(default=DEFAULT_READ_TIMEOUT, validator=_positive)
    per_attempt: float = attrs.field(default=DEFAULT_ATTEMPT_TIMEOUT, validator=_positive)
    deadline: float | None = attrs.field(default=DEFAULT_DEADLINE, validator=_positive)


@attrs.frozen
class RetryPolicy:
    """What is retried and how: connection errors and ``statuses``, up to ``max_attempts`` in all,
    with exponential backoff from ``initial`` to ``max_backoff`` plus up to ``jitter`` seconds of
    random jitter; a ``Retry-After`` header is honoured up to ``retry_after_cap`` seconds."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial: float = attrs.field(default=DEFAULT_BACKOFF_INITIAL, validator=_positive)
    max_backoff: float = attrs.field(default=DEFAULT_BACKOFF_MAX, validator=_positive)
    jitter: float = DEFAULT_BACKOFF_JITTER
    retry_after_cap: float = attrs.field(default=DEFAULT_RETRY_AFTER_CAP, validator=_positive)
    statuses: frozenset[int] = RETRYABLE_STATUSES

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if self.jitter < 0:
            raise ConfigurationError("jitter must not be negative")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost`` or a loopback address (a bracketed
    IPv6 one too). Any other name may resolve beyond the machine."""
    # Not "*.localhost": RFC 6761 asks resolvers to keep those on loopback, but a plain DNS
    # resolver may answer for them with any address.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """Validate ``base_url`` and return it without a trailing slash.

    Plain ``http://`` is accepted for loopback hosts (the emulator) and refused for any other host
    unless ``allow_insecure_http`` is true: identity documents must not cross a network unencrypted.
    A URL with ``user:password@`` is refused: credentials go in ``api_key`` and ``access_token``
    or ``auth``. Error messages show at most the scheme and the host, never the whole URL.
    """
    parsed = _split(base_url)
    if parsed is None:  # an unbalanced IPv6 bracket, say
        raise ConfigurationError("base_url is not a valid URL")
    parts, host, _ = parsed
    # Only a scheme followed by "//" is surely a scheme: in "user:pw@host" urlsplit takes "user".
    scheme = parts.scheme if parts.netloc else ""
    if scheme not in ("http", "https"):
        shown = f" (got {scheme}://)" if scheme else ""
        raise ConfigurationError(f"base_url must be an http:// or https:// URL{shown}")
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"base_url must not carry credentials (user:password@), got {scheme}://{host or ''}: "
            "pass the API key as api_key and tokens with access_token or auth"
        )
    if not host:
        raise ConfigurationError(f"base_url has no host (got {scheme}://)")
    if scheme == "http" and not allow_insecure_http and not is_loopback_host(host):
        raise ConfigurationError(
            f"refusing plain http:// to a non-loopback host ({host}); use https:// "
            "or pass allow_insecure_http=True"
        )
    return base_url.rstrip("/")


@attrs.frozen
class ClientConfig:
    """Everything a :class:`~vlens_async.VlensClient` needs besides its credentials.

    ``max_response_bytes`` bounds a response body, as sent and once inflated
    (:data:`DEFAULT_MAX_RESPONSE_BYTES`, 64 MiB); a bigger one raises
    :class:`~vlens_async.errors.ResponseTooLargeError`.
    """

    base_url: str = DEFAULT_BASE_URL
    tenancy_name: str | None = None
    language: str | None = None
    timeouts: Timeouts = attrs.Factory(Timeouts)
    retry: RetryPolicy = attrs.Factory(RetryPolicy)
    connector_limit: int = DEFAULT_CONNECTOR_LIMIT
    prepare_images: bool = True
    allow_insecure_http: bool = False
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __attrs_post_init__(self) -> None:
        check_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)
        if isinstance(self.max_response_bytes, bool) or not isinstance(
            self.max_response_bytes, int
        ):
            raise ConfigurationError("max_response_bytes must be an integer number of bytes")
        if self.max_response_bytes < 1024:
            raise ConfigurationError("max_response_bytes must be at least 1024")
        if self.language not in (None, "en", "ar"):
            raise ConfigurationError("language must be 'en', 'ar' or None")
        if self.connector_limit < 1:
            raise ConfigurationError("connector_limit must be at least 1")


def check_header_value(value: str, what: str) -> str:
    """Refuse a credential that cannot travel in an HTTP header (a CR, LF or NUL in it).

    aiohttp would refuse it at the first request with a bare ValueError; the message names
    ``what``, never the value.
    """
    if any(c in value for c in "\r\n\x00"):
        raise ConfigurationError(f"{what} contains a line break or NUL, which no header can carry")
    return value


def header_safe(value: str) -> bool:
    """True when ``value`` can travel in an HTTP header as a token: visible ASCII only, no space,
    no control character (CR, LF, NUL, DEL...) and nothing aiohttp would refuse to encode."""
    return bool(value) and value.isascii() and value.isprintable() and " " not in value


# The one hint for a certificate that was not trusted, and for ssl=False: the CLI shows it as its
# own flags (``cli.cli_words``).
TRUST_CA_HINT: Final = "ssl=ssl.create_default_context(cafile=...)"
# The one hint for a server that wants a client certificate (mutual TLS); the CLI shows its flags.
CLIENT_CERT_HINT: Final = "ssl= a context on which load_cert_chain(certfile, keyfile) was called"


def check_ssl(value: object) -> _ssl.SSLContext | None:
    """Return the ``ssl`` option as an :class:`ssl.SSLContext`, or ``None`` for the default
    verification (``None`` or ``True``, as aiohttp takes them).

    Certificate verification can never be switched off: ``ssl=False``, a context whose
    ``verify_mode`` is ``CERT_NONE`` or whose ``check_hostname`` is false, and anything else
    (an ``aiohttp.Fingerprint``, a path) raise :class:`ConfigurationError`.
    """
    if value is None or value is True:
        return None
    if value is False:
        raise ConfigurationError(
            "ssl=False would switch certificate verification off, which this client never does;"
            f" to trust a private CA pass {TRUST_CA_HINT}"
        )
    if not isinstance(value, _ssl.SSLContext):
        raise ConfigurationError(
            f"ssl must be an ssl.SSLContext or None, got {type(value).__name__}"
        )
    if value.verify_mode == _ssl.CERT_NONE or not value.check_hostname:
        raise ConfigurationError(
            "the SSLContext given as ssl does not verify certificates (verify_mode CERT_NONE or"
            " check_hostname False), which this client never allows; start from"
            f" {TRUST_CA_HINT}"
        )
    return value


def _split(url: str) -> tuple[SplitResult, str | None, int | None] | None:
    """``url`` split, with its host and port; ``None`` when it does not parse. Python's
    ValueError is dropped here, not chained: its text may quote the netloc, password included."""
    try:
        parts = urlsplit(url)
        return parts, parts.hostname, parts.port
    except ValueError:
        return None


def check_proxy_url(
    proxy: object, proxy_auth: aiohttp.BasicAuth | None = None
) -> tuple[str, tuple[str, str] | None]:
    """Validate a proxy URL; return it without credentials, and the credentials, if any.

    ``http://`` or ``https://`` with a host and an optional port, nothing else. Credentials may
    come in the URL (``http://user:password@proxy:3128``, percent-encoded) or as ``proxy_auth``
    (an ``aiohttp.BasicAuth``), not both; they are taken out of the URL so that it can be shown.
    Any text: they are sent UTF-8 encoded (RFC 7617), see ``_transport.open_session``.
    Messages show at most the scheme and the host, never the URL (it may carry a password).
    """
    if not isinstance(proxy, str) or not proxy.strip():
        raise ConfigurationError("proxy must be a URL such as http://proxy.example:3128")
    parsed = _split(proxy.strip())
    if parsed is None:  # an unbalanced IPv6 bracket, a port that is not a number or too big
        raise ConfigurationError("proxy is not a valid URL (check its host and port)")
    parts, host, port = parsed
    scheme = parts.scheme if parts.netloc else ""
    if scheme not in ("http", "https"):
        shown = f" (got {scheme}://)" if scheme else ""
        raise ConfigurationError(f"proxy must be an http:// or https:// URL{shown}")
    if not host:
        raise ConfigurationError(f"proxy has no host (got {scheme}://)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(f"proxy must be {scheme}://host[:port], without a path or query")
    if proxy_auth is not None and not isinstance(proxy_auth, aiohttp.BasicAuth):
        raise ConfigurationError("proxy_auth must be an aiohttp.BasicAuth or None")
    credentials = None if proxy_auth is None else (proxy_auth.login, proxy_auth.password)
    if parts.username is not None or parts.password is not None:
        if credentials is not None:
            raise ConfigurationError(
                "the proxy's credentials are given twice: in the proxy URL and as proxy_auth"
            )
        credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
    if credentials is not None and ":" in credentials[0]:
        raise ConfigurationError("the proxy's user name must not contain ':'")
    shown_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown_host}{'' if port is None else f':{port}'}", credentials


def _tuple_of(value: Iterable[Any] | None) -> tuple[Any, ...]:
    return tuple(value or ())


@attrs.frozen
class TransportOptions:
    """How every connection of a client goes out; made by :meth:`of` from aiohttp's options.

    ``proxy``: the ``http://`` or ``https://`` proxy of every request, without credentials;
    ``proxy_credentials``: its user name and password, if any (never in the repr).
    ``trust_env``: take the proxy from ``HTTPS_PROXY``/``HTTP_PROXY`` and honour ``NO_PROXY``
    when no ``proxy`` is given, when the session opens; ``~/.netrc`` is never read (aiohttp's
    own ``trust_env`` stays off). ``ssl``: an
    :class:`ssl.SSLContext` (a private CA bundle, a client certificate for mutual TLS), ``None``
    for the system's CAs; verification can never be switched off (:func:`check_ssl`).
    ``trace_configs``: aiohttp ``TraceConfig`` objects for the session.
    """

    proxy: str | None = None
    proxy_credentials: tuple[str, str] | None = attrs.field(default=None, repr=False)
    trust_env: bool = False
    ssl: _ssl.SSLContext | None = attrs.field(default=None, repr=False)
    trace_configs: tuple[aiohttp.TraceConfig, ...] = attrs.field(
        default=(), converter=_tuple_of, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.proxy is not None and check_proxy_url(self.proxy)[0] != self.proxy:
            raise ConfigurationError(
                "TransportOptions.proxy must be a bare proxy URL: use TransportOptions.of()"
            )
        if self.proxy is None and self.proxy_credentials is not None:
            raise ConfigurationError("proxy_auth needs a proxy")
        if not isinstance(self.trust_env, bool):
            raise ConfigurationError("trust_env must be True or False")
        check_ssl(self.ssl)
        if not all(isinstance(t, aiohttp.TraceConfig) for t in self.trace_configs):
            raise ConfigurationError("trace_configs must be aiohttp.TraceConfig objects")

    @classmethod
    def of(
        cls,
        *,
        proxy: str | None = None,
        proxy_auth: aiohttp.BasicAuth | None = None,
        trust_env: bool = False,
        ssl: _ssl.SSLContext | None = None,
        trace_configs: Iterable[aiohttp.TraceConfig] | None = None,
    ) -> TransportOptions:
        """The options from aiohttp's names and values (as :class:`~vlens_async.VlensClient`
        takes them): credentials in the proxy URL or in ``proxy_auth`` are moved aside, ``ssl``
        ``True`` means ``None``; anything invalid is a :class:`ConfigurationError`."""
        if proxy is None:
            if proxy_auth is not None:
                raise ConfigurationError("proxy_auth needs a proxy")
            bare, credentials = None, None
        else:
            bare, credentials = check_proxy_url(proxy, proxy_auth)
        return cls(
            proxy=bare,
            proxy_credentials=credentials,
            trust_env=trust_env,
            ssl=check_ssl(ssl),
            trace_configs=trace_configs,
        )
