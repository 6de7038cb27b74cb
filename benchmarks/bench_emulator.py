"""How many liveness requests per second the emulator sustains on loopback.

The emulator runs in its own process (``serve_forever`` on 127.0.0.1, a free port); this process is
the load generator: raw aiohttp, ``--concurrency`` requests in flight, each a ~2.7 MB JSON body of
four base64 images (the ID front re-encoded at quality 100, ~1.1 MB, and three face frames at
quality 100, ~330 KB each). Transactions are prepared first (front and back of ``--applicants``
synthetic applicants), then liveness is sent on them in a loop; a rescanned liveness replaces the
previous one, so the work per request stays the same.

By default the emulator's reading cache is on (repeated images cost one hash, as for a client
retrying); ``--cold`` turns it off so every request decodes its four images for the card and face
codes.

    .venv/bin/python benchmarks/bench_emulator.py                 # ~10 s, cache on
    .venv/bin/python benchmarks/bench_emulator.py --cold          # every image decoded
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import orjson
from _common import Emulator, process_cpu_seconds
from PIL import Image

from vlens_async import samples

API = "/api/DigitalIdentity"


def _reencode(data: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=quality, subsampling=0)
        return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bodies(count: int) -> list[tuple[str, bytes, bytes, bytes]]:
    """(transaction id, front body, back body, liveness body) per applicant."""
    out = []
    for seed in range(count):
        applicant = samples.make_applicant(1000 + seed)
        tx = str(uuid.uuid4())
        front = _reencode(applicant.front, 100)
        faces = [_reencode(face, 100) for face in applicant.faces]
        front_body = orjson.dumps({"image": _b64(applicant.front), "transaction_id": tx})
        back_body = orjson.dumps({"image": _b64(applicant.back), "transaction_id": tx})
        liveness = {
            "image": _b64(front),
            "face_1": _b64(faces[0]),
            "face_2": _b64(faces[1]),
            "face_3": _b64(faces[2]),
            "transaction_id": tx,
        }
        out.append((tx, front_body, back_body, orjson.dumps(liveness)))
    return out


async def _prepare(
    session: aiohttp.ClientSession, base: str, bodies: list[tuple[str, bytes, bytes, bytes]]
) -> None:
    for _, front, back, _ in bodies:
        for path, body in ((f"{API}/verify/id/front", front), (f"{API}/verify/id/back", back)):
            async with session.post(base + path, data=body) as resp:
                if resp.status != 200:
                    raise SystemExit(f"preparing failed: {resp.status} {await resp.text()}")


async def _load(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    server_pid: int,
) -> tuple[Counter[int], list[float], dict[str, float]]:
    statuses: Counter[int] = Counter()
    cpu: dict[str, float] = {}
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(index: int) -> None:
        n = index
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            body = bodies[n % len(bodies)]
            n += concurrency
            t0 = time.perf_counter()
            async with session.post(url, data=body) as resp:
                payload = await resp.read()
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                statuses[resp.status] += 1
                latencies.append(t1 - t0)
                if resp.status == 200 and not orjson.loads(payload)["services"]["liveness"]:
                    statuses[-1] += 1  # counted separately: a 200 whose liveness failed

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu["server0"], cpu["client0"] = process_cpu_seconds(server_pid), time.process_time()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu["server1"], cpu["client1"] = process_cpu_seconds(server_pid), time.process_time()

    await asyncio.gather(sample_cpu(), *(worker(i) for i in range(concurrency)))
    return (
        statuses,
        latencies,
        {
            "server": cpu["server1"] - cpu["server0"],
            "client": cpu["client1"] - cpu["client0"],
        },
    )


async def _run(
    args: argparse.Namespace, base: str, api_key: str, server_pid: int
) -> dict[str, Any]:
    print(f"building {args.applicants} applicants ...", file=sys.stderr)
    bodies = await asyncio.to_thread(_bodies, args.applicants)
    liveness_bodies = [b[3] for b in bodies]
    headers = {"ApiKey": api_key, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await _prepare(session, base, bodies)
        statuses, latencies, cpu = await _load(
            session,
            f"{base}{API}/verify/liveness/multi",
            liveness_bodies,
            concurrency=args.concurrency,
            warmup=args.warmup,
            duration=args.duration,
            server_pid=server_pid,
        )
        async with session.get(f"{base}/_emulator/counters") as resp:
            counters = await resp.json()
    duration = args.duration
    ok = statuses.get(200, 0)
    body_mb = statistics.mean(len(b) for b in liveness_bodies) / 1e6
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "mode": "cold (no reading cache)" if args.cold else "cache on",
        "concurrency": args.concurrency,
        "body_mb": round(body_mb, 2),
        "requests": sum(v for k, v in statuses.items() if k >= 0),
        "statuses": {str(k): v for k, v in statuses.items() if k >= 0},
        "liveness_false": statuses.get(-1, 0),
        "rps": round(ok / duration, 1),
        "mb_per_s": round(ok * body_mb / duration, 1),
        "p50_ms": round(pct(0.50), 1),
        "p95_ms": round(pct(0.95), 1),
        "p99_ms": round(pct(0.99), 1),
        # CPU per request, robust to other load on the machine: 1000 / this = req/s per core.
        "server_cpu_ms_per_request": round(cpu["server"] * 1000 / max(ok, 1), 2),
        "client_cpu_ms_per_request": round(cpu["client"] * 1000 / max(ok, 1), 2),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "server_liveness_counts": counters["requests"].get("liveness", {}),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a JSON line and a readable summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--applicants", type=int, default=8, help="distinct applicants")
    parser.add_argument("--cold", action="store_true", help="disable the emulator's cache")
    args = parser.parse_args(argv)

    emulator = Emulator(cache_size=0 if args.cold else 4096)
    with emulator as (base_url, api_key):
        result = asyncio.run(_run(args, base_url, api_key, emulator.pid))
    print(orjson.dumps(result).decode())
    print(
        f"liveness/multi: {result['rps']} req/s ({result['mb_per_s']} MB/s of "
        f"{result['body_mb']} MB bodies), p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms, "
        f"concurrency {result['concurrency']}, {result['mode']}; server CPU "
        f"{result['server_cpu_ms_per_request']} ms/request, load {result['load_average_1m']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
