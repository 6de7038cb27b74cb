"""Credentials and registration: Login, RefreshToken, CheckExistenceOfEmailOrPhone,
Register/StepVerifyPhone (send and check an OTP) and Register.

Admins log in with their user name; end users may log in with their phone number or e-mail address
and password (they get a token without admin permissions). Login needs the ``TenancyName`` header
and the ``tenancyName`` body field (API.md), else 400. Register errors use ``error_code`` 400, as
the API has done. An OTP request survives :data:`~.state.MAX_OTP_ATTEMPTS` wrong codes; then it is
dead (4003, too many attempts) and a new OTP must be requested. Register needs the OTP and the id
of the request that StepVerifyPhone confirmed for that phone.
"""

from __future__ import annotations

import base64
import hmac
import re
from typing import Any, Final

from aiohttp import web

from .envelopes import ApiFailure, envelope
from .httpio import STATE_KEY, TENANT_KEY, json_response, read_json
from .state import EmulatorState, OtpRecord, Principal

__all__ = ["check_existence", "login", "refresh", "register", "verify_phone"]

_PHONE: Final = re.compile(r"^\+\d{8,15}$")
_EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MIN_PASSWORD: Final = 6
TOO_MANY_ATTEMPTS_CODE: Final = 4003


def _text(body: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _phone(body: dict[str, Any], *, required: bool = True) -> str | None:
    phone = _text(body, "phoneNumber", "phone_number")
    if phone is None:
        if required:
            raise ApiFailure(
                400, "phoneNumber is required.", descriptions={"phoneNumber": ["required"]}
            )
        return None
    if not _PHONE.match(phone):
        raise ApiFailure(
            400,
            "phoneNumber must be in E.164 format (+20...).",
            descriptions={"phoneNumber": ["E.164 expected"]},
        )
    return phone


def _token_data(access: str, access_ttl: float) -> dict[str, Any]:
    return {
        "accessToken": access,
        "encryptedAccessToken": base64.b64encode(access.encode()).decode("ascii"),
        "expireInSeconds": int(access_ttl),
    }


def _check_tenancy(request: web.Request, body: dict[str, Any], tenant_name: str) -> None:
    """Both the ``TenancyName`` header and the ``tenancyName`` field, naming the key's tenant."""
    header = (request.headers.get("TenancyName") or "").strip() or None
    field = _text(body, "tenancyName")
    missing = {
        name: [what]
        for name, value, what in (
            ("TenancyName", header, "required (header)"),
            ("tenancyName", field, "required"),
        )
        if value is None
    }
    if missing:
        # 400, not 401: the request itself is incomplete (API.md requires the header and the
        # field), which is judged before any credential; the descriptions name what is missing,
        # as for the other required fields.
        raise ApiFailure(400, f"Required: {', '.join(missing)}.", descriptions=missing)
    for value in (header, field):
        if value is not None and value.lower() != tenant_name.lower():
            raise ApiFailure(401, "Unknown tenancy name for this API key.")


async def login(request: web.Request) -> web.Response:
    """POST /api/credentials/Login."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    body = await read_json(request)
    _check_tenancy(request, body, tenant.name)
    username = _text(body, "userNameOrEmailAddress", "userName")
    password = body.get("password")
    if username is None or not isinstance(password, str):
        raise ApiFailure(400, "userNameOrEmailAddress and password are required.")
    principal: Principal | None = None
    for admin in tenant.config.admins:
        names = {admin.username.lower(), (admin.email or "").lower()} - {""}
        if username.lower() in names and hmac.compare_digest(admin.password, password):
            principal = Principal("admin", tenant.name, admin.username, None, admin.permissions)
    if principal is None:
        user = state.find_user(tenant.name, phone=username, email=username)
        if user is not None and hmac.compare_digest(user.password, password):
            principal = Principal("user", tenant.name, user.phone, user.id)
    if principal is None:
        raise ApiFailure(401, "Invalid user name or password.")
    pair = state.issue_tokens(principal)
    data = {
        "accessToken": pair.access,
        "expireInSeconds": int(pair.access_ttl),
        "refreshToken": pair.refresh,
        "refreshTokenExpireInSeconds": int(pair.refresh_ttl),
    }
    return json_response(envelope(data=data))


async def refresh(request: web.Request) -> web.Response:
    """POST /api/credentials/RefreshToken: a new pair; the old refresh token is spent."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    body = await read_json(request)
    token = _text(body, "refreshToken")
    if token is None:
        raise ApiFailure(400, "refreshToken is required.")
    pair = state.rotate_refresh(token, tenant.name)
    if pair is None:
        raise ApiFailure(401, "The refresh token is invalid, expired or already used.")
    data = _token_data(pair.access, pair.access_ttl)
    data.update(
        refreshToken=pair.refresh,
        newRefreshToken=pair.refresh,
        refreshTokenExpireInSeconds=int(pair.refresh_ttl),
    )
    return json_response(envelope(data=data))


async def check_existence(request: web.Request) -> web.Response:
    """POST /api/DigitalIdentity/CheckExistenceOfEmailOrPhone."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    body = await read_json(request)
    phone = _phone(body, required=False)
    email = _text(body, "email", "emailAddress")
    if phone is None and email is None:
        raise ApiFailure(400, "phoneNumber or email is required.")
    user = state.find_user(tenant.name, phone=phone, email=email)
    return json_response(envelope(data={"exists": user is not None}))


async def verify_phone(request: web.Request) -> web.Response:
    """POST .../Register/StepVerifyPhone: send an OTP, or check one (with phoneNumberOtp)."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    body = await read_json(request)
    phone = _phone(body)
    assert phone is not None
    code = body.get("phoneNumberOtp")
    if code is None or code == "":
        record = state.send_otp(tenant.name, phone)
        data = {
            "phoneNumber": phone,
            "phoneNumberOtpRequestId": record.request_id,
            "isPhoneNumberConfirmed": False,
        }
        return json_response(envelope(data=data))
    request_id = _text(body, "phoneNumberOtpRequestId")
    record = _require_otp(state, tenant.name, phone, request_id, str(code))
    record.confirmed = True
    data = {
        "phoneNumber": phone,
        "phoneNumberOtpRequestId": record.request_id,
        "isPhoneNumberConfirmed": True,
    }
    return json_response(envelope(data=data))


async def register(request: web.Request) -> web.Response:
    """POST /api/DigitalIdentity/Register: needs the phone's OTP; returns an end-user token."""
    state, tenant = request.app[STATE_KEY], request[TENANT_KEY]
    body = await read_json(request)
    phone = _phone(body)
    assert phone is not None
    email = _text(body, "email", "emailAddress")
    password = body.get("password")
    if email is not None and not _EMAIL.match(email):
        raise ApiFailure(400, "email is not a valid address.", error_code=400)
    if not isinstance(password, str) or len(password) < _MIN_PASSWORD:
        raise ApiFailure(400, "password must have at least 6 characters.", error_code=400)
    code, request_id = _required_otp_fields(body)
    record = _require_otp(state, tenant.name, phone, request_id, code)
    if not record.confirmed:
        raise ApiFailure(
            400,
            "The phone number is not confirmed: check the OTP with StepVerifyPhone first.",
            error_code=400,
        )
    if state.find_user(tenant.name, phone=phone) is not None:
        raise ApiFailure(400, "This phone number is already registered.", error_code=400)
    if email is not None and state.find_user(tenant.name, email=email) is not None:
        raise ApiFailure(400, "This e-mail address is already registered.", error_code=400)
    user = state.add_user(tenant.name, phone, email, password)
    state.otps.pop((tenant.name, phone), None)  # an OTP registers one account only
    token = state.issue_access(Principal("user", tenant.name, phone, user.id))
    data = {
        "accessToken": token,
        "expireInSeconds": int(state.config.access_token_ttl),
        "user": {"id": user.id, "emailAddress": email, "phoneNumber": phone},
        "isDigitalIdentityVerified": False,
    }
    return json_response(envelope(data=data))


def _required_otp_fields(body: dict[str, Any]) -> tuple[str, str]:
    """Register's ``phoneNumberOtp`` and ``phoneNumberOtpRequestId`` (API.md lists both)."""
    raw_code = body.get("phoneNumberOtp")
    code = str(raw_code).strip() if isinstance(raw_code, str | int) else ""
    request_id = _text(body, "phoneNumberOtpRequestId")
    missing = {
        name: ["required"]
        for name, value in (("phoneNumberOtp", code), ("phoneNumberOtpRequestId", request_id))
        if not value
    }
    if missing:
        raise ApiFailure(
            400, f"Required: {', '.join(missing)}.", error_code=400, descriptions=missing
        )
    assert request_id is not None
    return code, request_id


def _require_otp(
    state: EmulatorState, tenant: str, phone: str, request_id: str | None, code: str
) -> OtpRecord:
    """The phone's OTP record when ``code`` is right; 400 when wrong, 4003 once it is dead."""
    verdict = state.check_otp(tenant, phone, request_id, code)
    if verdict == "too_many":
        raise ApiFailure(
            422,
            "Too many wrong codes for this OTP request; request a new OTP.",
            error_code=TOO_MANY_ATTEMPTS_CODE,
        )
    if verdict != "ok":
        raise ApiFailure(400, "The OTP is wrong or has expired.", error_code=400)
    return state.otps[(tenant, phone)]
