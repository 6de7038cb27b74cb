"""Benchmark: VlensClient against raw aiohttp + orjson, httpx.AsyncClient and requests (32 threads).

Every client posts the same liveness call to a local aiohttp.web server (127.0.0.1, in a separate
process, so its CPU is not counted): four images (an ID front and three face frames, about 2.0 MB
of bytes) that become a 2.7 MB JSON body once base64-encoded. Every client does the same work per
request, as a real integration must (each applicant brings new images): base64-encode the four
images, build the JSON body, send it, read the JSON reply. 32 requests are in flight at a time.

Reported per client: median requests/s over the rounds, p50/p99 latency over all requests, and
client CPU per request (this process's CPU time, all threads, divided by requests), with ratios.
Targets: VlensClient's CPU per request within 1.15x raw aiohttp's, throughput at least 1.3x httpx.

The rounds are interleaved (each round runs every client, in a rotating order), so load from
anything else on the machine falls on all clients alike.

Run:  .venv/bin/python benchmarks/bench_client.py            (about 25 s on 2 cores)
      .venv/bin/python benchmarks/bench_client.py --rounds 7 --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import multiprocessing.connection
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
import requests
from _common import process_cpu_seconds, served
from aiohttp import web

from vlens_async.client import VlensClient

PATH = "/api/DigitalIdentity/verify/liveness/multi"
NAMES = ["VlensClient", "raw aiohttp+orjson", "httpx.AsyncClient", "requests x32 threads"]
CONCURRENCY = 32
FRONT_BYTES = 1_400_000
FACE_BYTES = 200_000
READ_BUFSIZE = int(os.environ.get("BENCH_READ_BUFSIZE", 4 * 1024 * 1024))
API_KEY = "bench-api-key"
TOKEN = "bench-user-token"
REPLY = orjson.dumps(
    {
        "data": {"isVerificationProcessCompleted": True, "isDigitalIdentityVerified": True},
        "services": {"liveness": True, "spoofing": {"fake": False}, "SRC": {"isValid": True}},
        "error_code": None,
    }
)


# --- the server (its own process) ---


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Server process: serve until terminated, send the port through ``conn`` once listening."""

    async def liveness(request: web.Request) -> web.Response:
        async for _ in request.content.iter_any():  # read and drop: the server's cost is not ours
            pass
        return web.Response(body=REPLY, content_type="application/json")

    async def main() -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(PATH, liveness)
        # A big read buffer: the server then reads the 2.7 MB bodies in few, large chunks, so it
        # stays cheaper than any client and the clients, not the server, set the pace.
        runner = web.AppRunner(app, access_log=None, read_bufsize=READ_BUFSIZE)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=256)
        await site.start()
        conn.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the same request, four ways ---


@dataclass
class Images:
    """The liveness images: the ID front and three face frames (random bytes, fixed seed)."""

    front: bytes
    faces: tuple[bytes, bytes, bytes]


def make_images() -> Images:
    """About 2.0 MB of image bytes, 2.7 MB once base64-encoded in JSON."""
    rng = random.Random(2024)
    front = b"\xff\xd8" + rng.randbytes(FRONT_BYTES)
    faces = (
        b"\xff\xd8" + rng.randbytes(FACE_BYTES),
        b"\xff\xd8" + rng.randbytes(FACE_BYTES),
        b"\xff\xd8" + rng.randbytes(FACE_BYTES),
    )
    return Images(front, faces)


def hand_built_body(images: Images) -> bytes:
    """What a hand-written client sends: base64 strings in a dict, through orjson."""
    return orjson.dumps(
        {
            "image": base64.b64encode(images.front).decode(),
            "face_1": base64.b64encode(images.faces[0]).decode(),
            "face_2": base64.b64encode(images.faces[1]).decode(),
            "face_3": base64.b64encode(images.faces[2]).decode(),
            "transaction_id": str(uuid.uuid4()),
            "getExtractedData": True,
        }
    )


def headers() -> dict[str, str]:
    """The headers every client sends."""
    return {
        "ApiKey": API_KEY,
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "X-Request-Id": str(uuid.uuid4()),
    }


@dataclass
class Round:
    """One measured round."""

    requests: int
    wall: float
    cpu: float
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0


SERVER_PID = 0


def server_cpu() -> float:
    """The server process's CPU seconds (Linux /proc; 0 elsewhere), to show it is not the limit."""
    seconds = process_cpu_seconds(SERVER_PID)
    return 0.0 if math.isnan(seconds) else seconds


async def drive_async(one: Callable[[], Awaitable[None]], total: int) -> Round:
    """Run ``total`` requests, ``CONCURRENCY`` at a time, measuring wall and CPU time."""
    remaining = total
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)

    cpu0, wall0, server0 = time.process_time(), time.perf_counter(), server_cpu()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Round(total, wall, cpu, latencies, server_cpu() - server0)


async def vlens_client(url: str, images: Images, stack: AsyncExitStack) -> Callable[[], Any]:
    """VlensClient.check_liveness, preprocessing off (the images are taken as ready)."""
    client = await stack.enter_async_context(
        VlensClient(
            API_KEY,
            base_url=url,
            access_token=TOKEN,
            prepare_images=False,
            connector_limit=CONCURRENCY,
        )
    )

    async def one() -> None:
        await client.check_liveness(
            images.faces, id_front=images.front, transaction_id=str(uuid.uuid4())
        )

    return one


async def aiohttp_client(url: str, images: Images, stack: AsyncExitStack) -> Callable[[], Any]:
    """Raw aiohttp: orjson body, one post, orjson reply."""
    session = await stack.enter_async_context(
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY))
    )

    async def one() -> None:
        body = hand_built_body(images)
        async with session.post(url + PATH, data=body, headers=headers()) as response:
            payload = orjson.loads(await response.read())
        assert payload["error_code"] is None

    return one


async def httpx_client(url: str, images: Images, stack: AsyncExitStack) -> Callable[[], Any]:
    """httpx.AsyncClient with the same body."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    client = await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=120))

    async def one() -> None:
        body = hand_built_body(images)
        response = await client.post(url + PATH, content=body, headers=headers())
        assert orjson.loads(response.content)["error_code"] is None

    return one


def requests_round(url: str, images: Images, pool: ThreadPoolExecutor, total: int) -> Round:
    """One round of requests.Session (one per thread) in the 32-thread pool."""
    local = threading.local()

    def one(_: int) -> float:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        start = time.perf_counter()
        body = hand_built_body(images)
        response = session.post(url + PATH, data=body, headers=headers(), timeout=120)
        assert orjson.loads(response.content)["error_code"] is None
        return time.perf_counter() - start

    cpu0, wall0, server0 = time.process_time(), time.perf_counter(), server_cpu()
    latencies = list(pool.map(one, range(total)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Round(total, wall, cpu, latencies, server_cpu() - server0)


async def run_all(url: str, images: Images, rounds: int, total: int) -> dict[str, list[Round]]:
    """Warm every client up, then run the rounds interleaved (client order rotating each round),
    so background load on the machine falls on all clients alike."""
    results: dict[str, list[Round]] = {name: [] for name in NAMES}
    async with AsyncExitStack() as stack:
        ones = {
            "VlensClient": await vlens_client(url, images, stack),
            "raw aiohttp+orjson": await aiohttp_client(url, images, stack),
            "httpx.AsyncClient": await httpx_client(url, images, stack),
        }
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=CONCURRENCY))
        for one in ones.values():
            await drive_async(one, CONCURRENCY)  # warm-up: connections open
        await asyncio.to_thread(requests_round, url, images, pool, CONCURRENCY)
        for r in range(rounds):
            order = NAMES[r % len(NAMES) :] + NAMES[: r % len(NAMES)]
            for name in order:
                if name in ones:
                    results[name].append(await drive_async(ones[name], total))
                else:
                    results[name].append(
                        await asyncio.to_thread(requests_round, url, images, pool, total)
                    )
    return results


# --- report ---


@dataclass
class Summary:
    """What one client achieved."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    server_cpu_ms: float


def summarise(name: str, rounds: list[Round]) -> Summary:
    """Median throughput, pooled latency percentiles, CPU per request."""
    latencies = sorted(x for r in rounds for x in r.latencies)
    p99_index = min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))
    return Summary(
        name=name,
        rps=statistics.median(r.requests / r.wall for r in rounds),
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[p99_index] * 1000,
        cpu_ms=sum(r.cpu for r in rounds) / sum(r.requests for r in rounds) * 1000,
        server_cpu_ms=sum(r.server_cpu for r in rounds) / sum(r.requests for r in rounds) * 1000,
    )


def report(summaries: list[Summary], body_size: int, args: argparse.Namespace) -> bool:
    """Print the table and the two targets; return True when both are met."""
    by_name = {s.name: s for s in summaries}
    raw, peer, ours = (
        by_name["raw aiohttp+orjson"],
        by_name["httpx.AsyncClient"],
        by_name["VlensClient"],
    )
    print(
        f"bench_client: {body_size / 1e6:.2f} MB liveness body, {CONCURRENCY} concurrent, "
        f"{args.rounds} rounds x {args.requests} requests per client, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"httpx {httpx.__version__}, requests {requests.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'client':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} "
        f"{'req/s vs httpx':>15} {'CPU vs raw aiohttp':>19} {'server CPU ms/req':>18}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        print(
            f"{s.name:<22} {s.rps:>8.1f} {s.p50_ms:>8.1f} {s.p99_ms:>8.1f} {s.cpu_ms:>11.2f} "
            f"{s.rps / peer.rps:>14.2f}x {s.cpu_ms / raw.cpu_ms:>18.2f}x {s.server_cpu_ms:>18.2f}"
        )
    cpu_ratio = ours.cpu_ms / raw.cpu_ms
    rps_ratio = ours.rps / peer.rps
    cpu_ok, rps_ok = cpu_ratio <= 1.15, rps_ratio >= 1.3
    print(
        f"target: VlensClient CPU/request <= 1.15x raw aiohttp: {cpu_ratio:.2f}x "
        f"{'MET' if cpu_ok else 'MISSED'}"
    )
    print(
        f"target: VlensClient req/s >= 1.3x httpx: {rps_ratio:.2f}x {'MET' if rps_ok else 'MISSED'}"
    )
    return cpu_ok and rps_ok


def main() -> int:
    """Start the server process, run the four clients one after another, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=160, help="requests per round")
    args = parser.parse_args()

    global SERVER_PID
    with served(_serve) as (server, port):
        SERVER_PID = server.pid or 0
        url = f"http://127.0.0.1:{port}"
        images = make_images()
        body_size = len(hand_built_body(images))
        results = asyncio.run(run_all(url, images, args.rounds, args.requests))
        summaries = [summarise(name, rounds) for name, rounds in results.items()]
    met = report(summaries, body_size, args)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
