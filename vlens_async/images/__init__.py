"""Image preprocessing: every upload acceptable before it leaves the machine.

Phone photos are 3 to 6 MB and 12 MP; the service refuses over 5 MB or 25 MP, the OCR wants under
3 MB, and liveness frames should stay under 500 KB. :func:`prepare_document` and
:func:`prepare_faces` turn any accepted input into a compliant JPEG:

1. Read the input (bytes, a path, a binary file object, a ``PIL.Image.Image`` or an already
   :class:`PreparedImage`) in a worker thread, refusing more than :data:`MAX_INPUT_BYTES`.
2. Read only the header and refuse a decompression bomb or more than
   :data:`~vlens_async.config.MAX_IMAGE_PIXELS` pixels *before* anything is decoded
   (:class:`~vlens_async.errors.ImageTooLargeError`). What Pillow cannot read, empty or truncated
   input, text, PDF or HEIC raise :class:`~vlens_async.errors.UnsupportedImageError` with a reason.
3. A JPEG that already complies (within the byte budget and the side limit, plain RGB, no EXIF
   rotation to apply, no colour profile but sRGB) passes through without re-encoding: its
   metadata segments (EXIF, XMP, ICC, comments, maker notes, trailers after the image) are cut
   out of the byte stream. That marker walk follows every segment and every scan's data to the
   end-of-image marker, so a truncated or damaged file does not pass (it is decoded, and
   refused); a liveness frame is also decoded at reduced scale for its thumbnail.
4. Anything else is decoded at reduced scale when it is a JPEG (``draft``: the DCT does most of
   the downscale for free), converted to RGB (CMYK, palette, 16-bit, grayscale; alpha is
   flattened on white; pixels a non-sRGB ICC profile describes are converted to sRGB, as the
   profile is stripped), downscaled so its long side is at most ``max_side``, turned upright from
   its EXIF orientation, and encoded at the highest quality that fits ``max_bytes``: a cheap
   sample of the image (one MCU row in eight) predicts the size at every quality (the estimate),
   one full encode checks it and usually fits, a second corrected by the first's error fixes a
   miss (the correction), then a bisection, then a smaller side, and finally
   :class:`~vlens_async.errors.CompressionError`. The output never carries metadata.
   With ``preserve_grain``, a grainy JPEG (sensor noise: many bytes per pixel) reduced more than
   2x keeps its luma at full resolution instead: the reduced-scale IDCT would alias its grain
   (2.9 dB of PSNR on a grainy 12 MP photo), so a second thread decodes the colour at reduced
   scale while this one decodes the luma, and both share the luma's downscale (same wall time,
   1.7x the CPU). Not where the 1/2-scale decode alone lands on the size: two decodes would be
   slower there.

``preserve_grain`` is a keyword of every ``prepare_*`` function. Left at None it is True for a
document (one image: its second core is free) and False for liveness frames (three are prepared
concurrently, each already using a core), and False for both inside ``with prefer_throughput():``
(a context variable: this thread, or this task and what it starts). It is resolved once, in the
calling thread or task, and passed to the worker threads explicitly, so the output bytes for one
input and one set of options are the same whatever else the process is doing.

Liveness frames are prepared concurrently in threads, then compared: identical bytes, or
grayscale thumbnails that differ by less than :data:`IDENTICAL_FRAME_THRESHOLD` grey levels on
average once resized to one grid and matched in exposure (a copy: re-encoded, resized, converted,
re-exposed), raise :class:`~vlens_async.errors.IdenticalFramesError` naming the pair and its
measured difference; a subject that moved by 0.5 % of the width is never refused
(:func:`compare_frames` shows the measurements). Capture times further apart than
``max_spread`` raise :class:`~vlens_async.errors.FrameTimingError`.

Everything that touches Pillow or the file system runs in a worker thread (``asyncio.to_thread``);
the coroutines only wait. The ``*_sync`` twins run the same code in the calling thread (and the
three frames in a small thread pool) for scripts.

One module per concern, each importing only those listed before it: ``_values`` (the prepared
values), ``_colour`` (ICC profiles to sRGB), ``_jpeg`` (the marker walk that strips metadata),
``_pools`` (the lazy, fork-safe thread pools), ``_resize`` (target size, downscale),
``_throughput`` (the ``preserve_grain`` option and its defaults), ``_input`` (reading inputs),
``_decode`` (header checks, modes, orientation), ``_quality`` (the quality search),
``_frames`` (thumbnails, identical frames, capture times), ``_grain`` (the grain-preserving
downscale), ``_pipeline`` (one image) and ``_prepare`` (the entry points).
"""

from __future__ import annotations

from ._decode import ACCEPTED_FORMATS
from ._frames import (
    IDENTICAL_FRAME_THRESHOLD,
    THUMBNAIL_SIDE,
    FrameComparison,
    capture_spread,
    compare_frames,
    frame_difference,
)
from ._input import MAX_INPUT_BYTES, load_image_bytes
from ._prepare import prepare_document, prepare_document_sync, prepare_faces, prepare_faces_sync
from ._quality import MAX_QUALITY, MIN_QUALITY, MIN_SIDE
from ._throughput import prefer_throughput
from ._values import ImageInput, PreparedFaces, PreparedImage

__all__ = [
    "ACCEPTED_FORMATS",
    "IDENTICAL_FRAME_THRESHOLD",
    "MAX_INPUT_BYTES",
    "MAX_QUALITY",
    "MIN_QUALITY",
    "MIN_SIDE",
    "THUMBNAIL_SIDE",
    "FrameComparison",
    "ImageInput",
    "PreparedFaces",
    "PreparedImage",
    "capture_spread",
    "compare_frames",
    "frame_difference",
    "load_image_bytes",
    "prefer_throughput",
    "prepare_document",
    "prepare_document_sync",
    "prepare_faces",
    "prepare_faces_sync",
]
