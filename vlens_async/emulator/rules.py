"""The verification rules, as pure functions: SRC, expiry, name check, liveness, AML, authorities.

SRC (the registry check) is structural, since the real registry is out of reach: 14 digits, century
digit 2 or 3, a real birth date not in the future, a governorate code from API.md, and agreement
with the card's printed birth date (3002) and gender (3005: the 13th digit is odd for men).
Failures are reported in ``services.SRC`` and as validation errors (soft failures), not as an
``error_code``.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from datetime import date

import attrs

from .identity import GOVERNORATES, IdentityFields
from .readers import FaceInfo

__all__ = [
    "NAME_MISMATCH_CODE",
    "AmlCase",
    "Issue",
    "SrcResult",
    "aml_cases",
    "authorities_pass",
    "check_national_id",
    "is_expired",
    "liveness_verdict",
    "name_matches",
    "src_result",
]

# Not in the documented list: the code we chose for a name_check_value that does not match the card.
NAME_MISMATCH_CODE = 3012
_NEAR_IDENTICAL_THUMB = 1.0  # mean absolute difference (0..255) below which frames are "the same"


@attrs.frozen
class Issue:
    """One validation error: ``code``, the ``field`` it concerns and a readable message."""

    code: int
    key: str
    field: str
    value: str = attrs.field(repr=False)
    message: str


@attrs.frozen
class SrcResult:
    """The ``services.SRC`` block."""

    is_valid: bool
    error_code: int | None = None
    error_key: str | None = None
    error_message: str | None = None


@attrs.frozen
class AmlCase:
    """One AML watchlist hit (``services.AML.data[]``)."""

    case_no: str
    case_year: int
    record_date: str
    full_name: str = attrs.field(repr=False)
    id_number: str = attrs.field(repr=False)
    date_of_birth: date = attrs.field(repr=False)
    score: str


def check_national_id(fields: IdentityFields, today: date) -> list[Issue]:
    """Structural problems of the card's national ID and its agreement with the card."""
    nid = fields.national_id

    def issue(code: int, key: str, message: str) -> Issue:
        return Issue(code, key, "idNumber", nid, message)

    if len(nid) != 14 or not nid.isascii() or not nid.isdigit():
        return [issue(3001, "InvalidIdNumber", "The ID number must have 14 digits.")]
    if nid[0] not in "23":
        return [issue(3001, "InvalidIdNumber", "The ID number's century digit must be 2 or 3.")]
    issues: list[Issue] = []
    year = (1900 if nid[0] == "2" else 2000) + int(nid[1:3])
    try:
        born = date(year, int(nid[3:5]), int(nid[5:7]))
    except ValueError:
        born = None
        issues.append(issue(3002, "InvalidBirthDate", "The ID number holds an invalid date."))
    if born is not None and born > today:
        issues.append(
            issue(3002, "InvalidBirthDate", "The ID number's birth date is in the future.")
        )
    elif born is not None and born != fields.date_of_birth:
        issues.append(
            issue(3002, "BirthDateMismatch", "The birth date differs from the ID number.")
        )
    if nid[7:9] not in GOVERNORATES:
        issues.append(
            issue(3003, "InvalidGovernorate", "Unknown governorate code in the ID number.")
        )
    expected = "M" if int(nid[12]) % 2 else "F"
    if fields.gender != expected:
        issues.append(issue(3005, "InvalidGender", "The gender differs from the ID number."))
    if fields.release_date > today:
        issues.append(
            Issue(
                3006,
                "InvalidReleaseDate",
                "releaseDate",
                str(fields.release_date),
                "The release date is in the future.",
            )
        )
    return issues


def src_result(issues: Sequence[Issue]) -> SrcResult:
    """The SRC block for these issues (the first one is reported)."""
    if not issues:
        return SrcResult(True)
    first = issues[0]
    return SrcResult(False, first.code, first.key, first.message)


def is_expired(fields: IdentityFields, today: date) -> bool:
    """The card's expiry date has passed (3010)."""
    return fields.expiry_date < today


def _normal(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split())


def name_matches(value: str, fields: IdentityFields) -> bool:
    """``name_check_value`` matches the card: its first name or full name, Arabic or English."""
    wanted = _normal(value)
    candidates = {
        fields.first_name,
        fields.first_name_english,
        f"{fields.first_name} {fields.last_names}",
        f"{fields.first_name_english} {fields.last_names_english}",
    }
    return any(wanted == _normal(c) for c in candidates if c)


def _thumb_difference(a: bytes, b: bytes) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def _same_frame(a: tuple[bytes, FaceInfo], b: tuple[bytes, FaceInfo]) -> bool:
    (raw_a, info_a), (raw_b, info_b) = a, b
    if raw_a == raw_b:
        return True
    if info_a.pose is not None and info_b.pose is not None:
        return info_a.person_id == info_b.person_id and all(
            abs(x - y) < 1e-6 for x, y in zip(info_a.pose, info_b.pose, strict=False)
        )
    if info_a.thumb is not None and info_b.thumb is not None:
        return _thumb_difference(info_a.thumb, info_b.thumb) < _NEAR_IDENTICAL_THUMB
    return False


def liveness_verdict(
    frames: Sequence[tuple[bytes, FaceInfo]], card_person: int | None
) -> tuple[bool, str]:
    """(passed, reason): identical frames, different people or a face not on the card fail."""
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            if _same_frame(frames[i], frames[j]):
                return False, f"face_{i + 1} and face_{j + 1} are identical"
    persons = [info.person_id for _, info in frames]
    known = [p for p in persons if p is not None]
    if known and len(known) != len(persons):
        return False, "the frames show different people"
    if len(set(known)) > 1:
        return False, "the frames show different people"
    if known and card_person is not None and known[0] != card_person:
        return False, "the face does not belong to the ID card"
    return True, ""


def aml_cases(
    fields: IdentityFields, flags: frozenset[str], watchlist: frozenset[str]
) -> list[AmlCase]:
    """The AML watchlist hits for this identity (flagged by the card, or listed by the tenant)."""
    if "aml_watchlisted" not in flags and fields.national_id not in watchlist:
        return []
    digest = hashlib.sha256(fields.national_id.encode()).digest()
    year = 2015 + digest[0] % 10
    return [
        AmlCase(
            case_no=str(1000 + int.from_bytes(digest[1:3], "big") % 9000),
            case_year=year,
            record_date=f"{year}-{1 + digest[3] % 12:02d}-{1 + digest[4] % 28:02d}"
            "T09:30:00.0000000Z",  # .NET style: seven fractional digits
            full_name=f"{fields.first_name_english} {fields.last_names_english}".strip(),
            id_number=fields.national_id,
            date_of_birth=fields.date_of_birth,
            score=f"0.{90 + digest[5] % 10}",
        )
    ]


def authorities_pass(
    national_id: str,
    *,
    ntra: bool,
    cso: bool,
    ntra_rejects: frozenset[str],
    cso_rejects: frozenset[str],
) -> bool:
    """NTRA and CSO checks: a switched-off check passes; an enabled one fails for listed IDs."""
    if ntra and national_id in ntra_rejects:
        return False
    return not (cso and national_id in cso_rejects)
