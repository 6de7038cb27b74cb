"""Typed, frozen models of what the Vlens API returns.

Field names are the snake_case of the wire keys shown in the Vlens reference pages; the private
converter in :mod:`vlens_async._wire` maps the wire's mixed casings onto them (``Validations`` and
``validations``, ``transaction_id`` and ``transactionId``, ``AML``, ``SRC``...). These classes know
nothing about cattrs or JSON.

Anything that can carry personal data (names, addresses, national ID numbers, phone numbers, e-mail
addresses, dates of birth, tokens, and free text from the server, which may quote any of these) is
hidden or masked in ``repr``: national ID numbers show only their last 4 digits. The values
themselves are unchanged on the attributes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Generic, TypeVar

import attrs

__all__ = [
    "AMLCase",
    "AMLResult",
    "Classification",
    "Envelope",
    "ExistenceResult",
    "IdBackData",
    "IdFrontData",
    "IdentityImageRefs",
    "PhoneOtpResult",
    "RegistrationResult",
    "SRCResult",
    "Services",
    "Spoofing",
    "StepImage",
    "Tokens",
    "UserInfo",
    "ValidationDetail",
    "ValidationIssue",
    "VerificationData",
    "VerificationResponse",
]

T = TypeVar("T")

# Field metadata read by the converter in ``_wire``: extra wire names for a field, and a marker
# for fields the client fills in itself (never read from the wire).
WIRE_ALIASES: Final = "vlens_wire_aliases"
CLIENT_SIDE: Final = "vlens_client_side"


def _hidden(value: object) -> str:
    # Keeps the shape of the repr (whether a value is present) without the value itself.
    return "None" if value is None else "'<redacted>'"


def _mask_id(value: str) -> str:
    # Only the last 4 characters shown (the same rule as ``_redact.mask_id``; models import
    # nothing of ours, ARCHITECTURE.md).
    return "*" * max(len(value) - 4, 0) + value[-4:] if value else ""


def _masked(value: object) -> str:
    return "None" if value is None else repr(_mask_id(str(value)))


def _pii(**kwargs: Any) -> Any:
    """A field holding personal data or a secret: hidden in ``repr``."""
    return attrs.field(default=None, repr=_hidden, **kwargs)


def _id_number() -> Any:
    """A national ID number field: only its last 4 digits in ``repr``."""
    return attrs.field(default=None, repr=_masked)


@attrs.frozen
class ValidationDetail:
    """One reason a field failed validation: a numeric ``code`` and a ``message``."""

    code: int | None = None
    message: str | None = _pii()


@attrs.frozen
class ValidationIssue:
    """A field the server refused, from ``services.validations.validation_errors``.

    ``value`` is what the server read (it may be personal data, so it is hidden in ``repr``).
    """

    field: str | None = None
    value: str | None = _pii()
    errors: tuple[ValidationDetail, ...] = ()


@attrs.frozen
class Spoofing:
    """``services.spoofing``: ``fake`` is true for a photocopy or a picture of a screen."""

    fake: bool | None = None


@attrs.frozen
class Classification:
    """``services.classification``: the detected document type."""

    doc_type: str | None = None


@attrs.frozen
class AMLCase:
    """One anti-money-laundering watchlist case matched against the applicant."""

    case_no: str | None = None
    case_year: int | None = None
    record_date: datetime | None = None
    full_name: str | None = _pii()
    id_number: str | None = _id_number()
    date_of_birth: datetime | None = attrs.field(default=None, repr=_hidden)
    score: str | None = None


@attrs.frozen
class AMLResult:
    """``services.AML``: whether the applicant matched a watchlist, and the matched ``cases``."""

    aml_matched: bool | None = None
    cases: tuple[AMLCase, ...] = attrs.field(default=(), metadata={WIRE_ALIASES: ("data",)})


@attrs.frozen
class SRCResult:
    """``services.SRC``: the national registry check of the ID number."""

    is_valid: bool | None = None
    error_code: int | None = None
    error_key: str | None = None
    error_message: str | None = _pii()


@attrs.frozen
class Services:
    """Results of the backend checks that come with every verification response.

    ``validations`` flattens ``services.validations.validation_errors`` (both ``Validations`` and
    ``validations`` are read, and their lists merged); a non-empty tuple is a soft failure.
    """

    validations: tuple[ValidationIssue, ...] = ()
    spoofing: Spoofing | None = None
    classification: Classification | None = None
    liveness: bool | None = None
    aml: AMLResult | None = None
    src: SRCResult | None = None


@attrs.frozen
class UserInfo:
    """The user a transaction belongs to (``data.user``), or the one just registered."""

    id: int | None = None
    name: str | None = _pii()
    surname: str | None = _pii()
    full_name: str | None = _pii()
    user_name: str | None = _pii()
    email_address: str | None = _pii()
    phone_number: str | None = _pii()
    id_number: str | None = _id_number()
    address: str | None = _pii()


@attrs.frozen
class IdFrontData:
    """What OCR read on the front of the national ID card (``data.idFrontData``)."""

    first_name: str | None = _pii()
    last_names: str | None = _pii()
    name: str | None = _pii()
    first_name_english: str | None = _pii()
    last_names_english: str | None = _pii()
    name_english: str | None = _pii()
    address: str | None = _pii()
    address_1: str | None = _pii()
    address_2: str | None = _pii()
    address_english: str | None = _pii()
    address_1_english: str | None = _pii()
    address_2_english: str | None = _pii()
    govern: str | None = _pii()
    govern_english: str | None = _pii()
    city: str | None = _pii()
    district: str | None = _pii()
    id_number: str | None = _id_number()
    id_key: str | None = _pii()
    date_of_birth: datetime | None = attrs.field(default=None, repr=_hidden)
    gender: str | None = None
    transaction_id: str | None = None
    request_id: str | None = None
    client_transaction_id: str | None = None


@attrs.frozen
class IdBackData:
    """What OCR read on the back of the national ID card (``data.idBackData``)."""

    marital_status: str | None = _pii()
    marital_status_english: str | None = _pii()
    job: str | None = _pii()
    job_english: str | None = _pii()
    job_title: str | None = _pii()
    job_title_english: str | None = _pii()
    religion: str | None = _pii()
    religion_english: str | None = _pii()
    husband_name: str | None = _pii()
    husband_name_english: str | None = _pii()
    release_date: datetime | None = None
    id_expiry: datetime | None = None
    id_number: str | None = _id_number()
    gender: str | None = None
    gender_english: str | None = None
    transaction_id: str | None = None
    request_id: str | None = None
    client_transaction_id: str | None = None


@attrs.frozen
class VerificationData:
    """``data`` of a verification response: completion flags, the user, and what OCR read.

    ``is_verification_process_completed`` true means *validated* (all three steps passed Vlens's
    checks); ``is_digital_identity_verified`` true means *verified* (validated, and the NTRA and
    CSO authority checks passed where the tenant requires them).
    """

    is_verification_process_completed: bool | None = None
    is_digital_identity_verified: bool | None = None
    device_info: Any = None
    user: UserInfo | None = None
    id_front_data: IdFrontData | None = None
    id_back_data: IdBackData | None = None


@attrs.frozen
class VerificationResponse:
    """The envelope returned by the verify endpoints and ``LinkUserWithExistingTransaction``.

    A response object is only returned on success: failures raise (see :mod:`vlens_async.errors`).
    ``sent_transaction_id`` and ``request_id`` are filled in by the client (the transaction id it
    sent and its ``X-Request-Id``), never read from the wire.
    """

    services: Services = attrs.Factory(Services)
    data: VerificationData = attrs.Factory(VerificationData)
    error_code: int | None = None
    error_message: str | None = _pii()
    error_descriptions: Any = attrs.field(default=None, repr=_hidden)
    sent_transaction_id: str | None = attrs.field(default=None, metadata={CLIENT_SIDE: True})
    request_id: str | None = attrs.field(default=None, metadata={CLIENT_SIDE: True})

    @property
    def transaction_id(self) -> str | None:
        """The transaction id: as the server returned it, else the one the client sent."""
        for side in (self.data.id_front_data, self.data.id_back_data):
            if side is not None and side.transaction_id:
                return side.transaction_id
        return self.sent_transaction_id

    @property
    def validated(self) -> bool:
        """True when ``data.isVerificationProcessCompleted`` is true."""
        return self.data.is_verification_process_completed is True

    @property
    def verified(self) -> bool:
        """True when ``data.isDigitalIdentityVerified`` is true."""
        return self.data.is_digital_identity_verified is True


@attrs.frozen
class Envelope(Generic[T]):
    """The generic response envelope of the non-verification endpoints; ``data`` is typed."""

    data: T | None = None
    services: Services | None = None
    error_code: int | None = None
    error_message: str | None = _pii()
    error_descriptions: Any = attrs.field(default=None, repr=_hidden)


@attrs.frozen
class Tokens:
    """Tokens from ``Login``, ``RefreshToken`` (and ``Register``); hidden in ``repr``.

    ``new_refresh_token`` is set when ``RefreshToken`` rotated the refresh token;
    :attr:`current_refresh_token` picks whichever refresh token is now valid.
    """

    access_token: str = attrs.field(repr=_hidden)
    expire_in_seconds: int | None = None
    refresh_token: str | None = _pii()
    refresh_token_expire_in_seconds: int | None = None
    encrypted_access_token: str | None = _pii()
    new_refresh_token: str | None = _pii()

    @property
    def current_refresh_token(self) -> str | None:
        """The refresh token to use next: the rotated one when the server sent one."""
        return self.new_refresh_token or self.refresh_token


@attrs.frozen
class ExistenceResult:
    """``CheckExistenceOfEmailOrPhone``: whether an account uses the phone number or e-mail."""

    exists: bool


@attrs.frozen
class PhoneOtpResult:
    """``Register/StepVerifyPhone``: the OTP request id, and whether the phone is confirmed."""

    phone_number_otp_request_id: str | None = None
    is_phone_number_confirmed: bool | None = None


@attrs.frozen
class RegistrationResult:
    """``Register``: the end user's access token and account."""

    access_token: str = attrs.field(repr=_hidden)
    expire_in_seconds: int | None = None
    user: UserInfo | None = None
    is_digital_identity_verified: bool | None = None
    encrypted_access_token: str | None = _pii()


@attrs.frozen
class IdentityImageRefs:
    """File names of a user's stored verification images (``GetUserDigitalIdentityImages``).

    Pass one of them to :meth:`VlensClient.download_step_image` to fetch the image.
    """

    id_front_image: str | None = None
    id_back_image: str | None = None
    liveness_image: str | None = None
    liveness_face01_image: str | None = None
    liveness_face02_image: str | None = None
    liveness_face03_image: str | None = None


@attrs.frozen
class StepImage:
    """``GetStepImage``: one stored image, base64-encoded (the client returns it decoded)."""

    image: str = attrs.field(repr=_hidden)
