"""Helpers of the queue's tests: manifests of synthetic applicants, worker processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg

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


def catalog(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, list[tuple[object, ...]]]:
    """procrastinate's objects in a database, to compare a migrated schema with a fresh one:
    functions (with a digest of their whitespace-normalised source), columns, indexes, enum
    labels in order, triggers, constraints and types."""
    queries = {
        "functions": "SELECT proname, pg_get_function_identity_arguments(oid),"
        " md5(regexp_replace(prosrc, '\\s+', ' ', 'g')) FROM pg_proc"
        " WHERE proname LIKE 'procrastinate%'",
        "columns": "SELECT table_name, column_name, data_type, column_default, is_nullable"
        " FROM information_schema.columns WHERE table_name LIKE 'procrastinate%'",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE tablename LIKE 'procrastinate%'",
        "enums": "SELECT t.typname, e.enumlabel, rank() OVER (PARTITION BY t.typname"
        " ORDER BY e.enumsortorder) FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid",
        "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
        "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid::regclass::text LIKE 'procrastinate%'",
        "types": "SELECT typname, typtype FROM pg_type WHERE typname LIKE 'procrastinate%'",
    }
    return {
        name: sorted(tuple(r) for r in conn.execute(query).fetchall())
        for name, query in queries.items()
    }


def apply_migrations(url: str, through: str) -> None:
    """procrastinate's migrations from its first through the one whose ``xx.yy.zz_ab`` key is
    ``through``, each in its own transaction, as a database of that release would have them."""
    from vlens_async.queue._schema import procrastinate_migrations

    with psycopg.connect(url, autocommit=True) as conn:
        for path in procrastinate_migrations():
            with conn.transaction():
                conn.execute(path.read_text())
            if path.stem.startswith(through):
                return
    raise AssertionError(f"no procrastinate migration {through}")
