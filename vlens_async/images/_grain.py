"""The grain-preserving downscale: a grainy JPEG keeps its luma at full resolution.

libjpeg's reduced-scale IDCT works block by block: pixel-scale grain (sensor noise, film grain)
leaks across the cut and aliases into the picture. On samples.make_photo's hard 12 MP photo (grain
of +-48) the 1/2-scale decode lands 2.9 dB (PSNR) below a full decode + LANCZOS downscale. A JPEG
of at least _GRAIN_BYTES_PER_PIXEL (sharp, noisy content costs bytes; the normal 12 MP sample has
0.13, the hard one 0.55, bench_flow's noisy phone-size inputs 0.45-0.55) is instead decoded twice
at once: luma alone at full size, BICUBIC-downscaled in bands shared by two threads, and colour at
reduced scale (the encoder halves chroma anyway). That costs about 1.7x the CPU of the 1/2-scale
path, for the same wall time on an otherwise idle pair of cores, and lands within 0.5 dB of the
full decode. Grain-free photos lose nothing to the 1/2-scale path (0.4 dB) and keep it. Only when
the image is reduced more than 2x and the 1/2-scale decode does not land on the size (see
_grainy), and only when the caller allows it: the ``preserve_grain`` option (see _throughput).
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import wait
from typing import Final

from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from ..errors import ImageError
from ._jpeg import strip_metadata
from ._pools import helper_pool
from ._resize import RESAMPLE

_GRAIN_BYTES_PER_PIXEL: Final = 0.3


def grain_preserved(
    im: Image.Image, data: bytes | None, target: tuple[int, int]
) -> Image.Image | None:
    """YCbCr at ``target`` by the grain-preserving downscale when this JPEG qualifies, else None.

    ``data`` is the encoded input ``im`` was opened from (None for a caller's image, which is
    decoded already: no reduced-scale IDCT to avoid).
    """
    if data is None or not isinstance(im, JpegImageFile) or not _grainy(im, data, target):
        return None
    return _grain_preserving_downscale(im, data, target)


def _grainy(im: JpegImageFile, data: bytes, target: tuple[int, int]) -> bool:
    """Whether this JPEG is worth the grain-preserving path (see _GRAIN_BYTES_PER_PIXEL).

    Not when the reduced-scale decode alone makes the size (a 4000x3000 photo to a 2000 px
    document): its aliasing is then at its worst (luma 32 dB against a full decode + LANCZOS,
    41 dB with full-size luma), but there is no resize for the second thread to take over, so
    two decodes would make the image slower (117 ms against 78 ms), and ``verify()`` waits for
    its front. Fidelity here would cost wall time; elsewhere it costs only CPU.
    """
    width, height = im.size
    least = _GRAIN_BYTES_PER_PIXEL * width * height
    if im.mode != "RGB" or width < 2 * target[0] or height < 2 * target[1] or len(data) < least:
        return False
    if _lands_on(im.size, target):
        return False  # the reduced-scale decode alone makes the size: faster than two decodes
    # Count the picture only: not EXIF thumbnails, ICC or XMP, nor an MPO's other pictures
    # (the marker walk takes 3 ms on a 6.6 MB photo, so only likely candidates pay for it).
    try:
        return len(strip_metadata(data)) >= least
    except ImageError:
        return True  # a marker walk that fails says nothing about grain


def _lands_on(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Whether libjpeg's 1/2, 1/4 or 1/8 scale gives ``target`` exactly (as draft picks it)."""
    scale = min(size[0] // target[0], size[1] // target[1])
    for s in (8, 4, 2, 1):
        if scale >= s:
            return ((size[0] + s - 1) // s, (size[1] + s - 1) // s) == target
    return False


def _grain_preserving_downscale(
    im: JpegImageFile, data: bytes, target: tuple[int, int]
) -> Image.Image:
    """YCbCr at ``target``: luma from a full-size decode, chroma from a reduced-scale one.

    The two decodes run at once, this thread's and a helper's; then both downscale the luma,
    band by band, whichever is free first taking the next (the decodes do not always end
    together, and a third thread would only compete for the same two cores).
    """
    luma = _LumaBands(im, target)
    helper = helper_pool().submit(_chroma_then_bands, data, target, luma)
    try:
        im.draft("L", None)  # luma only: no chroma IDCT, upsampling or colour conversion
        im.load()
        luma.ready()
        luma.work()
    finally:
        luma.abandon_if_unready()  # the helper must never wait for a decode that failed
        # Still queued behind other images' helpers (a busy pool): do its share here instead.
        if not helper.cancel():
            wait([helper])
    cb, cr = _chroma_planes(data, target) if helper.cancelled() else helper.result()
    return Image.merge("YCbCr", (luma.result(), cb, cr))


class _LumaBands:
    """The downscale of a decoded luma plane, in horizontal bands taken by whichever thread asks.

    Pillow clips the filter's support at the image's edges, not the box's, so the bands equal
    one resize: bit for bit when band edges fall on whole source rows (4000x3000 to 1280x960),
    else within one level of rounding. The GIL is released while each band runs.
    """

    _COUNT: Final = 4

    def __init__(self, im: Image.Image, target: tuple[int, int]) -> None:
        self._im = im
        self._target = target
        height = target[1]
        self._count = min(self._COUNT, height)  # no empty band for a strip a few pixels high
        self._edges = [height * i // self._count for i in range(self._count + 1)]
        self._next = 0
        self._lock = threading.Lock()
        self._decoded = threading.Event()
        self._ok = False
        self._parts: dict[int, Image.Image] = {}

    def ready(self) -> None:
        """The luma is decoded: bands may be taken."""
        self._ok = True
        self._decoded.set()

    def abandon_if_unready(self) -> None:
        """Release a waiting helper when the decode failed."""
        self._decoded.set()

    def work(self) -> None:
        """Resize bands until none is left (returns at once when the decode failed)."""
        self._decoded.wait()
        while self._ok:
            with self._lock:
                index = self._next
                self._next += 1
            if index >= self._count:
                return
            self._parts[index] = self._band(index)

    def _band(self, index: int) -> Image.Image:
        top, bottom = self._edges[index], self._edges[index + 1]
        scale = self._im.height / self._target[1]
        box = (0.0, top * scale, float(self._im.width), bottom * scale)
        return self._im.resize((self._target[0], bottom - top), RESAMPLE, box=box)

    def result(self) -> Image.Image:
        """The whole downscaled plane (once every ``work`` call has returned)."""
        out = Image.new(self._im.mode, self._target)
        for index in range(self._count):
            out.paste(self._parts[index], (0, self._edges[index]))
        return out


def _chroma_then_bands(
    data: bytes, target: tuple[int, int], luma: _LumaBands
) -> tuple[Image.Image, Image.Image]:
    """The helper's share: Cb and Cr at ``target``, then luma bands."""
    planes = _chroma_planes(data, target)
    luma.work()
    return planes


def _chroma_planes(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Cb and Cr at ``target``, from a decode at about a quarter of it (1/8 scale for 12 MP).

    The encoder averages chroma over 2x2 pixels, so little of what a larger decode keeps
    would survive; each halving saves 4-7 ms on a grainy 12 MP photo.
    """
    with Image.open(io.BytesIO(data), formats=("JPEG", "MPO")) as im:
        # libjpeg hands out YCbCr only for a JPEG coded as YCbCr; one coded as RGB is decoded
        # as RGB and converted (its clipping costs 0.2 dB on the hard photo, so not always).
        size = (max(1, target[0] // 4), max(1, target[1] // 4))
        im.draft("YCbCr" if _coded_as_ycbcr(im) else None, size)
        im.load()
        _, cb, cr = (im if im.mode == "YCbCr" else im.convert("YCbCr")).split()
    bilinear = Image.Resampling.BILINEAR
    return cb.resize(target, bilinear), cr.resize(target, bilinear)


def _coded_as_ycbcr(im: Image.Image) -> bool:
    """Whether libjpeg reads this 3-component JPEG as YCbCr (its rules: JFIF, then Adobe's
    transform flag, then the component ids, 'R', 'G', 'B' meaning RGB)."""
    if "jfif" in im.info:
        return True
    if "adobe" in im.info:
        return im.info.get("adobe_transform") != 0
    ids = tuple(layer[0] for layer in getattr(im, "layer", ()))
    return ids != (82, 71, 66)
