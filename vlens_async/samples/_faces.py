"""Synthetic faces: a person's look, their portrait, and camera frames of it in small poses.

Everything about a face derives from its person id, so the card's photo (:func:`portrait` on a
plain background) and the frames (:func:`capture`, in a room) show the same person. Each frame
carries a face code with the person id and its pose.
"""

from __future__ import annotations

import functools
import math
import random
from typing import Final

import attrs
from PIL import Image, ImageDraw, ImageFilter

from vlens_async.samples import _card_code as cc
from vlens_async.samples._draw import Color, add_grain, gradient, mix, to_jpeg
from vlens_async.samples._layout import FACE_CODE, FACE_SIZE

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
    """The look of ``person_id``: its lowest bit is the gender, the rest seeds the choices."""
    rng = random.Random(f"vlens-face:{person_id}")
    male = bool(person_id & 1)
    return _Look(
        male=male,
        skin=mix(rng.choice(_SKINS), (128, 100, 80), rng.uniform(-0.08, 0.08)),
        hair=rng.choice(_HAIRS),
        iris=rng.choice(_IRISES),
        cloth=rng.choice(_CLOTHES),
        scarf=mix(rng.choice(_CLOTHES), (128, 128, 128), 0.2),
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
    light, dark = mix(wall, (255, 255, 255), 0.2), mix(wall, (0, 0, 0), 0.25)
    image = gradient(_PORTRAIT, light, dark, angle=rng.uniform(-30, 30))
    x = rng.randrange(-40, 260)
    box = (x, rng.randrange(20, 120), x + rng.randrange(60, 140), _PORTRAIT[1])
    ImageDraw.Draw(image).rectangle(box, fill=mix(wall, (255, 250, 235), 0.35))
    return image


@functools.lru_cache(maxsize=8)
def portrait(person_id: int, plain: bool) -> Image.Image:
    """Draw ``person_id``'s head and shoulders at 360x480, on a plain or a room background."""
    look = _look(person_id)
    w, h = _PORTRAIT
    image = gradient(_PORTRAIT, (236, 240, 244), (208, 216, 226)) if plain else _room(person_id)
    skin, hair = look.skin, look.hair
    shade = mix(skin, (60, 30, 20), 0.22)
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
    brow = mix(hair, (0, 0, 0), 0.2)
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
    lips = mix(skin, (150, 50, 60), 0.45 if look.male else 0.65)
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
    still = portrait(person_id, False)
    # Move at portrait size (a quarter of the pixels), then scale up: the affine transform is
    # Pillow's slow path, the resize its fast one.
    scale = _PORTRAIT[0] / FACE_SIZE[0]
    matrix = _pose_matrix(pose.dx * scale, pose.dy * scale, pose.rotation / 10)
    moved = still.transform(
        _PORTRAIT, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR
    )
    frame = moved.resize(FACE_SIZE, Image.Resampling.BILINEAR)
    gain = 1 + pose.light / 100
    frame = frame.point([min(255, round(v * gain)) for v in range(256)] * 3)
    frame = add_grain(frame, rng)
    payload = attrs.evolve(pose, person_id=person_id)
    cc.draw_grid(ImageDraw.Draw(frame), FACE_CODE, cc.FACE_GRID, cc.pack_face(payload))
    return to_jpeg(frame)


def capture(person_id: int, key: str, *, identical: bool) -> tuple[bytes, bytes, bytes]:
    """Three frames of ``person_id`` in the poses of ``key``; ``identical`` repeats the first."""
    rng = random.Random(f"vlens-frames:{key}")
    poses = _frame_poses(key)
    if identical:
        one = _face_frame(person_id, poses[0], rng)
        return (one, one, one)
    return (
        _face_frame(person_id, poses[0], rng),
        _face_frame(person_id, poses[1], rng),
        _face_frame(person_id, poses[2], rng),
    )
