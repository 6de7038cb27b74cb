"""Helpers of the queue's tests: manifests of synthetic applicants, worker processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from vlens_async.samples import make_applicant

HEADER = "applicant_id,front,back,face_1,face_2,face_3,name_check_value,client_transaction_id"


def write_manifest(
    folder: Path, count: int, *, distinct: int = 4, scenario: str = "valid", name: str = "m.csv"
) -> Path:
    """``count`` valid applicants sharing ``distinct`` image sets, and their manifest."""
    lines = [HEADER]
    for n in range(count):
        images = folder / f"img{n % distinct}"
        if not images.exists():
            images.mkdir()
            applicant = make_applicant(100 + n % distinct, scenario=scenario)
            (images / "front.jpg").write_bytes(applicant.front)
            (images / "back.jpg").write_bytes(applicant.back)
            for i, face in enumerate(applicant.faces, start=1):
                (images / f"face_{i}.jpg").write_bytes(face)
        files = [f"{images.name}/{f}.jpg" for f in ("front", "back", "face_1", "face_2", "face_3")]
        lines.append(",".join([f"p{n}", *files, "", f"c-{n}"]))
    manifest = folder / name
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


async def start_worker(
    db: str, base_url: str, api_key: str, *args: str
) -> asyncio.subprocess.Process:
    """``vlens queue work`` in a process of its own (fast heartbeats for the tests)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vlens_async",
        "queue",
        "work",
        "--db",
        db,
        "--base-url",
        base_url,
        "--api-key",
        api_key,
        "--heartbeat",
        "0.5",
        "--stalled-after",
        "3",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def outcomes(lines: Sequence[dict[str, object]]) -> set[object]:
    """The outcomes of results lines."""
    return {line["outcome"] for line in lines}
