"""The emulator's memory: tenants, admins, users, tokens, OTPs, transactions, images, counters.

Everything here is touched only from the event loop thread (worker threads get immutable inputs
and return results). The one exception to "the loop serialises everything" is a verify step that
awaits between checking a transaction and recording into it (image storage may spill to disk):
those steps hold the transaction's lock from :attr:`EmulatorState.tx_locks`. Time for tokens and
OTPs comes from :meth:`now`, a wall clock the control API can move forward to expire things
without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

import attrs
import orjson

from .cache import LruCache
from .config import EmulatorConfig, TenantConfig
from .faults import FaultConfig, FaultPlan
from .identity import IdentityFields
from .locks import KeyedLocks
from .metrics import Metrics
from .payload import ImageHeader
from .ratelimit import SlidingWindowLimiter
from .readers import PixelBudget, Readers
from .rules import AmlCase, Issue, SrcResult
from .storage import ImageStore

__all__ = [
    "MAX_OTP_ATTEMPTS",
    "EmulatorState",
    "OtpCheck",
    "OtpRecord",
    "Principal",
    "StepRecord",
    "TenantState",
    "TokenPair",
    "Transaction",
    "User",
]

Step = Literal["front", "back", "liveness"]
_MAX_TOKENS: Final = 100_000  # oldest tokens are forgotten beyond this (bounded memory)
# Wrong codes one OTP request survives; then it is dead (4003) so 6 digits cannot be brute-forced.
MAX_OTP_ATTEMPTS: Final = 5

OtpCheck = Literal["ok", "wrong", "too_many"]
"""How an OTP check went: right code, wrong (or expired, unknown) code, or a dead request."""


@attrs.define
class TenantState:
    """A tenant's current switches (the control API may change them) and its rate limiter."""

    config: TenantConfig
    limiter: SlidingWindowLimiter | None = None

    def __attrs_post_init__(self) -> None:
        self.refresh_limiter()

    def refresh_limiter(self) -> None:
        """(Re)build the limiter after the rate-limit switches changed."""
        cfg = self.config
        self.limiter = (
            SlidingWindowLimiter(cfg.rate_per_second, cfg.rate_per_minute)
            if cfg.rate_limit
            else None
        )

    @property
    def name(self) -> str:
        """The tenancy name."""
        return self.config.name


@attrs.frozen
class Principal:
    """Who a bearer token speaks for: an admin (with permissions) or an end user."""

    kind: Literal["admin", "user"]
    tenant: str
    name: str
    user_id: int | None = None
    permissions: frozenset[str] = frozenset()


@attrs.define
class TokenRecord:
    """An issued token."""

    kind: Literal["access", "refresh"]
    principal: Principal
    expires_at: float


@attrs.frozen
class TokenPair:
    """A fresh access token and refresh token with their lifetimes (seconds)."""

    access: str = attrs.field(repr=False)
    refresh: str = attrs.field(repr=False)
    access_ttl: float
    refresh_ttl: float


@attrs.define
class User:
    """A registered end user."""

    id: int
    tenant: str
    phone: str = attrs.field(repr=False)
    email: str | None = attrs.field(repr=False)
    password: str = attrs.field(repr=False)
    transaction_ids: list[str] = attrs.Factory(list)


@attrs.define
class OtpRecord:
    """The latest OTP sent to a phone number."""

    phone: str = attrs.field(repr=False)
    request_id: str
    code: str = attrs.field(repr=False)
    expires_at: float
    confirmed: bool = False
    failed_attempts: int = 0

    @property
    def dead(self) -> bool:
        """Too many wrong codes: only a new OTP request helps."""
        return self.failed_attempts >= MAX_OTP_ATTEMPTS


@attrs.define
class StepRecord:
    """The latest attempt of one step of a transaction."""

    step: Step
    ok: bool
    error_code: int | None = None
    fields: IdentityFields | None = None
    flags: frozenset[str] = frozenset()
    issues: tuple[Issue, ...] = ()
    src: SrcResult | None = None
    aml: tuple[AmlCase, ...] = ()
    doc_type: str | None = None
    liveness: bool | None = None
    liveness_reason: str = ""
    files: dict[str, str] = attrs.Factory(dict)
    request_id: str | None = None
    client_transaction_id: str | None = None
    at: float = 0.0

    @property
    def fake(self) -> bool:
        """The card was flagged as a photocopy or screen (spoofing)."""
        return "photocopy" in self.flags or "screen" in self.flags


@attrs.define
class Transaction:
    """A verification transaction: its steps, owner and images."""

    id: str
    tenant: str
    created_at: float
    client_transaction_id: str | None = None
    user_id: int | None = None
    steps: dict[str, StepRecord] = attrs.Factory(dict)
    updated_at: float = 0.0

    def ok(self, step: Step) -> StepRecord | None:
        """The step's record when its latest attempt succeeded."""
        record = self.steps.get(step)
        return record if record is not None and record.ok else None

    def summary(self) -> dict[str, Any]:
        """Plain JSON for the control API (no PII)."""
        return {
            "transaction_id": self.id,
            "tenant": self.tenant,
            "user_id": self.user_id,
            "client_transaction_id": self.client_transaction_id,
            "steps": {
                name: {
                    "ok": r.ok,
                    "error_code": r.error_code,
                    "liveness": r.liveness,
                    "liveness_reason": r.liveness_reason or None,
                    "files": dict(r.files),
                    "validation_codes": [i.code for i in r.issues],
                }
                for name, r in self.steps.items()
            },
        }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class EmulatorState:
    """All mutable state of one emulator app."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        # Not reset either: decodes in flight across a reset give their share back.
        self.decode_budget = PixelBudget(config.decode_pixel_budget)
        self.readers = Readers(
            config.card_reader,
            config.face_reader,
            config.read_cache_size,
            self.decode_budget,
            config.decode_threads,
        )
        self.headers: LruCache[tuple[int, int], ImageHeader] = LruCache(config.read_cache_size)
        self.images = ImageStore(
            max_bytes=config.image_store_max_bytes,
            max_count=config.image_store_max_count,
            spill_dir=config.image_spill_dir,
        )
        # Not reset with the rest: a request in flight across a reset still releases its lock.
        self.tx_locks = KeyedLocks()
        self._init_mutable()

    def _init_mutable(self) -> None:
        config = self.config
        self.clock_offset = 0.0
        self.tenants: dict[str, TenantState] = {
            t.name.lower(): TenantState(t) for t in config.tenants
        }
        self.metrics = Metrics()
        self.faults = FaultPlan(config.faults, config.seed)
        self.users: dict[int, User] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.otps: dict[tuple[str, str], OtpRecord] = {}
        self.transactions: OrderedDict[str, Transaction] = OrderedDict()
        self._rng = random.Random(f"{config.seed}:state")
        self._secret = hashlib.sha256(f"vlens-emulator:{config.seed}".encode()).digest()
        self._token_serial = 0

    def close(self) -> None:
        """Let the decode threads go (the app's cleanup calls this)."""
        self.readers.close()

    async def reset(self) -> None:
        """Back to the configured start: no users, transactions, images, tokens or counters."""
        self._init_mutable()
        self.readers.clear()
        self.headers.clear()
        await self.images.clear()

    # --- time ---

    def now(self) -> float:
        """The emulator's wall clock (real time plus the control API's offset)."""
        return time.time() + self.clock_offset

    def today(self) -> date:
        """The date used for expiry checks."""
        if self.config.today is not None:
            return self.config.today
        return datetime.fromtimestamp(self.now(), UTC).date()

    # --- tenants ---

    def tenant_by_key(self, api_key: str | None) -> TenantState | None:
        """The tenant owning ``api_key`` (constant-time compare), or ``None``.

        A header that is not UTF-8 reaches us with surrogate escapes; it is compared byte for
        byte like any other wrong key (and so is ``None``), never an error.
        """
        if not api_key:
            return None
        given = api_key.encode("utf-8", "surrogatepass")
        found = None
        for tenant in self.tenants.values():
            if hmac.compare_digest(tenant.config.api_key.encode(), given):
                found = tenant
        return found

    def tenant(self, name: str | None = None) -> TenantState:
        """A tenant by name (default: the primary one); ``KeyError`` when unknown."""
        if name is None:
            return self.tenants[self.config.tenants[0].name.lower()]
        return self.tenants[name.lower()]

    def configure_tenant(self, name: str | None = None, **changes: Any) -> TenantConfig:
        """Change a tenant's switches (ntra, cso, failure_style, rate_limit, ...)."""
        tenant = self.tenant(name)
        tenant.config = attrs.evolve(tenant.config, **changes)
        tenant.refresh_limiter()
        return tenant.config

    def set_faults(self, faults: FaultConfig, seed: int | None = None) -> None:
        """Replace the fault config; the dice restart from the seed."""
        self.faults = FaultPlan(faults, self.config.seed if seed is None else seed)

    # --- tokens ---

    def _token(self, kind: Literal["access", "refresh"], principal: Principal, ttl: float) -> str:
        self._token_serial += 1
        now = self.now()
        header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
        claims = {
            "sub": principal.name,
            "tenant": principal.tenant,
            "kind": kind,
            "iat": int(now),
            "exp": int(now + ttl),
            "jti": f"{self._token_serial}-{uuid.uuid4().hex[:8]}",
        }
        payload = _b64url(orjson.dumps(claims))
        signature = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256)
        token = f"{header}.{payload}.{_b64url(signature.digest())}"
        self.tokens[token] = TokenRecord(kind, principal, now + ttl)
        while len(self.tokens) > _MAX_TOKENS:
            del self.tokens[next(iter(self.tokens))]  # dicts keep insertion order: the oldest
        return token

    def issue_tokens(self, principal: Principal) -> TokenPair:
        """A new access and refresh token for ``principal``."""
        cfg = self.config
        return TokenPair(
            access=self._token("access", principal, cfg.access_token_ttl),
            refresh=self._token("refresh", principal, cfg.refresh_token_ttl),
            access_ttl=cfg.access_token_ttl,
            refresh_ttl=cfg.refresh_token_ttl,
        )

    def issue_access(self, principal: Principal) -> str:
        """A new access token only (end users after Register)."""
        return self._token("access", principal, self.config.access_token_ttl)

    def principal_for(self, token: str, tenant: str) -> Principal | None:
        """The principal of a valid, unexpired access token of ``tenant``, else ``None``."""
        record = self.tokens.get(token)
        if record is None or record.kind != "access" or record.principal.tenant != tenant:
            return None
        if record.expires_at <= self.now():
            return None
        return record.principal

    def rotate_refresh(self, token: str, tenant: str) -> TokenPair | None:
        """Exchange a refresh token for a new pair; the old refresh token stops working."""
        record = self.tokens.get(token)
        if record is None or record.kind != "refresh" or record.principal.tenant != tenant:
            return None
        del self.tokens[token]
        if record.expires_at <= self.now():
            return None
        return self.issue_tokens(record.principal)

    # --- users and OTPs ---

    def find_user(
        self, tenant: str, phone: str | None = None, email: str | None = None
    ) -> User | None:
        """The user of ``tenant`` with this phone number or e-mail address."""
        mail = email.lower() if email else None
        for user in self.users.values():
            if user.tenant != tenant:
                continue
            if phone and user.phone == phone:
                return user
            if mail and user.email and user.email.lower() == mail:
                return user
        return None

    def send_otp(self, tenant: str, phone: str) -> OtpRecord:
        """Make (and remember) a fresh 6-digit OTP for ``phone``."""
        record = OtpRecord(
            phone=phone,
            request_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            code=f"{self._rng.randrange(1_000_000):06d}",
            expires_at=self.now() + self.config.otp_ttl,
        )
        self.otps[(tenant, phone)] = record
        return record

    def check_otp(self, tenant: str, phone: str, request_id: str | None, code: str) -> OtpCheck:
        """Check ``code`` against the live OTP of ``phone`` (and its request id, when given).

        A wrong code counts against the request; after :data:`MAX_OTP_ATTEMPTS` of them every
        check answers ``"too_many"``, even with the right code.
        """
        record = self.otps.get((tenant, phone))
        if record is None or record.expires_at <= self.now():
            return "wrong"
        if request_id and request_id != record.request_id:
            return "wrong"  # another (older) request: not a guess at this one's code
        if record.dead:
            return "too_many"
        if hmac.compare_digest(record.code, code):
            return "ok"
        record.failed_attempts += 1
        return "wrong"

    def add_user(self, tenant: str, phone: str, email: str | None, password: str) -> User:
        """Register an end user."""
        user = User(len(self.users) + 1, tenant, phone, email, password)
        self.users[user.id] = user
        return user

    # --- transactions ---

    async def create_transaction(
        self, transaction_id: str, tenant: str, client_transaction_id: str | None
    ) -> Transaction:
        """Open a transaction, evicting the oldest beyond ``max_transactions``."""
        now = self.now()
        tx = Transaction(transaction_id, tenant, now, client_transaction_id, updated_at=now)
        self.transactions[transaction_id] = tx
        self.metrics.transactions_created += 1
        cap = self.config.max_transactions
        while cap is not None and len(self.transactions) > cap:
            old_id, _ = self.transactions.popitem(last=False)
            self.metrics.forget(old_id)
            await self.images.drop_transaction(old_id)
        return tx

    def transaction(self, transaction_id: str, tenant: str | None = None) -> Transaction | None:
        """A transaction by id (and tenant, when given)."""
        tx = self.transactions.get(transaction_id)
        if tx is None or (tenant is not None and tx.tenant != tenant):
            return None
        return tx

    def latest_transaction(self, user: User) -> Transaction | None:
        """The user's most recently updated transaction that still exists."""
        found = [self.transactions[t] for t in user.transaction_ids if t in self.transactions]
        return max(found, key=lambda tx: tx.updated_at, default=None)

    def link(self, tx: Transaction, user: User) -> None:
        """Attach a transaction to an end user."""
        tx.user_id = user.id
        if tx.id not in user.transaction_ids:
            user.transaction_ids.append(tx.id)

    # --- control API views ---

    def otp_view(self, phone: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The live OTP for ``phone`` (for tests and the CLI), or ``None``."""
        name = self.tenant(tenant).name
        record = self.otps.get((name, phone))
        if record is None:
            return None
        return {
            "phoneNumber": record.phone,
            "otp": record.code,
            "phoneNumberOtpRequestId": record.request_id,
            "expired": record.expires_at <= self.now(),
            "confirmed": record.confirmed,
            "dead": record.dead,
        }

    def counters(self) -> dict[str, Any]:
        """Every counter, plus image store and cache statistics."""
        out = self.metrics.snapshot(self.faults.injected)
        out["images"] = self.images.stats()
        out["cache"] = {
            "card_hits": self.readers.cards.hits,
            "face_hits": self.readers.faces.hits,
            "header_hits": self.headers.hits,
        }
        return out
