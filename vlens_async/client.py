"""``VlensClient``: one aiohttp session, one coroutine per endpoint, typed models and errors.

A call goes: images prepared (Pillow, in threads) -> body built (base64 + JSON, in a thread when
big) -> bearer token from the auth provider -> attempts under the retry policy and deadline
(``_retrying``), each one a single request through ``_transport`` -> the decoded model, or the
typed error the response stands for. A 401 with renewable credentials renews the token once and
goes again.

A web app keeps one client for the process and serves each user through :meth:`for_user`, a light
view sharing the session (and its connection pool) with its own token.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import ssl
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import aiohttp
import attrs

from . import _uploads, _wire
from ._ids import new_request_id, new_transaction_id
from ._retrying import is_retryable, run_with_retries
from ._telemetry import NO_TELEMETRY, CallScope, Telemetry, guarded, unguarded
from ._transport import EnvelopeModel, Request, connection_not_established, open_session, send
from ._version import user_agent
from .auth import AuthProvider, StaticToken
from .config import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECTOR_LIMIT,
    DEFAULT_MAX_RESPONSE_BYTES,
    NOT_GIVEN,
    OFFLOAD_THRESHOLD_BYTES,
    ClientConfig,
    NotGiven,
    RetryPolicy,
    Timeouts,
    TransportOptions,
    check_header_value,
    given_or,
    header_safe,
)
from .errors import (
    APIError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    ResponseDecodeError,
)
from .flow import DEFAULT_MAX_LIVENESS_ATTEMPTS, Transaction, VerificationOutcome, verify
from .images import ImageInput, PreparedFaces
from .models import (
    Envelope,
    ExistenceResult,
    IdentityImageRefs,
    PhoneOtpResult,
    RegistrationResult,
    StepImage,
    Tokens,
    VerificationResponse,
)

__all__ = ["VlensClient", "configure_logging_from_env", "logger", "new_request_id"]

logger: Final = logging.getLogger("vlens_async")

LOGIN_PATH: Final = "/api/credentials/Login"
REFRESH_PATH: Final = "/api/credentials/RefreshToken"
EXISTENCE_PATH: Final = "/api/DigitalIdentity/CheckExistenceOfEmailOrPhone"
PHONE_STEP_PATH: Final = "/api/DigitalIdentity/Register/StepVerifyPhone"
REGISTER_PATH: Final = "/api/DigitalIdentity/Register"
FRONT_PATH: Final = "/api/DigitalIdentity/verify/id/front"
BACK_PATH: Final = "/api/DigitalIdentity/verify/id/back"
LIVENESS_PATH: Final = "/api/DigitalIdentity/verify/liveness/multi"
LINK_PATH: Final = "/api/DigitalIdentity/LinkUserWithExistingTransaction"
IMAGES_PATH: Final = "/api/DigitalIdentity/GetUserDigitalIdentityImages"
STEP_IMAGE_PATH: Final = "/api/DigitalIdentity/GetStepImage"

_DEFAULT_TIMEOUTS: Final = Timeouts()
_DEFAULT_RETRY: Final = RetryPolicy()

T = TypeVar("T")
_Model = TypeVar("_Model", bound=EnvelopeModel)


def configure_logging_from_env(environ: Mapping[str, str] = os.environ) -> None:
    """``VLENS_LOG=debug`` turns on the ``vlens_async`` logger at DEBUG, to stderr.

    Without it the library adds no handler (the application decides where logs go).
    """
    if environ.get("VLENS_LOG", "").strip().lower() != "debug":
        return
    logger.setLevel(logging.DEBUG)
    if not any(getattr(h, "_vlens_env", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler._vlens_env = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


configure_logging_from_env()


@attrs.define
class _Shared:
    """What a client and all its views share: the API key and the session (and how its
    connections go out)."""

    api_key: str = attrs.field(repr=False)
    base_url: str
    connector_limit: int
    transport: TransportOptions
    state: Literal["new", "open", "closed"] = "new"
    session: aiohttp.ClientSession | None = attrs.field(default=None, repr=False)
    telemetry: Telemetry = attrs.field(default=NO_TELEMETRY, repr=False)


def _verification_decoder(
    sent_transaction_id: str | None, request_id: str
) -> Callable[[Any], VerificationResponse]:
    def decode(payload: Any) -> VerificationResponse:
        if not _wire.is_envelope(payload):
            raise ResponseDecodeError("the response is not the Vlens envelope")
        model = _wire.structure(payload, VerificationResponse)
        return attrs.evolve(model, sent_transaction_id=sent_transaction_id, request_id=request_id)

    return decode


def _envelope_decoder(data_type: type[T]) -> Callable[[Any], Envelope[T]]:
    target: Any = Envelope[data_type]  # type: ignore[valid-type]

    def decode(payload: Any) -> Envelope[T]:
        if not _wire.is_envelope(payload):
            raise ResponseDecodeError("the response is not the Vlens envelope")
        result: Envelope[T] = _wire.structure(payload, target)
        return result

    return decode


def _token_decoder(data_type: type[T]) -> Callable[[Any], Envelope[T]]:
    # An access token goes into the Authorization header of later calls: one that cannot (a CR,
    # LF or other control character, non-ASCII) is refused here, as a bad answer, before aiohttp
    # would refuse it with a bare ValueError at the next call. The message never holds it.
    plain = _envelope_decoder(data_type)

    def decode(payload: Any) -> Envelope[T]:
        envelope = plain(payload)
        token = getattr(envelope.data, "access_token", None)
        if isinstance(token, str) and not header_safe(token):
            raise ResponseDecodeError(
                "the service returned an unusable access token (not a header-safe string)"
            )
        return envelope

    return decode


def _require_data(envelope: Envelope[T], request_id: str, path: str) -> T:
    if envelope.data is None:
        raise ResponseDecodeError(
            f"{path}: the response has no data",
            request_id=request_id,
            path=path,
            envelope=envelope,
        )
    return envelope.data


# Request bodies are encoded on the loop up to this many image bytes: base64 (pybase64, SIMD)
# and the splice run at about 12 GB/s (0.03 ms for a 366 KB scan, 0.35 ms for 4 MiB), while a hop
# to a thread costs more CPU than that, and a wait for the GIL (issue 14: py-spy put about 0.5 ms
# of the loop thread per bulk applicant in those hops). OFFLOAD_THRESHOLD_BYTES decides responses.
_ENCODE_OFFLOAD_BYTES: Final = 4 * 1024 * 1024


async def _encode_images(fields: Mapping[str, Any], images: Mapping[str, bytes]) -> bytes:
    # base64 + JSON of many megabytes holds the loop for milliseconds: in a thread when that big.
    if sum(len(data) for data in images.values()) > _ENCODE_OFFLOAD_BYTES:
        return await asyncio.to_thread(_wire.encode_body, fields, images)
    return _wire.encode_body(fields, images)


async def _within(
    awaitable: Awaitable[T],
    deadline_at: float | None,
    request_id: str,
    method: str,
    path: str,
) -> T:
    """Await ``awaitable`` for what is left of a call's deadline; APITimeoutError after that."""
    left = None if deadline_at is None else deadline_at - time.monotonic()
    try:
        if left is not None and left <= 0:
            raise TimeoutError
        async with asyncio.timeout(left):
            return await awaitable
    except TimeoutError:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never started when the deadline had already passed
        raise APITimeoutError(
            f"{method} {path} failed: the call's deadline ran out while renewing credentials",
            request_id=request_id,
            method=method,
            path=path,
        ) from None


def _optional(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


class VlensClient:
    """An asyncio client for the Vlens Digital Identity API.

    Use it as an async context manager; it owns one aiohttp session (``connector_limit``
    connections). Using it before ``async with`` or after close raises
    :class:`~vlens_async.errors.ClientClosedError`; a client left open warns (ResourceWarning).

    Credentials: ``api_key`` goes on every call; ``access_token`` (an end user's token) or
    ``auth`` (an :class:`~vlens_async.auth.AuthProvider`, such as
    :class:`~vlens_async.auth.AdminLogin`) supplies the bearer token. ``tenancy_name`` and
    ``language`` (``"en"``/``"ar"``) become the ``TenancyName`` and ``Accept_Language`` headers.

    ``timeouts`` and ``retry`` are the defaults for every call (each call may override them);
    ``prepare_images`` runs documents and faces through :mod:`vlens_async.images` before sending
    (each call may override it with ``prepare=``). Plain ``http://`` is refused for hosts other
    than loopback unless ``allow_insecure_http``.

    How connections go out (aiohttp's names and meanings; views share them with the session):
    ``proxy`` (``http://`` or ``https://``; credentials in it, percent-encoded, or as
    ``proxy_auth``, an ``aiohttp.BasicAuth``, which aiohttp 3.14 deprecates; they are sent
    UTF-8 encoded, as RFC 7617, curl and browsers do), ``trust_env``
    (the proxy from ``HTTPS_PROXY``, honouring ``NO_PROXY``, read when the client opens; unlike
    aiohttp's ``trust_env`` it never reads ``~/.netrc``: no credentials from there reach the
    API), ``ssl`` (an
    :class:`ssl.SSLContext`: a private CA bundle, a client certificate for mutual TLS; ``None``
    for the system's CAs) and ``trace_configs`` (aiohttp ``TraceConfig`` objects). TLS
    certificates are always verified: ``ssl=False``, or a context that does not verify, raises
    :class:`~vlens_async.errors.ConfigurationError`. A certificate that is not trusted raises
    :class:`~vlens_async.errors.UntrustedCertificateError`, a proxy's refusal
    :class:`~vlens_async.errors.ProxyError` (both
    :class:`~vlens_async.errors.APIConnectionError`). Proxy credentials never appear in a repr,
    a log line or a message.

    ``max_response_bytes`` bounds every response body, as sent and once inflated (default
    :data:`~vlens_async.config.DEFAULT_MAX_RESPONSE_BYTES`, 64 MiB, far above the largest real
    answer, a downloaded step image); past it a call raises
    :class:`~vlens_async.errors.ResponseTooLargeError` without reading the rest.

    ``telemetry`` reports every call, flow step and ``verify()`` of this client and its views as
    spans and metrics: pass :class:`vlens_async.otel.OpenTelemetry` (the ``otel`` extra). Without
    it nothing is reported and OpenTelemetry is never imported. An exception raised inside it is
    logged (its type, once) and ignored: it never fails a call or loses a result.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        access_token: str | None = None,
        auth: AuthProvider | None = None,
        tenancy_name: str | None = None,
        language: str | None = None,
        timeouts: Timeouts = _DEFAULT_TIMEOUTS,
        retry: RetryPolicy = _DEFAULT_RETRY,
        connector_limit: int = DEFAULT_CONNECTOR_LIMIT,
        prepare_images: bool = True,
        allow_insecure_http: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        proxy: str | None = None,
        proxy_auth: aiohttp.BasicAuth | None = None,
        trust_env: bool = False,
        ssl: ssl.SSLContext | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        if not api_key:
            raise ConfigurationError("api_key is required")
        check_header_value(api_key, "api_key")
        if tenancy_name:
            check_header_value(tenancy_name, "tenancy_name")
        if access_token is not None and auth is not None:
            raise ConfigurationError("pass access_token or auth, not both")
        config = ClientConfig(
            base_url=base_url,
            tenancy_name=tenancy_name,
            language=language,
            timeouts=timeouts,
            retry=retry,
            connector_limit=connector_limit,
            prepare_images=prepare_images,
            allow_insecure_http=allow_insecure_http,
            max_response_bytes=max_response_bytes,
        )
        transport = TransportOptions.of(
            proxy=proxy,
            proxy_auth=proxy_auth,
            trust_env=trust_env,
            ssl=ssl,
            trace_configs=trace_configs,
        )
        base = config.base_url.rstrip("/")
        self._shared = _Shared(
            api_key=api_key, base_url=base, connector_limit=connector_limit, transport=transport
        )
        if telemetry is not None:
            self._shared.telemetry = guarded(telemetry)  # its failures never reach a call
        self._owner = True
        self._init_view(config, StaticToken(access_token) if access_token is not None else auth)

    def _init_view(self, config: ClientConfig, auth: AuthProvider | None) -> None:
        self._config = config
        self._auth = auth
        headers = {
            "ApiKey": self._shared.api_key,
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }
        if config.tenancy_name:
            headers["TenancyName"] = config.tenancy_name
        if config.language:
            headers["Accept_Language"] = config.language
        self._base_headers: Mapping[str, str] = headers

    # --- lifecycle ---

    async def __aenter__(self) -> VlensClient:
        if not self._owner:
            self._session()  # a view only checks that its parent is open
            return self
        if self._shared.state == "closed":
            raise ClientClosedError("this client is closed; create a new one")
        if self._shared.state == "open":
            raise ConfigurationError("this client is already open")
        self._shared.session = open_session(
            self._shared.transport,
            base_url=self._shared.base_url,
            limit=self._shared.connector_limit,
            timeout=aiohttp.ClientTimeout(total=None),  # every request sets its own
        )
        self._shared.state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (owner only; closing a view does nothing). Idempotent."""
        if not self._owner:
            return
        session, self._shared.session = self._shared.session, None
        self._shared.state = "closed"
        if session is not None:
            await session.close()

    @property
    def closed(self) -> bool:
        """True once the client (or, for a view, its parent) has been closed."""
        return self._shared.state == "closed"

    @property
    def base_url(self) -> str:
        """The service this client talks to (shared by its views)."""
        return self._shared.base_url

    @property
    def prepare_images(self) -> bool:
        """Whether images go through the preprocessor before sending (the default of every
        call's ``prepare``, and of :meth:`transaction` and :meth:`verify`)."""
        return self._config.prepare_images

    @property
    def telemetry(self) -> Telemetry:
        """Where this client's calls and flows are reported (the ``telemetry`` given to the
        constructor, shared by its views; a no-op without one)."""
        return unguarded(self._shared.telemetry)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        shared = getattr(self, "_shared", None)
        if getattr(self, "_owner", False) and shared is not None and shared.state == "open":
            _warn(
                f"unclosed {self!r}: use 'async with VlensClient(...)' or await close()",
                ResourceWarning,
                source=self,
            )

    def __repr__(self) -> str:
        view = "" if self._owner else ", view=True"
        proxy = self._shared.transport.proxy  # never with credentials (TransportOptions)
        via = f", proxy={proxy!r}" if proxy else ""
        return (
            f"VlensClient(base_url={self._shared.base_url!r}, auth={self._auth!r}, "
            f"state={self._shared.state!r}{via}{view})"
        )

    def _session(self) -> aiohttp.ClientSession:
        session = self._shared.session
        if self._shared.state != "open" or session is None or session.closed:
            raise ClientClosedError(
                "the client is not open: use 'async with VlensClient(...) as client'"
                if self._shared.state == "new"
                else "the client is closed"
            )
        return session

    # --- views ---

    def with_options(
        self,
        *,
        access_token: str | NotGiven | None = NOT_GIVEN,
        auth: AuthProvider | NotGiven | None = NOT_GIVEN,
        tenancy_name: str | NotGiven | None = NOT_GIVEN,
        language: str | NotGiven | None = NOT_GIVEN,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
        prepare_images: bool | NotGiven = NOT_GIVEN,
        max_response_bytes: int | NotGiven = NOT_GIVEN,
    ) -> VlensClient:
        """A light view sharing this client's session, with some options replaced.

        The view is as open or closed as its parent; closing it does nothing (the parent owns
        the session). ``access_token`` replaces the credentials with that token.
        """
        if not isinstance(access_token, NotGiven) and not isinstance(auth, NotGiven):
            raise ConfigurationError("pass access_token or auth, not both")
        new_auth: AuthProvider | None = self._auth
        if not isinstance(access_token, NotGiven):
            new_auth = None if access_token is None else StaticToken(access_token)
        elif not isinstance(auth, NotGiven):
            new_auth = auth
        config = attrs.evolve(
            self._config,
            tenancy_name=given_or(tenancy_name, self._config.tenancy_name),
            language=given_or(language, self._config.language),
            timeouts=given_or(timeouts, self._config.timeouts),
            retry=given_or(retry, self._config.retry),
            prepare_images=given_or(prepare_images, self._config.prepare_images),
            max_response_bytes=given_or(max_response_bytes, self._config.max_response_bytes),
        )
        view = object.__new__(VlensClient)
        view._shared = self._shared
        view._owner = False
        view._init_view(config, new_auth)
        return view

    def for_user(self, access_token: str) -> VlensClient:
        """A view that calls as the end user holding ``access_token`` (shares the session)."""
        return self.with_options(access_token=access_token)

    # --- the request path ---

    def _headers(self, request_id: str, has_body: bool, token: str | None) -> dict[str, str]:
        headers = dict(self._base_headers)
        headers["X-Request-Id"] = request_id
        if has_body:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        decode: Callable[[Any], _Model],
        *,
        request_id: str,
        transaction_id: str | None = None,
        **options: Any,
    ) -> _Model:
        # One logical call, whatever its attempts and renewals, is one telemetry scope.
        call = self._shared.telemetry.call
        with call(method, path, request_id=request_id, transaction_id=transaction_id) as scope:
            return await self._call_in(
                scope, method, path, decode, request_id=request_id, **options
            )

    async def _call_in(
        self,
        scope: CallScope,
        method: str,
        path: str,
        decode: Callable[[Any], _Model],
        *,
        request_id: str,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        use_auth: bool = True,
        idempotent: bool = True,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> _Model:
        session = self._session()
        limits = given_or(timeouts, self._config.timeouts)
        policy = given_or(retry, self._config.retry)
        deadline_at = None if limits.deadline is None else time.monotonic() + limits.deadline
        retryable = partial(
            is_retryable, policy=policy, idempotent=idempotent, not_sent=connection_not_established
        )
        auth = self._auth if use_auth else None
        renewed = False
        while True:
            token = (
                await self._token(auth, deadline_at, request_id, method, path)
                if auth is not None
                else None
            )
            request = Request(
                method=method,
                path=path,
                headers=self._headers(request_id, body is not None, token),
                request_id=request_id,
                body=body,
                params=params,
            )

            attempt = partial(self._attempt, scope, session, request, decode, limits)
            try:
                return await run_with_retries(
                    attempt,
                    policy=policy,
                    deadline_at=deadline_at,
                    retryable=retryable,
                    request_id=request_id,
                    method=method,
                    path=path,
                )
            except AuthenticationError:
                if renewed or auth is None:
                    raise
                renew = auth.on_unauthorized(self, token)
                if not await _within(renew, deadline_at, request_id, method, path):
                    raise
                renewed = True
                logger.debug("%s %s: 401, credentials renewed, trying once more", method, path)

    async def _token(
        self,
        auth: AuthProvider,
        deadline_at: float | None,
        request_id: str,
        method: str,
        path: str,
    ) -> str | None:
        # A login or refresh is a call of its own (with the client's own timeouts), shared by
        # every caller waiting for it; this call stops waiting when its deadline passes.
        token = await _within(auth.get_token(self), deadline_at, request_id, method, path)
        if token:
            # A provider of the user's own could hand over anything: ours, never aiohttp's
            # bare ValueError at the request (the message names the source, not the value).
            check_header_value(token, "the token from the auth provider")
        return token

    async def _attempt(
        self,
        scope: CallScope,
        session: aiohttp.ClientSession,
        request: Request,
        decode: Callable[[Any], _Model],
        limits: Timeouts,
        number: int,
        left: float | None,
    ) -> _Model:
        # One attempt gets its own timeout, never more than what is left of the call's deadline.
        total = limits.per_attempt if left is None else min(limits.per_attempt, left)
        client_timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=limits.connect, sock_read=limits.read
        )
        if session.closed:
            # Closed while this call waited to retry: say so, not aiohttp's bare RuntimeError.
            session = self._session()
        scope.attempt(number)
        try:
            return await send(
                session,
                self._shared.base_url,
                request,
                decode,
                client_timeout=client_timeout,
                attempt=number,
                max_response_bytes=self._config.max_response_bytes,
                on_status=scope.response,
                tls=self._shared.transport.ssl,
            )
        except APIError as exc:
            scope.attempt_failed(exc)
            raise

    async def _data_call(
        self,
        method: str,
        path: str,
        data_type: type[T],
        *,
        request_id: str | None,
        transaction_id: str | None = None,
        fields: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        use_auth: bool,
        idempotent: bool = True,
        timeouts: Timeouts | NotGiven,
        retry: RetryPolicy | NotGiven,
    ) -> T:
        rid = request_id or new_request_id()
        carries_token = data_type in (Tokens, RegistrationResult)
        envelope = await self._call(
            method,
            path,
            (_token_decoder if carries_token else _envelope_decoder)(data_type),
            request_id=rid,
            transaction_id=transaction_id,
            body=None if fields is None else _wire.dumps(dict(fields)),
            params=params,
            use_auth=use_auth,
            idempotent=idempotent,
            timeouts=timeouts,
            retry=retry,
        )
        return _require_data(envelope, rid, path)

    async def _verify_call(
        self,
        path: str,
        fields: dict[str, Any],
        images: Mapping[str, bytes],
        *,
        transaction_id: str | None,
        request_id: str,
        timeouts: Timeouts | NotGiven,
        retry: RetryPolicy | NotGiven,
    ) -> VerificationResponse:
        body = await _encode_images(fields, images)
        return await self._call(
            "POST",
            path,
            _verification_decoder(transaction_id, request_id),
            request_id=request_id,
            transaction_id=transaction_id,
            body=body,
            timeouts=timeouts,
            retry=retry,
        )

    # --- verification ---

    async def scan_id_front(
        self,
        image: ImageInput,
        *,
        transaction_id: str | None = None,
        client_transaction_id: str | None = None,
        name_check_value: str | None = None,
        get_extracted_data: bool = True,
        request_id: str | None = None,
        country: str | None = None,
        prepare: bool | NotGiven = NOT_GIVEN,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> VerificationResponse:
        """Send the front of the national ID (``POST /api/DigitalIdentity/verify/id/front``).

        Without ``transaction_id`` a new UUID is generated here (as the official iOS SDK does), so
        a retried first scan can never open a second transaction; read it back from
        ``response.transaction_id``. ``request_id``, when given, is sent in the body and used as
        the ``X-Request-Id`` header. Raises the typed error on any failure.
        """
        return await self._scan(
            FRONT_PATH,
            image,
            transaction_id=transaction_id,
            client_transaction_id=client_transaction_id,
            name_check_value=name_check_value,
            get_extracted_data=get_extracted_data,
            request_id=request_id,
            country=country,
            prepare=prepare,
            timeouts=timeouts,
            retry=retry,
        )

    async def scan_id_back(
        self,
        image: ImageInput,
        *,
        transaction_id: str | None = None,
        client_transaction_id: str | None = None,
        name_check_value: str | None = None,
        get_extracted_data: bool = True,
        request_id: str | None = None,
        country: str | None = None,
        prepare: bool | NotGiven = NOT_GIVEN,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> VerificationResponse:
        """Send the back of the national ID (``POST /api/DigitalIdentity/verify/id/back``).

        Same options as :meth:`scan_id_front`; pass the front's ``transaction_id`` (either side
        may go first: the first one without an id gets a generated one).
        """
        return await self._scan(
            BACK_PATH,
            image,
            transaction_id=transaction_id,
            client_transaction_id=client_transaction_id,
            name_check_value=name_check_value,
            get_extracted_data=get_extracted_data,
            request_id=request_id,
            country=country,
            prepare=prepare,
            timeouts=timeouts,
            retry=retry,
        )

    async def _scan(
        self,
        path: str,
        image: ImageInput,
        *,
        transaction_id: str | None,
        client_transaction_id: str | None,
        name_check_value: str | None,
        get_extracted_data: bool,
        request_id: str | None,
        country: str | None,
        prepare: bool | NotGiven,
        timeouts: Timeouts | NotGiven,
        retry: RetryPolicy | NotGiven,
    ) -> VerificationResponse:
        self._session()  # fail fast, before any image work
        tid = transaction_id or new_transaction_id()
        ready = await _uploads.upload_document(image, prepare=self._prepares(prepare))
        data = _uploads.wire_bytes(ready)
        fields = {
            "transaction_id": tid,
            "getExtractedData": get_extracted_data,
            **_optional(
                client_transaction_id=client_transaction_id,
                name_check_value=name_check_value,
                request_id=request_id,
                country=country,
            ),
        }
        return await self._verify_call(
            path,
            fields,
            {"image": data},
            transaction_id=tid,
            request_id=request_id or new_request_id(),
            timeouts=timeouts,
            retry=retry,
        )

    async def check_liveness(
        self,
        faces: Sequence[ImageInput] | PreparedFaces,
        *,
        id_front: ImageInput,
        transaction_id: str,
        client_transaction_id: str | None = None,
        name_check_value: str | None = None,
        get_extracted_data: bool = True,
        request_id: str | None = None,
        country: str | None = None,
        prepare: bool | NotGiven = NOT_GIVEN,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> VerificationResponse:
        """Send three face frames with the ID front (``POST .../verify/liveness/multi``).

        ``faces`` is three images of the same person captured within 0.5 s, or a
        :class:`~vlens_async.images.PreparedFaces`. Both sides of the ID must have succeeded on
        ``transaction_id`` first. A 2xx whose ``services.liveness`` is false is returned, not
        raised: read ``response.services.liveness`` and ``response.validated``.
        """
        self._session()
        if not transaction_id:
            raise ConfigurationError("check_liveness needs the transaction_id of the ID scans")
        faces = _uploads.three_frames(faces)
        front, frames = await self._liveness_images(faces, id_front, self._prepares(prepare))
        fields = {
            "transaction_id": transaction_id,
            "getExtractedData": get_extracted_data,
            **_optional(
                client_transaction_id=client_transaction_id,
                name_check_value=name_check_value,
                request_id=request_id,
                country=country,
            ),
        }
        images = {"image": front, "face_1": frames[0], "face_2": frames[1], "face_3": frames[2]}
        return await self._verify_call(
            LIVENESS_PATH,
            fields,
            images,
            transaction_id=transaction_id,
            request_id=request_id or new_request_id(),
            timeouts=timeouts,
            retry=retry,
        )

    async def _liveness_images(
        self, faces: _uploads.Faces, id_front: ImageInput, prepare: bool
    ) -> tuple[bytes, tuple[bytes, bytes, bytes]]:
        frames = faces.frames if isinstance(faces, PreparedFaces) else tuple(faces)
        # Fast path (no tasks, no threads) when everything is already bytes or prepared.
        ready = [_uploads.ready_now(image, prepare=prepare) for image in (id_front, *frames)]
        if all(image is not None for image in ready):
            a, b, c, d = (_uploads.wire_bytes(image) for image in ready if image is not None)
            return a, (b, c, d)
        front, prepared = await asyncio.gather(
            _uploads.upload_document(id_front, prepare=prepare),
            _uploads.upload_faces(faces, prepare=prepare),
        )
        return _uploads.wire_bytes(front), _uploads.face_bytes(prepared)

    def _prepares(self, prepare: bool | NotGiven) -> bool:
        return given_or(prepare, self._config.prepare_images)

    async def link_user_to_transaction(
        self,
        transaction_id: str,
        *,
        get_extracted_data: bool = True,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> VerificationResponse:
        """Link the user of this client's token to a transaction scanned with the API key only
        (``POST /api/DigitalIdentity/LinkUserWithExistingTransaction``)."""
        rid = request_id or new_request_id()
        body = _wire.dumps(
            {"transactionId": transaction_id, "getExtractedData": get_extracted_data}
        )
        return await self._call(
            "POST",
            LINK_PATH,
            _verification_decoder(transaction_id, rid),
            request_id=rid,
            transaction_id=transaction_id,
            body=body,
            timeouts=timeouts,
            retry=retry,
        )

    # --- admin: stored images ---

    async def list_identity_images(
        self,
        email_or_phone_number: str,
        *,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> IdentityImageRefs:
        """File names of a user's stored verification images (admin token with the Requests
        permission; ``GET /api/DigitalIdentity/GetUserDigitalIdentityImages``)."""
        return await self._data_call(
            "GET",
            IMAGES_PATH,
            IdentityImageRefs,
            request_id=request_id,
            params={"emailOrPhoneNumber": email_or_phone_number},
            use_auth=True,
            timeouts=timeouts,
            retry=retry,
        )

    async def download_step_image(
        self,
        transaction_id: str,
        file_name: str,
        *,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> bytes:
        """Download one stored image and return its bytes, decoded from base64
        (``GET /api/DigitalIdentity/GetStepImage``; admin token, as above)."""
        step = await self._data_call(
            "GET",
            STEP_IMAGE_PATH,
            StepImage,
            request_id=request_id,
            transaction_id=transaction_id,
            params={"TransactionId": transaction_id, "FileName": file_name},
            use_auth=True,
            timeouts=timeouts,
            retry=retry,
        )
        if len(step.image) > OFFLOAD_THRESHOLD_BYTES:
            return await asyncio.to_thread(_wire.b64decode, step.image)
        return _wire.b64decode(step.image)

    # --- credentials and registration ---

    async def login(
        self,
        username_or_email: str,
        password: str,
        *,
        tenancy_name: str | None = None,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> Tokens:
        """Log an admin in (``POST /api/credentials/Login``); ``tenancy_name`` defaults to the
        client's. Most code passes :class:`~vlens_async.auth.AdminLogin` as ``auth`` instead."""
        tenancy = tenancy_name or self._config.tenancy_name
        if not tenancy:
            raise ConfigurationError("login needs a tenancy_name")
        client = self if tenancy == self._config.tenancy_name else self._tenancy_view(tenancy)
        return await client._data_call(
            "POST",
            LOGIN_PATH,
            Tokens,
            request_id=request_id,
            fields={
                "tenancyName": tenancy,
                "userNameOrEmailAddress": username_or_email,
                "password": password,
            },
            use_auth=False,
            timeouts=timeouts,
            retry=retry,
        )

    def _tenancy_view(self, tenancy_name: str) -> VlensClient:
        return self.with_options(tenancy_name=tenancy_name)

    async def refresh_token(
        self,
        refresh_token: str,
        *,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> Tokens:
        """Exchange a refresh token for a new access token (``POST /api/credentials/RefreshToken``).

        The server may rotate the refresh token: use ``tokens.current_refresh_token`` next. Not
        idempotent (a rotation voids the token sent, so a retry after a lost reply would send a
        dead one): retried like :meth:`request_phone_otp`.
        """
        return await self._data_call(
            "POST",
            REFRESH_PATH,
            Tokens,
            request_id=request_id,
            fields={"refreshToken": refresh_token},
            use_auth=False,
            idempotent=False,
            timeouts=timeouts,
            retry=retry,
        )

    async def check_existence(
        self,
        *,
        phone_number: str | None = None,
        email: str | None = None,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> ExistenceResult:
        """Whether an account already uses this phone number or e-mail address
        (``POST /api/DigitalIdentity/CheckExistenceOfEmailOrPhone``)."""
        if phone_number is None and email is None:
            raise ConfigurationError("pass phone_number or email")
        return await self._data_call(
            "POST",
            EXISTENCE_PATH,
            ExistenceResult,
            request_id=request_id,
            fields=_optional(phoneNumber=phone_number, email=email),
            use_auth=False,
            timeouts=timeouts,
            retry=retry,
        )

    async def request_phone_otp(
        self,
        phone_number: str,
        *,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> PhoneOtpResult:
        """Send a one-time password by SMS (``POST .../Register/StepVerifyPhone``).

        Not idempotent (each call sends an SMS), so it is retried only when the request never
        reached the server, or on a 429.
        """
        return await self._data_call(
            "POST",
            PHONE_STEP_PATH,
            PhoneOtpResult,
            request_id=request_id,
            fields={"phoneNumber": phone_number},
            use_auth=False,
            idempotent=False,
            timeouts=timeouts,
            retry=retry,
        )

    async def verify_phone_otp(
        self,
        phone_number: str,
        otp_request_id: str,
        otp: str,
        *,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> PhoneOtpResult:
        """Check the one-time password the user received (``POST .../Register/StepVerifyPhone``).

        Not idempotent (the password is single-use): retried like :meth:`request_phone_otp`.
        """
        return await self._data_call(
            "POST",
            PHONE_STEP_PATH,
            PhoneOtpResult,
            request_id=request_id,
            fields={
                "phoneNumber": phone_number,
                "phoneNumberOtpRequestId": otp_request_id,
                "phoneNumberOtp": otp,
            },
            use_auth=False,
            idempotent=False,
            timeouts=timeouts,
            retry=retry,
        )

    async def register(
        self,
        phone_number: str,
        password: str,
        *,
        otp: str,
        otp_request_id: str,
        email: str | None = None,
        request_id: str | None = None,
        timeouts: Timeouts | NotGiven = NOT_GIVEN,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
    ) -> RegistrationResult:
        """Create an end-user account (``POST /api/DigitalIdentity/Register``) and return its
        access token; use it with :meth:`for_user`. Not idempotent: retried like
        :meth:`request_phone_otp`."""
        return await self._data_call(
            "POST",
            REGISTER_PATH,
            RegistrationResult,
            request_id=request_id,
            fields={
                "phoneNumber": phone_number,
                "password": password,
                "phoneNumberOtp": otp,
                "phoneNumberOtpRequestId": otp_request_id,
                **_optional(email=email),
            },
            use_auth=False,
            idempotent=False,
            timeouts=timeouts,
            retry=retry,
        )

    # --- the flow (vlens_async.flow, which talks back to this client through FlowClient) ---

    def transaction(
        self,
        transaction_id: str | None = None,
        *,
        client_transaction_id: str | None = None,
        name_check_value: str | None = None,
        max_liveness_attempts: int | None = None,
        get_extracted_data: bool = True,
        prepare: bool | NotGiven = NOT_GIVEN,
    ) -> Transaction:
        """A :class:`~vlens_async.Transaction` on this client: the step-by-step flow.

        The options are the Transaction's own: ``max_liveness_attempts`` (``None`` for the flow's
        default, :data:`vlens_async.flow.DEFAULT_MAX_LIVENESS_ATTEMPTS`), ``get_extracted_data``
        and ``prepare`` (run the image preprocessor before each upload; not given, this client's
        :attr:`prepare_images`).
        """
        return Transaction(
            self,
            transaction_id,
            client_transaction_id=client_transaction_id,
            name_check_value=name_check_value,
            max_liveness_attempts=(
                DEFAULT_MAX_LIVENESS_ATTEMPTS
                if max_liveness_attempts is None
                else max_liveness_attempts
            ),
            get_extracted_data=get_extracted_data,
            prepare=prepare,
        )

    async def verify(
        self,
        front: ImageInput,
        back: ImageInput,
        faces: Sequence[ImageInput] | PreparedFaces,
        **options: Any,
    ) -> VerificationOutcome:
        """Run the whole verification (front, back, liveness) pipelined; see
        :func:`vlens_async.flow.verify` for the options."""
        return await verify(self, front, back, faces, **options)
