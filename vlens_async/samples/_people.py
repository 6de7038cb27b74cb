"""Who the synthetic applicants are: their fields, national ID numbers, person ids, scenarios.

A card's fields travel in its code as a :class:`~vlens_async.samples._card_code.CardPayload` of
small integers (indexes into the tables of :mod:`._card_code`); :func:`fields_from_payload` expands
one into :class:`ApplicantFields`, for the drawers and for the readers alike.
"""

from __future__ import annotations

import hashlib
import random
from datetime import date, timedelta
from typing import Final, Literal

import attrs

from vlens_async._redact import mask_id
from vlens_async.errors import InvalidNationalIdError
from vlens_async.national_id import parse_national_id
from vlens_async.samples import _card_code as cc

#: Every scenario :func:`make_applicant` understands, and what the emulator should answer:
#: ``valid`` passes; ``expired`` (3010); ``back_of_other_card`` (back of another person's card,
#: 3101); ``aml_watchlisted`` (AML match); ``photocopy`` (a grey photocopy, spoofing);
#: ``identical_frames`` (the same face frame three times, liveness false); ``different_person``
#: (faces of someone else, liveness false); ``not_a_card`` (front and back are ordinary photos).
SCENARIOS: Final = (
    "valid",
    "expired",
    "back_of_other_card",
    "aml_watchlisted",
    "photocopy",
    "identical_frames",
    "different_person",
    "not_a_card",
)

_EPOCH: Final = date(2000, 1, 1)
_VALIDITY_YEARS: Final = 7
# Release-date windows. Fixed dates (not today's) keep output identical from day to day: valid
# cards expire between 2030-01 and 2033-06, expired ones by 2025-12. Move both windows forward
# (and _REFERENCE_YEAR, used for plausible jobs by age) before 2030.
_VALID_RELEASES: Final = (date(2023, 1, 1), date(2026, 6, 30))
_EXPIRED_RELEASES: Final = (date(2008, 1, 1), date(2018, 12, 31))
_REFERENCE_YEAR: Final = 2026


@attrs.frozen(repr=False)
class ApplicantFields:
    """The ground truth printed on (and encoded in) a synthetic card.

    ``national_id`` is 14 digits consistent with ``date_of_birth``, ``gender`` (13th digit odd for
    men) and the governorate code of ``govern``; ``person_id`` says whose face the card shows.
    The repr shows only the last 4 digits of the national ID and no names.
    """

    first_name: str
    last_names: str
    first_name_english: str
    last_names_english: str
    address: str
    address_english: str
    govern: str
    govern_english: str
    city: str
    district: str
    national_id: str
    date_of_birth: date
    gender: Literal["M", "F"]
    job: str
    job_english: str
    marital_status: str
    marital_status_english: str
    religion: str
    religion_english: str
    release_date: date
    expiry_date: date
    person_id: int

    @property
    def name(self) -> str:
        """The full Arabic name."""
        return f"{self.first_name} {self.last_names}"

    @property
    def name_english(self) -> str:
        """The full English name."""
        return f"{self.first_name_english} {self.last_names_english}"

    @property
    def id_key(self) -> str:
        """The card's serial (the front's ``idKey``), derived from the number and release date."""
        digest = hashlib.blake2b(
            f"{self.national_id}:{self.release_date}".encode(), digest_size=5
        ).digest()
        number = int.from_bytes(digest, "big")
        return "FC" + f"{number % 10**8:08d}"

    def __repr__(self) -> str:
        return (
            f"ApplicantFields(national_id={mask_id(self.national_id)!r}, gender={self.gender!r}, "
            f"expiry_date={self.expiry_date.isoformat()!r}, person_id={self.person_id})"
        )


# --- from a payload -------------------------------------------------------------------------------


def _add_years(day: date, years: int) -> date:
    """The same day ``years`` later (28 February for 29 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _parse_national_id(number: str) -> tuple[date, Literal["M", "F"], int] | None:
    """Birth date, gender and governorate code of a 14-digit number, or None if inconsistent."""
    try:
        nid = parse_national_id(number)
    except InvalidNationalIdError:
        return None
    gender: Literal["M", "F"] = "M" if nid.gender == "M" else "F"
    return nid.birth_date, gender, int(nid.governorate_code)


def fields_from_payload(p: cc.CardPayload) -> ApplicantFields | None:
    """Expand a card payload into fields through the tables; None when an index is out of range."""
    national_id = f"{p.national_id:014d}"
    parsed = _parse_national_id(national_id)
    if parsed is None or p.national_id >= 10**14:
        return None
    born, gender, code = parsed
    female = gender == "F"
    firsts = cc.FEMALE_NAMES if female else cc.MALE_NAMES
    gov = cc.GOVERNORATES.get(code)
    if (
        gov is None
        or p.first >= len(firsts)
        or max(p.father, p.grandfather) >= len(cc.MALE_NAMES)
        or p.family >= len(cc.FAMILY_NAMES)
        or p.city >= len(gov[2])
        or p.district >= len(cc.DISTRICTS)
        or p.street >= len(cc.STREETS)
        or p.job >= len(cc.JOBS)
        or p.religion >= len(cc.RELIGIONS)
    ):
        return None
    first, father, grand = firsts[p.first], cc.MALE_NAMES[p.father], cc.MALE_NAMES[p.grandfather]
    family = cc.FAMILY_NAMES[p.family]
    city, district, street = gov[2][p.city], cc.DISTRICTS[p.district], cc.STREETS[p.street]
    job, marital, religion = cc.JOBS[p.job], cc.MARITAL[p.marital], cc.RELIGIONS[p.religion]
    k = 1 if female else 0
    release = _EPOCH + timedelta(days=p.release)
    return ApplicantFields(
        first_name=first[0],
        last_names=f"{father[0]} {grand[0]} {family[0]}",
        first_name_english=first[1],
        last_names_english=f"{father[1]} {grand[1]} {family[1]}",
        address=f"{p.building} {street[0]} - {district[0]} - {city[0]}",
        address_english=f"{p.building} {street[1]}, {district[1]}, {city[1]}",
        govern=gov[0],
        govern_english=gov[1],
        city=city[0],
        district=district[0],
        national_id=national_id,
        date_of_birth=born,
        gender=gender,
        job=job[k],
        job_english=job[2],
        marital_status=marital[k],
        marital_status_english=marital[2],
        religion=religion[k],
        religion_english=religion[2],
        release_date=release,
        expiry_date=_add_years(release, _VALIDITY_YEARS),
        person_id=p.person_id,
    )


# --- drawing a payload ----------------------------------------------------------------------------


def _random_day(rng: random.Random, first: date, last: date) -> date:
    """A day between ``first`` and ``last`` (both included)."""
    return first + timedelta(days=rng.randrange((last - first).days + 1))


def _person_id(key: str, male: bool) -> int:
    """A 24-bit person id whose lowest bit is the gender (1 for men): faces follow it."""
    digest = hashlib.blake2b(key.encode(), digest_size=3).digest()
    return (int.from_bytes(digest, "big") & ~1) | int(male)


def _make_payload(key: str, *, expired: bool) -> cc.CardPayload:
    """Draw a consistent random card payload; ``key`` seeds it, ``expired`` moves the dates back."""
    rng = random.Random(f"vlens-fields:{key}")
    male = rng.random() < 0.5
    born = _random_day(rng, date(1955, 1, 1), date(2001, 12, 31))
    code = rng.choice(sorted(cc.GOVERNORATES))
    sex_digit = rng.choice((1, 3, 5, 7, 9) if male else (0, 2, 4, 6, 8))
    number = (
        f"{2 if born.year < 2000 else 3}{born:%y%m%d}{code:02d}"
        f"{rng.randrange(1000):03d}{sex_digit}{rng.randrange(10)}"
    )
    age = _REFERENCE_YEAR - born.year
    jobs = [
        i
        for i, job in enumerate(cc.JOBS)
        if (job[2] != "Retired" or age >= 60)
        and (job[2] != "Student" or age <= 26)
        and (job[2] != "Housewife" or not male)
    ]
    dates = random.Random(f"vlens-dates:{key}")
    adult = _add_years(born, 16)
    first, last = _EXPIRED_RELEASES if expired else _VALID_RELEASES
    release = _random_day(dates, max(adult, first), last)
    return cc.CardPayload(
        side=0,
        photocopy=0,
        aml=0,
        person_id=_person_id(f"person:{key}", male),
        national_id=int(number),
        first=rng.randrange(len(cc.MALE_NAMES if male else cc.FEMALE_NAMES)),
        father=rng.randrange(len(cc.MALE_NAMES)),
        grandfather=rng.randrange(len(cc.MALE_NAMES)),
        family=rng.randrange(len(cc.FAMILY_NAMES)),
        city=rng.randrange(len(cc.GOVERNORATES[code][2])),
        district=rng.randrange(len(cc.DISTRICTS)),
        street=rng.randrange(len(cc.STREETS)),
        building=rng.randint(1, 499),
        job=rng.choice(jobs),
        marital=rng.choices(range(4), weights=(30, 55, 8, 7))[0] if age > 21 else 0,
        religion=0 if rng.random() < 0.85 else 1,
        release=(release - _EPOCH).days,
    )


# --- per seed and scenario ------------------------------------------------------------------------


def check_scenario(scenario: str) -> None:
    """Raise ValueError naming the valid scenarios unless ``scenario`` is one of them."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")


def payload_for(seed: int, scenario: str) -> tuple[cc.CardPayload, ApplicantFields]:
    """The card payload and fields of ``seed`` in ``scenario``."""
    payload = attrs.evolve(
        _make_payload(str(seed), expired=scenario == "expired"),
        photocopy=int(scenario == "photocopy"),
        aml=int(scenario == "aml_watchlisted"),
    )
    fields = fields_from_payload(payload)
    if fields is None:  # pragma: no cover - the generator only draws valid indexes
        raise AssertionError("generated an undecodable card")
    return payload, fields


def make_fields(seed: int, *, scenario: str = "valid") -> ApplicantFields:
    """Return the fields ``make_applicant(seed, scenario=scenario)`` carries, without any drawing.

    Cheap (well under a millisecond): the emulator can use it to give ordinary photos
    deterministic fields, and tests to check many seeds.
    """
    check_scenario(scenario)
    return payload_for(seed, scenario)[1]


def other_card(key: str, national_id: str) -> tuple[cc.CardPayload, ApplicantFields]:
    """Another person's card (for ``back_of_other_card``), with a different national ID."""
    for attempt in range(100):
        payload = _make_payload(f"{key}:other:{attempt}", expired=False)
        fields = fields_from_payload(payload)
        if fields is not None and fields.national_id != national_id:
            return payload, fields
    raise AssertionError("no other card found")  # pragma: no cover


def other_person(key: str, fields: ApplicantFields) -> int:
    """The person id of someone of the same gender as the card's (for ``different_person``)."""
    other = _person_id(f"person:{key}:other", bool(fields.person_id & 1))
    # The id has 23 random bits, so a clash is rare; flipping one keeps the gender bit.
    return other ^ 2 if other == fields.person_id else other
