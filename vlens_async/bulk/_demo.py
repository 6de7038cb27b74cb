"""The demo's applicants: synthetic ID cards and face frames of mixed scenarios, and their
manifest (what ``vlens demo`` runs the bulk job on)."""

from __future__ import annotations

import asyncio
import csv
import functools
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..errors import ConfigurationError

__all__ = ["DEFAULT_SCENARIO_MIX", "write_demo_manifest"]

DEFAULT_SCENARIO_MIX: Final[Mapping[str, float]] = {
    "valid": 0.70,
    "expired": 0.05,
    "back_of_other_card": 0.05,
    "aml_watchlisted": 0.04,
    "photocopy": 0.04,
    "identical_frames": 0.04,
    "different_person": 0.04,
    "not_a_card": 0.04,
}


async def write_demo_manifest(
    folder: str | os.PathLike[str],
    count: int,
    seed: int = 0,
    scenarios_mix: Mapping[str, float] | None = None,
    *,
    threads: int | None = None,
) -> Path:
    """Write ``count`` synthetic applicants (``samples.make_applicant``) of mixed scenarios to
    ``folder`` with a ``manifest.csv``, and return the manifest's path (for ``vlens demo``).

    ``scenarios_mix`` maps scenario names to weights (default: mostly valid, a few of each
    failure). Deterministic for a seed. Images are drawn and written in ``threads`` worker
    threads (default: the CPU count), a bounded number at a time.
    """
    from .. import samples

    mix = dict(scenarios_mix or DEFAULT_SCENARIO_MIX)
    unknown = set(mix) - set(samples.SCENARIOS)
    if unknown:
        raise ConfigurationError(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if count < 0:
        raise ConfigurationError("count must not be negative")
    rng = random.Random(seed)
    names, weights = list(mix), list(mix.values())
    scenarios = [rng.choices(names, weights)[0] for _ in range(count)]
    root = Path(folder)
    await asyncio.to_thread(functools.partial(root.mkdir, parents=True, exist_ok=True))
    gate = asyncio.Semaphore(threads or os.cpu_count() or 2)

    def write_one(n: int, scenario: str) -> list[str]:
        applicant = samples.make_applicant(seed * 1_000_003 + n, scenario=scenario)
        name = f"applicant-{n:05d}"
        directory = root / name
        directory.mkdir(exist_ok=True)
        files = {"front": applicant.front, "back": applicant.back}
        files.update({f"face_{i + 1}": face for i, face in enumerate(applicant.faces)})
        for key, data in files.items():
            (directory / f"{key}.jpg").write_bytes(data)
        return [name, *(f"{name}/{key}.jpg" for key in files), "", f"demo-{scenario}-{n}"]

    async def one(n: int, scenario: str) -> list[str]:
        async with gate:
            return await asyncio.to_thread(write_one, n, scenario)

    rows = await asyncio.gather(*(one(n, s) for n, s in enumerate(scenarios)))
    manifest = root / "manifest.csv"

    def write_manifest() -> None:
        with manifest.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                [
                    "applicant_id",
                    "front",
                    "back",
                    "face_1",
                    "face_2",
                    "face_3",
                    "name_check_value",
                    "client_transaction_id",
                ]
            )
            writer.writerows(rows)

    await asyncio.to_thread(write_manifest)
    return manifest
