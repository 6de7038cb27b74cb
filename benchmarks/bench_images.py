"""Benchmark: the image preprocessor against a naive quality loop and a careful binary search.

Inputs (all from ``vlens_async.samples.make_photo``): a 12 MP (4000x3000) photo, its hard variant
(strong grain, compresses badly), and a compliant 1280x960 JPEG. Budget: the liveness-frame
limits, ``FACE_MAX_BYTES`` (500 KB) and ``FACE_MAX_SIDE`` (1280 px).

Methods, side by side in one run (rounds interleaved, so machine noise falls on all alike):

- ``ours``: ``prepare_document_sync`` (reduced-scale JPEG decode, BICUBIC downscale, quality
  estimated from a stripe sample, one or two full encodes; pass-through for compliant input;
  a grainy JPEG, such as the hard photo, keeps its luma at full resolution: two decodes on
  two threads, see ``images._grain._GRAIN_BYTES_PER_PIXEL``).
- ``naive``: full decode, then quality 95, 90, ... at full resolution until it fits.
- ``binary``: full decode, LANCZOS downscale to the side limit, binary search over quality
  40..95 for the highest that fits.

Each round calls every method twice per 12 MP input. The first call ("cold ms") runs right after
another method, whose freed 48 MB full-resolution buffers glibc has handed back to the OS, so it
pays for paging its memory in again (6-10 ms for ours, measured with getrusage); the second is
the method's steady state, as in a job preparing many images, and is what "median ms" and the
targets use. Both are printed.

Reported per input and method: median wall time (steady and cold), median CPU time of the process
(all threads; less sensitive than wall time to other load on the machine), output bytes,
dimensions, JPEG quality, and PSNR of the output against a reference downscale (full decode +
LANCZOS to the output's dimensions; the naive full-size output is LANCZOS-downscaled to 1280 px
first). Then, for the hard photo, where its PSNR goes: each way of downscaling timed, its PSNR
before encoding, and after the best JPEG under the budget (exhaustive search, so the choice of
quality is not part of the gap); ours takes the grain-preserving path there. Then the event
loop: a ticker on the loop while ``prepare_document`` runs one 12 MP photo and while
``prepare_faces`` runs three, reporting the worst gap, and the three-frames / one-frame ratio.

Targets: ours <= 120 ms per 12 MP image; >= 5x faster than naive; PSNR within 0.5 dB of binary;
pass-through < 5 ms; three frames <= 2.2x one; (issue) loop gap <= 10 ms.

Run:  .venv/bin/python benchmarks/bench_images.py              (about 25 s on 2 cores)
      .venv/bin/python benchmarks/bench_images.py --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import PIL
from _common import loop_gaps
from PIL import Image, ImageChops, ImageStat
from PIL.JpegImagePlugin import JpegImageFile

from vlens_async.config import FACE_MAX_BYTES, FACE_MAX_SIDE
from vlens_async.images import (
    MAX_QUALITY,
    MIN_QUALITY,
    prepare_document,
    prepare_document_sync,
    prepare_faces,
)
from vlens_async.images._grain import _grain_preserving_downscale
from vlens_async.samples import make_photo

LANCZOS = Image.Resampling.LANCZOS


@dataclass
class Output:
    """What a method produced for one input."""

    data: bytes
    size: tuple[int, int]
    quality: int | None


@dataclass
class Row:
    """Timings and the last output of one method on one input."""

    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    out: Output | None = None


def jpeg(im: Image.Image, quality: int) -> bytes:
    """Encode ``im`` as JPEG at ``quality`` into memory."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def full_decode(data: bytes) -> Image.Image:
    """Decode every pixel."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.convert("RGB")


def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size with its long side at most ``max_side``."""
    scale = min(1.0, max_side / max(size))
    return round(size[0] * scale), round(size[1] * scale)


def ours(data: bytes, max_bytes: int, max_side: int) -> Output:
    """The preprocessor under test."""
    p = prepare_document_sync(data, max_bytes=max_bytes, max_side=max_side)
    return Output(p.data, (p.width, p.height), p.quality)


def naive(data: bytes, max_bytes: int, max_side: int) -> Output:
    """Full decode, then a quality loop at full resolution (ignores max_side)."""
    im = full_decode(data)
    out = b""
    for quality in range(95, 0, -5):
        out = jpeg(im, quality)
        if len(out) <= max_bytes:
            return Output(out, im.size, quality)
    return Output(out, im.size, 5)


def binary(data: bytes, max_bytes: int, max_side: int) -> Output:
    """Full decode, LANCZOS downscale, binary search for the highest fitting quality."""
    im = full_decode(data)
    size = target_size(im.size, max_side)
    if size != im.size:
        im = im.resize(size, LANCZOS)
    return best_quality(im, max_bytes)


def best_quality(im: Image.Image, max_bytes: int) -> Output:
    """Binary search over MIN_QUALITY..MAX_QUALITY for the highest quality under ``max_bytes``."""
    low, high, best = MIN_QUALITY, MAX_QUALITY, None
    while low <= high:
        mid = (low + high) // 2
        out = jpeg(im, mid)
        if len(out) <= max_bytes:
            best, low = Output(out, im.size, mid), mid + 1
        else:
            high = mid - 1
    return best or Output(jpeg(im, MIN_QUALITY), im.size, MIN_QUALITY)


def downscales(data: bytes, size: tuple[int, int]) -> dict[str, Callable[[], Image.Image]]:
    """Ways to reach ``size`` before encoding, from ours (reduced-scale decode) to the reference."""

    def drafted() -> Image.Image:
        im = Image.open(io.BytesIO(data))
        im.draft(None, size)  # libjpeg's 1/2 IDCT scaling, as the preprocessor does
        return im.convert("RGB").resize(size, Image.Resampling.BICUBIC)

    def grain_kept() -> Image.Image:
        im = Image.open(io.BytesIO(data))
        assert isinstance(im, JpegImageFile)
        return _grain_preserving_downscale(im, data, size).convert("RGB")

    return {
        "1/2-scale decode + BICUBIC": drafted,
        "full-size luma + 1/8 colour (ours)": grain_kept,
        "full decode + BICUBIC": lambda: full_decode(data).resize(size, Image.Resampling.BICUBIC),
        "full decode + 2x LANCZOS + LANCZOS": lambda: (
            full_decode(data).resize((size[0] * 25 // 16, size[1] * 25 // 16), LANCZOS)
        ).resize(size, LANCZOS),
        "full decode + LANCZOS (reference)": lambda: full_decode(data).resize(size, LANCZOS),
    }


def pixel_gap(data: bytes, max_bytes: int, max_side: int) -> None:
    """Print where a photo's PSNR goes: the downscale alone, then the best JPEG of each downscale.

    Separates the two causes of a PSNR gap: the downscale before encoding (timed here) and the
    choice of quality (here the exhaustive search on every downscale, so it is not a cause).
    """
    source = full_decode(data)
    size = target_size(source.size, max_side)
    reference = source.resize(size, LANCZOS)
    print(
        f"{'downscale to ' + str(size[0]) + ' px':<36} {'ms':>6} {'PSNR dB':>8} {'best q':>7} "
        f"{'after JPEG':>11}"
    )
    for name, make in downscales(data, size).items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            pixels = make()
            times.append(time.perf_counter() - started)
        best = best_quality(pixels, max_bytes)
        after = psnr(full_decode(best.data), reference)
        print(
            f"{name:<36} {statistics.median(times) * 1000:>6.1f} {psnr(pixels, reference):>8.2f} "
            f"{best.quality:>7} {after:>11.2f}"
        )


METHODS: dict[str, Callable[[bytes, int, int], Output]] = {
    "ours": ours,
    "naive": naive,
    "binary": binary,
}


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two RGB images of one size, in dB."""
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    mse = sum(stat.sum2) / (3 * a.width * a.height)
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


def quality_db(source: Image.Image, out: Output, max_side: int) -> float:
    """PSNR of an output against the reference downscale of the source."""
    got = full_decode(out.data)
    size = target_size(got.size, max_side)
    if size != got.size:
        got = got.resize(size, LANCZOS)
    reference = source if source.size == size else source.resize(size, LANCZOS)
    return psnr(got, reference)


async def loop_lag(work: Callable[[], object]) -> tuple[float, float]:
    """Run the awaitable ``work()`` with a 1 ms ticker on the loop: (seconds, worst gap)."""
    async with loop_gaps(0.001) as gaps:
        await asyncio.sleep(0.01)
        gaps.clear()
        started = time.perf_counter()
        await work()  # type: ignore[misc]
        elapsed = time.perf_counter() - started
    return elapsed, max(gaps, default=0.0)


async def loop_section(photos: list[bytes], rounds: int) -> dict[str, float]:
    """Worst loop gaps and the three-frames / one-frame ratio."""
    one: list[float] = []
    three: list[float] = []
    gap_one: list[float] = []
    gap_three: list[float] = []
    for _ in range(rounds):
        t, g = await loop_lag(
            lambda: prepare_document(photos[0], max_bytes=FACE_MAX_BYTES, max_side=FACE_MAX_SIDE)
        )
        one.append(t)
        gap_one.append(g)
        t, g = await loop_lag(lambda: prepare_faces(*photos))
        three.append(t)
        gap_three.append(g)
    return {
        "one_ms": statistics.median(one) * 1000,
        "three_ms": statistics.median(three) * 1000,
        "gap_one_ms": max(gap_one) * 1000,
        "gap_three_ms": max(gap_three) * 1000,
        "gap_three_median_ms": statistics.median(gap_three) * 1000,
    }


def main() -> int:
    """Run the benchmark and print the table; exit status 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per 12 MP input")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    max_bytes, max_side = FACE_MAX_BYTES, FACE_MAX_SIDE
    inputs = {
        "12 MP photo": make_photo(4000, 3000, args.seed),
        "12 MP hard": make_photo(4000, 3000, args.seed, hard=True),
        "1280 px compliant": make_photo(1280, 960, args.seed + 1),
    }
    print(
        f"vlens-async image preprocessor benchmark | Python {platform.python_version()} | "
        f"Pillow {PIL.__version__} | {os.cpu_count()} CPUs | budget {max_bytes} B, {max_side} px"
    )
    for name, data in inputs.items():
        im = Image.open(io.BytesIO(data))
        print(f"  input {name}: {im.size[0]}x{im.size[1]}, {len(data)} B")

    rows: dict[tuple[str, str], Row] = {(i, m): Row() for i in inputs for m in METHODS}
    for method in METHODS.values():  # warm up Pillow's plugins and caches
        method(inputs["1280 px compliant"], max_bytes, max_side)
    for r in range(args.rounds):
        order = list(METHODS)[r % 3 :] + list(METHODS)[: r % 3]
        for input_name, data in inputs.items():
            repeats = 20 if "compliant" in input_name else 2
            for method_name in order:
                if method_name == "naive" and r >= 3:
                    continue  # 3 rounds are plenty for a method 10x slower
                row = rows[(input_name, method_name)]
                for i in range(repeats):
                    started, cpu_started = time.perf_counter(), time.process_time()
                    row.out = METHODS[method_name](data, max_bytes, max_side)
                    elapsed = time.perf_counter() - started
                    if i == 0:  # right after another method: its freed memory is paged in anew
                        row.cold.append(elapsed)
                    else:  # the method's own steady state, as in a job preparing many images
                        row.times.append(elapsed)
                        row.cpu.append(time.process_time() - cpu_started)

    header = (
        f"{'input':<18} {'method':<7} {'median ms':>10} {'cold ms':>8} {'CPU ms':>7} {'bytes':>9} "
        f"{'dims':>10} "
        f"{'q':>4} {'PSNR dB':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    medians: dict[tuple[str, str], float] = {}
    psnrs: dict[tuple[str, str], float] = {}
    for input_name, data in inputs.items():
        source = full_decode(data)
        for method_name in METHODS:
            row = rows[(input_name, method_name)]
            assert row.out is not None
            ms = statistics.median(row.times) * 1000
            db = quality_db(source, row.out, max_side)
            medians[(input_name, method_name)] = ms
            psnrs[(input_name, method_name)] = db
            dims = f"{row.out.size[0]}x{row.out.size[1]}"
            quality = "pass" if row.out.quality is None else str(row.out.quality)
            cpu_ms = statistics.median(row.cpu) * 1000
            cold_ms = statistics.median(row.cold) * 1000
            print(
                f"{input_name:<18} {method_name:<7} {ms:>10.1f} {cold_ms:>8.1f} {cpu_ms:>7.1f} "
                f"{len(row.out.data):>9} {dims:>10} {quality:>4} {db:>8.2f}"
            )

    print()
    print("where the 12 MP hard photo's PSNR goes (PSNR against the reference downscale):")
    pixel_gap(inputs["12 MP hard"], max_bytes, max_side)

    photos = [make_photo(4000, 3000, args.seed + k) for k in range(3)]
    lag = asyncio.run(loop_section(photos, max(3, args.rounds // 2)))
    print()
    print(
        f"event loop: one 12 MP frame {lag['one_ms']:.1f} ms "
        f"(worst gap {lag['gap_one_ms']:.1f} ms); "
        f"three frames {lag['three_ms']:.1f} ms (worst gap {lag['gap_three_ms']:.1f} ms, "
        f"median of per-run worst {lag['gap_three_median_ms']:.1f} ms); "
        f"ratio {lag['three_ms'] / lag['one_ms']:.2f}x"
    )

    checks = []
    for input_name in ("12 MP photo", "12 MP hard"):
        ours_ms = medians[(input_name, "ours")]
        checks.append((f"{input_name}: ours <= 120 ms", ours_ms <= 120, f"{ours_ms:.1f} ms"))
        speedup = medians[(input_name, "naive")] / ours_ms
        checks.append((f"{input_name}: >= 5x faster than naive", speedup >= 5, f"{speedup:.1f}x"))
        delta = psnrs[(input_name, "binary")] - psnrs[(input_name, "ours")]
        checks.append(
            (f"{input_name}: PSNR within 0.5 dB of binary", delta <= 0.5, f"{delta:+.2f} dB")
        )
    passthrough = medians[("1280 px compliant", "ours")]
    checks.append(("pass-through < 5 ms", passthrough < 5, f"{passthrough:.2f} ms"))
    ratio = lag["three_ms"] / lag["one_ms"]
    checks.append(("three frames <= 2.2x one", ratio <= 2.2, f"{ratio:.2f}x"))
    checks.append(
        (
            "loop gap <= 10 ms (three frames)",
            lag["gap_three_ms"] <= 10,
            f"{lag['gap_three_ms']:.1f} ms",
        )
    )
    print()
    for label, ok, value in checks:
        print(f"  [{'PASS' if ok else 'MISS'}] {label}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
