"""The bulk runner: throughput against the bound, 12 MP preprocessing cost and loop lag, and
memory that does not grow with the job.

The emulator runs in its own process (``serve_forever`` on 127.0.0.1, a free port), so its CPU and
memory are not counted; this process runs the bulk job (``vlens_async.bulk.run_bulk``) with a
journal and a results file in a temporary folder, exactly as ``vlens bulk`` would.

1. **throughput**: 200 ms fixed latency per call, compliant images (synthetic applicants, passed
   through by the preprocessor), no rate limit, concurrency 64. The bound is
   ``concurrency / (3 calls x latency)`` = 106.7 flows/s; target at least 85% of it. Run with the
   preprocessor on (the default: it walks every image's markers and scans and has libjpeg check
   its headers, hashes it, and decodes the face frames at reduced scale for the identical-frames
   check) and off (``prepare=False``: files sent as they are).
2. **12 MP**: the same with every image scaled to 12 MP (preprocessing on): flows/s, CPU seconds
   per flow (this process: client, preprocessing threads, journal), event-loop lag p99 (a task
   that sleeps 5 ms and records how late it wakes; target under 10 ms).
3. **memory**: peak RSS of a fresh process running 500 and then 5,000 applicants at the same
   concurrency (64, no added latency); target: 5,000 within 1.15x of 500.
4. **stages**: where a compliant applicant's preparation CPU goes, one thread, best of five
   rounds: each stage of a document's and a frame's pass-through timed alone, the whole
   ``prepare_image`` of each, and the three-pair frames check (not part of "all three").
5. **stages12mp**: where a 12 MP applicant's preparation CPU goes (cProfile on the thread's CPU
   clock, everything in one thread): libjpeg decode, resize, JPEG encode, file read, SHA-256.

The throughput run prints the issue's three targets as ``[PASS]``/``[MISS]`` lines at the end,
with the client's CPU per flow split by thread (event loop, preparation, journal, default
executor) and the load average before and after each run: figures taken on a loaded machine are
not comparable with a quiet one's. ``--prepare on`` (or ``off``) runs one of the two.

Manifest rows cycle through a few distinct image sets (``--distinct``): generating 5,000 synthetic
applicants would take longer than the benchmark, and the emulator caches its reading of repeated
images, as it would for a client's retry. Every row is still its own applicant, transaction and
set of uploads, and in the 12 MP run every image is preprocessed again for every row.

    .venv/bin/python benchmarks/bench_bulk.py                    # all three, ~3 minutes
    .venv/bin/python benchmarks/bench_bulk.py --only throughput  # or 12mp, memory, stages...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import Emulator, loop_gaps, upscale

from vlens_async.bulk import BulkSummary, frozen_heap, run_bulk
from vlens_async.client import VlensClient
from vlens_async.samples import make_applicant

HEADER = "applicant_id,front,back,face_1,face_2,face_3,name_check_value,client_transaction_id"
NAMES = ("front", "back", "face_1", "face_2", "face_3")
LAG_INTERVAL = 0.005  # the loop-lag monitor's sleep, seconds


def write_images(folder: Path, distinct: int, *, twelve_mp: bool) -> list[str]:
    """``distinct`` synthetic applicants' images under ``folder``; their folder names."""
    names = []
    for n in range(distinct):
        applicant = make_applicant(7000 + n)
        images = dict(zip(NAMES, (applicant.front, applicant.back, *applicant.faces), strict=True))
        if twelve_mp:
            images = {
                name: upscale(data, (4000, 3000) if name in ("front", "back") else (3000, 4000), n)
                for name, data in images.items()
            }
        target = folder / f"set{n}"
        target.mkdir(parents=True, exist_ok=True)
        for name, data in images.items():
            (target / f"{name}.jpg").write_bytes(data)
        names.append(target.name)
    return names


def write_manifest(folder: Path, sets: list[str], rows: int) -> Path:
    """A manifest of ``rows`` applicants cycling through the image ``sets``."""
    manifest = folder / f"manifest-{rows}.csv"
    with manifest.open("w") as fh:
        fh.write(HEADER + "\n")
        for n in range(rows):
            base = sets[n % len(sets)]
            files = ",".join(f"{base}/{name}.jpg" for name in NAMES)
            fh.write(f"a{n},{files},,\n")
    return manifest


# Thread name prefixes -> the stage their CPU is counted under (first match wins).
THREAD_GROUPS = (
    ("MainThread", "event_loop"),  # client requests, aiohttp, the runner, the flow
    ("vlens-bulk-images", "preparation"),  # the runner's preparation threads
    ("vlens-images", "preparation"),  # the frame pool and the grain helper
    ("vlens-journal", "journal"),
    ("asyncio_", "default_executor"),  # request bodies and responses over 256 KB, manifest
    ("cpu-sampler", "sampler"),
)


class ThreadCPU:
    """CPU seconds of this process's threads by stage, from ``/proc/self/task`` (Linux).

    A daemon thread reads every Python thread's CPU time every ``interval`` seconds and keeps
    the latest reading per thread, so threads that end during the run still count (up to their
    last reading). What no reading covers shows as ``other`` against ``getrusage``'s total.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        for thread in threading.enumerate():
            tid = thread.native_id
            if tid is None:
                continue
            try:
                with open(f"/proc/self/task/{tid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self._seen[tid] = (thread.name, (int(fields[11]) + int(fields[12])) / self._tick)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ThreadCPU:
        """Start sampling; the threads' CPU before this point is subtracted."""
        self._sample()
        self._base = dict(self._seen)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop sampling after one last reading."""
        self._stop.set()
        self._thread.join()
        self._sample()

    def by_stage(self) -> dict[str, float]:
        """CPU seconds per stage since ``__enter__``."""
        stages: dict[str, float] = {}
        for tid, (name, cpu) in self._seen.items():
            used = cpu - self._base.get(tid, (name, 0.0))[1]
            stage = next((g for prefix, g in THREAD_GROUPS if name.startswith(prefix)), "other")
            stages[stage] = stages.get(stage, 0.0) + used
        return stages


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job_heap(heap: str) -> contextlib.AbstractContextManager[None]:
    """``frozen_heap()`` as ``vlens bulk`` holds it (``"frozen"``), or nothing (``"plain"``).
    Entered before the loop-lag and collector records start: its own collection is not the
    job's."""
    return frozen_heap() if heap == "frozen" else contextlib.nullcontext()


@contextlib.contextmanager
def gc_pauses() -> Iterator[dict[int, list[float]]]:
    """The cyclic collector's collections in the block: seconds each, by generation."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(record)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(record)


async def run_job(
    base_url: str,
    api_key: str,
    manifest: Path,
    work: Path,
    concurrency: int,
    *,
    prepare: bool = True,
    prepare_threads: int | None = None,
) -> tuple[BulkSummary, float, list[float], dict[str, float]]:
    """Run the bulk job; return its summary, CPU seconds used, the loop lags seen, and the CPU
    seconds by stage (threads). Callers hold :func:`job_heap` around it."""
    async with loop_gaps(LAG_INTERVAL) as gaps:
        sampler = ThreadCPU().__enter__()
        cpu = cpu_seconds()
        async with VlensClient(api_key, base_url=base_url) as client:
            summary = await run_bulk(
                client,
                manifest,
                journal=work / f"{manifest.stem}-{prepare}.db",
                out=work / f"{manifest.stem}-{prepare}.jsonl",
                concurrency=concurrency,
                rate_limit="none",
                prepare=prepare,
                prepare_threads=prepare_threads,
                progress=False,
                signals=False,
            )
        cpu = cpu_seconds() - cpu
        sampler.__exit__()
    stages = sampler.by_stage()
    stages["other"] = cpu - sum(v for k, v in stages.items() if k != "other")
    return summary, cpu, [gap - LAG_INTERVAL for gap in gaps], stages


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else float("nan")


def bench_throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Flows per second against the bound, compliant images, 200 ms per call: with the
    preprocessor on (the default) and off (``prepare=False``)."""
    sets = write_images(work / "plain", args.distinct, twelve_mp=False)
    manifest = write_manifest(work / "plain", sets, args.flows)
    bound = args.concurrency / (3 * args.latency_ms / 1000)
    report: dict[str, Any] = {
        "bound_flows_per_s": round(bound, 1),
        "prepare_threads": args.prepare_threads or "default",
        "heap": args.heap,
    }
    for prepare in {"both": (True, False), "on": (True,), "off": (False,)}[args.prepare]:
        emulator = Emulator(args.latency_ms)
        with emulator as (base_url, api_key):
            server_cpu = emulator.cpu()
            load = os.getloadavg()[0]
            with job_heap(args.heap), gc_pauses() as pauses:
                summary, cpu, lags, stages = asyncio.run(
                    run_job(
                        base_url,
                        api_key,
                        manifest,
                        work,
                        args.concurrency,
                        prepare=prepare,
                        prepare_threads=args.prepare_threads,
                    )
                )
            server_cpu = emulator.cpu() - server_cpu
        flows = max(1, summary.processed)
        report["prepare_on" if prepare else "prepare_off"] = {
            "flows": summary.processed,
            "outcomes": dict(summary.by_outcome),
            "seconds": round(summary.elapsed, 2),
            "flows_per_s": round(summary.throughput, 1),
            "fraction_of_bound": round(summary.throughput / bound, 3),
            "cpu_ms_per_flow": round(1000 * cpu / flows, 2),
            "cpu_ms_per_flow_by_thread": {
                k: round(1000 * v / flows, 2) for k, v in sorted(stages.items())
            },
            "emulator_cpu_ms_per_flow": round(1000 * server_cpu / flows, 1),
            "loop_lag_p99_ms": round(1000 * p99(lags), 2),
            "loop_lag_max_ms": round(1000 * max(lags, default=float("nan")), 2),
            "gc_collections_by_generation": {
                str(g): {"count": len(p), "max_ms": round(1000 * max(p, default=0.0), 1)}
                for g, p in pauses.items()
            },
            "latency_p50_ms": {k: round(v.p50 * 1000) for k, v in summary.latency.items()},
            "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
        }
    if args.prepare == "both":
        report["targets"] = throughput_targets(report)
    return report


def throughput_targets(report: dict[str, Any]) -> list[str]:
    """The issue's targets against this run's figures, one line each."""
    on, off = report["prepare_on"], report["prepare_off"]

    def line(name: str, value: str, met: bool) -> str:
        return f"[{'PASS' if met else 'MISS'}] {name}: {value}"

    return [
        line(
            "prepare on, flows/s >= 85% of the bound",
            f"{on['flows_per_s']} = {100 * on['fraction_of_bound']:.1f}% of "
            f"{report['bound_flows_per_s']} (off: {100 * off['fraction_of_bound']:.1f}%)",
            on["fraction_of_bound"] >= 0.85,
        ),
        line(
            "prepare on, client CPU per compliant applicant <= 8 ms",
            f"{on['cpu_ms_per_flow']} ms (off: {off['cpu_ms_per_flow']} ms)",
            on["cpu_ms_per_flow"] <= 8,
        ),
        line(
            "loop lag p99 < 10 ms, prepare on and off",
            f"{on['loop_lag_p99_ms']} / {off['loop_lag_p99_ms']} ms",
            max(on["loop_lag_p99_ms"], off["loop_lag_p99_ms"]) < 10,
        ),
    ]


def bench_12mp(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Flows per second, CPU per flow and loop lag with 12 MP inputs, preprocessing on."""
    sets = write_images(work / "big", args.distinct_12mp, twelve_mp=True)
    manifest = write_manifest(work / "big", sets, args.flows_12mp)
    with Emulator(args.latency_ms) as (base_url, api_key):
        load = os.getloadavg()[0]
        with job_heap(args.heap):
            summary, cpu, lags, stages = asyncio.run(
                run_job(
                    base_url,
                    api_key,
                    manifest,
                    work,
                    args.concurrency,
                    prepare_threads=args.prepare_threads,
                )
            )
    return {
        "prepare_threads": args.prepare_threads or "default",
        "flows": summary.processed,
        "outcomes": dict(summary.by_outcome),
        "seconds": round(summary.elapsed, 2),
        "flows_per_s": round(summary.throughput, 2),
        "cpu_s_per_flow": round(cpu / max(1, summary.processed), 3),
        "cpu_share_by_thread": {k: round(v / cpu, 3) for k, v in sorted(stages.items())},
        "cores": os.cpu_count(),
        "loop_lag_p99_ms": round(1000 * p99(lags), 2),
        "loop_lag_max_ms": round(1000 * max(lags, default=float("nan")), 2),
        "latency_p50_ms": {k: round(v.p50 * 1000) for k, v in summary.latency.items()},
        "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB.

    ``VmHWM`` from /proc, not ``getrusage``'s ``ru_maxrss``: Linux carries ``ru_maxrss`` over
    fork and exec, so a child started by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(manifest: str, work: str, base_url: str, api_key: str, concurrency: int) -> None:
    """Run one job in this fresh process and print its peak RSS (the --memory-child mode)."""
    summary, *_ = asyncio.run(run_job(base_url, api_key, Path(manifest), Path(work), concurrency))
    peak_kib = peak_rss_kib()
    print(
        json.dumps(
            {
                "flows": summary.processed,
                "peak_rss_mib": round(peak_kib / 1024, 1),
                "seconds": round(summary.elapsed, 1),
            }
        )
    )


def bench_memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Peak RSS of a fresh process for a small and a ten-times-larger job."""
    sets = write_images(work / "mem", args.distinct, twelve_mp=False)
    results: dict[str, Any] = {}
    with Emulator(0) as (base_url, api_key):
        for rows in (args.memory_small, args.memory_large):
            manifest = write_manifest(work / "mem", sets, rows)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    str(manifest),
                    str(work),
                    base_url,
                    api_key,
                    str(args.concurrency),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[str(rows)] = json.loads(out.stdout.strip().splitlines()[-1])
    small = results[str(args.memory_small)]["peak_rss_mib"]
    large = results[str(args.memory_large)]["peak_rss_mib"]
    results["ratio"] = round(large / small, 3)
    return results


def best_ms(work: Callable[[], object], rounds: int = 5, calls: int = 100) -> float:
    """The fastest of ``rounds`` rounds of ``calls`` calls, in CPU milliseconds per call."""
    work()
    best = math.inf
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, (time.process_time() - started) * 1000 / calls)
    return round(best, 3)


def bench_stages(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """CPU per stage of a compliant applicant's preparation (the throughput run's inputs)."""
    from vlens_async.config import (
        DOCUMENT_MAX_BYTES,
        DOCUMENT_MAX_SIDE,
        FACE_MAX_BYTES,
        FACE_MAX_SIDE,
    )
    from vlens_async.images import _colour, _decode, _frames, _input, _jpeg, _pipeline
    from vlens_async.images._values import prepared

    folder = work / "stages" / write_images(work / "stages", 1, twelve_mp=False)[0]
    report: dict[str, Any] = {}
    for kind, name, limits in (
        ("document", "front", (DOCUMENT_MAX_BYTES, DOCUMENT_MAX_SIDE)),
        ("frame", "face_1", (FACE_MAX_BYTES, FACE_MAX_SIDE)),
    ):
        path = folder / f"{name}.jpg"
        data = path.read_bytes()
        header = _decode.open_image(data)
        stripped, skeleton = _jpeg.strip_and_skeleton(data)
        frame = kind == "frame"
        stages = {
            "read": lambda p=path: _input.read_input(p),
            "open_header": lambda d=data: _decode.open_image(d).close(),
            "exif_orientation": lambda d=data: _decode.orientation(_decode.open_image(d)),
            "colour_profile": lambda h=header: _colour.colour_profile(h),
            "marker_walk": lambda d=data: _jpeg.strip_and_skeleton(d),
            "sha256": lambda s=stripped: hashlib.sha256(s).hexdigest(),
            # What proves the file readable: the skeleton's decode, or the frame's thumbnail.
            "libjpeg": (
                (lambda s=stripped: _frames.thumbnail(s))
                if frame
                else (lambda k=skeleton: _pipeline._decode_headers(k))
            ),
            "prepare_image": lambda p=path, m=limits, f=frame: _pipeline.prepare_image(
                p, m[0], m[1], preserve_grain=False, frame=f
            ),
        }
        report[kind] = {
            "size": f"{header.width}x{header.height}",
            "bytes": len(data),
            "ms": {stage: best_ms(call) for stage, call in stages.items()},
        }
    faces = [(folder / f"face_{i}.jpg").read_bytes() for i in (1, 2, 3)]
    frames = [prepared(f, (1, 1), None, len(f), passthrough=True) for f in faces]
    thumbs = [_frames.thumbnail(_jpeg.strip_metadata(f)) for f in faces]

    def check() -> None:
        # Fresh thumbnails: each caches its resize to the grid.
        fresh = [_frames.Thumbnail(t.size, t.pixels) for t in thumbs]
        _frames.check_identical(frames, fresh)

    report["frames_check_ms"] = best_ms(check)
    report["applicant_ms"] = round(
        2 * report["document"]["ms"]["prepare_image"]
        + 3 * report["frame"]["ms"]["prepare_image"]
        + report["frames_check_ms"],
        2,
    )
    return report


# cProfile entries (C calls) -> the stage of a 12 MP applicant's preparation they belong to.
STAGES_12MP = (
    ("'decode' of 'ImagingDecoder'", "libjpeg decode"),
    ("'resize' of 'ImagingCore'", "resize"),
    ("'reduce' of 'ImagingCore'", "resize"),
    ("ImagingEncoder", "JPEG encode"),
    ("'read' of '_io.BufferedReader'", "read the file"),
    ("openssl_sha256", "SHA-256"),
)


def bench_stages_12mp(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Where a 12 MP applicant's preparation CPU goes (inside ``prefer_throughput()``, as a bulk
    job; the frames one after another in this thread, where ``prepare_faces_sync`` would use its
    pool), from cProfile on the thread's CPU clock: best of 3 rounds for the total, the shares
    from all of them."""
    import cProfile
    import pstats

    from vlens_async.config import FACE_MAX_BYTES, FACE_MAX_SIDE
    from vlens_async.images import _prepare, prefer_throughput, prepare_document_sync

    folder = work / "stages12" / write_images(work / "stages12", 1, twelve_mp=True)[0]
    faces = [folder / f"face_{i}.jpg" for i in (1, 2, 3)]

    def applicant() -> None:
        for side in ("front", "back"):
            prepare_document_sync(folder / f"{side}.jpg")
        # What prepare_faces_sync does, in this thread (its pool's threads escape cProfile).
        done = [
            _prepare._prepare_frame(face, i, FACE_MAX_BYTES, FACE_MAX_SIDE, False)
            for i, face in enumerate(faces)
        ]
        _prepare._collect_faces(done)

    profile = cProfile.Profile(time.thread_time)
    best = math.inf
    with prefer_throughput():
        applicant()
        for _ in range(3):
            started = time.thread_time()
            profile.runcall(applicant)
            best = min(best, time.thread_time() - started)
    totals: dict[str, float] = {}
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (_, _, name), (_, _, own, _, _) in stats.items():
        stage = next((g for key, g in STAGES_12MP if key in name), "everything else")
        totals[stage] = totals.get(stage, 0.0) + own
    whole = sum(totals.values())
    return {
        "cpu_s_per_applicant": round(best, 3),
        "share": {k: round(v / whole, 3) for k, v in sorted(totals.items(), key=lambda x: -x[1])},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print one JSON object of figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        choices=("throughput", "12mp", "memory", "stages", "stages12mp"),
        action="append",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--flows", type=int, default=1280, help="throughput run")
    parser.add_argument("--distinct", type=int, default=16, help="distinct image sets")
    parser.add_argument("--flows-12mp", type=int, default=64)
    parser.add_argument("--distinct-12mp", type=int, default=4)
    parser.add_argument(
        "--prepare-threads", type=int, default=None, help="throughput and 12 MP runs"
    )
    parser.add_argument("--memory-small", type=int, default=500)
    parser.add_argument("--memory-large", type=int, default=5000)
    parser.add_argument("--memory-child", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument(
        "--prepare", choices=("both", "on", "off"), default="both", help="throughput run"
    )
    parser.add_argument(
        "--heap",
        choices=("frozen", "plain"),
        default="frozen",
        help="throughput and 12 MP runs: inside frozen_heap() as vlens bulk runs (default), or not",
    )
    args = parser.parse_args(argv)
    if args.memory_child:
        manifest, work, base_url, api_key, concurrency = args.memory_child
        memory_child(manifest, work, base_url, api_key, int(concurrency))
        return 0
    chosen = args.only or ["throughput", "12mp", "memory"]
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        work = Path(tmp)
        benches = {
            "throughput": bench_throughput,
            "12mp": bench_12mp,
            "memory": bench_memory,
            "stages": bench_stages,
            "stages12mp": bench_stages_12mp,
        }
        for name in chosen:
            started = time.perf_counter()
            report[name] = benches[name](args, work)
            report[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
            print(f"{name}: {json.dumps(report[name])}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    for line in report.get("throughput", {}).get("targets", []):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
