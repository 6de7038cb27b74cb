"""Private helpers of :mod:`vlens_async.samples`: lookup tables, payload packing, and the 2D code.

The synthetic cards carry their ground truth in a coarse 2D code: a grid of big black and white
cells inside a one-cell black border, itself inside a one-cell white quiet zone. Text cannot go in
a small payload, so Arabic and English strings are stored as indexes into the tables below (which
are also what the generator draws from), and numbers and dates as integers. The code sits at a fixed
place relative to the image size, so a reader needs no finder search: the client only ever scales
the image (to 1280 px, JPEG quality 60), it never crops or rotates it. A CRC-16 and the border check
reject ordinary photos.

Nothing here does I/O; drawing and reading take Pillow images.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator, Sequence
from typing import Final

import attrs
from PIL import Image, ImageDraw

# --- tables (append only: the index of an entry is part of the code format) -----------------------

#: (Arabic, English) male first names; also used for fathers and grandfathers.
MALE_NAMES: Final[tuple[tuple[str, str], ...]] = (
    ("محمد", "Mohamed"), ("أحمد", "Ahmed"), ("محمود", "Mahmoud"), ("مصطفى", "Mostafa"),
    ("علي", "Ali"), ("حسن", "Hassan"), ("حسين", "Hussein"), ("إبراهيم", "Ibrahim"),
    ("يوسف", "Youssef"), ("عمر", "Omar"), ("خالد", "Khaled"), ("طارق", "Tarek"),
    ("كريم", "Karim"), ("هشام", "Hesham"), ("وليد", "Walid"), ("عمرو", "Amr"),
    ("سامح", "Sameh"), ("شريف", "Sherif"), ("أيمن", "Ayman"), ("ياسر", "Yasser"),
    ("عادل", "Adel"), ("سعيد", "Said"), ("جمال", "Gamal"), ("رامي", "Ramy"),
    ("تامر", "Tamer"), ("هاني", "Hany"), ("مجدي", "Magdy"), ("فتحي", "Fathy"),
    ("صلاح", "Salah"), ("عبد الله", "Abdallah"), ("عبد الرحمن", "Abdelrahman"),
    ("عبد العزيز", "Abdelaziz"), ("مينا", "Mina"), ("بيشوي", "Bishoy"), ("جرجس", "Gerges"),
    ("مرقص", "Morkos"), ("بطرس", "Boutros"), ("إسلام", "Eslam"), ("زياد", "Ziad"),
    ("سيف", "Seif"), ("نبيل", "Nabil"), ("رضا", "Reda"), ("منير", "Mounir"),
    ("فاروق", "Farouk"), ("سمير", "Samir"), ("أشرف", "Ashraf"), ("حمدي", "Hamdy"),
    ("إيهاب", "Ehab"),
)  # fmt: skip

#: (Arabic, English) female first names.
FEMALE_NAMES: Final[tuple[tuple[str, str], ...]] = (
    ("فاطمة", "Fatma"), ("مريم", "Mariam"), ("نور", "Nour"), ("سارة", "Sara"),
    ("هبة", "Heba"), ("منى", "Mona"), ("دينا", "Dina"), ("ياسمين", "Yasmin"),
    ("آية", "Aya"), ("رنا", "Rana"), ("شيماء", "Shaimaa"), ("إيمان", "Eman"),
    ("أسماء", "Asmaa"), ("نادية", "Nadia"), ("سلمى", "Salma"), ("هند", "Hend"),
    ("ريهام", "Reham"), ("ندى", "Nada"), ("مروة", "Marwa"), ("عبير", "Abeer"),
    ("سمر", "Samar"), ("رحاب", "Rehab"), ("غادة", "Ghada"), ("نهى", "Noha"),
    ("ليلى", "Laila"), ("زينب", "Zeinab"), ("خديجة", "Khadiga"), ("حبيبة", "Habiba"),
    ("جميلة", "Gamila"), ("ماري", "Mary"), ("مارينا", "Marina"), ("كريستين", "Christine"),
    ("إيريني", "Irini"), ("تريزا", "Teresa"), ("أميرة", "Amira"), ("دعاء", "Doaa"),
    ("رشا", "Rasha"), ("وفاء", "Wafaa"),
)  # fmt: skip

#: (Arabic, English) family names.
FAMILY_NAMES: Final[tuple[tuple[str, str], ...]] = (
    ("المصري", "El Masry"), ("الشافعي", "El Shafei"), ("عبد الحميد", "Abdelhamid"),
    ("السيد", "El Sayed"), ("النجار", "El Naggar"), ("الشريف", "El Sherif"),
    ("حسانين", "Hassanein"), ("سليمان", "Soliman"), ("عثمان", "Osman"), ("البنا", "El Banna"),
    ("الفقي", "El Feky"), ("الجمال", "El Gammal"), ("الحداد", "El Haddad"), ("منصور", "Mansour"),
    ("رمضان", "Ramadan"), ("شحاتة", "Shehata"), ("عوض", "Awad"), ("فرج", "Farag"),
    ("غالي", "Ghaly"), ("حنا", "Hanna"), ("عبد الملاك", "Abdelmalak"), ("يونس", "Younes"),
    ("زكي", "Zaki"), ("الشناوي", "El Shennawy"), ("القاضي", "El Kady"), ("الخولي", "El Kholy"),
    ("درويش", "Darwish"), ("بدوي", "Badawy"), ("الصاوي", "El Sawy"), ("عامر", "Amer"),
    ("نصر", "Nasr"), ("كامل", "Kamel"),
)  # fmt: skip

#: governorate code -> (Arabic, English, ((city Arabic, city English), ...)); codes from API.md.
GOVERNORATES: Final[dict[int, tuple[str, str, tuple[tuple[str, str], ...]]]] = {
    1: ("القاهرة", "Cairo", (("مدينة نصر", "Nasr City"), ("المعادي", "Maadi"),
                             ("شبرا", "Shubra"), ("مصر الجديدة", "Heliopolis"))),
    2: ("الإسكندرية", "Alexandria", (("سيدي جابر", "Sidi Gaber"), ("المنتزه", "Montaza"),
                                     ("العجمي", "Agami"))),
    3: ("بورسعيد", "Port Said", (("حي الشرق", "El Sharq"), ("حي العرب", "El Arab"),
                                 ("بورفؤاد", "Port Fouad"))),
    4: ("السويس", "Suez", (("الأربعين", "El Arbaeen"), ("فيصل", "Faisal"), ("عتاقة", "Attaka"))),
    11: ("دمياط", "Damietta", (("دمياط الجديدة", "New Damietta"), ("فارسكور", "Faraskour"),
                               ("كفر سعد", "Kafr Saad"))),
    12: ("الدقهلية", "Dakahlia", (("المنصورة", "Mansoura"), ("طلخا", "Talkha"),
                                  ("ميت غمر", "Mit Ghamr"))),
    13: ("الشرقية", "Sharqia", (("الزقازيق", "Zagazig"), ("بلبيس", "Belbeis"),
                                ("منيا القمح", "Minya El Qamh"))),
    14: ("القليوبية", "Qalyubia", (("بنها", "Banha"), ("شبرا الخيمة", "Shubra El Kheima"),
                                   ("قليوب", "Qalyub"))),
    15: ("كفر الشيخ", "Kafr El Sheikh", (("كفر الشيخ", "Kafr El Sheikh"), ("دسوق", "Desouk"),
                                         ("بيلا", "Bila"))),
    16: ("الغربية", "Gharbia", (("طنطا", "Tanta"), ("المحلة الكبرى", "El Mahalla El Kubra"),
                                ("زفتى", "Zefta"))),
    17: ("المنوفية", "Monufia", (("شبين الكوم", "Shebin El Kom"), ("منوف", "Menouf"),
                                 ("السادات", "Sadat City"))),
    18: ("البحيرة", "Beheira", (("دمنهور", "Damanhour"), ("كفر الدوار", "Kafr El Dawar"),
                                ("رشيد", "Rashid"))),
    19: ("الإسماعيلية", "Ismailia", (("الإسماعيلية", "Ismailia"), ("فايد", "Fayed"),
                                     ("القنطرة", "Qantara"))),
    21: ("الجيزة", "Giza", (("الدقي", "Dokki"), ("الهرم", "Haram"), ("6 أكتوبر", "6th of October"),
                            ("إمبابة", "Imbaba"))),
    22: ("بني سويف", "Beni Suef", (("بني سويف", "Beni Suef"), ("الواسطى", "El Wasta"),
                                   ("ببا", "Beba"))),
    23: ("الفيوم", "Fayoum", (("الفيوم", "Fayoum"), ("سنورس", "Sinnuris"), ("إطسا", "Itsa"))),
    24: ("المنيا", "Minya", (("المنيا", "Minya"), ("ملوي", "Mallawi"), ("سمالوط", "Samalut"))),
    25: ("أسيوط", "Asyut", (("أسيوط", "Asyut"), ("ديروط", "Dairut"), ("منفلوط", "Manfalut"))),
    26: ("سوهاج", "Sohag", (("سوهاج", "Sohag"), ("أخميم", "Akhmim"), ("جرجا", "Girga"))),
    27: ("قنا", "Qena", (("قنا", "Qena"), ("نجع حمادي", "Nag Hammadi"), ("قوص", "Qus"))),
    28: ("أسوان", "Aswan", (("أسوان", "Aswan"), ("كوم أمبو", "Kom Ombo"), ("إدفو", "Edfu"))),
    29: ("الأقصر", "Luxor", (("الأقصر", "Luxor"), ("إسنا", "Esna"), ("أرمنت", "Armant"))),
    31: ("البحر الأحمر", "Red Sea", (("الغردقة", "Hurghada"), ("سفاجا", "Safaga"),
                                     ("القصير", "El Quseir"))),
    32: ("الوادي الجديد", "New Valley", (("الخارجة", "Kharga"), ("الداخلة", "Dakhla"),
                                         ("الفرافرة", "Farafra"))),
    33: ("مطروح", "Matrouh", (("مرسى مطروح", "Marsa Matrouh"), ("العلمين", "El Alamein"),
                              ("سيوة", "Siwa"))),
    34: ("شمال سيناء", "North Sinai", (("العريش", "El Arish"), ("الشيخ زويد", "Sheikh Zuweid"),
                                       ("بئر العبد", "Bir El Abd"))),
    35: ("جنوب سيناء", "South Sinai", (("الطور", "El Tor"), ("شرم الشيخ", "Sharm El Sheikh"),
                                       ("دهب", "Dahab"))),
}  # fmt: skip

#: (Arabic, English) districts, shared by every city.
DISTRICTS: Final[tuple[tuple[str, str], ...]] = (
    ("الحي الأول", "First District"), ("الحي الثاني", "Second District"),
    ("الحي الثالث", "Third District"), ("قسم أول", "First Section"), ("قسم ثان", "Second Section"),
    ("الحي الشرقي", "East District"), ("الحي الغربي", "West District"),
    ("حي الزهور", "El Zohour"), ("حي السلام", "El Salam"), ("حي النصر", "El Nasr"),
    ("حي الجامعة", "El Gamaa"), ("حي المحطة", "El Mahatta"), ("حي الشهداء", "El Shohadaa"),
    ("حي الأمل", "El Amal"), ("حي الروضة", "El Rawda"), ("حي الورود", "El Worood"),
)  # fmt: skip

#: (Arabic, English) streets.
STREETS: Final[tuple[tuple[str, str], ...]] = (
    ("شارع التحرير", "El Tahrir St."), ("شارع الجمهورية", "El Gomhoreya St."),
    ("شارع النيل", "El Nil St."), ("شارع الجيش", "El Geish St."),
    ("شارع سعد زغلول", "Saad Zaghloul St."), ("شارع طلعت حرب", "Talaat Harb St."),
    ("شارع الثورة", "El Thawra St."), ("شارع المحطة", "El Mahatta St."),
    ("شارع المدارس", "El Madares St."), ("شارع البحر", "El Bahr St."),
    ("شارع الجلاء", "El Galaa St."), ("شارع الهرم", "El Haram St."), ("شارع فيصل", "Faisal St."),
    ("شارع بورسعيد", "Port Said St."), ("شارع عباس العقاد", "Abbas El Akkad St."),
    ("شارع مكرم عبيد", "Makram Ebeid St."), ("شارع الحرية", "El Horreya St."),
    ("شارع السلام", "El Salam St."), ("شارع الزهراء", "El Zahraa St."),
    ("شارع المعز", "El Moez St."), ("شارع النصر", "El Nasr St."), ("شارع الأزهر", "El Azhar St."),
    ("شارع رمسيس", "Ramses St."), ("شارع الخليفة المأمون", "El Khalifa El Maamoun St."),
)  # fmt: skip

#: (Arabic for a man, Arabic for a woman, English) jobs.
JOBS: Final[tuple[tuple[str, str, str], ...]] = (
    ("طالب", "طالبة", "Student"), ("مهندس", "مهندسة", "Engineer"), ("طبيب", "طبيبة", "Doctor"),
    ("محاسب", "محاسبة", "Accountant"), ("مدرس", "مدرسة", "Teacher"),
    ("محامي", "محامية", "Lawyer"), ("صيدلي", "صيدلانية", "Pharmacist"),
    ("موظف", "موظفة", "Employee"), ("سائق", "سائقة", "Driver"), ("تاجر", "تاجرة", "Merchant"),
    ("مزارع", "مزارعة", "Farmer"), ("ممرض", "ممرضة", "Nurse"), ("فني", "فنية", "Technician"),
    ("عامل", "عاملة", "Worker"), ("مبرمج", "مبرمجة", "Programmer"),
    ("بدون عمل", "بدون عمل", "Unemployed"), ("ضابط", "ضابطة", "Officer"),
    ("طبيب أسنان", "طبيبة أسنان", "Dentist"), ("صحفي", "صحفية", "Journalist"),
    ("مدير", "مديرة", "Manager"), ("أعمال حرة", "أعمال حرة", "Freelancer"),
    ("كهربائي", "كهربائية", "Electrician"), ("مترجم", "مترجمة", "Translator"),
    ("مصمم", "مصممة", "Designer"), ("باحث", "باحثة", "Researcher"),
    ("أستاذ جامعي", "أستاذة جامعية", "Professor"), ("بالمعاش", "بالمعاش", "Retired"),
    ("ربة منزل", "ربة منزل", "Housewife"),
)  # fmt: skip

#: (Arabic for a man, Arabic for a woman, English) marital statuses.
MARITAL: Final[tuple[tuple[str, str, str], ...]] = (
    ("أعزب", "عزباء", "Single"), ("متزوج", "متزوجة", "Married"),
    ("مطلق", "مطلقة", "Divorced"), ("أرمل", "أرملة", "Widowed"),
)  # fmt: skip

#: (Arabic for a man, Arabic for a woman, English) religions.
RELIGIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("مسلم", "مسلمة", "Muslim"), ("مسيحي", "مسيحية", "Christian"),
)  # fmt: skip

# --- bit packing ----------------------------------------------------------------------------------

CARD_MAGIC: Final = 0xA
FACE_MAGIC: Final = 0x5
#: Card data cells (columns, rows) inside the border; 168 bits = 19 payload bytes + CRC-16.
CARD_GRID: Final = (28, 6)
#: Face data cells; 72 bits = 7 payload bytes + CRC-16.
FACE_GRID: Final = (12, 6)
#: The CRC is xored with a per-kind constant so a face code never passes as a card code.
_CRC_SALT: Final = {CARD_MAGIC: 0x5A3C, FACE_MAGIC: 0xC3A5}

# (name, width in bits) in order; ``side``: 0 front, 1 back; ``release``: days since 2000-01-01.
_CARD_LAYOUT: Final = (
    ("magic", 4), ("side", 1), ("photocopy", 1), ("aml", 1), ("person_id", 24),
    ("national_id", 47), ("first", 7), ("father", 7), ("grandfather", 7), ("family", 7),
    ("city", 3), ("district", 4), ("street", 6), ("building", 9), ("job", 6), ("marital", 2),
    ("religion", 1), ("release", 14),
)  # fmt: skip
# Signed pose fields are stored offset by 32; ``rotation`` in tenths of a degree, ``light`` in %.
_FACE_LAYOUT: Final = (
    ("magic", 4), ("person_id", 24), ("frame", 2), ("dx", 6), ("dy", 6), ("rotation", 6),
    ("light", 6),
)  # fmt: skip
PERSON_ID_BITS: Final = 24
POSE_LIMIT: Final = 31


@attrs.frozen
class CardPayload:
    """The integers a card code carries (indexes into the tables above, numbers, flags)."""

    side: int
    photocopy: int
    aml: int
    person_id: int
    national_id: int
    first: int
    father: int
    grandfather: int
    family: int
    city: int
    district: int
    street: int
    building: int
    job: int
    marital: int
    religion: int
    release: int


@attrs.frozen
class FacePayload:
    """The integers a face code carries: whose face, which frame, and the pose offsets."""

    person_id: int
    frame: int
    dx: int
    dy: int
    rotation: int
    light: int


def _pack(values: dict[str, int], layout: Sequence[tuple[str, int]], n_bits: int) -> list[int]:
    """Pack ``values`` MSB first, pad to whole bytes, append the salted CRC-16; return bits."""
    acc = 0
    used = 0
    for name, width in layout:
        value = values[name]
        if not 0 <= value < (1 << width):
            raise ValueError(f"{name} does not fit in {width} bits")
        acc = (acc << width) | value
        used += width
    n_bytes = (n_bits - 16) // 8
    acc <<= n_bytes * 8 - used
    body = acc.to_bytes(n_bytes, "big")
    crc = binascii.crc_hqx(body, 0xFFFF) ^ _CRC_SALT[values["magic"]]
    word = int.from_bytes(body + crc.to_bytes(2, "big"), "big")
    return [(word >> (n_bits - 1 - i)) & 1 for i in range(n_bits)]


def _unpack(
    bits: Sequence[int], layout: Sequence[tuple[str, int]], magic: int
) -> dict[str, int] | None:
    """Check the CRC and magic of ``bits``; return the named fields, or None."""
    n_bits = len(bits)
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    raw = word.to_bytes(n_bits // 8, "big")
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "big")
    if binascii.crc_hqx(body, 0xFFFF) ^ _CRC_SALT[magic] != crc:
        return None
    acc = int.from_bytes(body, "big") >> (len(body) * 8 - sum(w for _, w in layout))
    out: dict[str, int] = {}
    for name, width in reversed(layout):
        out[name] = acc & ((1 << width) - 1)
        acc >>= width
    return out if out["magic"] == magic else None


def pack_card(payload: CardPayload) -> list[int]:
    """Return the bits of a card code for ``payload``."""
    values = attrs.asdict(payload) | {"magic": CARD_MAGIC}
    return _pack(values, _CARD_LAYOUT, CARD_GRID[0] * CARD_GRID[1])


def unpack_card(bits: Sequence[int]) -> CardPayload | None:
    """Return the payload of card-code ``bits``, or None when the CRC or magic is wrong."""
    values = _unpack(bits, _CARD_LAYOUT, CARD_MAGIC)
    if values is None:
        return None
    del values["magic"]
    return CardPayload(**values)


def pack_face(payload: FacePayload) -> list[int]:
    """Return the bits of a face code for ``payload`` (pose fields must be within +-31)."""
    values = attrs.asdict(payload) | {"magic": FACE_MAGIC}
    for name in ("dx", "dy", "rotation", "light"):
        values[name] += POSE_LIMIT + 1
    return _pack(values, _FACE_LAYOUT, FACE_GRID[0] * FACE_GRID[1])


def unpack_face(bits: Sequence[int]) -> FacePayload | None:
    """Return the payload of face-code ``bits``, or None when the CRC or magic is wrong."""
    values = _unpack(bits, _FACE_LAYOUT, FACE_MAGIC)
    if values is None:
        return None
    del values["magic"]
    for name in ("dx", "dy", "rotation", "light"):
        values[name] -= POSE_LIMIT + 1
    return FacePayload(**values)


# --- the grid -------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]

# A fixed pseudo-random mask xored into the data cells, so long runs of equal bits (zero padding,
# small numbers) still look like a code, and the black/white balance stays near half.
_MASK: Final = tuple((((i * 2654435761) >> 13) ^ (i * 7)) & 1 for i in range(512))

# Each cell is sampled on a SUB x SUB grid, and only its central 2x2 samples are averaged, so the
# blur that JPEG and scaling put on cell edges does not matter.
_SUB: Final = 4
# Sub-cell offsets (fractions of a cell) tried when the border does not line up at first.
_NUDGES: Final = (
    (0.0, 0.0),
    (0.3, 0.0),
    (-0.3, 0.0),
    (0.0, 0.3),
    (0.0, -0.3),
    (0.3, 0.3),
    (-0.3, -0.3),
    (0.3, -0.3),
    (-0.3, 0.3),
)
_MIN_CONTRAST: Final = 40.0


def draw_grid(
    draw: ImageDraw.ImageDraw, box: Box, grid: tuple[int, int], bits: Sequence[int]
) -> None:
    """Draw the code for ``bits`` so its black border fills ``box``; the quiet zone lies outside."""
    cols, rows = grid
    x0, y0, x1, y1 = box
    cw = (x1 - x0) / (cols + 2)
    ch = (y1 - y0) / (rows + 2)
    draw.rectangle((x0 - cw, y0 - ch, x1 + cw, y1 + ch), fill="white")
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill="black")
    draw.rectangle((x0 + cw, y0 + ch, x1 - cw - 1, y1 - ch - 1), fill="white")
    for i, bit in enumerate(bits):
        if bit ^ _MASK[i]:
            r, c = divmod(i, cols)
            cx0 = x0 + (c + 1) * cw
            cy0 = y0 + (r + 1) * ch
            draw.rectangle(
                (round(cx0), round(cy0), round(cx0 + cw) - 1, round(cy0 + ch) - 1), fill="black"
            )


def _cells(image: Image.Image, box: Box, cols: int, rows: int) -> list[float]:
    """Mean of the centre of each of the ``cols`` x ``rows`` cells of ``box`` (row-major)."""
    small = image.resize((cols * _SUB, rows * _SUB), Image.Resampling.BOX, box=box)
    data = small.tobytes()
    width = cols * _SUB
    half = _SUB // 2
    out: list[float] = []
    for r in range(rows):
        base = (r * _SUB + half - 1) * width
        for c in range(cols):
            i = base + c * _SUB + half - 1
            out.append((data[i] + data[i + 1] + data[i + width] + data[i + width + 1]) / 4)
    return out


def _read_at(image: Image.Image, box: Box, grid: tuple[int, int]) -> list[int] | None:
    """Sample the code whose border fills ``box`` (image pixels); None if the rings do not match."""
    cols, rows = grid
    x0, y0, x1, y1 = box
    cw = (x1 - x0) / (cols + 2)
    ch = (y1 - y0) / (rows + 2)
    outer = (x0 - cw, y0 - ch, x1 + cw, y1 + ch)
    if outer[0] < 0 or outer[1] < 0 or outer[2] > image.width or outer[3] > image.height:
        return None
    tc, tr = cols + 4, rows + 4
    cells = _cells(image, outer, tc, tr)
    white: list[float] = []
    black: list[float] = []
    for r in range(tr):
        for c in range(tc):
            ring = min(r, c, tr - 1 - r, tc - 1 - c)
            if ring == 0:
                white.append(cells[r * tc + c])
            elif ring == 1:
                black.append(cells[r * tc + c])
    if (
        max(black) >= min(white)
        or sum(white) / len(white) - sum(black) / len(black) < _MIN_CONTRAST
    ):
        return None
    threshold = (max(black) + min(white)) / 2
    bits: list[int] = []
    for r in range(rows):
        for c in range(cols):
            i = len(bits)
            bits.append(int(cells[(r + 2) * tc + c + 2] < threshold) ^ _MASK[i])
    return bits


def read_grid(image: Image.Image, rel_box: Box, grid: tuple[int, int]) -> Iterator[list[int]]:
    """Yield candidate bit lists for the code at ``rel_box`` (fractions of the image size).

    ``image`` is mode ``L``. Candidates come from small sub-cell nudges of the expected place; the
    caller keeps the first whose CRC checks.
    """
    w, h = image.size
    x0, y0, x1, y1 = rel_box[0] * w, rel_box[1] * h, rel_box[2] * w, rel_box[3] * h
    cw = (x1 - x0) / (grid[0] + 2)
    ch = (y1 - y0) / (grid[1] + 2)
    for nx, ny in _NUDGES:
        dx, dy = nx * cw, ny * ch
        bits = _read_at(image, (x0 + dx, y0 + dy, x1 + dx, y1 + dy), grid)
        if bits is not None:
            yield bits
