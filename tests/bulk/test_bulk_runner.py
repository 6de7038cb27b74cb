"""The bulk runner's logic with a scripted client (no network): steps, retries, classification,
journal and resume, stopping, invalid rows, bounded tasks.

The emulator-backed tests in test_bulk_emulator.py prove the same end to end over HTTP.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from PIL import Image

from vlens_async import _uploads, _wire
from vlens_async.bulk import BulkRunner, RateLimit, format_summary
from vlens_async.bulk._manifest import BulkApplicant, InvalidRow
from vlens_async.config import RetryPolicy
from vlens_async.errors import (
    APIConnectionError,
    APIError,
    ResponseDecodeError,
    api_error_class,
)
from vlens_async.images import PreparedImage
from vlens_async.models import VerificationResponse

FAST_RETRY = RetryPolicy(max_attempts=8, initial=0.001, max_backoff=0.005, jitter=0)
NID = "29901011234567"

# fault(step, applicant id, attempt number of that step) -> an error to raise, or None.
Fault = Callable[[str, str, int], BaseException | None]


def jpeg(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small noisy JPEG, different for each seed (so frames are never identical)."""
    rng = random.Random(seed)
    image = Image.frombytes(
        "RGB", size, bytes(rng.randrange(256) for _ in range(3 * size[0] * size[1]))
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Front, back and three different face frames shared by every scripted applicant."""
    folder = tmp_path_factory.mktemp("images")
    for n, name in enumerate(("front", "back", "face_1", "face_2", "face_3")):
        (folder / f"{name}.jpg").write_bytes(jpeg(n))
    return folder


def applicants(folder: Path, count: int, start: int = 1) -> list[BulkApplicant]:
    """``count`` applicants named a1, a2, ... all using the shared images; each sends its id as
    ``client_transaction_id``."""
    faces = (folder / "face_1.jpg", folder / "face_2.jpg", folder / "face_3.jpg")
    return [
        BulkApplicant(
            f"a{n}",
            folder / "front.jpg",
            folder / "back.jpg",
            faces,
            row=n,
            client_transaction_id=f"a{n}",  # lets the scripted client know who is calling
        )
        for n in range(start, start + count)
    ]


def envelope(
    tx: str, step: str, *, verified: bool = True, aml: bool = False
) -> VerificationResponse:
    """A successful answer for ``step`` in the wire shape, parsed by the real converter."""
    data: dict[str, Any] = {}
    services: dict[str, Any] = {}
    if step == "front":
        data["idFrontData"] = {"idNumber": NID, "firstName": "Secret", "transaction_id": tx}
    elif step == "back":
        data["idBackData"] = {"idNumber": NID, "transactionId": tx}
    else:
        services["liveness"] = True
        services["AML"] = {"AML_matched": aml}
        data["isVerificationProcessCompleted"] = True
        data["isDigitalIdentityVerified"] = verified
    body = {"services": services, "data": data, "error_code": None}
    return _wire.structure(body, VerificationResponse)


class ScriptedClient:
    """Stands in for VlensClient: answers each call, optionally failing it via ``fault``,
    and records (step, transaction id, outcome) for every call it receives."""

    def __init__(self, fault: Fault | None = None, delay: float = 0.0) -> None:
        self.fault = fault
        self.delay = delay
        self.calls: list[tuple[str, str, str]] = []
        self.options: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.max_tasks = 0
        self.unverified: set[str] = set()
        self.in_flight = 0
        self.images: list[Any] = []  # what scan_id_front was given
        self.reached = asyncio.Event()  # set once notify_calls calls or notify_in_flight at once
        self.notify_calls = self.notify_in_flight = 10**9

    def with_options(self, **options: Any) -> ScriptedClient:
        self.options.append(options)
        return self

    async def _answer(self, step: str, tx: str, **options: Any) -> VerificationResponse:
        self.max_tasks = max(self.max_tasks, len(asyncio.all_tasks()))
        self.in_flight += 1
        if self.in_flight >= self.notify_in_flight:
            self.reached.set()
        if self.gate is not None:
            await self.gate.wait()
        self.in_flight -= 1
        await asyncio.sleep(self.delay)
        attempt = sum(1 for s, t, _ in self.calls if (s, t) == (step, tx)) + 1
        who = str(options.get("client_transaction_id"))
        exc = self.fault(step, who, attempt) if self.fault else None
        self.calls.append((step, tx, "error" if exc else "ok"))
        if len(self.calls) >= self.notify_calls:
            self.reached.set()
        if exc is not None:
            raise exc
        return envelope(tx, step, verified=who not in self.unverified, aml=who in self.unverified)

    async def scan_id_front(self, image: Any, *, transaction_id: str, **options: Any) -> Any:
        self.images.append(image)
        return await self._answer("front", transaction_id, **options)

    async def scan_id_back(self, image: Any, *, transaction_id: str, **options: Any) -> Any:
        return await self._answer("back", transaction_id, **options)

    async def check_liveness(
        self, faces: Any, *, id_front: Any, transaction_id: str, **options: Any
    ) -> Any:
        assert id_front is not None
        assert len(faces) == 3
        return await self._answer("liveness", transaction_id, **options)

    def ok_steps(self) -> Counter[tuple[str, str]]:
        """How many times each (transaction, step) succeeded."""
        return Counter((tx, step) for step, tx, outcome in self.calls if outcome == "ok")


def runner(client: ScriptedClient, tmp_path: Path, **kwargs: Any) -> BulkRunner:
    """A runner on ``client`` with fast retries and no rate limit, journaling in tmp_path."""
    options: dict[str, Any] = {
        "concurrency": 4,
        "rate_limit": RateLimit.unlimited(),
        "journal": tmp_path / "journal.db",
        "results": tmp_path / "results.jsonl",
        "step_retry": FAST_RETRY,
    }
    options.update(kwargs)
    return BulkRunner(client, **options)  # type: ignore[arg-type]


def results(tmp_path: Path) -> list[dict[str, Any]]:
    """The results file's lines."""
    text = (tmp_path / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def error(cls_status: int | None, code: int | None = None, **kwargs: Any) -> APIError:
    """The error the client raises for a status and/or an envelope error code."""
    return api_error_class(cls_status, code)(
        "scripted", status=cls_status, error_code=code, **kwargs
    )


async def test_every_applicant_gets_one_transaction_and_three_steps(
    tmp_path: Path, image_dir: Path
) -> None:
    """A clean job verifies everyone: one transaction each, each step sent once, in order."""
    client = ScriptedClient()
    summary = await runner(client, tmp_path).run(applicants(image_dir, 10))
    lines = results(tmp_path)
    assert [line["applicant_id"] for line in lines] == [f"a{n}" for n in range(1, 11)]
    assert {line["outcome"] for line in lines} == {"verified"}
    assert len({line["transaction_id"] for line in lines}) == 10
    for line in lines:
        steps = [s for s, tx, _ in client.calls if tx == line["transaction_id"]]
        assert steps == ["front", "back", "liveness"]
        assert line["validated"] is True
        assert line["attempts"] == 3
        assert set(line["timings"]) == {"front", "back", "liveness", "total"}
    assert summary.by_outcome == {"verified": 10}
    # The client's own retries are off: every attempt must pass the runner's rate limiter.
    assert client.options == [{"retry": RetryPolicy.disabled(), "prepare_images": False}]
    assert summary.processed == 10
    assert summary.complete
    assert summary.requests == 30
    assert set(summary.latency) == {"front", "back", "liveness"}
    # No personal data in the results file.
    assert "Secret" not in (tmp_path / "results.jsonl").read_text()
    assert NID not in (tmp_path / "results.jsonl").read_text()
    assert "verified" in format_summary(summary)


async def test_transient_faults_are_retried_on_the_same_transaction(
    tmp_path: Path, image_dir: Path
) -> None:
    """5xx, resets, 429, 4003 and garbled bodies are retried; everyone still ends verified."""
    rng = random.Random(7)
    faults: list[Callable[[], BaseException]] = [
        lambda: error(503),
        lambda: APIConnectionError("reset"),
        lambda: error(429, retry_after=0.001),
        lambda: error(None, 4003),
        # As the transport raises it for a body cut short: the raw bytes kept, no envelope.
        lambda: ResponseDecodeError("garbled", status=200, body=b'{"data": {"idFro'),
    ]

    def fault(step: str, tx: str, attempt: int) -> BaseException | None:
        return rng.choice(faults)() if rng.random() < 0.3 and attempt < 4 else None

    client = ScriptedClient(fault)
    summary = await runner(client, tmp_path).run(applicants(image_dir, 20))
    assert summary.by_outcome == {"verified": 20}
    assert all(n == 1 for n in client.ok_steps().values())
    assert summary.requests == len(client.calls) > 60
    assert summary.throttled > 0


async def test_a_json_body_of_the_wrong_shape_is_not_sent_again(
    tmp_path: Path, image_dir: Path
) -> None:
    """A 200 whose JSON parsed but is not the envelope would come back the same (and every
    verify call counts against the bundle): the step is sent once, the applicant ends in error."""

    def fault(step: str, who: str, attempt: int) -> BaseException | None:
        if step != "front":
            return None
        return ResponseDecodeError(
            "wrong shape", status=200, envelope={"data": []}, body=b'{"data": []}'
        )

    client = ScriptedClient(fault)
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    (line,) = results(tmp_path)
    assert (line["outcome"], line["error_type"]) == ("error", "ResponseDecodeError")
    assert [step for step, _, _ in client.calls] == ["front"]


async def test_verdicts_are_classified_and_not_retried(tmp_path: Path, image_dir: Path) -> None:
    """Expired card, unreadable card, failed liveness and authority checks each get their
    outcome and code, and the refused step is sent exactly once."""
    plan = {"a1": ("back", 3010), "a2": ("front", 3011), "a4": ("liveness", 4207)}

    def fault(step: str, who: str, attempt: int) -> BaseException | None:
        if who in plan and plan[who][0] == step:
            return error(422, plan[who][1])
        return None

    client = ScriptedClient(fault)
    client.unverified.add("a3")
    await runner(client, tmp_path).run(applicants(image_dir, 4))
    lines = {line["applicant_id"]: line for line in results(tmp_path)}
    assert (lines["a1"]["outcome"], lines["a1"]["state"], lines["a1"]["error_code"]) == (
        "rejected",
        "FAILED",
        3010,
    )
    assert lines["a1"]["error_type"] == "DocumentExpiredError"
    assert lines["a1"]["failed_step"] == "back"
    assert (lines["a2"]["outcome"], lines["a2"]["error_code"]) == ("rejected", 3011)
    assert lines["a2"]["error_type"] == "DocumentError"
    assert lines["a3"]["outcome"] == "not_verified"
    assert lines["a3"]["service_flags"] == ["aml_matched"]
    assert lines["a1"]["service_flags"] == []
    assert lines["a3"]["validated"] is True
    assert (lines["a4"]["outcome"], lines["a4"]["error_type"]) == ("rejected", "FaceError")
    assert all(n == 1 for n in Counter((tx, s) for s, tx, _ in client.calls).values())


async def test_exhausted_retries_end_in_error(tmp_path: Path, image_dir: Path) -> None:
    """A step that keeps failing transiently ends the applicant in ``error``, not lost."""
    client = ScriptedClient(lambda step, tx, n: error(502) if step == "back" else None)
    summary = await runner(client, tmp_path).run(applicants(image_dir, 2))
    lines = results(tmp_path)
    assert {line["outcome"] for line in lines} == {"error"}
    assert {line["error_type"] for line in lines} == {"InternalServerError"}
    assert all(line["attempts"] == 1 + FAST_RETRY.max_attempts for line in lines)
    assert summary.by_error == {"InternalServerError": 2}


async def test_credentials_error_stops_the_job_and_keeps_applicants_pending(
    tmp_path: Path, image_dir: Path
) -> None:
    """A 401 is nobody's verdict: the job stops, the applicant stays pending for a resume."""
    client = ScriptedClient(lambda step, tx, n: error(401))
    summary = await runner(client, tmp_path, concurrency=1).run(applicants(image_dir, 5))
    assert summary.interrupted
    assert summary.stop_reason is not None
    assert summary.stop_reason.startswith("AuthenticationError")
    assert summary.by_outcome == {"pending": 1}
    assert len(client.calls) == 1
    assert summary.stopped_by_error


async def test_the_same_error_in_many_workers_is_still_a_graceful_stop(
    tmp_path: Path, image_dir: Path
) -> None:
    """Six workers refused at once stop the job once, gracefully: every step sent is journaled.

    (Each refusal used to call stop(); the second counted as the user's second Ctrl-C and
    cancelled the others before they journaled what they had sent.)
    """
    client = ScriptedClient(lambda step, tx, n: error(401), delay=0.05)
    client.gate = asyncio.Event()
    run = runner(client, tmp_path, concurrency=6)
    task = asyncio.create_task(run.run(applicants(image_dir, 6)))
    client.notify_in_flight = 6
    await client.reached.wait()  # all six front scans are in flight
    client.gate.set()
    summary = await task
    assert summary.stopped_by_error
    assert not run._hard_stopped
    assert len(client.calls) == 6
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        journaled = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert journaled == 6
    assert summary.by_outcome == {"pending": 6}


async def test_rows_read_before_the_manifest_fails_are_not_lost(
    tmp_path: Path, image_dir: Path
) -> None:
    """A reader that fails after three rows: those three are processed, then the job stops."""
    people = applicants(image_dir, 3)

    def manifest() -> Any:
        yield from people
        raise OSError("disk gone")

    summary = await runner(ScriptedClient(), tmp_path).run(manifest())
    assert summary.stopped_by_error
    assert summary.stop_reason is not None
    assert summary.stop_reason.startswith("cannot read the manifest")
    assert summary.by_outcome == {"verified": 3}


async def test_invalid_rows_survive_a_resume_that_stops_early(
    tmp_path: Path, image_dir: Path
) -> None:
    """A resume stopped before it reads the bad rows again keeps them in the totals."""
    people = applicants(image_dir, 3)
    items = [people[0], InvalidRow(4, "missing value(s) for face_2", "bad"), people[1], people[2]]
    first = await runner(ScriptedClient(), tmp_path).run(items)
    assert first.by_outcome == {"verified": 3, "invalid": 1}
    run = runner(ScriptedClient(), tmp_path, resume=True)
    run.stop("at once")
    second = await run.run(items)
    assert second.by_outcome == {"verified": 3, "invalid": 1}
    assert [line["outcome"] for line in results(tmp_path)].count("invalid") == 1


async def test_finished_applicant_whose_row_turned_bad_keeps_its_result(
    tmp_path: Path, image_dir: Path
) -> None:
    """Verified in run 1, its scans archived before a resume: still verified, not also invalid."""
    people = applicants(image_dir, 2)
    await runner(ScriptedClient(), tmp_path).run(people)
    archived = InvalidRow(people[0].row, "front: file not found", people[0].applicant_id)
    second = await runner(ScriptedClient(), tmp_path, resume=True).run([archived, people[1]])
    assert second.by_outcome == {"verified": 2}
    assert [line["outcome"] for line in results(tmp_path)] == ["verified", "verified"]


async def test_pending_applicant_whose_row_turned_bad_is_reported_invalid(
    tmp_path: Path, image_dir: Path
) -> None:
    """Unfinished in run 1, its row bad in run 2: invalid (not also pending), then resumable."""
    people = applicants(image_dir, 1)
    client = ScriptedClient(lambda step, tx, n: error(401) if step == "back" else None)
    first = await runner(client, tmp_path).run(people)
    assert first.by_outcome == {"pending": 1}
    moved = InvalidRow(people[0].row, "back: file not found", people[0].applicant_id)
    second = await runner(ScriptedClient(), tmp_path, resume=True).run([moved])
    assert second.by_outcome == {"invalid": 1}
    assert second.complete
    third_client = ScriptedClient()
    third = await runner(third_client, tmp_path, resume=True).run(people)
    assert third.by_outcome == {"verified": 1}
    assert [step for step, _, _ in third_client.calls] == ["back", "liveness"]  # same transaction


async def test_invalid_rows_and_duplicates_are_recorded_and_the_job_goes_on(
    tmp_path: Path, image_dir: Path
) -> None:
    """Bad rows and a second row with the same id are recorded as invalid; others proceed."""
    people = applicants(image_dir, 3)
    missing = BulkApplicant("a9", tmp_path / "nope.jpg", people[0].back, people[0].faces, row=5)
    items = [
        people[0],
        InvalidRow(2, "missing value(s) for face_2", "bad"),
        people[1],
        BulkApplicant("a1", people[0].front, people[0].back, people[0].faces, row=4),
        missing,
        people[2],
    ]
    client = ScriptedClient()
    summary = await runner(client, tmp_path, concurrency=1).run(items)
    lines = {line["row"]: line for line in results(tmp_path)}
    assert lines[2]["outcome"] == "invalid"
    assert lines[4]["outcome"] == "invalid"
    assert "duplicate applicant_id (first seen at row 1)" in lines[4]["error_message"]
    assert lines[5]["outcome"] == "invalid"
    assert lines[5]["error_message"].startswith("front:")
    assert "nope" not in lines[5]["error_message"]
    assert summary.by_outcome == {"verified": 3, "invalid": 3}


@pytest.mark.parametrize("prepare", [True, False])
@pytest.mark.parametrize("image", ["front", "face_2"])
async def test_an_empty_image_file_is_invalid_and_named_by_its_column(
    tmp_path: Path, image_dir: Path, image: str, prepare: bool
) -> None:
    """An image file emptied after the manifest was read makes the row invalid, the reason
    naming the column (never the path), whether images are prepared or sent as they are."""
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


async def test_graceful_stop_then_resume_sends_no_step_twice(
    tmp_path: Path, image_dir: Path
) -> None:
    """After stop(), in-flight applicants journal their step and stop; resume finishes them on
    the same transactions without sending any journaled step again."""
    client = ScriptedClient(delay=0.002)
    run = runner(client, tmp_path)
    task = asyncio.create_task(run.run(applicants(image_dir, 30)))
    client.notify_calls = 20
    await client.reached.wait()
    run.stop("test")
    first = await task
    assert first.interrupted
    assert first.pending > 0
    assert first.by_outcome.get("verified", 0) < 30
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        active = conn.execute("SELECT count(*) FROM applicants WHERE status='active'").fetchone()
    assert active[0] == first.pending

    second = await runner(client, tmp_path, resume=True).run(applicants(image_dir, 30))
    assert second.by_outcome == {"verified": 30}
    assert second.skipped == first.by_outcome.get("verified", 0)
    assert second.resumed > 0
    assert all(n == 1 for n in client.ok_steps().values())
    assert len({tx for _, tx, _ in client.calls}) == 30


async def test_second_stop_cancels_at_once_and_journal_stays_consistent(
    tmp_path: Path, image_dir: Path
) -> None:
    """A second stop() cancels in-flight steps; the summary still comes back, and resume ends
    everyone verified with one transaction each."""
    client = ScriptedClient()
    client.gate = asyncio.Event()
    run = runner(client, tmp_path)
    task = asyncio.create_task(run.run(applicants(image_dir, 12)))
    client.notify_in_flight = 4
    await client.reached.wait()
    run.stop()
    run.stop()
    first = await task
    assert first.interrupted
    assert first.pending == 4  # the four in flight were claimed, none finished
    client.gate.set()
    second = await runner(client, tmp_path, resume=True).run(applicants(image_dir, 12))
    assert second.by_outcome == {"verified": 12}
    assert len({tx for _, tx, _ in client.calls}) == 12


async def test_tasks_stay_bounded_by_concurrency(tmp_path: Path, image_dir: Path) -> None:
    """No task per applicant: live tasks stay near the concurrency however long the job is."""
    client = ScriptedClient()
    await runner(client, tmp_path, concurrency=3, journal=None).run(applicants(image_dir, 150))
    # Per worker: itself, its three image tasks and prepare_faces' three frame tasks; plus the
    # producer, the progress ticker and the test. 150 applicants would be far more.
    assert client.max_tasks <= 3 * 7 + 3


async def test_prepare_false_sends_the_files_as_they_are(tmp_path: Path, image_dir: Path) -> None:
    """With prepare=False the runner reads each file and sends its bytes unchanged."""
    client = ScriptedClient()
    summary = await runner(client, tmp_path, prepare=False).run(applicants(image_dir, 2))
    assert summary.by_outcome == {"verified": 2}
    assert client.images == [(image_dir / "front.jpg").read_bytes()] * 2


async def test_prepared_images_are_sent_by_default(tmp_path: Path, image_dir: Path) -> None:
    """By default each image goes through the preprocessor once (a PreparedImage is sent)."""
    client = ScriptedClient()
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    (image,) = client.images
    assert isinstance(image, PreparedImage)


async def test_graceful_stop_does_not_wait_for_rate_limit_tokens(
    tmp_path: Path, image_dir: Path
) -> None:
    """Flows queued for a token under a slow limit give up at once on stop(): nothing more is
    sent, and what was sent is journaled."""
    client = ScriptedClient()
    client.notify_calls = 2
    run = runner(client, tmp_path, rate_limit=RateLimit(per_second=1, per_minute=2))
    task = asyncio.create_task(run.run(applicants(image_dir, 6)))
    await client.reached.wait()  # two requests sent; the next token is a minute away
    run.stop("test")
    summary = await asyncio.wait_for(task, 5)
    assert summary.interrupted
    assert len(client.calls) == 2
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        journaled = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    assert journaled == 2


def journal_bytes(tmp_path: Path) -> bytes:
    """Every byte of the journal on disk (the write-ahead log included)."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("journal.db*")))


async def test_a_manifest_reader_failing_unexpectedly_stops_the_job_instead_of_hanging(
    tmp_path: Path, image_dir: Path
) -> None:
    """A reader that raises something unforeseen mid-way still ends the job (it stops, with a
    reason that quotes no row), rather than leaving the workers waiting for ever."""
    people = applicants(image_dir, 2)

    def rows() -> Any:
        yield from people
        raise ValueError("row 3 names Secret Person")

    summary = await asyncio.wait_for(runner(ScriptedClient(), tmp_path).run(rows()), 30)
    assert summary.interrupted
    assert summary.stop_reason == "cannot read the manifest: ValueError"
    assert set(summary.by_outcome) <= {"verified", "pending"}


async def test_an_unexpected_error_fails_one_applicant_not_the_job(
    tmp_path: Path, image_dir: Path
) -> None:
    """An unforeseen exception in one applicant's step ends that applicant in ``error`` (by
    its class, without its message) and the others go on."""

    def fault(step: str, who: str, attempt: int) -> BaseException | None:
        return KeyError("Secret Person") if (who, step) == ("a2", "back") else None

    summary = await runner(ScriptedClient(fault), tmp_path).run(applicants(image_dir, 3))
    lines = {line["applicant_id"]: line for line in results(tmp_path)}
    assert summary.by_outcome == {"verified": 2, "error": 1}
    assert not summary.interrupted
    assert (lines["a2"]["outcome"], lines["a2"]["error_type"]) == ("error", "KeyError")
    assert lines["a2"]["error_message"] == "unexpected KeyError"
    assert lines["a2"]["failed_step"] == "back"
    assert b"Secret" not in journal_bytes(tmp_path)


async def test_journal_step_records_name_the_public_error_class(
    tmp_path: Path, image_dir: Path
) -> None:
    """A 422 with code 3010 is journaled as DocumentExpiredError, not its combined class name."""
    client = ScriptedClient(lambda step, who, n: error(422, 3010) if step == "back" else None)
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        types = conn.execute("SELECT error_type FROM steps WHERE ok=0").fetchall()
    assert types == [("DocumentExpiredError",)]


async def test_throttling_until_retries_run_out_is_an_error_not_a_verdict(
    tmp_path: Path, image_dir: Path
) -> None:
    """Code 4003 on every attempt leaves the applicant in ``error`` (retryable), not
    ``rejected``: the service never judged the images."""
    client = ScriptedClient(lambda step, who, n: error(None, 4003) if step == "front" else None)
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    (line,) = results(tmp_path)
    assert (line["outcome"], line["error_type"], line["error_code"]) == (
        "error",
        "TooManyAttemptsError",
        4003,
    )


async def test_server_messages_reach_neither_results_nor_journal(
    tmp_path: Path, image_dir: Path
) -> None:
    """The server's free-text error_message (which may name the person) is replaced by the
    client's own message; error code and type are kept."""

    def fault(step: str, who: str, attempt: int) -> BaseException | None:
        if step != "back":
            return None
        return error(422, 3010, error_message="the card of Secret Person has expired")

    await runner(ScriptedClient(fault), tmp_path).run(applicants(image_dir, 1))
    (line,) = results(tmp_path)
    assert (line["error_code"], line["error_type"]) == (3010, "DocumentExpiredError")
    assert line["error_message"] == "scripted"  # what the client said, not the server
    assert b"Secret" not in journal_bytes(tmp_path)
    assert "Secret" not in (tmp_path / "results.jsonl").read_text()


async def test_graceful_stop_cuts_a_retry_backoff_short(tmp_path: Path, image_dir: Path) -> None:
    """A stop() during a long backoff between two attempts ends the job at once, with the
    failed attempt journaled and the applicant pending."""
    slow = RetryPolicy(max_attempts=5, initial=300, max_backoff=300, jitter=0)
    client = ScriptedClient(lambda step, who, n: error(503) if step == "front" else None)
    client.notify_calls = 1
    run = runner(client, tmp_path, step_retry=slow, concurrency=1)
    task = asyncio.create_task(run.run(applicants(image_dir, 1)))
    await asyncio.wait_for(client.reached.wait(), 30)
    await asyncio.sleep(0)  # let the worker reach its backoff
    run.stop("test")
    summary = await asyncio.wait_for(task, 30)
    assert summary.interrupted
    assert summary.by_outcome == {"pending": 1}
    assert len(client.calls) == 1
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        assert conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 1


class RecordingProgress:
    """A progress reporter that remembers what ``start`` was told."""

    def __init__(self) -> None:
        self.started: list[tuple[int | None, int]] = []

    def start(self, total: int | None, skipped: int = 0) -> None:
        self.started.append((total, skipped))

    def update(self, stats: Any) -> None:
        """Ignored."""

    def close(self, stats: Any) -> None:
        """Ignored."""


async def test_a_resumed_run_tells_the_progress_what_is_already_finished(
    tmp_path: Path, image_dir: Path
) -> None:
    """On resume, progress.start gets the applicants finished in earlier runs, so the first
    line says so and the ETA counts only what is left."""
    await runner(ScriptedClient(), tmp_path).run(applicants(image_dir, 3))
    progress = RecordingProgress()
    summary = await runner(ScriptedClient(), tmp_path, resume=True, progress=progress, total=5).run(
        applicants(image_dir, 5)
    )
    assert progress.started == [(5, 3)]
    assert summary.skipped == 3
    assert summary.processed == 2


async def test_resume_prepares_only_the_images_the_remaining_steps_need(
    tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After front and back were journaled, a resume prepares the front (liveness sends it)
    and the faces, but not the back again."""
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
    """Every image a job prepares sees another in flight (the job's prefer_throughput()), so
    none takes the grain-preserving path's second core."""
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
