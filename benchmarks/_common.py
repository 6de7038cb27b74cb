"""Helpers the benchmark scripts share.

A plain module: the scripts are run as ``python benchmarks/bench_x.py``, which puts this folder on
``sys.path``, and a spawned child process inherits that path, so it can import from here too.

- ``served``: a server in a spawned child process for a ``with`` block, stopped at the end.
- ``Emulator``: the emulator served that way on 127.0.0.1, with fixed latency or cache options.
- ``process_cpu_seconds``: another process's CPU seconds (the server's).
- ``upscale``: a sample image scaled up to a phone camera's noisy 12 MP JPEG.
- ``loop_gaps``: how long each short sleep on the event loop really takes while a block runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

from PIL import Image, ImageChops

from vlens_async.emulator import EmulatorConfig, FaultConfig, RunningEmulator, serve_forever

HOST = "127.0.0.1"


@contextlib.contextmanager
def served(
    target: Callable[..., None], *args: Any, timeout: float = 60
) -> Iterator[tuple[BaseProcess, Any]]:
    """Run ``target(conn, *args)`` in a spawned child process for the ``with`` block.

    ``target`` serves until terminated and sends where it serves through ``conn`` once ready;
    yields the process and that message. The child is terminated at the end, even on error.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    child.close()  # the child's copy is its own: a child that dies now ends ``poll`` at once
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"the server process did not start within {timeout:g} s")
        try:
            ready = parent.recv()
        except EOFError:
            raise RuntimeError("the server process exited before it was ready") from None
        yield proc, ready
    finally:
        proc.terminate()
        proc.join(10)


def _serve_emulator(
    conn: multiprocessing.connection.Connection, latency_ms: int, cache_size: int | None
) -> None:
    """Child process: serve the emulator on 127.0.0.1 (a free port) until terminated; send
    ``(base_url, api_key)`` through ``conn`` once ready."""

    def ready(emu: RunningEmulator) -> None:
        """Report where the emulator serves."""
        conn.send((emu.base_url, emu.api_key))

    latency = [f"fixed:{latency_ms}ms"] if latency_ms else []
    faults = FaultConfig.parse(None, latency)
    config = (
        EmulatorConfig(faults=faults)
        if cache_size is None
        else EmulatorConfig(faults=faults, read_cache_size=cache_size)
    )
    asyncio.run(serve_forever(config, host=HOST, port=0, on_ready=ready))


class Emulator:
    """The emulator in a child process for a ``with`` block, which gets ``(base_url, api_key)``.

    ``latency_ms`` adds a fixed delay to every call (0: none); ``cache_size`` sets the emulator's
    reading cache (``None``: its default; 0 turns it off). The process is stopped at the end.
    """

    def __init__(self, latency_ms: int = 0, cache_size: int | None = None) -> None:
        self.latency_ms = latency_ms
        self.cache_size = cache_size
        self.pid = 0
        self._served: contextlib.AbstractContextManager[tuple[BaseProcess, Any]] | None = None

    def cpu(self) -> float:
        """The emulator process's CPU seconds so far."""
        return process_cpu_seconds(self.pid)

    def __enter__(self) -> tuple[str, str]:
        """Start the emulator (stopped again if it does not start); its base URL and API key."""
        self._served = served(_serve_emulator, self.latency_ms, self.cache_size)
        proc, (base_url, api_key) = self._served.__enter__()
        self.pid = proc.pid or 0
        return str(base_url), str(api_key)

    def __exit__(self, *exc: object) -> None:
        """Stop the emulator process."""
        if self._served is not None:
            self._served.__exit__(None, None, None)
            self._served = None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc); NaN if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def upscale(data: bytes, size: tuple[int, int], seed: int) -> bytes:
    """Scale to ``size`` and add noise, as a phone camera's 12 MP JPEG would carry."""
    with Image.open(io.BytesIO(data)) as img:
        big = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    noise = Image.effect_noise(size, 24).convert("RGB")
    big = ImageChops.add(big, noise, scale=1.0, offset=-120 + seed % 7)
    out = io.BytesIO()
    big.save(out, "JPEG", quality=92)
    return out.getvalue()


@contextlib.asynccontextmanager
async def loop_gaps(interval: float) -> AsyncIterator[list[float]]:
    """While the block runs, a task on this loop sleeps ``interval`` over and over; yields the
    list of how long each sleep really took, in seconds (anything over ``interval`` is the
    event loop's lag). The task stops after its current sleep when the block ends."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def tick() -> None:
        """Sleep ``interval`` until told to stop, recording each sleep's length."""
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(interval)
            gaps.append(time.perf_counter() - started)

    task = asyncio.create_task(tick())
    try:
        yield gaps
    finally:
        stop.set()
        await task
