"""The store on its own: retention, and the ID front it keeps for a restored liveness."""

from __future__ import annotations

from pathlib import Path

from examples.fastapi_kyc.store import KycStore
from vlens_async import VlensClient
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
