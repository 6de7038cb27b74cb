"""One applicant's images: prepared or sent as they are, each made ready once, errors named by
column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.bulk.scripted import ScriptedClient, applicants, error, results, runner
from vlens_async import _uploads
from vlens_async.images import PreparedImage


async def test_prepared_images_are_sent_by_default(tmp_path: Path, image_dir: Path) -> None:
    """By default each image goes through the preprocessor once (a PreparedImage is sent)."""
    client = ScriptedClient()
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    (image,) = client.images
    assert isinstance(image, PreparedImage)


async def test_prepare_false_sends_the_files_as_they_are(tmp_path: Path, image_dir: Path) -> None:
    """With prepare=False the runner reads each file and sends its bytes unchanged."""
    client = ScriptedClient()
    summary = await runner(client, tmp_path, prepare=False).run(applicants(image_dir, 2))
    assert summary.by_outcome == {"verified": 2}
    assert client.images == [(image_dir / "front.jpg").read_bytes()] * 2


@pytest.mark.parametrize("prepare", [True, False])
@pytest.mark.parametrize("image", ["front", "face_2"])
async def test_an_empty_image_file_is_invalid_and_named_by_its_column(
    tmp_path: Path, image_dir: Path, image: str, prepare: bool
) -> None:
    """An empty image file makes its row invalid, named by column, prepared or not."""
    (person,) = applicants(image_dir, 1)
    empty = tmp_path / "secret-person" / f"{image}.jpg"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    if image == "front":
        person = attrs.evolve(person, front=empty)
    else:
        person = attrs.evolve(person, faces=(person.faces[0], empty, person.faces[2]))
    await runner(ScriptedClient(), tmp_path, prepare=prepare).run([person])
    (line,) = results(tmp_path)
    assert (line["outcome"], line["error_message"]) == ("invalid", f"{image}: empty file")


async def test_resume_prepares_only_the_images_the_remaining_steps_need(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume after both sides prepares the front (liveness sends it), not the back."""
    client = ScriptedClient(lambda step, who, n: error(401) if step == "liveness" else None)
    first = await runner(client, tmp_path).run(applicants(image_dir, 1))
    assert first.by_outcome == {"pending": 1}
    prepared: list[str] = []
    real = _uploads.prepare_document_sync

    def recording(path: Any, **options: Any) -> Any:
        prepared.append(Path(path).name)
        return real(path, **options)

    monkeypatch.setattr(_uploads, "prepare_document_sync", recording)
    client = ScriptedClient()
    second = await runner(client, tmp_path, resume=True).run(applicants(image_dir, 1))
    assert second.by_outcome == {"verified": 1}
    assert [step for step, _, _ in client.calls] == ["liveness"]
    assert prepared == ["front.jpg"]


async def test_images_are_prepared_for_throughput_during_a_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, image_dir: Path
) -> None:
    """Every image a job prepares sees another in flight (the job's prefer_throughput())."""
    # So none takes the grain-preserving path's second core.
    from vlens_async.images import _throughput

    seen: list[int] = []
    real_doc, real_faces = _uploads.prepare_document_sync, _uploads.prepare_faces_sync

    def doc(image: Any, **kwargs: Any) -> Any:
        grain = _throughput.resolve_preserve_grain(kwargs.get("preserve_grain"), faces=False)
        seen.append(int(not grain))
        return real_doc(image, **kwargs)

    def faces(*frames: Any, **kwargs: Any) -> Any:
        grain = _throughput.resolve_preserve_grain(kwargs.get("preserve_grain"), faces=True)
        seen.append(int(not grain))
        return real_faces(*frames, **kwargs)

    monkeypatch.setattr(_uploads, "prepare_document_sync", doc)
    monkeypatch.setattr(_uploads, "prepare_faces_sync", faces)
    summary = await runner(ScriptedClient(), tmp_path).run(applicants(image_dir, 3))
    assert summary.by_outcome == {"verified": 3}
    assert len(seen) == 9
    assert min(seen) >= 1
