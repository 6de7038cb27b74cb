"""The Egyptian national ID number: parsing and cross-checks against OCR (pure, no I/O).

Layout of the 14 digits: ``C YYMMDD GG SSSS K``. ``C`` is the century (2 = 1900s, 3 = 2000s),
``YYMMDD`` the birth date, ``GG`` the governorate of birth, ``SSSS`` a sequence whose last digit
(the 13th of the number) is odd for men and even for women, and ``K`` a check digit whose algorithm
is not public, so it is deliberately not verified here.

:func:`cross_check` compares the number with what OCR read (birth date, gender, the back's number,
the expiry date) so a caller can flag what the server let through.
"""

from __future__ import annotations

import datetime as dt
import enum
import unicodedata
from collections.abc import Iterable
from typing import Protocol

import attrs

from ._redact import mask_id
from .errors import InvalidNationalIdError

__all__ = [
    "GOVERNORATES",
    "CrossCheckFlag",
    "NationalId",
    "cross_check",
    "parse_national_id",
]

GOVERNORATES: dict[str, str] = {
    "01": "Cairo",
    "02": "Alexandria",
    "03": "Port Said",
    "04": "Suez",
    "11": "Damietta",
    "12": "Dakahlia",
    "13": "Sharqia",
    "14": "Qalyubia",
    "15": "Kafr El Sheikh",
    "16": "Gharbia",
    "17": "Monufia",
    "18": "Beheira",
    "19": "Ismailia",
    "21": "Giza",
    "22": "Beni Suef",
    "23": "Fayoum",
    "24": "Minya",
    "25": "Asyut",
    "26": "Sohag",
    "27": "Qena",
    "28": "Aswan",
    "29": "Luxor",
    "31": "Red Sea",
    "32": "New Valley",
    "33": "Matrouh",
    "34": "North Sinai",
    "35": "South Sinai",
    "88": "Born abroad",
}
"""Governorate-of-birth codes (digits 8-9) and their English names."""

_CENTURIES = {"2": 1900, "3": 2000}
_ARABIC_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_MALE = {"m", "male", "ذكر"}
_FEMALE = {"f", "female", "انثى", "أنثى", "انثي", "أنثي"}


@attrs.frozen(repr=False)
class NationalId:
    """A parsed national ID number. Its repr shows only the last 4 digits."""

    number: str
    century: int
    birth_date: dt.date
    governorate_code: str
    governorate: str
    gender: str
    sequence: str

    def __repr__(self) -> str:
        return f"NationalId({mask_id(self.number)!r})"

    @property
    def masked(self) -> str:
        """The number with all but its last 4 digits hidden."""
        return mask_id(self.number)


def _is_separator(char: str) -> bool:
    # Whitespace (tabs, newlines, no-break spaces), dashes of every kind, and invisible format
    # marks (the right-to-left mark Arabic OCR puts around numbers): none is part of the number.
    return char.isspace() or unicodedata.category(char) in ("Pd", "Cf")


def parse_national_id(value: str, *, today: dt.date | None = None) -> NationalId:
    """Parse a 14-digit national ID number (Arabic-Indic digits and separators accepted).

    Raises :class:`InvalidNationalIdError` naming the reason (never the number) when the length,
    century, birth date or governorate code is wrong, or the birth date is in the future.
    """
    digits = _digits(value)
    if len(digits) != 14 or not digits.isascii() or not digits.isdigit():
        raise InvalidNationalIdError("a national ID number has exactly 14 digits")
    century = _CENTURIES.get(digits[0])
    if century is None:
        raise InvalidNationalIdError("the century digit must be 2 (1900s) or 3 (2000s)")
    try:
        birth = dt.date(century + int(digits[1:3]), int(digits[3:5]), int(digits[5:7]))
    except ValueError:
        raise InvalidNationalIdError("digits 2-7 are not a valid birth date") from None
    if birth > (today or dt.date.today()):
        raise InvalidNationalIdError("the birth date is in the future")
    code = digits[7:9]
    if code not in GOVERNORATES:
        raise InvalidNationalIdError("digits 8-9 are not a known governorate code")
    return NationalId(
        number=digits,
        century=century,
        birth_date=birth,
        governorate_code=code,
        governorate=GOVERNORATES[code],
        gender="M" if int(digits[12]) % 2 else "F",
        sequence=digits[9:13],
    )


class CrossCheckFlag(enum.StrEnum):
    """A disagreement :func:`cross_check` found; the values are stable, JSON-friendly strings."""

    ID_MISSING = "id_missing"
    ID_INVALID = "id_invalid"
    BIRTH_DATE_MISMATCH = "birth_date_mismatch"
    GENDER_MISMATCH = "gender_mismatch"
    FRONT_BACK_ID_MISMATCH = "front_back_id_mismatch"
    BACK_GENDER_MISMATCH = "back_gender_mismatch"
    CARD_EXPIRED = "card_expired"


class _FrontFields(Protocol):
    @property
    def id_number(self) -> str | None: ...
    @property
    def date_of_birth(self) -> dt.datetime | dt.date | None: ...
    @property
    def gender(self) -> str | None: ...


class _BackFields(Protocol):
    @property
    def id_number(self) -> str | None: ...
    @property
    def gender(self) -> str | None: ...
    @property
    def id_expiry(self) -> dt.datetime | dt.date | None: ...


class _Outcome(Protocol):
    @property
    def front(self) -> _FrontFields | None: ...
    @property
    def back(self) -> _BackFields | None: ...


def _as_date(value: dt.datetime | dt.date | None) -> dt.date | None:
    # A date sent as a time: Cairo's midnight in UTC is 22:00 or 21:00 of the day before, so
    # round to the nearest midnight rather than truncate.
    if isinstance(value, dt.datetime):
        return (value + dt.timedelta(hours=12)).date()
    return value


def _gender(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    if text in _MALE:
        return "M"
    if text in _FEMALE:
        return "F"
    return None


def _check_front(nid: NationalId, front: _FrontFields) -> Iterable[CrossCheckFlag]:
    birth = _as_date(front.date_of_birth)
    if birth is not None and birth != nid.birth_date:
        yield CrossCheckFlag.BIRTH_DATE_MISMATCH
    gender = _gender(front.gender)
    if gender is not None and gender != nid.gender:
        yield CrossCheckFlag.GENDER_MISMATCH


def _check_back(
    nid: NationalId | None, back: _BackFields, today: dt.date
) -> Iterable[CrossCheckFlag]:
    gender = _gender(back.gender)
    if nid is not None and gender is not None and gender != nid.gender:
        yield CrossCheckFlag.BACK_GENDER_MISMATCH
    expiry = _as_date(back.id_expiry)
    if expiry is not None and expiry < today:
        yield CrossCheckFlag.CARD_EXPIRED


def _parse_or_none(number: str | None, today: dt.date) -> NationalId | None:
    try:
        return parse_national_id(number, today=today) if number else None
    except InvalidNationalIdError:
        return None


def cross_check(outcome: _Outcome, *, today: dt.date | None = None) -> tuple[CrossCheckFlag, ...]:
    """List the disagreements between the national ID number and the rest of what OCR read.

    ``outcome`` is anything with ``front`` and ``back`` extracted data (a
    :class:`~vlens_async.VerificationOutcome`, say). Checks: the number parses; OCR's birth date
    and gender agree with it; front and back carry the same number; the card has not expired.
    An empty tuple means nothing disagreed (or nothing was extracted to compare).
    """
    today = today or dt.date.today()
    front, back = outcome.front, outcome.back
    front_number = front.id_number if front is not None else None
    back_number = back.id_number if back is not None else None
    flags: list[CrossCheckFlag] = []
    if (front is not None and not front_number) or (back is not None and not back_number):
        flags.append(CrossCheckFlag.ID_MISSING)
    if front_number and back_number and _digits(front_number) != _digits(back_number):
        flags.append(CrossCheckFlag.FRONT_BACK_ID_MISMATCH)
    front_nid = _parse_or_none(front_number, today)
    back_nid = _parse_or_none(back_number, today)
    if (front_number and front_nid is None) or (back_number and back_nid is None):
        flags.append(CrossCheckFlag.ID_INVALID)
    # Each side is checked against its own number, or the other side's when its own is unusable.
    nid_for_front = front_nid or back_nid
    if nid_for_front is not None and front is not None:
        flags.extend(_check_front(nid_for_front, front))
    if back is not None:
        flags.extend(_check_back(back_nid or front_nid, back, today))
    return tuple(flags)


def _digits(number: str) -> str:
    return "".join(c for c in number.translate(_ARABIC_DIGITS) if not _is_separator(c))
