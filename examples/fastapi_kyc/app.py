"""The reference integration: a FastAPI app that verifies its users' national IDs with Vlens.

- One :class:`~vlens_async.VlensClient` for the process (the lifespan), and per request a view
  with the end user's token (``client.for_user(token)``) sharing its connection pool.
- Each user's :class:`~vlens_async.Transaction` kept between requests in SQLite (``store.py``):
  restored, one step taken, saved again; one verification per user, a double submit included.
- Errors as RFC 9457 problem details, worded for whom they concern (``problems.py``).
- The capture page, plain HTML and JavaScript (``static/``).

Who the user is: the page sends the end user's Vlens access token as a bearer token (the token
from ``register()`` or a login); the app keys the user's verification by a hash of it and stores
no token. In your service, ``current_user`` returns your own user id and the Vlens token you keep
for that user.

Run against Vlens: ``VLENS_API_KEY=... uvicorn examples.fastapi_kyc.app:create_app --factory``
(``VLENS_BASE_URL``, ``VLENS_TENANCY_NAME``, ``VLENS_PROXY``, ``VLENS_CA_BUNDLE``, ``KYC_DB_PATH``,
``KYC_RETENTION_HOURS`` optional); against the embedded emulator: ``python -m examples.fastapi_kyc``
(``make example``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import attrs
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import Base64Bytes, BaseModel, Field, ValidationError

from vlens_async import AuthenticationError, Transaction, VlensClient, VlensError
from vlens_async.config import DEFAULT_BASE_URL, TransportOptions, check_proxy_url
from vlens_async.flow import FlowState, Step, next_state

from . import demo, problems
from .problems import SignInAgain, VerificationEnded
from .store import KycStore

if TYPE_CHECKING:
    from vlens_async.emulator import RunningEmulator

__all__ = ["Answer", "Faces", "Settings", "create_app"]

STATIC: Final = Path(__file__).parent / "static"
MAX_SIDE_BYTES: Final = 20 * 1024 * 1024  # a phone's full-size photo of the card
MAX_FACES_BYTES: Final = 10 * 1024 * 1024  # three camera frames, base64 in JSON
PURGE_EVERY: Final = 3600.0  # seconds between sweeps of idle rows
# Asked with the API key alone when Vlens refuses a user's step: a reserved address (RFC 2606),
# no one's personal data. A key found working is trusted for KEY_CHECK_TTL seconds.
KEY_CHECK_EMAIL: Final = "key-check@example.invalid"
KEY_CHECK_TTL: Final = 60.0


def _retention_hours(value: str | float) -> float:
    hours = float(value)
    if not (math.isfinite(hours) and hours > 0):
        raise ValueError("the retention must be a number of hours above 0")
    return hours


@attrs.frozen
class Settings:
    """Where the service is, how to reach it, and where verifications are kept.

    ``proxy``: the ``http://`` or ``https://`` proxy every request to Vlens goes through
    (credentials as ``user:password@``, never shown); ``ssl``: an :class:`ssl.SSLContext`
    trusting a private CA (a TLS-inspecting proxy's), ``None`` for the system's CAs. Both are
    passed to :class:`~vlens_async.VlensClient` as they are."""

    api_key: str = attrs.field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    tenancy_name: str | None = None
    db_path: str = "kyc.db"
    retention_hours: float = attrs.field(default=24.0, converter=_retention_hours)
    proxy: str | None = attrs.field(default=None, repr=False)
    ssl: ssl.SSLContext | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        # The client's own checks now rather than at the first request: a proxy URL that is not
        # http(s)://host[:port], a context that does not verify (ConfigurationError: ValueError).
        TransportOptions.of(proxy=self.proxy, ssl=self.ssl)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """``VLENS_API_KEY`` (required), ``VLENS_BASE_URL``, ``VLENS_TENANCY_NAME``,
        ``VLENS_PROXY``, ``VLENS_CA_BUNDLE`` (a PEM file of CA certificates), ``KYC_DB_PATH``,
        ``KYC_RETENTION_HOURS``; unset or empty ones keep their defaults. A bad value stops the
        app with one line naming its variable (:class:`SystemExit`)."""
        if not environ.get("VLENS_API_KEY"):
            raise SystemExit("set VLENS_API_KEY (or run python -m examples.fastapi_kyc)")
        optional: dict[str, Any] = {
            "base_url": environ.get("VLENS_BASE_URL"),
            "tenancy_name": environ.get("VLENS_TENANCY_NAME"),
            "db_path": environ.get("KYC_DB_PATH"),
            "retention_hours": environ.get("KYC_RETENTION_HOURS"),
            "proxy": environ.get("VLENS_PROXY"),
        }
        given = {name: value for name, value in optional.items() if value}
        try:
            _retention_hours(given.get("retention_hours", 24.0))
        except ValueError:
            raise SystemExit("KYC_RETENTION_HOURS must be a number of hours above 0") from None
        try:
            if "proxy" in given:
                check_proxy_url(given["proxy"])
        except ValueError as exc:  # its message never holds the URL: it may hold a password
            raise SystemExit(f"VLENS_PROXY: {exc}") from None
        bundle = environ.get("VLENS_CA_BUNDLE")
        if bundle:
            given["ssl"] = _trusting(bundle)
        return cls(api_key=environ["VLENS_API_KEY"], **given)


def _trusting(bundle: str) -> ssl.SSLContext:
    """A verifying context that trusts the CA certificates in the PEM file ``bundle`` (instead
    of the system's); a bad file stops the app with one line. Read once, at start-up, before
    anything is served."""
    path = Path(bundle)
    if not path.is_file():
        raise SystemExit(
            f"VLENS_CA_BUNDLE {bundle}: {'not a file' if path.exists() else 'no such file'}"
        )
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        raise SystemExit(f"VLENS_CA_BUNDLE {bundle}: not a PEM file of CA certificates") from None
    except OSError as exc:
        raise SystemExit(
            f"VLENS_CA_BUNDLE {bundle}: cannot read it ({type(exc).__name__})"
        ) from None


@attrs.frozen
class User:
    """Who is asking: ``key`` identifies their verification, ``token`` is their Vlens token."""

    key: str
    token: str = attrs.field(repr=False)


def current_user(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(HTTPBearer())],
) -> User:
    """The user of this request, from ``Authorization: Bearer <Vlens access token>``: any
    bearer string is taken as the user's Vlens token (Vlens refuses a bogus one at the first
    step). Replace it with your own authentication: your user id and the token you keep."""
    token = credentials.credentials
    return User(key=hashlib.sha256(token.encode()).hexdigest(), token=token)


class Answer(BaseModel):
    """Where the user's verification stands, in plain words."""

    state: FlowState
    message: str
    verified: bool


class Faces(BaseModel):
    """The three face frames (base64 JPEG) and when each was captured (seconds)."""

    frames: Annotated[list[Base64Bytes], Field(min_length=3, max_length=3)]
    capture_times: Annotated[
        list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=3, max_length=3)
    ]


_MESSAGES: Final = {
    FlowState.NEW: "Take a photo of the front and of the back of your national ID card.",
    FlowState.FRONT_SCANNED: "We read the front of your card. Now the back, please.",
    FlowState.BACK_SCANNED: "We read the back of your card. Now the front, please.",
    FlowState.ID_SCANNED: "We read both sides of your card. Now three quick photos of your face.",
    FlowState.FAILED: "This verification did not succeed. You can start over.",
}


def answer(tx: Transaction) -> Answer:
    """The user's answer for ``tx``."""
    outcome = tx.result
    if tx.state is not FlowState.COMPLETED:
        message = _MESSAGES[tx.state]
    elif outcome.verified and not outcome.needs_review:
        message = "You are verified. Thank you!"
    else:
        message = "Thank you, we have everything. A person will check your details shortly."
    return Answer(state=tx.state, message=message, verified=outcome.verified)


def _refuse_if_finished(tx: Transaction, step: Step) -> None:
    """A finished verification takes no further step: ``TransactionClosedError`` (409
    ``verification-finished``), nothing sent, whichever step it is. The one exception is the
    liveness that completed it, sent again: the second request of a double submit, queued behind
    the first, which the transaction answers as it did the first (a step that succeeded is never
    sent twice). Without this, a side that once succeeded would be answered 200 after the end."""
    if tx.state is FlowState.FAILED or (
        tx.state is FlowState.COMPLETED and step is not Step.LIVENESS
    ):
        next_state(tx.state, step)  # the library's refusal: it raises in a finished state


class KeyCheck:
    """Whether the app's own API key works: Vlens answers 401 alike to a refused key (the
    operators' problem) and to a user's expired or bogus token (theirs: sign in again)."""

    def __init__(self, client: VlensClient) -> None:
        self._client = client
        self._lock = asyncio.Lock()
        self._good_until = -math.inf

    async def key_works(self) -> bool:
        """Ask Vlens with the key alone (once at a time; a working key is trusted for
        ``KEY_CHECK_TTL``). Other failures of the check propagate (a transient one: retry)."""
        async with self._lock:
            if time.monotonic() < self._good_until:
                return True
            try:
                await self._client.check_existence(email=KEY_CHECK_EMAIL)
            except AuthenticationError:
                return False
            self._good_until = time.monotonic() + KEY_CHECK_TTL
            return True


class Kyc:
    """The verification endpoints' logic: the user's transaction, one step, the answer."""

    def __init__(self, client: VlensClient, store: KycStore) -> None:
        self._client = client
        self._store = store
        self._key = KeyCheck(client)

    async def status(self, user: User) -> Answer:
        """Where the user's verification stands (nothing is sent, nothing is stored)."""
        snapshot = await self._store.snapshot(user.key)
        if snapshot is None:
            return Answer(state=FlowState.NEW, message=_MESSAGES[FlowState.NEW], verified=False)
        return answer(Transaction.restore(self._client, snapshot))

    async def step(
        self, user: User, step: Step, take: Callable[[Transaction], Awaitable[object]]
    ) -> Answer:
        """Restore the user's transaction, ``take`` one ``step`` on it as the user, save it."""
        async with self._store.hold(user.key) as record:
            tx = record.load(self._client.for_user(user.token))
            _refuse_if_finished(tx, step)
            try:
                await take(tx)
            except AuthenticationError as exc:
                if await self._key.key_works():
                    raise SignInAgain from exc  # the user's token was refused
                raise
            except VlensError as exc:
                if tx.state is FlowState.FAILED:
                    raise VerificationEnded(exc) from exc
                raise
            finally:  # a verdict against the step changes the transaction too: keep it
                await record.save(tx)
            return answer(tx)

    async def start_over(self, user: User) -> Answer:
        """A new verification after a failed one (nothing sent; repeating it changes nothing)."""
        async with self._store.hold(user.key) as record:
            tx = record.load(self._client)
            if tx.state is FlowState.FAILED:
                await record.start_over()
                tx = record.load(self._client)
            return answer(tx)


def _kyc(request: Request) -> Kyc:
    kyc: Kyc = request.state.kyc
    return kyc


CurrentUser = Annotated[User, Depends(current_user)]
KycService = Annotated[Kyc, Depends(_kyc)]
router = APIRouter(prefix="/api/kyc", tags=["kyc"])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (never read whole first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"The upload is larger than {limit // 2**20} MB.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"The upload is larger than {limit // 2**20} MB.")
    if not body:
        raise HTTPException(400, "The upload is empty.")
    return bytes(body)


@router.get("")
async def status(user: CurrentUser, kyc: KycService) -> Answer:
    """Where the user's verification stands."""
    return await kyc.status(user)


@router.post("/front")
async def scan_front(request: Request, user: CurrentUser, kyc: KycService) -> Answer:
    """The ID front: the image itself as the body (any image type)."""
    image = await read_body(request, MAX_SIDE_BYTES)
    return await kyc.step(user, Step.FRONT, lambda tx: tx.scan_front(image))


@router.post("/back")
async def scan_back(request: Request, user: CurrentUser, kyc: KycService) -> Answer:
    """The ID back: the image itself as the body (any image type)."""
    image = await read_body(request, MAX_SIDE_BYTES)
    return await kyc.step(user, Step.BACK, lambda tx: tx.scan_back(image))


@router.post("/liveness")
async def liveness(request: Request, user: CurrentUser, kyc: KycService) -> Answer:
    """The three face frames, as JSON (:class:`Faces`); legal once both sides succeeded."""
    try:
        faces = Faces.model_validate_json(await read_body(request, MAX_FACES_BYTES))
    except ValidationError as exc:  # answered like any invalid request (problems.py)
        raise RequestValidationError(exc.errors()) from None
    return await kyc.step(
        user,
        Step.LIVENESS,
        lambda tx: tx.check_liveness(faces.frames, capture_times=faces.capture_times),
    )


@router.post("/start-over")
async def start_over(user: CurrentUser, kyc: KycService) -> Answer:
    """Begin a new verification once the last one failed."""
    return await kyc.start_over(user)


async def _purge_forever(store: KycStore) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY)
        try:
            await store.purge()
        except sqlite3.Error as exc:  # a locked or full disk: the next sweep tries again
            problems.logger.warning("purging idle verifications failed: %s", exc)


def create_app(
    settings: Settings | None = None, *, demo_on: RunningEmulator | None = None
) -> FastAPI:
    """The app for ``settings`` (from the environment when not given); ``demo_on`` adds the
    emulator-only demo routes (a test user, sample card images) for that emulator."""
    config = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = VlensClient(
            config.api_key,
            base_url=config.base_url,
            tenancy_name=config.tenancy_name,
            proxy=config.proxy,
            ssl=config.ssl,
        )
        store = KycStore(config.db_path, retention=config.retention_hours * 3600)
        async with client, store:
            purging = asyncio.create_task(_purge_forever(store))
            try:
                yield {"kyc": Kyc(client, store), "client": client}
            finally:
                purging.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purging

    app = FastAPI(title="KYC with Vlens (reference integration)", lifespan=lifespan)
    problems.install(app)
    app.include_router(router)
    if demo_on is not None:
        app.include_router(demo.router(demo_on))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
