"""Synthetic applicants: Egyptian ID card images, face frames, and the fields they carry.

:func:`make_applicant` draws the front and back of a national ID card (about 1600x1000 JPEG, Arabic
and English fields, a face photo) and three face frames of the same synthetic person (720x960 JPEG,
with the small shifts, tilts and lighting changes a camera gives), together with the ground truth,
:class:`ApplicantFields`. Everything is deterministic: the same seed gives identical bytes.

A scenario, chosen by the cards and frames themselves, drives the emulator's verdict (see
:data:`SCENARIOS`). Each card carries its fields in a coarse 2D code (big black and white cells with
a CRC), which :func:`read_card` decodes, also after the client scaled the image to 1280 px and
re-encoded it at JPEG quality 60; face frames carry a smaller code read by :func:`read_face`. Both
return ``None`` for any other image, and never raise.

:func:`make_photo` makes photo-like JPEGs of any size (gradients, texture, noise) for benchmarks.

Example::

    applicant = make_applicant(7, scenario="expired")
    reading = read_card(applicant.front)
    assert reading is not None and reading.fields == applicant.fields
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import random
from datetime import date, timedelta
from typing import Final, Literal

import attrs
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps, features

from vlens_async.samples import _card_code as cc
from vlens_async._redact import mask_id
from vlens_async.errors import InvalidNationalIdError
from vlens_async.national_id import parse_national_id

__all__ = [
    "SCENARIOS",
    "Applicant",
    "ApplicantFields",
    "CardReading",
    "FaceReading",
    "make_applicant",
    "make_fields",
    "make_photo",
    "read_card",
    "read_face",
]

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

CARD_SIZE: Final = (1600, 1000)
FACE_SIZE: Final = (720, 960)
# Where the codes sit, in pixels of the original size (black border box; the quiet zone is outside).
_FRONT_CODE: Final = (56, 700, 616, 940)
_BACK_CODE: Final = (984, 700, 1544, 940)
_FACE_CODE: Final = (400, 790, 680, 934)
_PHOTO_BOX: Final = (60, 150, 435, 650)
_EPOCH: Final = date(2000, 1, 1)
_VALIDITY_YEARS: Final = 7
# Release-date windows. Fixed dates (not today's) keep output identical from day to day: valid
# cards expire between 2030-01 and 2033-06, expired ones by 2025-12. Move both windows forward
# (and _REFERENCE_YEAR, used for plausible jobs by age) before 2030.
_VALID_RELEASES: Final = (date(2023, 1, 1), date(2026, 6, 30))
_EXPIRED_RELEASES: Final = (date(2008, 1, 1), date(2018, 12, 31))
_REFERENCE_YEAR: Final = 2026
# Long side, in pixels, at which codes are read: cells stay >= 7 px on a 1280 px card.
_READ_SIDE: Final = 400
_MAX_READ_PIXELS: Final = 50_000_000
# Only these Pillow parsers see untrusted bytes (EPS, for one, would start Ghostscript).
_READ_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_JPEG_QUALITY: Final = 90
_ARABIC_DIGITS: Final = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def _rel(box: tuple[int, int, int, int], size: tuple[int, int]) -> cc.Box:
    return (box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1])


# --- values ---------------------------------------------------------------------------------------


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


@attrs.frozen(repr=False)
class Applicant:
    """A synthetic applicant: card sides and face frames as JPEG bytes, and the truth they carry.

    ``fields`` describes the card's front (for ``back_of_other_card`` the back belongs to someone
    else). The repr shows no bytes and no personal data.
    """

    seed: int
    scenario: str
    front: bytes
    back: bytes
    faces: tuple[bytes, bytes, bytes]
    fields: ApplicantFields

    def __repr__(self) -> str:
        sizes = "/".join(str(len(f)) for f in self.faces)
        return (
            f"Applicant(seed={self.seed}, scenario={self.scenario!r},"
            f" front=<{len(self.front)} bytes>, back=<{len(self.back)} bytes>,"
            f" faces=<{sizes} bytes>, fields={self.fields!r})"
        )


@attrs.frozen(repr=False)
class CardReading:
    """What :func:`read_card` found: the side, the fields, and flags.

    ``flags`` may hold ``"photocopy"`` (spoofing) and ``"aml_watchlisted"``.
    """

    side: Literal["front", "back"]
    fields: ApplicantFields
    flags: frozenset[str]

    def __repr__(self) -> str:
        return (
            f"CardReading(side={self.side!r}, flags={sorted(self.flags)!r}, fields={self.fields!r})"
        )


@attrs.frozen
class FaceReading:
    """What :func:`read_face` found: whose face, and the frame's pose.

    ``pose`` is ``(dx, dy, rotation_degrees, light)``: the frame's shift in pixels (at 720x960),
    tilt and relative brightness change. Three frames of one capture share ``person_id`` and
    differ in ``pose``; ``frame`` is the frame's index in its capture (0-2).
    """

    person_id: int
    pose: tuple[float, float, float, float]
    frame: int = 0


# --- fields ---------------------------------------------------------------------------------------


def _add_years(day: date, years: int) -> date:
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


def _fields_from_payload(p: cc.CardPayload) -> ApplicantFields | None:
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


def _random_day(rng: random.Random, first: date, last: date) -> date:
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


# --- drawing helpers ------------------------------------------------------------------------------

Color = tuple[int, int, int]
_RAQM: Final = features.check("raqm")
_FONT_FILES: Final = {
    False: ("DejaVuSans.ttf", "NotoSansArabic-Regular.ttf", "FreeSans.ttf", "Arial.ttf"),
    True: ("DejaVuSans-Bold.ttf", "NotoSansArabic-Bold.ttf", "FreeSansBold.ttf", "Arial Bold.ttf"),
}


@functools.lru_cache(maxsize=64)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font with Arabic glyphs when the machine has one (DejaVu Sans), else Pillow's default."""
    for name in _FONT_FILES[bold]:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: Color,
    *,
    bold: bool = False,
    rtl: bool = False,
) -> None:
    """Draw a line of text; Arabic (``rtl``) is right-aligned at ``xy`` and shaped when possible."""
    font = _font(size, bold)
    if rtl:
        if _RAQM:
            draw.text(xy, text, font=font, fill=fill, anchor="ra", direction="rtl")
        else:
            draw.text(xy, text, font=font, fill=fill, anchor="ra")
    else:
        draw.text(xy, text, font=font, fill=fill)


@functools.lru_cache(maxsize=1)
def _noise_tile() -> Image.Image:
    """A fixed RGB tile of fine noise centred on 128 (+-7), added to images as sensor grain.

    Pillow's ``effect_noise`` is not seedable, so the tile comes from a seeded ``random.Random``.
    """
    w, h = CARD_SIZE[0] + 100, CARD_SIZE[1] + 100
    rng = random.Random("vlens-noise")
    lut = [121 + (v * 15) // 256 for v in range(256)]
    bands = [Image.frombytes("L", (w, h), rng.randbytes(w * h)).point(lut) for _ in range(3)]
    return Image.merge("RGB", bands)


def _add_grain(image: Image.Image, rng: random.Random) -> Image.Image:
    tile = _noise_tile()
    x = rng.randrange(tile.width - image.width + 1)
    y = rng.randrange(tile.height - image.height + 1)
    grain = tile.crop((x, y, x + image.width, y + image.height))
    return ImageChops.add(image, grain, 1.0, -128)


def _gradient(size: tuple[int, int], top: Color, bottom: Color, angle: float = 0) -> Image.Image:
    """A smooth two-colour gradient, computed small and scaled up (cheap at any size)."""
    ramp = Image.linear_gradient("L").rotate(
        angle, resample=Image.Resampling.BILINEAR, expand=False
    )
    ramp = ImageOps.colorize(ramp.crop((32, 32, 224, 224)), top, bottom)
    return ramp.resize(size, Image.Resampling.BILINEAR)


def _mix(a: Color, b: Color, t: float) -> Color:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _to_jpeg(image: Image.Image, quality: int = _JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --- faces ----------------------------------------------------------------------------------------

_SKINS: Final[tuple[Color, ...]] = (
    (241, 204, 177), (232, 186, 150), (224, 172, 125), (205, 150, 105),
    (184, 128, 88), (160, 108, 72), (128, 86, 58), (214, 164, 132),
)  # fmt: skip
_HAIRS: Final[tuple[Color, ...]] = (
    (25, 20, 18), (45, 32, 24), (70, 48, 32), (98, 70, 45), (140, 132, 128),
)  # fmt: skip
_IRISES: Final[tuple[Color, ...]] = ((60, 38, 24), (92, 60, 34), (110, 92, 50), (70, 100, 70))
_CLOTHES: Final[tuple[Color, ...]] = (
    (40, 60, 110), (120, 30, 40), (35, 35, 40), (220, 220, 225), (60, 110, 80), (150, 120, 90),
    (90, 60, 120), (200, 170, 120),
)  # fmt: skip
_WALLS: Final[tuple[Color, ...]] = (
    (210, 200, 185), (180, 190, 200), (150, 160, 150), (225, 215, 200), (120, 110, 105),
)  # fmt: skip
_PORTRAIT: Final = (360, 480)  # faces are drawn at half size and scaled up, which also softens them
_ZOOM: Final = 1.18  # frames show the portrait's centre, so shifts and tilts never reveal an edge
_MAX_SHIFT: Final = 24  # pixels at 720x960
_MAX_TILT: Final = 30  # tenths of a degree
_MIN_MOTION: Final = 30  # pixels (|dx| + |dy|) between any two frames of a capture


@attrs.frozen
class _Look:
    """What a synthetic person looks like; everything derives from the person id."""

    male: bool
    skin: Color
    hair: Color
    iris: Color
    cloth: Color
    scarf: Color
    style: str
    beard: bool
    glasses: bool
    width: float
    height: float
    offset: float


def _look(person_id: int) -> _Look:
    rng = random.Random(f"vlens-face:{person_id}")
    male = bool(person_id & 1)
    return _Look(
        male=male,
        skin=_mix(rng.choice(_SKINS), (128, 100, 80), rng.uniform(-0.08, 0.08)),
        hair=rng.choice(_HAIRS),
        iris=rng.choice(_IRISES),
        cloth=rng.choice(_CLOTHES),
        scarf=_mix(rng.choice(_CLOTHES), (128, 128, 128), 0.2),
        style=rng.choice(("short", "short", "receding") if male else ("long", "hijab", "hijab")),
        beard=male and rng.random() < 0.4,
        glasses=rng.random() < 0.2,
        width=rng.uniform(0.17, 0.2),
        height=rng.uniform(0.19, 0.22),
        offset=rng.uniform(-8, 8),
    )


def _room(person_id: int) -> Image.Image:
    """A wall with a door or window behind the person, as a webcam would see it."""
    rng = random.Random(f"vlens-room:{person_id}")
    wall = rng.choice(_WALLS)
    light, dark = _mix(wall, (255, 255, 255), 0.2), _mix(wall, (0, 0, 0), 0.25)
    image = _gradient(_PORTRAIT, light, dark, angle=rng.uniform(-30, 30))
    x = rng.randrange(-40, 260)
    box = (x, rng.randrange(20, 120), x + rng.randrange(60, 140), _PORTRAIT[1])
    ImageDraw.Draw(image).rectangle(box, fill=_mix(wall, (255, 250, 235), 0.35))
    return image


@functools.lru_cache(maxsize=8)
def _portrait(person_id: int, plain: bool) -> Image.Image:
    """Draw ``person_id``'s head and shoulders at 360x480, on a plain or a room background."""
    look = _look(person_id)
    w, h = _PORTRAIT
    image = _gradient(_PORTRAIT, (236, 240, 244), (208, 216, 226)) if plain else _room(person_id)
    skin, hair = look.skin, look.hair
    shade = _mix(skin, (60, 30, 20), 0.22)
    d = ImageDraw.Draw(image)
    cx, cy = w / 2 + look.offset, h * 0.42
    a, b = w * look.width, h * look.height
    d.ellipse((cx - 2.7 * a, cy + 1.15 * b, cx + 2.7 * a, cy + 4.2 * b), fill=look.cloth)
    if look.style == "hijab":
        d.ellipse((cx - 1.9 * a, cy + 0.1 * b, cx + 1.9 * a, cy + 2.4 * b), fill=look.scarf)
        d.ellipse((cx - 1.35 * a, cy - 1.25 * b, cx + 1.35 * a, cy + 1.2 * b), fill=look.scarf)
    else:
        if look.style == "long":
            d.ellipse((cx - 1.3 * a, cy - 1.12 * b, cx + 1.3 * a, cy + 1.6 * b), fill=hair)
        d.rectangle((cx - 0.42 * a, cy + 0.5 * b, cx + 0.42 * a, cy + 1.3 * b), fill=shade)
        for side in (-1, 1):
            ex = cx + side * a
            d.ellipse((ex - 0.14 * a, cy - 0.2 * b, ex + 0.14 * a, cy + 0.2 * b), fill=shade)
    d.ellipse((cx - a, cy - b, cx + a, cy + b), fill=skin)
    # Side light: a soft darker crescent on one cheek gives the flat ellipse some volume.
    mask = Image.new("L", _PORTRAIT, 0)
    md = ImageDraw.Draw(mask)
    md.ellipse((cx - a, cy - b, cx + a, cy + b), fill=90)
    md.ellipse((cx - 0.7 * a, cy - 1.1 * b, cx + 1.3 * a, cy + 0.9 * b), fill=0)
    image.paste(shade, (0, 0), mask.filter(ImageFilter.BoxBlur(6)))
    if look.style != "hijab":
        top = 0.62 if look.style == "receding" else 0.4
        box = (cx - 1.05 * a, cy - 1.12 * b, cx + 1.05 * a, cy + (1 - 2 * top) * b * 1.1)
        d.chord(box, 180, 360, fill=hair)
    brow = _mix(hair, (0, 0, 0), 0.2)
    for side in (-1, 1):
        ex, ey = cx + side * 0.4 * a, cy - 0.1 * b
        line = (ex - 0.25 * a, ey - 0.2 * b, ex + 0.25 * a, ey - 0.2 * b - side * 0.02 * b)
        d.line(line, fill=brow, width=max(2, round(0.07 * a)))
        d.ellipse(
            (ex - 0.22 * a, ey - 0.075 * b, ex + 0.22 * a, ey + 0.075 * b), fill=(245, 245, 240)
        )
        r = 0.09 * a
        d.ellipse((ex - r, ey - r, ex + r, ey + r), fill=look.iris)
        d.ellipse((ex - r / 2, ey - r / 2, ex + r / 2, ey + r / 2), fill=(10, 10, 10))
        d.ellipse((ex + r / 4, ey - r / 2, ex + r / 2 + 1, ey - r / 4 + 1), fill=(255, 255, 255))
    nose = (cx, cy - 0.02 * b, cx - 0.1 * a, cy + 0.24 * b, cx + 0.08 * a, cy + 0.27 * b)
    d.line(nose, fill=shade, width=max(2, round(0.04 * a)))
    if look.beard:
        d.chord((cx - a, cy - 0.2 * b, cx + a, cy + 1.04 * b), 0, 180, fill=hair)
    lips = _mix(skin, (150, 50, 60), 0.45 if look.male else 0.65)
    d.ellipse((cx - 0.3 * a, cy + 0.42 * b, cx + 0.3 * a, cy + 0.55 * b), fill=lips)
    d.line((cx - 0.28 * a, cy + 0.485 * b, cx + 0.28 * a, cy + 0.485 * b), fill=shade, width=2)
    if look.glasses:
        for side in (-1, 1):
            ex = cx + side * 0.4 * a
            frame = (ex - 0.3 * a, cy - 0.22 * b, ex + 0.3 * a, cy + 0.04 * b)
            d.rounded_rectangle(frame, radius=6, outline=(30, 30, 30), width=3)
        d.line(
            (cx - 0.1 * a, cy - 0.12 * b, cx + 0.1 * a, cy - 0.12 * b), fill=(30, 30, 30), width=3
        )
    # Drawing has no anti-aliasing; a light blur stands in for it (and for a lens).
    return image.filter(ImageFilter.BoxBlur(1))


def _pose_matrix(
    dx: float, dy: float, degrees: float
) -> tuple[float, float, float, float, float, float]:
    """Affine data mapping portrait-sized output pixels into the portrait: zoom, tilt, shift."""
    s = 1 / _ZOOM
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    ox, oy = _PORTRAIT[0] / 2 + dx, _PORTRAIT[1] / 2 + dy
    a, b, d, e = s * cos, s * sin, -s * sin, s * cos
    return (a, b, _PORTRAIT[0] / 2 - a * ox - b * oy, d, e, _PORTRAIT[1] / 2 - d * ox - e * oy)


def _frame_poses(key: str) -> list[cc.FacePayload]:
    """Three poses of a capture: shift, tilt (0.1 degree) and light (%) differ between frames.

    A hand-held phone moves the face by a few percent of the frame within half a second; every
    pair of frames here is at least _MIN_MOTION pixels apart, so the client's identical-frame
    check (a normalised 32 px thumbnail) always sees real motion.
    """
    rng = random.Random(f"vlens-poses:{key}")
    poses: list[cc.FacePayload] = []
    while len(poses) < 3:
        pose = cc.FacePayload(
            person_id=0,
            frame=len(poses),
            dx=rng.randint(-_MAX_SHIFT, _MAX_SHIFT),
            dy=rng.randint(-_MAX_SHIFT, _MAX_SHIFT),
            rotation=rng.randint(-_MAX_TILT, _MAX_TILT),
            light=rng.randint(-8, 8),
        )
        if all(abs(p.dx - pose.dx) + abs(p.dy - pose.dy) >= _MIN_MOTION for p in poses):
            poses.append(pose)
    return poses


def _face_frame(person_id: int, pose: cc.FacePayload, rng: random.Random) -> bytes:
    """Render one camera frame of ``person_id`` in ``pose``, with its face code, as JPEG."""
    portrait = _portrait(person_id, False)
    # Move at portrait size (a quarter of the pixels), then scale up: the affine transform is
    # Pillow's slow path, the resize its fast one.
    scale = _PORTRAIT[0] / FACE_SIZE[0]
    matrix = _pose_matrix(pose.dx * scale, pose.dy * scale, pose.rotation / 10)
    moved = portrait.transform(
        _PORTRAIT, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR
    )
    frame = moved.resize(FACE_SIZE, Image.Resampling.BILINEAR)
    gain = 1 + pose.light / 100
    frame = frame.point([min(255, round(v * gain)) for v in range(256)] * 3)
    frame = _add_grain(frame, rng)
    payload = attrs.evolve(pose, person_id=person_id)
    cc.draw_grid(ImageDraw.Draw(frame), _FACE_CODE, cc.FACE_GRID, cc.pack_face(payload))
    return _to_jpeg(frame)


# --- cards ----------------------------------------------------------------------------------------

_INK: Final[Color] = (28, 30, 36)
_LABEL: Final[Color] = (96, 104, 110)
_RIGHT: Final = 1540  # right edge of Arabic text


def _ar_digits(text: str) -> str:
    return text.translate(_ARABIC_DIGITS)


@functools.lru_cache(maxsize=2)
def _card_template(side: str) -> Image.Image:
    """The unchanging parts of a card side: table, card stock, guilloche, headings, labels."""
    w, h = CARD_SIZE
    image = _gradient(CARD_SIZE, (70, 62, 56), (40, 36, 34), angle=35)
    tones = (
        ((214, 232, 228), (242, 228, 206))
        if side == "front"
        else ((226, 230, 214), (232, 218, 226))
    )
    stock = _gradient(CARD_SIZE, tones[0], tones[1], angle=60 if side == "front" else -60)
    d = ImageDraw.Draw(stock)
    wave = _mix(tones[0], (90, 140, 150), 0.25)
    for k in range(22):
        y0, amp, period, phase = 60 + k * 42, 10 + (k % 5) * 5, 180 + (k % 7) * 40, k * 0.7
        points = [
            (x, y0 + amp * math.sin(x * 2 * math.pi / period + phase)) for x in range(0, w, 10)
        ]
        d.line(points, fill=wave, width=2)
    seal = (800, 500) if side == "front" else (230, 800)
    for r in range(40, 200, 22):
        d.ellipse(
            (seal[0] - r, seal[1] - r, seal[0] + r, seal[1] + r),
            outline=_mix(tones[1], (160, 120, 60), 0.3),
            width=3,
        )
    mask = Image.new("L", CARD_SIZE, 0)
    ImageDraw.Draw(mask).rounded_rectangle((20, 20, w - 20, h - 20), radius=44, fill=255)
    image.paste(stock, (0, 0), mask)
    d = ImageDraw.Draw(image)
    if side == "front":
        _text(d, (_RIGHT, 36), "جمهورية مصر العربية", 44, _INK, bold=True, rtl=True)
        _text(d, (_RIGHT, 94), "بطاقة تحقيق الشخصية", 32, _INK, rtl=True)
        _text(d, (60, 44), "ARAB REPUBLIC OF EGYPT", 30, _INK, bold=True)
        _text(d, (60, 88), "NATIONAL IDENTITY CARD", 24, _LABEL)
        _text(d, (_RIGHT, 160), "الاسم", 24, _LABEL, rtl=True)
        _text(d, (_RIGHT, 380), "العنوان", 24, _LABEL, rtl=True)
        _text(d, (_RIGHT, 578), "تاريخ الميلاد", 24, _LABEL, rtl=True)
        _text(d, (_RIGHT, 690), "الرقم القومي", 24, _LABEL, rtl=True)
        d.rectangle(_PHOTO_BOX, outline=(120, 130, 130), width=3)
    else:
        _text(d, (_RIGHT, 40), "الرقم القومي", 24, _LABEL, rtl=True)
        _text(d, (60, 40), "NATIONAL ID No.", 22, _LABEL)
        _text(d, (_RIGHT, 520), "مصلحة الأحوال المدنية", 26, _LABEL, rtl=True)
        _text(d, (60, 520), "CIVIL STATUS ORGANIZATION", 22, _LABEL)
    return image


def _draw_front(image: Image.Image, f: ApplicantFields) -> None:
    d = ImageDraw.Draw(image)
    photo = _portrait(f.person_id, True).resize(
        (_PHOTO_BOX[2] - _PHOTO_BOX[0], _PHOTO_BOX[3] - _PHOTO_BOX[1]), Image.Resampling.BICUBIC
    )
    image.paste(photo, _PHOTO_BOX[:2])
    _text(d, (_RIGHT, 194), f.first_name, 54, _INK, bold=True, rtl=True)
    _text(d, (_RIGHT, 262), f.last_names, 42, _INK, rtl=True)
    _text(d, (480, 326), f.name_english.upper(), 28, _INK)
    street, _, rest = f.address.partition(" - ")
    _text(d, (_RIGHT, 412), _ar_digits(street), 36, _INK, rtl=True)
    _text(d, (_RIGHT, 462), f"{rest} - {f.govern}", 34, _INK, rtl=True)
    _text(d, (480, 520), f"{f.address_english}, {f.govern_english}", 24, _INK)
    _text(d, (_RIGHT, 612), _ar_digits(f"{f.date_of_birth:%Y/%m/%d}"), 36, _INK, rtl=True)
    _text(d, (680, 612), f"{f.date_of_birth:%d %b %Y}", 28, _INK)
    _text(d, (_RIGHT, 726), _ar_digits(f.national_id), 64, _INK, bold=True, rtl=True)
    _text(d, (_RIGHT - 520, 826), " ".join(f.national_id), 30, _INK)
    _text(d, (_RIGHT - 520, 886), f.id_key, 26, _LABEL)


def _draw_back(image: Image.Image, f: ApplicantFields) -> None:
    d = ImageDraw.Draw(image)
    male = f.gender == "M"
    _text(d, (_RIGHT, 76), _ar_digits(f.national_id), 50, _INK, bold=True, rtl=True)
    _text(d, (60, 80), f.national_id, 40, _INK, bold=True)
    rows = (
        (f"المهنة: {f.job}", f"Occupation: {f.job_english}"),
        (
            f"{'ذكر' if male else 'أنثى'} - {f.religion} - {f.marital_status}",
            f"{'Male' if male else 'Female'} / {f.religion_english} / {f.marital_status_english}",
        ),
        (
            "تاريخ الإصدار: " + _ar_digits(f"{f.release_date:%Y/%m}"),
            f"Issued: {f.release_date:%Y-%m}",
        ),
        (
            "البطاقة سارية حتى: " + _ar_digits(f"{f.expiry_date:%Y/%m/%d}"),
            f"Valid until: {f.expiry_date:%Y-%m-%d}",
        ),
    )
    for i, (arabic, english) in enumerate(rows):
        _text(d, (_RIGHT, 160 + 84 * i), arabic, 38, _INK, rtl=True)
        _text(d, (60, 168 + 84 * i), english, 28, _INK)
    # Security stripes, varying with the number (decoration only; the code is what is read).
    bars = hashlib.blake2b(f.national_id.encode(), digest_size=32).digest()
    x = 420
    for byte in bars:
        width = 2 + byte % 5
        d.rectangle((x, 600, x + width, 650), fill=_INK)
        x += width + 3 + (byte >> 5)
        if x > 900:
            break


def _photocopy(image: Image.Image, rng: random.Random) -> Image.Image:
    """Make a card look like a grey office photocopy: no colour, flat tones, toner speckle, blur."""
    grey = image.convert("L")
    grey = grey.point([round(40 + 178 * (v / 255) ** 0.75) for v in range(256)])
    grey = grey.filter(ImageFilter.BoxBlur(1))
    tile = _noise_tile().getchannel(0)
    x, y = rng.randrange(100), rng.randrange(100)
    speckle = tile.crop((x, y, x + grey.width, y + grey.height))
    grey = ImageChops.add(grey, speckle, 1.0, -128)
    grey = ImageChops.add(grey, speckle.rotate(180), 1.0, -128)
    warm = grey.point([round(v * 0.96) for v in range(256)])
    return Image.merge("RGB", (grey, grey, warm))


def _card_side(
    payload: cc.CardPayload, fields: ApplicantFields, *, side: str, photocopy: bool, key: str
) -> bytes:
    """Draw one side of a card with its code, as JPEG bytes."""
    image = _card_template(side).copy()
    if side == "front":
        _draw_front(image, fields)
    else:
        _draw_back(image, fields)
    bits = cc.pack_card(attrs.evolve(payload, side=int(side == "back")))
    cc.draw_grid(
        ImageDraw.Draw(image), _FRONT_CODE if side == "front" else _BACK_CODE, cc.CARD_GRID, bits
    )
    rng = random.Random(f"vlens-grain:{key}:{side}")
    image = _photocopy(image, rng) if photocopy else _add_grain(image, rng)
    return _to_jpeg(image)


# --- photos ---------------------------------------------------------------------------------------


def _fractal(rng: random.Random, size: tuple[int, int], octaves: range) -> Image.Image:
    """Multi-scale value noise (mode L, centred on 128): 2**octave random cells across each layer.

    Fine layers go in first, so each coarser layer halves the weight of all before it and the
    coarse structure dominates, as in natural images.
    """
    texture: Image.Image | None = None
    for octave in reversed(octaves):
        cells = (1 << octave, max(1, (1 << octave) * size[1] // size[0]))
        layer = Image.frombytes("L", cells, rng.randbytes(cells[0] * cells[1]))
        layer = layer.resize(size, Image.Resampling.BICUBIC)
        texture = layer if texture is None else Image.blend(texture, layer, 0.5)
    assert texture is not None
    return texture


def _landscape(width: int, height: int, key: str, hard: bool) -> Image.Image:
    """A landscape-like picture: sky, hills, sun, multi-scale texture, then grain at full size."""
    rng = random.Random(f"vlens-photo:{key}")
    small = (max(8, width // 4), max(8, height // 4))

    def color(lows: Color, highs: Color) -> Color:
        return (
            rng.randrange(lows[0], highs[0]),
            rng.randrange(lows[1], highs[1]),
            rng.randrange(lows[2], highs[2]),
        )

    sky = _gradient(
        small, color((60, 120, 190), (140, 190, 250)), color((200, 200, 180), (250, 240, 230))
    )
    ground = _gradient(
        small, color((60, 100, 30), (120, 160, 80)), color((40, 50, 20), (90, 90, 50))
    )
    ground_mask = Image.new("L", small, 0)
    d = ImageDraw.Draw(ground_mask)
    y = small[1] * rng.uniform(0.4, 0.65)
    points = [(0.0, float(small[1]))]
    step = max(1, small[0] // 64)
    for x in range(0, small[0] + step, step):
        y = min(small[1] * 0.9, max(small[1] * 0.2, y + rng.uniform(-1, 1) * step / 2))
        points.append((float(x), y))
    points.append((float(small[0]), float(small[1])))
    d.polygon(points, fill=255)
    image = Image.composite(ground, sky, ground_mask)
    d = ImageDraw.Draw(image)
    sx, sy, r = rng.uniform(0.1, 0.9) * small[0], rng.uniform(0.05, 0.3) * small[1], small[0] / 30
    d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 244, 210))
    trees = ImageDraw.Draw(ground_mask)
    for _ in range(rng.randint(3, 12)):  # trees along the horizon, textured like the grass
        tx, ty = points[rng.randrange(1, len(points) - 1)]
        tr = small[0] * rng.uniform(0.015, 0.05)
        crown = (tx - tr, ty - 2.2 * tr, tx + tr, ty + 0.3 * tr)
        d.ellipse(crown, fill=color((20, 50, 15), (60, 90, 40)))
        trees.ellipse(crown, fill=255)
    clouds = _fractal(rng, small, range(1, 5)).point(
        [128 + max(0, v - 128) * 3 // 4 for v in range(256)]
    )
    grass = _fractal(rng, small, range(3, 8)).point(
        [max(0, min(255, 128 + (v - 128) // 2)) for v in range(256)]
    )
    texture = Image.composite(grass, clouds, ground_mask)
    image = ImageChops.add(image, texture.convert("RGB"), 1.0, -128).filter(ImageFilter.BoxBlur(1))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    if hard:
        grain_size, spread = (width, height), 96
    else:
        grain_size, spread = (max(1, width // 2), max(1, height // 2)), 14
    grain = Image.frombytes("L", grain_size, rng.randbytes(grain_size[0] * grain_size[1]))
    grain = grain.point([128 - spread // 2 + v * spread // 256 for v in range(256)])
    if grain.size != image.size:
        grain = grain.resize(image.size, Image.Resampling.BILINEAR)
    return ImageChops.add(image, grain.convert("RGB"), 1.0, -128)


def make_photo(width: int, height: int, seed: int, hard: bool = False) -> bytes:
    """Return a photo-like JPEG of ``width`` x ``height`` pixels, deterministic for ``seed``.

    The picture is a landscape made of gradients, multi-scale texture and grain, so it compresses
    like a camera photo; ``hard=True`` adds strong full-resolution grain, which compresses badly
    (for testing size budgets). A 12 MP (4000x3000) photo takes well under a second. It carries no
    card or face code.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    return _to_jpeg(_landscape(width, height, f"{seed}:{int(hard)}", hard))


# --- applicants -----------------------------------------------------------------------------------


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")


def _payload(seed: int, scenario: str) -> tuple[cc.CardPayload, ApplicantFields]:
    """The card payload and fields of ``seed`` in ``scenario``."""
    payload = attrs.evolve(
        _make_payload(str(seed), expired=scenario == "expired"),
        photocopy=int(scenario == "photocopy"),
        aml=int(scenario == "aml_watchlisted"),
    )
    fields = _fields_from_payload(payload)
    if fields is None:  # pragma: no cover - the generator only draws valid indexes
        raise AssertionError("generated an undecodable card")
    return payload, fields


def make_fields(seed: int, *, scenario: str = "valid") -> ApplicantFields:
    """Return the fields ``make_applicant(seed, scenario=scenario)`` carries, without any drawing.

    Cheap (well under a millisecond): the emulator can use it to give ordinary photos
    deterministic fields, and tests to check many seeds.
    """
    _check_scenario(scenario)
    return _payload(seed, scenario)[1]


def make_applicant(seed: int, *, scenario: str = "valid") -> Applicant:
    """Return a synthetic applicant for ``seed`` in ``scenario`` (one of :data:`SCENARIOS`).

    The same seed and scenario always give identical bytes; different scenarios of one seed share
    the person (names, address, face) wherever the scenario allows. Takes about 0.1 s.
    """
    _check_scenario(scenario)
    key = str(seed)
    payload, fields = _payload(seed, scenario)
    photocopy = scenario == "photocopy"
    if scenario == "not_a_card":
        front = _to_jpeg(_landscape(*CARD_SIZE, f"not-a-card:{key}:front", False))
        back = _to_jpeg(_landscape(*CARD_SIZE, f"not-a-card:{key}:back", False))
    else:
        front = _card_side(payload, fields, side="front", photocopy=photocopy, key=key)
        back_payload, back_fields = payload, fields
        if scenario == "back_of_other_card":
            back_payload, back_fields = _other_card(key, fields.national_id)
        back = _card_side(back_payload, back_fields, side="back", photocopy=photocopy, key=key)
    face_person = fields.person_id
    if scenario == "different_person":
        face_person = _person_id(f"person:{key}:other", bool(fields.person_id & 1))
        if face_person == fields.person_id:
            face_person ^= 2
    rng = random.Random(f"vlens-frames:{key}")
    poses = _frame_poses(key)
    if scenario == "identical_frames":
        one = _face_frame(face_person, poses[0], rng)
        faces = (one, one, one)
    else:
        faces = (
            _face_frame(face_person, poses[0], rng),
            _face_frame(face_person, poses[1], rng),
            _face_frame(face_person, poses[2], rng),
        )
    return Applicant(
        seed=seed, scenario=scenario, front=front, back=back, faces=faces, fields=fields
    )


def _other_card(key: str, national_id: str) -> tuple[cc.CardPayload, ApplicantFields]:
    """Another person's card (for ``back_of_other_card``), with a different national ID."""
    for attempt in range(100):
        payload = _make_payload(f"{key}:other:{attempt}", expired=False)
        fields = _fields_from_payload(payload)
        if fields is not None and fields.national_id != national_id:
            return payload, fields
    raise AssertionError("no other card found")  # pragma: no cover


# --- reading --------------------------------------------------------------------------------------


def _load_grey(data: bytes | bytearray | memoryview) -> Image.Image:
    """Decode ``data`` to a small greyscale image, letting libjpeg scale it down while decoding."""
    with Image.open(io.BytesIO(data), formats=_READ_FORMATS) as img:
        if img.width * img.height > _MAX_READ_PIXELS:
            raise ValueError("too large to read")
        long_side = max(img.size)
        if img.format == "JPEG" and long_side > _READ_SIDE:
            img.draft(
                "L", (img.width * _READ_SIDE // long_side, img.height * _READ_SIDE // long_side)
            )
        grey = img.convert("L")
    factor = max(grey.size) // _READ_SIDE
    return grey.reduce(factor) if factor >= 2 else grey


_FRONT_REL: Final = _rel(_FRONT_CODE, CARD_SIZE)
_BACK_REL: Final = _rel(_BACK_CODE, CARD_SIZE)
_FACE_REL: Final = _rel(_FACE_CODE, FACE_SIZE)


def read_card(image: bytes | bytearray | memoryview) -> CardReading | None:
    """Decode the card code of a card image from :func:`make_applicant`.

    Works on the original JPEG, on a copy scaled down (to 1280 px, say) and re-encoded at JPEG
    quality 60, and on the photocopy variant. Returns ``None`` for any image without a card code and
    for bytes that are not an image; it never raises. Takes a few milliseconds (the JPEG is decoded
    at reduced size).
    """
    try:
        grey = _load_grey(image)
        for box in (_FRONT_REL, _BACK_REL):
            for bits in cc.read_grid(grey, box, cc.CARD_GRID):
                payload = cc.unpack_card(bits)
                fields = None if payload is None else _fields_from_payload(payload)
                if payload is not None and fields is not None:
                    flags = {"photocopy"} if payload.photocopy else set()
                    if payload.aml:
                        flags.add("aml_watchlisted")
                    return CardReading(
                        side="back" if payload.side else "front",
                        fields=fields,
                        flags=frozenset(flags),
                    )
    except Exception:  # garbage in, None out: the emulator treats it as "no card code"
        return None
    return None


def read_face(image: bytes | bytearray | memoryview) -> FaceReading | None:
    """Decode the face code of a frame from :func:`make_applicant` (person and pose).

    Survives scaling and JPEG quality 60 like :func:`read_card`; ``None`` for any other image or
    for bytes that are not an image; never raises.
    """
    try:
        grey = _load_grey(image)
        for bits in cc.read_grid(grey, _FACE_REL, cc.FACE_GRID):
            payload = cc.unpack_face(bits)
            if payload is not None:
                return FaceReading(
                    person_id=payload.person_id,
                    pose=(
                        float(payload.dx),
                        float(payload.dy),
                        payload.rotation / 10,
                        payload.light / 100,
                    ),
                    frame=payload.frame,
                )
    except Exception:  # garbage in, None out
        return None
    return None
