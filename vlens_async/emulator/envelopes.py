"""The JSON the emulator sends, built by hand as dicts with the seed pages' exact keys.

Nothing here is shared with the client's parsing (its cattrs converter): a mistake in one must
not be hidden by the same mistake in the other. Key casings follow ``/seeds`` verbatim, including
the mixed ones (``AML_matched``, ``SRC.isValid``, ``maritalStatus`` beside
``marital_status_english``); with ``key_variants`` on, the duplicate spellings the older reference
shows are sent too (``services.Validations`` beside ``validations``, ``transactionId`` beside
``transaction_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

import attrs

from .identity import IdentityFields
from .rules import AmlCase, Issue, SrcResult

__all__ = [
    "ApiFailure",
    "Ids",
    "aml_block",
    "back_data",
    "envelope",
    "front_data",
    "services_block",
    "src_block",
    "user_block",
    "validations_block",
]

_MESSAGES_AR: dict[int, str] = {
    3010: "البطاقة منتهية الصلاحية",
    3011: "لم يتم التعرف على البطاقة",
    3101: "الرقم القومي مختلف بين وجه البطاقة وظهرها",
    5000: "حدث خطأ",
    5002: "حجم الصورة أكبر من 5 ميجابايت",
    5003: "عدد نقاط الصورة أكبر من 25 مليون",
}


class ApiFailure(Exception):
    """A refusal to send as an envelope: HTTP ``status`` (used as is when ``error_code`` is None,
    or in the ``status`` failure style) and the envelope's code, message and descriptions."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: int | None = None,
        descriptions: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.descriptions = descriptions
        self.headers = dict(headers or {})

    def http_status(self, failure_style: str) -> int:
        """The status to send: a coded failure is a 200 in the ``ok`` style."""
        if self.error_code is not None and failure_style == "ok":
            return 200
        return self.status

    def body(self, language: str | None = None) -> dict[str, Any]:
        """The envelope for this failure, its message in Arabic when asked and known."""
        message = self.message
        if language == "ar" and self.error_code in _MESSAGES_AR:
            message = _MESSAGES_AR[self.error_code]
        return envelope(
            error_code=self.error_code, error_message=message, error_descriptions=self.descriptions
        )


@attrs.frozen
class Ids:
    """The identifiers echoed in ``idFrontData`` / ``idBackData``."""

    transaction_id: str
    request_id: str | None = None
    client_transaction_id: str | None = None


def iso_date(value: date | None) -> str | None:
    """A date as the API sends it: ISO 8601 midnight UTC."""
    return None if value is None else f"{value.isoformat()}T00:00:00Z"


def envelope(
    *,
    services: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    error_code: int | None = None,
    error_message: str | None = None,
    error_descriptions: Any = None,
) -> dict[str, Any]:
    """The five keys every response carries."""
    return {
        "services": services,
        "data": data,
        "error_code": error_code,
        "error_message": error_message,
        "error_descriptions": error_descriptions,
    }


def validations_block(issues: Iterable[Issue]) -> dict[str, Any]:
    """``{"validation_errors": [{field, value, errors: [{code, message}]}]}``, grouped by field."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for issue in issues:
        grouped.setdefault((issue.field, issue.value), []).append(
            {"code": issue.code, "message": issue.message}
        )
    return {
        "validation_errors": [
            {"field": field, "value": value, "errors": errors}
            for (field, value), errors in grouped.items()
        ]
    }


def aml_block(cases: Sequence[AmlCase]) -> dict[str, Any]:
    """``services.AML``."""
    return {
        "AML_matched": bool(cases),
        "data": [
            {
                "caseNo": c.case_no,
                "caseYear": c.case_year,
                "recordDate": c.record_date,
                "fullName": c.full_name,
                "idNumber": c.id_number,
                "dateOfBirth": iso_date(c.date_of_birth),
                "score": c.score,
            }
            for c in cases
        ],
    }


def src_block(src: SrcResult | None) -> dict[str, Any] | None:
    """``services.SRC``."""
    if src is None:
        return None
    return {
        "isValid": src.is_valid,
        "errorCode": src.error_code,
        "errorKey": src.error_key,
        "errorMessage": src.error_message,
    }


def services_block(
    *,
    issues: Sequence[Issue],
    fake: bool | None,
    doc_type: str | None,
    liveness: bool | None,
    aml: Sequence[AmlCase] | None,
    src: SrcResult | None,
    key_variants: bool,
) -> dict[str, Any]:
    """The ``services`` object."""
    validations = validations_block(issues)
    out: dict[str, Any] = {}
    if key_variants:
        out["Validations"] = validations_block(issues)
    out["validations"] = validations
    out["spoofing"] = None if fake is None else {"fake": fake}
    out["classification"] = None if doc_type is None else {"doc_type": doc_type}
    out["liveness"] = liveness
    out["AML"] = None if aml is None else aml_block(aml)
    out["SRC"] = src_block(src)
    return out


def _id_keys(ids: Ids, key_variants: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client_transaction_id": ids.client_transaction_id,
        "request_id": ids.request_id,
        "transaction_id": ids.transaction_id,
    }
    if key_variants:
        out["transactionId"] = ids.transaction_id
    return out


def front_data(fields: IdentityFields | None, ids: Ids, *, key_variants: bool) -> dict[str, Any]:
    """``data.idFrontData``; with ``fields`` None (getExtractedData false) only the ids are set."""
    f = fields
    address_1, address_2 = _split_address(f.address if f else None)
    address_1_en, address_2_en = _split_address(f.address_english if f else None)
    out: dict[str, Any] = {
        "first_name": f.first_name if f else None,
        "last_names": f.last_names if f else None,
        "name": f"{f.first_name} {f.last_names}".strip() if f else None,
        "first_name_english": f.first_name_english if f else None,
        "last_names_english": f.last_names_english if f else None,
        "name_english": f"{f.first_name_english} {f.last_names_english}".strip() if f else None,
        "address": f.address if f else None,
        "address_1": address_1,
        "address_2": address_2,
        "address_english": f.address_english if f else None,
        "address_1_english": address_1_en,
        "address_2_english": address_2_en,
        "govern": f.govern if f else None,
        "govern_english": f.govern_english if f else None,
        "city": f.city if f else None,
        "district": f.district if f else None,
        "idNumber": f.national_id if f else None,
        "idKey": f.id_key if f else None,
        "dateOfBirth": iso_date(f.date_of_birth) if f else None,
        "gender": f.gender if f else None,
    }
    out.update(_id_keys(ids, key_variants))
    return out


_GENDER_AR = {"M": "ذكر", "F": "أنثى"}
_GENDER_EN = {"M": "Male", "F": "Female"}


def back_data(fields: IdentityFields | None, ids: Ids, *, key_variants: bool) -> dict[str, Any]:
    """``data.idBackData``; with ``fields`` None only the ids are set."""
    f = fields
    out: dict[str, Any] = {
        "maritalStatus": f.marital_status if f else None,
        "marital_status_english": f.marital_status_english if f else None,
        "job": f.job if f else None,
        "job_english": f.job_english if f else None,
        "jobTitle": f.job if f else None,
        "job_title_english": f.job_english if f else None,
        "religion": f.religion if f else None,
        "religion_english": f.religion_english if f else None,
        "husbandName": None,
        "husbandName_english": None,
        "releaseDate": iso_date(f.release_date) if f else None,
        "idExpiry": iso_date(f.expiry_date) if f else None,
        "idNumber": f.national_id if f else None,
        "gender": _GENDER_AR[f.gender] if f else None,
        "gender_english": _GENDER_EN[f.gender] if f else None,
    }
    out.update(_id_keys(ids, key_variants))
    return out


def user_block(
    *,
    user_id: int,
    phone: str | None,
    email: str | None,
    fields: IdentityFields | None,
) -> dict[str, Any]:
    """``data.user``: the end user linked to the transaction."""
    name = fields.first_name_english if fields else None
    surname = fields.last_names_english if fields else None
    return {
        "id": user_id,
        "name": name,
        "surname": surname,
        "fullName": f"{name} {surname}" if fields else None,
        "userName": phone or email,
        "emailAddress": email,
        "phoneNumber": phone,
        "idNumber": fields.national_id if fields else None,
        "address": fields.address if fields else None,
    }


def _split_address(address: str | None) -> tuple[str | None, str | None]:
    if not address:
        return None, None
    for sep in (" - ", "، ", ", "):
        head, found, tail = address.partition(sep)
        if found:
            return head, tail
    return address, None
