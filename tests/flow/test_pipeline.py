"""verify()'s pipeline: which preprocessing each image gets, whatever else the process does."""

from __future__ import annotations

import functools
from typing import Any

from tests.helpers.flow import ScriptedClient
from vlens_async import samples
from vlens_async.flow import Transaction, verify
from vlens_async.images import PreparedImage, prepare_document


@functools.cache
def grainy_photo() -> bytes:
    """A grainy photo reduced more than 2x to a document: its bytes depend on ``preserve_grain``."""
    return samples.make_photo(4800, 3600, 21, hard=True)


class RecordingClient(ScriptedClient):
    """A scripted client that keeps the image each side was sent with."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[str, Any] = {}

    async def scan_id_front(self, image: Any, **options: Any) -> Any:
        self.sent["front"] = image
        return await super().scan_id_front(image, **options)

    async def scan_id_back(self, image: Any, **options: Any) -> Any:
        self.sent["back"] = image
        return await super().scan_id_back(image, **options)


async def test_verify_prepares_the_front_for_fidelity_and_the_back_for_throughput() -> None:
    """The front (prepared alone) keeps its grain; the back (prepared beside the frames) does
    not: explicit choices of verify(), so the bytes are the same on every run."""
    photo = grainy_photo()
    client = RecordingClient()
    frames = tuple(samples.make_applicant(3).faces)
    outcome = await verify(client, photo, photo, frames, prepare=True)
    assert outcome.error is None, outcome.error
    fidelity = await prepare_document(photo, preserve_grain=True)
    throughput = await prepare_document(photo, preserve_grain=False)
    assert fidelity.digest != throughput.digest  # the choice shows in the bytes
    front, back = client.sent["front"], client.sent["back"]
    assert isinstance(front, PreparedImage)
    assert isinstance(back, PreparedImage)
    assert front.digest == fidelity.digest
    assert back.digest == throughput.digest


async def test_a_transaction_step_alone_keeps_the_documents_default() -> None:
    """scan_back() on its own prepares the back like any document (grain kept)."""
    photo = grainy_photo()
    client = RecordingClient()
    tx = Transaction(client, prepare=True)
    await tx.scan_back(photo)
    assert client.sent["back"].digest == (await prepare_document(photo)).digest


async def test_verify_takes_frames_from_a_one_shot_iterable() -> None:
    """Frames given as a generator are checked once and still all sent with liveness."""
    client = ScriptedClient()
    frames = (frame for frame in (b"f1", b"f2", b"f3"))
    outcome = await verify(client, b"front", b"back", frames, prepare=False)
    assert outcome.error is None, outcome.error
    assert [step for step, _ in client.calls] == ["front", "back", "liveness"]
