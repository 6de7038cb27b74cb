"""``init`` and the schema checks against a real PostgreSQL: created, harmless twice, upgraded
from older procrastinate schemas (recorded or not) and from our first version, newer ones
refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from vlens_async import queue
from vlens_async._ids import transaction_id_for
from vlens_async.queue._schema import SCHEMA_VERSION, procrastinate_migrations

from .helpers import apply_migrations, catalog, write_manifest

LATEST = procrastinate_migrations()[-1].stem
IDS = "SELECT applicant_id, transaction_id FROM vlens_queue_applicants"


@pytest.fixture(scope="module")
def fresh(pg_server: str) -> Iterator[dict[str, list[tuple[object, ...]]]]:
    """The catalog of a database made by ``init`` from nothing."""
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = conninfo.make_conninfo(pg_server, dbname=name)
    try:
        assert "created" in asyncio.run(queue.init(url))
        with psycopg.connect(url) as conn:
            yield catalog(conn)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def meta(url: str) -> dict[str, str]:
    """Our meta rows."""
    with psycopg.connect(url) as conn:
        return {k: v for k, v in conn.execute("SELECT key, value FROM vlens_queue_meta")}


async def test_init_twice_is_harmless(pg_url: str) -> None:
    """init creates procrastinate's schema and ours and records both; a second changes
    nothing."""
    assert "created" in await queue.init(pg_url)
    assert "up to date" in await queue.init(pg_url)
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert {"procrastinate_jobs", "vlens_queue_runs", "vlens_queue_applicants"} <= tables
    assert meta(pg_url) == {
        "schema_version": str(SCHEMA_VERSION),
        "procrastinate_migration": LATEST,
    }


async def test_two_inits_at_once(pg_url: str) -> None:
    """Two inits at once: one creates, the other then finds it up to date."""
    said = await asyncio.gather(queue.init(pg_url), queue.init(pg_url))
    assert sorted(s.split(" (")[0] for s in said) == [
        "the schema is up to date",
        "the schema was created",
    ]


# Every point an unrecorded procrastinate 3.x schema can be at (a fingerprint each).
UNRECORDED = [
    "03.00.00_01",
    "03.00.00_50",
    "03.01.00_01",
    "03.01.00_50",
    "03.02.00_01",
    "03.02.00_50",
    "03.03.00_01",
    "03.04.00_01",
    "03.04.00_50",
]


@pytest.mark.parametrize("through", UNRECORDED)
async def test_unrecorded_procrastinate_schema_is_placed_and_upgraded(
    pg_url: str, through: str, fresh: dict[str, list[tuple[object, ...]]]
) -> None:
    """procrastinate's tables made without init (procrastinate schema --apply, or our first
    release): init finds where they stand and applies the later migrations; the result is the
    fresh schema."""
    await asyncio.to_thread(apply_migrations, pg_url, through)
    said = await queue.init(pg_url)
    assert f"procrastinate from {through}" in said
    with psycopg.connect(pg_url) as conn:
        assert catalog(conn) == fresh
    assert meta(pg_url)["procrastinate_migration"] == LATEST
    assert "up to date" in await queue.init(pg_url)


async def test_recorded_old_procrastinate_schema_is_upgraded(
    pg_url: str, fresh: dict[str, list[tuple[object, ...]]]
) -> None:
    """A procrastinate 2.14 schema that init recorded is taken across 3.0's migrations; one
    that no init recorded is refused, untouched."""
    await asyncio.to_thread(apply_migrations, pg_url, "02.14.01_01")
    with pytest.raises(queue.QueueError, match=r"before procrastinate 3\.0"):
        await queue.init(pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('vlens_queue_meta')").fetchone() == (None,)
        conn.execute(
            "CREATE TABLE vlens_queue_meta (key text PRIMARY KEY, value text NOT NULL);"
            " INSERT INTO vlens_queue_meta VALUES ('schema_version', '2'),"
            " ('procrastinate_migration', '02.14.01_01_add_indexes_for_fetch_job')"
        )
    with pytest.raises(queue.QueueError, match="run `vlens queue init` to upgrade"):
        await queue.status(pg_url, "r")
    said = await queue.init(pg_url)
    assert "procrastinate from 02.14.01_01_add_indexes_for_fetch_job" in said
    with psycopg.connect(pg_url) as conn:
        assert catalog(conn) == fresh


async def test_our_first_schema_is_upgraded(pg_url: str, tmp_path: Path) -> None:
    """A database of our first version (no run secrets, procrastinate unrecorded): commands ask
    for init; init upgrades it; the run gets a secret and its applicants keep their ids."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 3)
    await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "ALTER TABLE vlens_queue_runs DROP COLUMN secret;"
            " UPDATE vlens_queue_applicants SET transaction_id = 'old-' || applicant_id;"
            " UPDATE vlens_queue_meta SET value = '1' WHERE key = 'schema_version';"
            " DELETE FROM vlens_queue_meta WHERE key = 'procrastinate_migration'"
        )
    with pytest.raises(queue.QueueError, match=r"version 1.*run `vlens queue init`"):
        await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    assert f"upgraded (version 1 to {SCHEMA_VERSION}" in await queue.init(pg_url)
    again = await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    assert (again.added, again.total) == (0, 3)
    with psycopg.connect(pg_url) as conn:
        secret = conn.execute("SELECT secret FROM vlens_queue_runs").fetchone()
        ids = conn.execute("SELECT transaction_id FROM vlens_queue_applicants").fetchall()
    assert secret is not None
    assert len(secret[0]) == 64
    assert {i for (i,) in ids} == {"old-p0", "old-p1", "old-p2"}


async def test_newer_schema_is_refused(pg_url: str) -> None:
    """A schema from a newer release, ours or procrastinate's, is refused by init (untouched)
    and by every command."""
    await queue.init(pg_url)
    newer = {"schema_version": "99", "procrastinate_migration": "99.00.00_01_pre_future"}
    for key, value in newer.items():
        with psycopg.connect(pg_url) as conn:
            before = conn.execute("SELECT value FROM vlens_queue_meta WHERE key = %s", (key,))
            kept = before.fetchone()
            conn.execute("UPDATE vlens_queue_meta SET value = %s WHERE key = %s", (value, key))
        with pytest.raises(queue.QueueError, match="newer"):
            await queue.init(pg_url)
        with pytest.raises(queue.QueueError, match="newer"):
            await queue.status(pg_url, "r")
        assert meta(pg_url)[key] == value
        with psycopg.connect(pg_url) as conn:
            conn.execute("UPDATE vlens_queue_meta SET value = %s WHERE key = %s", (kept[0], key))


async def test_transaction_ids_are_written_at_submit_and_derived(
    pg_url: str, tmp_path: Path
) -> None:
    """Each applicant's transaction id is written at submit, derived from the run's secret: a
    row lost and submitted again comes back with the same id."""
    await queue.init(pg_url)
    manifest = write_manifest(tmp_path, 4)
    await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    with psycopg.connect(pg_url) as conn:
        (secret,) = conn.execute("SELECT secret FROM vlens_queue_runs").fetchone() or ("",)
        first = dict(conn.execute(IDS))
        conn.execute("DELETE FROM procrastinate_jobs; DELETE FROM vlens_queue_applicants")
    assert first == {f"p{n}": transaction_id_for(f"p{n}", secret) for n in range(4)}
    again = await queue.submit(pg_url, manifest, run="r", base_url="http://127.0.0.1:9")
    assert again.added == 4
    with psycopg.connect(pg_url) as conn:
        second = dict(conn.execute(IDS))
    assert second == first


async def test_unrecorded_schema_past_the_fingerprints_is_refused(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unrecorded schema at the newest fingerprint, with a procrastinate that has later
    migrations, cannot be placed: refused, untouched."""
    from vlens_async.queue import _schema

    await asyncio.to_thread(apply_migrations, pg_url, "03.04.00_50")
    later = Path(str(procrastinate_migrations()[-1]).replace("03.04.00_50", "03.05.00_01"))
    monkeypatch.setattr(
        _schema, "procrastinate_migrations", lambda: (*procrastinate_migrations(), later)
    )
    with pytest.raises(queue.QueueError, match="cannot be told"):
        await queue.init(pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('vlens_queue_meta')").fetchone() == (None,)


async def test_a_failing_migration_is_a_queue_error(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration script that fails is a QueueError naming it; the record keeps the last one
    applied, so init can run again."""
    from vlens_async.queue import _schema

    await asyncio.to_thread(apply_migrations, pg_url, "03.03.00_01")
    broken = tmp_path / "03.04.00_01_pre_broken.sql"
    broken.write_text("SELECT no_such_function();", encoding="utf-8")
    upto = tuple(p for p in procrastinate_migrations() if p.stem <= "03.03.00_01~")
    monkeypatch.setattr(_schema, "procrastinate_migrations", lambda: (*upto, broken))
    with pytest.raises(queue.QueueError, match=r"03\.04\.00_01_pre_broken failed"):
        await queue.init(pg_url)
    assert meta(pg_url)["procrastinate_migration"].startswith("03.03.00_01")
