"""The verification steps: verify/id/front, verify/id/back, verify/liveness/multi, and
LinkUserWithExistingTransaction.

Each step runs in three parts, the cheap checks first so that a request refused for a reason that
needs no pixels costs no decoding:

1. In a worker thread, touching no mutable state: parse the body and check every image without
   decoding it (base64, size, format and dimensions from the header; :mod:`.payload`).
2. On the event loop: who may act on the transaction (below), and for liveness a
   ``transaction_id`` and both sides scanned. Only then are card and face codes read
   (:class:`~.readers.Readers`: cached, decoded in threads within the emulator's pixel budget).
3. On the event loop, under the transaction's lock: the same checks again (the transaction may
   have changed while images were decoded), the ordering and consistency rules, recording the
   step and answering. It awaits while storing images (a spill to disk), so steps of one
   transaction run one after the other, and a front and a back sent at once are still
   cross-checked (3101).

Who may act on a transaction: anyone with the tenant's ApiKey while nobody has linked it (the
seeds' flow: capture with the ApiKey alone, then LinkUserWithExistingTransaction after login).
Once it is linked to a user (a verify call with that user's token, or Link), only that user's
token or an admin token with the ``Requests`` permission may read or change it: the ApiKey alone
is a 401, an admin token without the permission a 403, another user's token 5000 (as Link has
always answered), each before anything is decoded or changed.

Rules, in the order they are checked (a failed check is recorded as the step's latest attempt):
- a scan of an image without a card code takes the other side's fields, or fields derived from the
  transaction id (``unknown_documents="derive"``), or fails with 3011 (``"reject"``);
- the front endpoint given a back (and vice versa): 7001 / 7002;
- front and back national IDs differ: 3101; the back shows an expired card: 3010;
- SRC problems and a ``name_check_value`` that does not match (3012, our choice) are soft
  failures: validation errors on a 200;
- liveness before both sides succeeded (or on an unknown transaction): 5000;
- liveness false for identical frames, frames of different people, or a face that is not the
  card holder's; a new scan of either side clears an earlier liveness result.
Validated (``isVerificationProcessCompleted``) = both sides and liveness passed, with no spoofing
and no validation errors; verified (``isDigitalIdentityVerified``) = validated and the tenant's
enabled NTRA/CSO checks pass. An AML hit is reported, not decided.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

import attrs
from aiohttp import web

from .config import REQUESTS_PERMISSION
from .envelopes import (
    ApiFailure,
    Ids,
    back_data,
    envelope,
    front_data,
    services_block,
    user_block,
)
from .httpio import (
    STATE_KEY,
    TENANT_KEY,
    bearer_principal,
    header_text,
    json_response,
    read_body,
    read_json,
    require_principal,
)
from .identity import IdentityFields, derive_identity
from .payload import ImageData, PayloadError, check_image, parse_body
from .readers import CardInfo, FaceInfo
from .rules import (
    NAME_MISMATCH_CODE,
    Issue,
    aml_cases,
    authorities_pass,
    check_national_id,
    is_expired,
    liveness_verdict,
    name_matches,
    src_result,
)
from .state import EmulatorState, Principal, StepRecord, TenantState, Transaction

__all__ = ["link_transaction", "liveness", "scan_back", "scan_front"]

Side = Literal["front", "back"]
ORDERING_ERROR_CODE: Final = 5000
# API.md: generic; Link has always refused another user's transaction with it.
GENERIC_ERROR_CODE: Final = 5000
_FACE_FIELDS: Final = ("face_1", "face_2", "face_3")
_FILE_SUFFIX: Final = {
    "idFrontImage": "id_front",
    "idBackImage": "id_back",
    "livenessImage": "liveness",
    "livenessFace01Image": "liveness_face1",
    "livenessFace02Image": "liveness_face2",
    "livenessFace03Image": "liveness_face3",
}


@attrs.frozen
class StepOptions:
    """The scalar fields of a verify body."""

    transaction_id: str | None
    client_transaction_id: str | None
    request_id: str | None
    name_check_value: str | None = attrs.field(repr=False)
    get_extracted_data: bool


@attrs.frozen
class ScanBody:
    """A front/back body, checked without decoding its image."""

    options: StepOptions
    image: ImageData


@attrs.frozen
class LivenessBody:
    """A liveness body, checked without decoding its images."""

    options: StepOptions
    image: ImageData
    faces: tuple[ImageData, ...]


@attrs.frozen
class ScanInput:
    """A front/back body and the card code read from its image."""

    options: StepOptions
    image: ImageData
    card: CardInfo


@attrs.frozen
class LivenessInput:
    """A liveness body and the card and face codes read from its images."""

    options: StepOptions
    image: ImageData
    card: CardInfo
    faces: tuple[tuple[ImageData, FaceInfo], ...]


def _optional_text(body: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = body.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str | int):
            raise PayloadError(400, f"'{name}' must be a string.", field=name)
        return str(value)
    return None


def parse_transaction_id(value: str | None, field: str = "transaction_id") -> str | None:
    """The canonical (lowercase, hyphenated) form of a UUID; 400 when it is not one."""
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PayloadError(400, f"'{field}' must be a UUID.", field=field) from None


def _options(body: dict[str, Any], header_request_id: str | None) -> StepOptions:
    extracted = body.get("getExtractedData", False)
    if extracted is None:
        extracted = False
    if not isinstance(extracted, bool):
        raise PayloadError(
            400, "'getExtractedData' must be true or false.", field="getExtractedData"
        )
    country = _optional_text(body, "country")
    if country is not None and country.upper() != "EG":
        raise PayloadError(
            422, "Only Egyptian national IDs (country EG) are supported.", error_code=5001
        )
    return StepOptions(
        transaction_id=parse_transaction_id(
            _optional_text(body, "transaction_id", "transactionId")
        ),
        client_transaction_id=_optional_text(body, "client_transaction_id"),
        request_id=_optional_text(body, "request_id") or header_request_id,
        name_check_value=_optional_text(body, "name_check_value"),
        get_extracted_data=extracted,
    )


def _image(state: EmulatorState, body: dict[str, Any], field: str) -> ImageData:
    cfg = state.config
    return check_image(
        field,
        body.get(field),
        max_bytes=cfg.max_image_bytes,
        max_pixels=cfg.max_image_pixels,
        cache=state.headers,
    )


def parse_scan(state: EmulatorState, body: bytes, header_request_id: str | None) -> ScanBody:
    """Worker-thread check of a scan body: parse it, check its image without decoding pixels."""
    data = parse_body(body)
    options = _options(data, header_request_id)
    return ScanBody(options, _image(state, data, "image"))


def parse_liveness(
    state: EmulatorState, body: bytes, header_request_id: str | None
) -> LivenessBody:
    """Worker-thread check of a liveness body: parse it, check the four images without decoding."""
    data = parse_body(body)
    options = _options(data, header_request_id)
    if data.get("image") in (None, "") and data.get("id_front_image") not in (None, ""):
        data["image"] = data["id_front_image"]  # either field may carry the ID front
    image = _image(state, data, "image")
    faces = tuple(_image(state, data, name) for name in _FACE_FIELDS)
    return LivenessBody(options, image, faces)


def _payload_failure(exc: PayloadError) -> ApiFailure:
    descriptions = {exc.field: [exc.message]} if exc.field else None
    return ApiFailure(exc.status, exc.message, error_code=exc.error_code, descriptions=descriptions)


_Body = TypeVar("_Body", ScanBody, LivenessBody)


async def _parse(
    request: web.Request, parse: Callable[[EmulatorState, bytes, str | None], _Body]
) -> _Body:
    state = request.app[STATE_KEY]
    body = await read_body(request)
    try:
        return await asyncio.to_thread(parse, state, body, header_text(request, "X-Request-Id"))
    except PayloadError as exc:
        raise _payload_failure(exc) from None


async def _read_card(state: EmulatorState, image: ImageData) -> CardInfo:
    try:
        return await state.readers.read_card(image)
    except PayloadError as exc:
        raise _payload_failure(exc) from None


async def _read_face(state: EmulatorState, image: ImageData) -> FaceInfo:
    try:
        return await state.readers.read_face(image)
    except PayloadError as exc:
        raise _payload_failure(exc) from None


def _check_access(tx: Transaction | None, principal: Principal | None) -> None:
    """Refuse a linked transaction to all but its user and admins with the permission.

    Unlinked transactions are open to the ApiKey alone (see the module docstring). Without this
    a request with the tenant's key could read a user's extracted data (name, phone, e-mail, ID
    number) or overwrite their steps.
    """
    if tx is None or tx.user_id is None:
        return
    if principal is None:
        raise ApiFailure(
            401,
            "This transaction is linked to a user: send that user's access token "
            "(Authorization: Bearer <token>).",
        )
    if principal.kind == "admin":
        if REQUESTS_PERMISSION not in principal.permissions:
            raise ApiFailure(403, "This token lacks the Requests permission.")
        return
    if principal.user_id != tx.user_id:
        raise ApiFailure(
            422, "The transaction is linked to another user.", error_code=GENERIC_ERROR_CODE
        )


def _scan_transaction(
    state: EmulatorState, tenant: TenantState, principal: Principal | None, tx_id: str
) -> Transaction | None:
    """The transaction a scan names (``None``: a new one) when the caller may act on it."""
    tx = state.transactions.get(tx_id)
    if tx is not None and tx.tenant != tenant.name:
        raise ApiFailure(422, "This transaction_id is already in use.", error_code=5000)
    _check_access(tx, principal)
    return tx


def _liveness_transaction(
    state: EmulatorState, tenant: TenantState, principal: Principal | None, tx_id: str
) -> Transaction:
    """The transaction liveness names, when the caller may act on it and both sides passed."""
    tx = state.transaction(tx_id, tenant.name)
    _check_access(tx, principal)
    missing = [s for s in ("front", "back") if tx is None or tx.ok(s) is None]
    if tx is None or missing:
        what = "ID front and back" if len(missing) == 2 else f"ID {missing[0]}"
        raise ApiFailure(
            422,
            f"Liveness needs the {what} of this transaction scanned successfully first.",
            error_code=ORDERING_ERROR_CODE,
        )
    return tx


def _attach_user(state: EmulatorState, tx: Transaction, principal: Principal | None) -> None:
    # A verify call made with an end user's token links the transaction to that user.
    if principal is None or principal.kind != "user" or principal.user_id is None:
        return
    user = state.users.get(principal.user_id)
    if user is not None and tx.user_id is None:
        state.link(tx, user)


async def _store_files(
    state: EmulatorState, tx: Transaction, record: StepRecord, images: dict[str, ImageData]
) -> None:
    old = tx.steps.get(record.step)
    for role, image in images.items():
        name = f"{tx.id}_{_FILE_SUFFIX[role]}.{image.extension}"
        record.files[role] = name
        await state.images.put(tx.id, name, image.b64)
    if old is not None:
        for name in set(old.files.values()) - set(record.files.values()):
            state.images.remove(tx.id, name)


def _verdict(tenant: TenantState, tx: Transaction) -> tuple[bool, bool]:
    """(validated, verified) for the transaction as it stands."""
    front, back, live = tx.ok("front"), tx.ok("back"), tx.steps.get("liveness")
    if front is None or back is None or live is None or not live.liveness:
        return False, False
    if front.fake or back.fake or front.issues or back.issues or live.issues:
        return False, False
    assert front.fields is not None
    cfg = tenant.config
    verified = authorities_pass(
        front.fields.national_id,
        ntra=cfg.ntra,
        cso=cfg.cso,
        ntra_rejects=cfg.ntra_rejects,
        cso_rejects=cfg.cso_rejects,
    )
    return True, verified


def _user(state: EmulatorState, tx: Transaction) -> dict[str, Any] | None:
    user = state.users.get(tx.user_id) if tx.user_id is not None else None
    if user is None:
        return None
    front = tx.ok("front")
    fields = front.fields if front is not None else None
    return user_block(user_id=user.id, phone=user.phone, email=user.email, fields=fields)


def _decide_scan(
    state: EmulatorState,
    tenant: TenantState,
    tx: Transaction | None,
    tx_id: str,
    side: Side,
    inp: ScanInput,
) -> tuple[StepRecord, ApiFailure | None]:
    opts = inp.options
    now = state.now()

    def failed(code: int, message: str) -> tuple[StepRecord, ApiFailure]:
        record = StepRecord(
            side,
            ok=False,
            error_code=code,
            request_id=opts.request_id,
            client_transaction_id=opts.client_transaction_id,
            at=now,
        )
        return record, ApiFailure(422, message, error_code=code)

    other = tx.ok("back" if side == "front" else "front") if tx is not None else None
    fields: IdentityFields
    card = inp.card
    if card.fields is None:
        if tenant.config.unknown_documents == "reject":
            return failed(3011, "No ID card was detected in the image.")
        fields = other.fields if other is not None and other.fields else derive_identity(tx_id)
        flags: frozenset[str] = frozenset()
    else:
        if card.side and card.side != side:
            code = 7001 if side == "front" else 7002
            return failed(code, f"The image shows the {card.side} of an ID card, not the {side}.")
        fields, flags = card.fields, card.flags
    if other is not None and other.fields and other.fields.national_id != fields.national_id:
        return failed(3101, "The ID number differs between the front and the back of the card.")
    today = state.today()
    if side == "back" and is_expired(fields, today):
        return failed(3010, "The ID card has expired.")
    issues: list[Issue] = check_national_id(fields, today)
    src = src_result(issues)
    issues.extend(_name_issues(opts.name_check_value, fields))
    aml = aml_cases(fields, flags, tenant.config.aml_watchlist)
    record = StepRecord(
        side,
        ok=True,
        fields=fields,
        flags=flags,
        issues=tuple(issues),
        src=src,
        aml=tuple(aml),
        doc_type=f"national_id_{side}",
        request_id=opts.request_id,
        client_transaction_id=opts.client_transaction_id,
        at=now,
    )
    return record, None


async def _scan(request: web.Request, side: Side) -> web.Response:
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    principal = bearer_principal(request, state)
    body = await _parse(request, parse_scan)
    tx_id = body.options.transaction_id or str(uuid.uuid4())
    _scan_transaction(state, tenant, principal, tx_id)  # before any decoding; again below
    inp = ScanInput(body.options, body.image, await _read_card(state, body.image))
    async with state.tx_locks.hold(tx_id):  # check and record atomically (module docstring)
        tx, record = await _record_scan(state, tenant, principal, side, inp, tx_id)
        return _scan_response(state, tenant, tx, record, side, inp.options)


async def _record_scan(
    state: EmulatorState,
    tenant: TenantState,
    principal: Principal | None,
    side: Side,
    inp: ScanInput,
    tx_id: str,
) -> tuple[Transaction, StepRecord]:
    """Check a scan against its transaction and record it (a failure too, then raise it)."""
    opts = inp.options
    tx = _scan_transaction(state, tenant, principal, tx_id)
    record, failure = _decide_scan(state, tenant, tx, tx_id, side, inp)
    if failure is not None and tx is None and opts.transaction_id is None:
        raise failure  # a first scan that failed opens no transaction the caller cannot name
    if tx is None:
        tx = await state.create_transaction(tx_id, tenant.name, opts.client_transaction_id)
    _attach_user(state, tx, principal)
    state.metrics.step(tx.id, side)
    role = "idFrontImage" if side == "front" else "idBackImage"
    await _store_files(state, tx, record, {role: inp.image})
    tx.steps[side] = record
    tx.steps.pop("liveness", None)  # a new scan of a side invalidates an earlier liveness result
    tx.updated_at = record.at
    if failure is not None:
        raise failure
    return tx, record


def _scan_response(
    state: EmulatorState,
    tenant: TenantState,
    tx: Transaction,
    record: StepRecord,
    side: Side,
    opts: StepOptions,
) -> web.Response:
    """The answer to a successful scan."""
    validated, verified = _verdict(tenant, tx)
    ids = Ids(tx.id, opts.request_id, opts.client_transaction_id or tx.client_transaction_id)
    fields = record.fields if opts.get_extracted_data else None
    kv = state.config.key_variants
    data = {
        "isVerificationProcessCompleted": validated,
        "isDigitalIdentityVerified": verified,
        "deviceInfo": None,
        "user": _user(state, tx),
        "idFrontData": front_data(fields, ids, key_variants=kv) if side == "front" else None,
        "idBackData": back_data(fields, ids, key_variants=kv) if side == "back" else None,
    }
    services = services_block(
        issues=record.issues,
        fake=record.fake,
        doc_type=record.doc_type,
        liveness=None,
        aml=record.aml,
        src=record.src,
        key_variants=kv,
    )
    return json_response(envelope(services=services, data=data))


async def scan_front(request: web.Request) -> web.Response:
    """POST /api/DigitalIdentity/verify/id/front."""
    return await _scan(request, "front")


async def scan_back(request: web.Request) -> web.Response:
    """POST /api/DigitalIdentity/verify/id/back."""
    return await _scan(request, "back")


def _transaction_envelope(
    state: EmulatorState,
    tenant: TenantState,
    tx: Transaction,
    *,
    extracted: bool,
    request_id: str | None,
    client_transaction_id: str | None,
) -> dict[str, Any]:
    """The answer about a whole transaction (liveness, link)."""
    front, back, live = tx.ok("front"), tx.ok("back"), tx.steps.get("liveness")
    sides = [s for s in (front, back) if s is not None]
    issues = [i for s in (*sides, live) if s is not None for i in s.issues]
    invalid_src = [s.src for s in sides if s.src is not None and not s.src.is_valid]
    src = invalid_src[0] if invalid_src else next((s.src for s in sides if s.src), None)
    aml = next((s.aml for s in sides if s.aml), ())
    validated, verified = _verdict(tenant, tx)
    kv = state.config.key_variants
    ids = Ids(tx.id, request_id, client_transaction_id or tx.client_transaction_id)
    data = {
        "isVerificationProcessCompleted": validated,
        "isDigitalIdentityVerified": verified,
        "deviceInfo": None,
        "user": _user(state, tx),
        "idFrontData": front_data(front.fields, ids, key_variants=kv)
        if extracted and front is not None
        else None,
        "idBackData": back_data(back.fields, ids, key_variants=kv)
        if extracted and back is not None
        else None,
    }
    services = services_block(
        issues=issues,
        fake=any(s.fake for s in sides) if sides else None,
        doc_type="national_id_front" if sides else None,
        liveness=live.liveness if live is not None else None,
        aml=aml if sides else None,
        src=src,
        key_variants=kv,
    )
    return envelope(services=services, data=data)


async def liveness(request: web.Request) -> web.Response:
    """POST /api/DigitalIdentity/verify/liveness/multi."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    principal = bearer_principal(request, state)
    body = await _parse(request, parse_liveness)
    opts = body.options
    if opts.transaction_id is None:
        raise ApiFailure(
            400,
            "'transaction_id' is required for liveness.",
            descriptions={"transaction_id": ["required"]},
        )
    # Who and in what order before any pixel is decoded; checked again under the lock below.
    _liveness_transaction(state, tenant, principal, opts.transaction_id)
    card = await _read_card(state, body.image)
    faces = tuple([(face, await _read_face(state, face)) for face in body.faces])
    inp = LivenessInput(opts, body.image, card, faces)
    async with state.tx_locks.hold(opts.transaction_id):  # see the module docstring
        tx = await _record_liveness(state, tenant, principal, inp, opts.transaction_id)
        return json_response(
            _transaction_envelope(
                state,
                tenant,
                tx,
                extracted=opts.get_extracted_data,
                request_id=opts.request_id,
                client_transaction_id=opts.client_transaction_id,
            )
        )


async def _record_liveness(
    state: EmulatorState,
    tenant: TenantState,
    principal: Principal | None,
    inp: LivenessInput,
    tx_id: str,
) -> Transaction:
    """Check liveness against its transaction and record it (or raise the failure)."""
    opts = inp.options
    tx = _liveness_transaction(state, tenant, principal, tx_id)
    front = tx.ok("front")
    assert front is not None
    assert front.fields is not None
    now = state.now()
    state.metrics.step(tx.id, "liveness")
    card_fields = inp.card.fields
    if card_fields is not None and card_fields.national_id != front.fields.national_id:
        tx.steps["liveness"] = StepRecord("liveness", ok=False, error_code=3101, at=now)
        raise ApiFailure(
            422, "The ID front sent with liveness is not this transaction's card.", error_code=3101
        )
    person = (card_fields or front.fields).person_id
    passed, reason = liveness_verdict([(img.b64, info) for img, info in inp.faces], person)
    issues = _name_issues(opts.name_check_value, front.fields)
    record = StepRecord(
        "liveness",
        ok=True,
        issues=issues,
        liveness=passed,
        liveness_reason=reason,
        doc_type="national_id_front",
        request_id=opts.request_id,
        client_transaction_id=opts.client_transaction_id,
        at=now,
    )
    images = {"livenessImage": inp.image}
    for index, (face, _) in enumerate(inp.faces, start=1):
        images[f"livenessFace0{index}Image"] = face
    await _store_files(state, tx, record, images)
    tx.steps["liveness"] = record
    tx.updated_at = now
    _attach_user(state, tx, principal)
    return tx


async def link_transaction(request: web.Request) -> web.Response:
    """POST /api/DigitalIdentity/LinkUserWithExistingTransaction (an end user's token)."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    principal = require_principal(request, state)
    if principal.kind != "user" or principal.user_id not in state.users:
        raise ApiFailure(403, "Only an end user's token can link a transaction.")
    tx_id, extracted = _link_body(await read_json(request))
    # Under the lock so a verify step in flight on this transaction cannot see it change owner.
    async with state.tx_locks.hold(tx_id):
        tx = state.transaction(tx_id, tenant.name)
        if tx is None:
            raise ApiFailure(404, "Transaction not found.")
        _check_access(tx, principal)
        state.link(tx, state.users[principal.user_id])
        state.metrics.step(tx.id, "link")
        tx.updated_at = state.now()
        return json_response(
            _transaction_envelope(
                state, tenant, tx, extracted=extracted, request_id=None, client_transaction_id=None
            )
        )


def _link_body(body: dict[str, Any]) -> tuple[str, bool]:
    """(transaction id, getExtractedData) of a LinkUserWithExistingTransaction body."""
    raw = body.get("transactionId") or body.get("transaction_id")
    try:
        tx_id = parse_transaction_id(raw if isinstance(raw, str) else None, "transactionId")
    except PayloadError as exc:
        raise _payload_failure(exc) from None
    if tx_id is None:
        raise ApiFailure(
            400, "'transactionId' is required.", descriptions={"transactionId": ["required"]}
        )
    return tx_id, body.get("getExtractedData", False) is True


def _name_issues(name_check_value: str | None, fields: IdentityFields) -> tuple[Issue, ...]:
    """The validation issue for a ``name_check_value`` that does not match the card, if any."""
    if not name_check_value or name_matches(name_check_value, fields):
        return ()
    message = "The name does not match the ID card."
    return (Issue(NAME_MISMATCH_CODE, "NameMismatch", "name", name_check_value, message),)
