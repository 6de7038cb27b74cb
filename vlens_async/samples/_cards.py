"""Synthetic ID cards: the printed side (template, fields, photo), its card code, a photocopy look.

Each side is the unchanging template (card stock, guilloche, headings), the applicant's fields in
Arabic and English, and the card code at its place from :mod:`._layout`; then camera grain, or, for
the ``photocopy`` scenario, a grey office photocopy.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from typing import Final

import attrs
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, features

from vlens_async.samples import _card_code as cc
from vlens_async.samples._draw import Color, add_grain, gradient, mix, noise_tile, to_jpeg
from vlens_async.samples._faces import portrait
from vlens_async.samples._layout import BACK_CODE, CARD_SIZE, FRONT_CODE
from vlens_async.samples._people import ApplicantFields

_PHOTO_BOX: Final = (60, 150, 435, 650)
_INK: Final[Color] = (28, 30, 36)
_LABEL: Final[Color] = (96, 104, 110)
_RIGHT: Final = 1540  # right edge of Arabic text
_ARABIC_DIGITS: Final = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

# --- text -----------------------------------------------------------------------------------------

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


def _ar_digits(text: str) -> str:
    """``text`` with Arabic-Indic digits, as the card prints numbers in its Arabic lines."""
    return text.translate(_ARABIC_DIGITS)


# --- the template ---------------------------------------------------------------------------------


def _stock(side: str) -> Image.Image:
    """The card stock of a side, edge to edge: tinted gradient, guilloche waves, a seal."""
    w, _ = CARD_SIZE
    tones = (
        ((214, 232, 228), (242, 228, 206))
        if side == "front"
        else ((226, 230, 214), (232, 218, 226))
    )
    stock = gradient(CARD_SIZE, tones[0], tones[1], angle=60 if side == "front" else -60)
    d = ImageDraw.Draw(stock)
    wave = mix(tones[0], (90, 140, 150), 0.25)
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
            outline=mix(tones[1], (160, 120, 60), 0.3),
            width=3,
        )
    return stock


def _headings(d: ImageDraw.ImageDraw, side: str) -> None:
    """Print a side's fixed headings and labels (and, on the front, the photo frame)."""
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


@functools.lru_cache(maxsize=2)
def _card_template(side: str) -> Image.Image:
    """The unchanging parts of a card side: table, card stock, guilloche, headings, labels."""
    w, h = CARD_SIZE
    image = gradient(CARD_SIZE, (70, 62, 56), (40, 36, 34), angle=35)
    mask = Image.new("L", CARD_SIZE, 0)
    ImageDraw.Draw(mask).rounded_rectangle((20, 20, w - 20, h - 20), radius=44, fill=255)
    image.paste(_stock(side), (0, 0), mask)
    _headings(ImageDraw.Draw(image), side)
    return image


# --- the fields -----------------------------------------------------------------------------------


def _draw_front(image: Image.Image, f: ApplicantFields) -> None:
    """Print the front's photo, names, address, birth date, national ID and serial."""
    d = ImageDraw.Draw(image)
    photo = portrait(f.person_id, True).resize(
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
    """Print the back's national ID, job, gender, religion, marital status and dates."""
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
    _draw_stripes(d, f.national_id)


def _draw_stripes(d: ImageDraw.ImageDraw, national_id: str) -> None:
    """Security stripes, varying with the number (decoration only; the code is what is read)."""
    bars = hashlib.blake2b(national_id.encode(), digest_size=32).digest()
    x = 420
    for byte in bars:
        width = 2 + byte % 5
        d.rectangle((x, 600, x + width, 650), fill=_INK)
        x += width + 3 + (byte >> 5)
        if x > 900:
            break


# --- the finish -----------------------------------------------------------------------------------


def _photocopy(image: Image.Image, rng: random.Random) -> Image.Image:
    """Make a card look like a grey office photocopy: no colour, flat tones, toner speckle, blur."""
    grey = image.convert("L")
    grey = grey.point([round(40 + 178 * (v / 255) ** 0.75) for v in range(256)])
    grey = grey.filter(ImageFilter.BoxBlur(1))
    tile = noise_tile().getchannel(0)
    x, y = rng.randrange(100), rng.randrange(100)
    speckle = tile.crop((x, y, x + grey.width, y + grey.height))
    grey = ImageChops.add(grey, speckle, 1.0, -128)
    grey = ImageChops.add(grey, speckle.rotate(180), 1.0, -128)
    warm = grey.point([round(v * 0.96) for v in range(256)])
    return Image.merge("RGB", (grey, grey, warm))


def card_side(
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
        ImageDraw.Draw(image), FRONT_CODE if side == "front" else BACK_CODE, cc.CARD_GRID, bits
    )
    rng = random.Random(f"vlens-grain:{key}:{side}")
    image = _photocopy(image, rng) if photocopy else add_grain(image, rng)
    return to_jpeg(image)
