"""The identity a scan yields: the fields of a card, read from a synthetic card or derived.

``IdentityFields`` is the emulator's own copy of a card's fields; :func:`from_card_fields` adapts
whatever ``samples.read_card`` returns (by attribute name, so nothing here depends on its class),
and :func:`derive_identity` makes deterministic, structurally valid fields from a transaction id
for any image that carries no synthetic card code (so a user's own photos work too).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import date, timedelta
from typing import Any, Final, Literal

import attrs

__all__ = ["GOVERNORATES", "IdentityFields", "derive_identity", "from_card_fields"]

# Governorate of birth: code -> (Arabic, English); API.md lists the codes.
GOVERNORATES: Final[dict[str, tuple[str, str]]] = {
    "01": ("القاهرة", "Cairo"),
    "02": ("الإسكندرية", "Alexandria"),
    "03": ("بورسعيد", "Port Said"),
    "04": ("السويس", "Suez"),
    "11": ("دمياط", "Damietta"),
    "12": ("الدقهلية", "Dakahlia"),
    "13": ("الشرقية", "Sharqia"),
    "14": ("القليوبية", "Qalyubia"),
    "15": ("كفر الشيخ", "Kafr El Sheikh"),
    "16": ("الغربية", "Gharbia"),
    "17": ("المنوفية", "Monufia"),
    "18": ("البحيرة", "Beheira"),
    "19": ("الإسماعيلية", "Ismailia"),
    "21": ("الجيزة", "Giza"),
    "22": ("بني سويف", "Beni Suef"),
    "23": ("الفيوم", "Fayoum"),
    "24": ("المنيا", "Minya"),
    "25": ("أسيوط", "Asyut"),
    "26": ("سوهاج", "Sohag"),
    "27": ("قنا", "Qena"),
    "28": ("أسوان", "Aswan"),
    "29": ("الأقصر", "Luxor"),
    "31": ("البحر الأحمر", "Red Sea"),
    "32": ("الوادي الجديد", "New Valley"),
    "33": ("مطروح", "Matrouh"),
    "34": ("شمال سيناء", "North Sinai"),
    "35": ("جنوب سيناء", "South Sinai"),
    "88": ("خارج الجمهورية", "Born abroad"),
}

_MALE: Final = (
    ("محمد", "Mohamed"),
    ("أحمد", "Ahmed"),
    ("محمود", "Mahmoud"),
    ("مصطفى", "Mostafa"),
    ("علي", "Ali"),
    ("حسن", "Hassan"),
    ("عمر", "Omar"),
    ("خالد", "Khaled"),
)
_FEMALE: Final = (
    ("فاطمة", "Fatma"),
    ("مريم", "Mariam"),
    ("نور", "Nour"),
    ("سارة", "Sara"),
    ("هدى", "Hoda"),
    ("منى", "Mona"),
    ("ياسمين", "Yasmin"),
    ("دينا", "Dina"),
)
_FAMILY: Final = (
    ("السيد", "El Sayed"),
    ("عبد الله", "Abdallah"),
    ("إبراهيم", "Ibrahim"),
    ("يوسف", "Youssef"),
    ("سليمان", "Soliman"),
    ("منصور", "Mansour"),
)
_DISTRICTS: Final = (("مدينة نصر", "Nasr City"), ("المعادي", "Maadi"), ("الدقي", "Dokki"))
_JOBS: Final = (("مهندس", "Engineer"), ("محاسب", "Accountant"), ("معلم", "Teacher"))
_RELIGIONS: Final = (("مسلم", "Muslim"), ("مسيحي", "Christian"))
_MARITAL: Final = (("أعزب", "Single"), ("متزوج", "Married"))


@attrs.frozen
class IdentityFields:
    """The fields printed on an Egyptian ID card (front and back); PII, so no repr of values."""

    first_name: str = attrs.field(repr=False)
    last_names: str = attrs.field(repr=False)
    first_name_english: str = attrs.field(repr=False)
    last_names_english: str = attrs.field(repr=False)
    address: str = attrs.field(repr=False)
    address_english: str = attrs.field(repr=False)
    govern: str = attrs.field(repr=False)
    govern_english: str = attrs.field(repr=False)
    city: str = attrs.field(repr=False)
    district: str = attrs.field(repr=False)
    national_id: str = attrs.field(repr=False)
    date_of_birth: date = attrs.field(repr=False)
    gender: Literal["M", "F"] = attrs.field(repr=False)
    job: str = attrs.field(repr=False)
    job_english: str = attrs.field(repr=False)
    marital_status: str = attrs.field(repr=False)
    marital_status_english: str = attrs.field(repr=False)
    religion: str = attrs.field(repr=False)
    religion_english: str = attrs.field(repr=False)
    release_date: date = attrs.field(repr=False)
    expiry_date: date = attrs.field(repr=False)
    person_id: int | None = None
    derived: bool = False
    card_key: str | None = attrs.field(default=None, repr=False)

    @property
    def id_key(self) -> str:
        """The card's serial (``idKey``): the card's own, else stable per national ID."""
        if self.card_key:
            return self.card_key
        digest = hashlib.sha256(self.national_id.encode()).hexdigest()
        return f"FC{int(digest[:12], 16) % 100_000_000:08d}"


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def from_card_fields(fields: Any) -> IdentityFields:
    """Adapt a ``samples.ApplicantFields`` (or anything with the same attribute names)."""
    names = [a.name for a in attrs.fields(IdentityFields) if a.name not in ("derived", "card_key")]
    values: dict[str, Any] = {}
    for name in names:
        value = getattr(fields, name, None)
        if name in ("date_of_birth", "release_date", "expiry_date"):
            value = _as_date(value)
        elif name == "person_id":
            value = None if value is None else int(value)
        elif name == "gender":
            value = "F" if str(value).upper().startswith("F") else "M"
        else:
            value = "" if value is None else str(value)
        values[name] = value
    key = getattr(fields, "id_key", None)
    return IdentityFields(**values, card_key=str(key) if key else None)


def derive_identity(transaction_id: str) -> IdentityFields:
    """Deterministic, structurally valid fields for an image without a card code."""
    rng = random.Random(uuid.UUID(transaction_id).int ^ 0x5EED)
    gender: Literal["M", "F"] = rng.choice(("M", "F"))
    first = rng.choice(_MALE if gender == "M" else _FEMALE)
    father, grandfather = rng.choice(_MALE), rng.choice(_MALE)
    family = rng.choice(_FAMILY)
    born = date(1955, 1, 1) + timedelta(days=rng.randrange(365 * 48))
    gov_code = rng.choice([c for c in GOVERNORATES if c != "88"])
    sequence = rng.randrange(100, 1000)
    gender_digit = rng.choice((1, 3, 5, 7, 9) if gender == "M" else (0, 2, 4, 6, 8))
    century = "2" if born.year < 2000 else "3"
    check_digit = rng.randrange(10)  # the real check-digit algorithm is not public
    national_id = f"{century}{born:%y%m%d}{gov_code}{sequence:03d}{gender_digit}{check_digit}"
    district = rng.choice(_DISTRICTS)
    job, religion, marital = rng.choice(_JOBS), rng.choice(_RELIGIONS), rng.choice(_MARITAL)
    released = date(2021, 1, 1) + timedelta(days=rng.randrange(365 * 4))
    street = rng.randrange(1, 120)
    gov_ar, gov_en = GOVERNORATES[gov_code]
    return IdentityFields(
        first_name=first[0],
        last_names=f"{father[0]} {grandfather[0]} {family[0]}",
        first_name_english=first[1],
        last_names_english=f"{father[1]} {grandfather[1]} {family[1]}",
        address=f"{street} شارع النصر، {district[0]}، {gov_ar}",
        address_english=f"{street} El Nasr St, {district[1]}, {gov_en}",
        govern=gov_ar,
        govern_english=gov_en,
        city=gov_ar,
        district=district[0],
        national_id=national_id,
        date_of_birth=born,
        gender=gender,
        job=job[0],
        job_english=job[1],
        marital_status=marital[0],
        marital_status_english=marital[1],
        religion=religion[0],
        religion_english=religion[1],
        release_date=released,
        expiry_date=released + timedelta(days=7 * 365),
        person_id=None,
        derived=True,
    )
