"""The store on its own: retention, leases, the file's mode, and the ID front it keeps for a
restored liveness."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from examples.fastapi_kyc.store import LEASE_SECONDS, Busy, KycStore, LeaseLost
from vlens_async import Transaction, VlensClient
from vlens_async.config import DEFAULT_DEADLINE
from vlens_async.flow import FlowState

from .conftest import applicant


async def test_idle_rows_are_purged_but_not_one_in_use(tmp_path: Path) -> None:
    """Past the retention a row is deleted, unless a request holds it right now; the user then
    starts a new verification."""
    async with KycStore(str(tmp_path / "kyc.db"), retention=0) as store:
        async with store.hold("held"):
            async with store.hold("idle") as record:
                purged_id = record.transaction_id
            assert await store.purge() == 1  # "idle" only
        assert await store.purge() == 1  # "held", released
        async with store.hold("idle") as record:
            assert record.transaction_id != purged_id


async def test_front_kept_until_finished_and_restored(
    vlens_client: VlensClient, tmp_path: Path
) -> None:
    """After the front, the stored record restores a transaction holding the front (liveness can
    finish), and the same transaction id."""
    async with KycStore(str(tmp_path / "kyc.db")) as store:
        async with store.hold("user") as record:
            tx = record.load(vlens_client)
            await tx.scan_front(applicant(61).front)
            await record.save(tx)
        async with store.hold("user") as record:
            restored = record.load(vlens_client)
    assert restored.transaction_id == tx.transaction_id
    assert restored.state is FlowState.FRONT_SCANNED
    assert restored.front_image is not None


async def test_holds_and_writes_of_many_users_share_the_connection(tmp_path: Path) -> None:
    """While another process holds one user's row, this process's requests for other users take
    and release theirs and save, all at once on its one connection: none fails, none is lost."""
    path = str(tmp_path / "kyc.db")
    async with KycStore(path) as other, KycStore(path) as store:

        async def user(n: int) -> str:
            async with store.hold(f"user-{n}") as record:
                await asyncio.sleep(0)
                await record.start_over()
                return record.transaction_id

        async def elsewhere_held() -> None:
            with pytest.raises(Busy):
                async with store.hold("elsewhere"):
                    pass

        async with other.hold("elsewhere"):
            ids, _ = await asyncio.gather(
                asyncio.gather(*(user(n) for n in range(20))), elsewhere_held()
            )
    with sqlite3.connect(path) as conn:
        stored = dict(conn.execute("SELECT user_key, transaction_id FROM kyc_transaction"))
    assert [stored[f"user-{n}"] for n in range(20)] == ids


async def test_lease_is_renewed_while_a_slow_step_runs(tmp_path: Path) -> None:
    """A request that holds a row for longer than the lease keeps it: another worker is told
    Busy instead of taking the row and sending the step again."""
    path = str(tmp_path / "kyc.db")
    async with (
        KycStore(path, lease_seconds=1.0) as one,
        KycStore(path, lease_seconds=1.0) as two,
        one.hold("user"),
    ):
        await asyncio.sleep(3.0)  # three leases' worth
        with pytest.raises(Busy):
            async with two.hold("user"):
                pass
    assert LEASE_SECONDS > DEFAULT_DEADLINE  # one call's worst case fits in one lease


async def test_a_request_that_lost_its_lease_overwrites_nothing(
    vlens_client: VlensClient, tmp_path: Path
) -> None:
    """A request stalled past its lease while another worker took the row and started over: its
    save raises LeaseLost and the other's verification stays."""
    path = tmp_path / "kyc.db"
    async with (
        KycStore(str(path)) as stalled,
        KycStore(str(path)) as other,
        stalled.hold("user") as late,
    ):
        tx = late.load(vlens_client)
        await tx.scan_front(applicant(62).front)
        with sqlite3.connect(path) as conn:  # its lease ran out while it stalled
            conn.execute("UPDATE kyc_transaction SET lease_until = 0")
        async with other.hold("user") as current:
            await current.start_over()
            new_id = current.transaction_id
        with pytest.raises(LeaseLost):
            await late.save(tx)
        with pytest.raises(LeaseLost):
            await late.start_over()
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT transaction_id, snapshot, id_front FROM kyc_transaction")
        assert row.fetchall() == [(new_id, None, None)]


async def test_database_file_is_owner_only(tmp_path: Path) -> None:
    """The file that holds ID fronts is made owner-only, whatever the umask or its history."""
    made, existing = tmp_path / "new.db", tmp_path / "old.db"
    existing.touch(mode=0o644)
    existing.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        for path in (made, existing):
            async with KycStore(str(path)) as store, store.hold("user"):
                pass
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600


async def test_front_given_as_a_path_is_kept_as_its_bytes(
    vlens_client: VlensClient, tmp_path: Path
) -> None:
    """A transaction that sends images as given holds the front's path: the store keeps the
    file's bytes, and the restored transaction finishes liveness."""
    a = applicant(63)
    front = tmp_path / "front.jpg"
    front.write_bytes(a.front)
    as_given = vlens_client.with_options(prepare_images=False)
    async with KycStore(str(tmp_path / "kyc.db")) as store:
        async with store.hold("user") as record:
            tx = record.load(as_given)
            await tx.scan_front(str(front))
            await tx.scan_back(a.back)
            await record.save(tx)
        front.unlink()
        async with store.hold("user") as record:
            restored = record.load(as_given)
            await restored.check_liveness(a.faces, capture_times=[0.0, 0.2, 0.4])
    assert restored.state is FlowState.COMPLETED


async def test_a_front_that_went_missing_is_an_error_not_a_silent_drop(
    vlens_client: VlensClient, tmp_path: Path
) -> None:
    """Saving a front-scanned transaction that holds no front (restored without it) raises, and
    the front stored before stays."""
    path = tmp_path / "kyc.db"
    async with KycStore(str(path)) as store:
        async with store.hold("user") as record:
            tx = record.load(vlens_client)
            await tx.scan_front(applicant(64).front)
            await record.save(tx)
        async with store.hold("user") as record:
            frontless = Transaction.restore(vlens_client, tx.snapshot())
            with pytest.raises(RuntimeError, match="no ID front"):
                await record.save(frontless)
    with sqlite3.connect(path) as conn:
        (kept,) = conn.execute("SELECT id_front FROM kyc_transaction").fetchone()
    assert kept
