"""The pipelined ``verify()`` against preprocess-everything-then-upload, side by side in one run.

The emulator runs in its own process with a fixed server latency per call (200 ms by default), so
only the client's work is timed here. Inputs are 12 MP: the synthetic applicant's ID card and face
frames scaled up to phone-camera size with sensor-like noise, so each must be decoded, downscaled
and recompressed before upload.

Flows compared, each for ``--runs`` flows, interleaved so drift hits all alike:

- ``verify``: ``client.verify(front, back, faces)``: all five images start preprocessing at once,
  the first side uploads when ready, the other follows, liveness when both sides are done.
- ``batch``: prepare all five images concurrently, then upload front, back, liveness.
- ``naive``: prepare each image in turn, then upload front, back, liveness.

    .venv/bin/python benchmarks/bench_flow.py            # ~1 minute
    .venv/bin/python benchmarks/bench_flow.py --runs 3 --latency-ms 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from _common import Emulator, upscale

from vlens_async import VlensClient, prepare_document, prepare_document_sync, prepare_faces
from vlens_async.flow import FlowState, Transaction
from vlens_async.images import PreparedImage, prepare_faces_sync
from vlens_async.samples import make_applicant

Inputs = tuple[bytes, bytes, tuple[bytes, bytes, bytes]]


def _inputs(seed: int) -> Inputs:
    a = make_applicant(seed)
    front = upscale(a.front, (4000, 2500), seed)
    back = upscale(a.back, (4000, 2500), seed + 1)
    f1, f2, f3 = (upscale(f, (3000, 4000), seed + 2 + i) for i, f in enumerate(a.faces))
    return front, back, (f1, f2, f3)


async def _pipelined(client: VlensClient, inputs: Inputs) -> FlowState:
    front, back, faces = inputs
    return (await client.verify(front, back, faces)).state


async def _upload(
    client: VlensClient, front: PreparedImage, back: PreparedImage, faces: object
) -> FlowState:
    tx = Transaction(client)
    await tx.scan_front(front)
    await tx.scan_back(back)
    await tx.check_liveness(faces)  # type: ignore[arg-type]
    return tx.state


async def _batch(client: VlensClient, inputs: Inputs) -> FlowState:
    front, back, faces = inputs
    pf, pb, pfaces = await asyncio.gather(
        prepare_document(front), prepare_document(back), prepare_faces(*faces)
    )
    return await _upload(client, pf, pb, pfaces)


async def _naive(client: VlensClient, inputs: Inputs) -> FlowState:
    front, back, faces = inputs
    pf = await asyncio.to_thread(prepare_document_sync, front)
    pb = await asyncio.to_thread(prepare_document_sync, back)
    pfaces = await asyncio.to_thread(prepare_faces_sync, *faces)
    return await _upload(client, pf, pb, pfaces)


Flow = Callable[[VlensClient, Inputs], Awaitable[FlowState]]


async def _run(
    base_url: str, api_key: str, runs: int, inputs: list[Inputs]
) -> dict[str, list[float]]:
    flows: dict[str, Flow] = {"verify": _pipelined, "batch": _batch, "naive": _naive}
    times: dict[str, list[float]] = {name: [] for name in flows}
    async with VlensClient(api_key, base_url=base_url) as client:
        await _pipelined(client, inputs[0])  # warm-up: connections, thread pool, imports
        for i in range(runs):
            for name, flow in flows.items():
                started = time.perf_counter()
                state = await flow(client, inputs[i % len(inputs)])
                times[name].append(time.perf_counter() - started)
                if state is not FlowState.COMPLETED:
                    raise SystemExit(f"{name} flow ended in {state}, not COMPLETED")
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a table of medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--inputs", type=int, default=3, help="distinct applicants to cycle")
    args = parser.parse_args(argv)

    inputs = [_inputs(100 + i) for i in range(args.inputs)]
    sizes = [len(b) for b in (inputs[0][0], *inputs[0][2])]
    with Emulator(args.latency_ms) as (base_url, api_key):
        times = asyncio.run(_run(base_url, api_key, args.runs, inputs))

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"server latency {args.latency_ms} ms per call, {args.runs} flows each, inputs: "
        f"ID 4000x2500 (~{sizes[0] / 1e6:.1f} MB), faces 3000x4000 (~{sizes[1] / 1e6:.1f} MB)"
    )
    print(f"{'flow':<8} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'verify is x faster':>19}")
    for name, values in times.items():
        ratio = medians[name] / medians["verify"]
        print(
            f"{name:<8} {medians[name] * 1000:>10.0f} {min(values) * 1000:>8.0f} "
            f"{max(values) * 1000:>8.0f} {ratio:>18.2f}x"
        )
    floor = 3 * args.latency_ms
    print(f"floor (3 x server latency): {floor} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
