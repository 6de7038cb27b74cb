"""One applicant's run with a scripted client: each step's retries, and the outcome and words of
its results line."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.bulk.scripted import (
    FAST_RETRY,
    ScriptedClient,
    applicants,
    error,
    journal_bytes,
    results,
    runner,
)
from vlens_async.config import RetryPolicy
from vlens_async.errors import APIConnectionError, ResponseDecodeError


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
    """A 200 whose JSON is not the envelope is sent once: the applicant ends in error."""
    # Asking again gets the same answer, and every verify call counts against the bundle.

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
    """Each verdict gets its outcome and code, and the refused step is sent exactly once."""
    # Expired card, unreadable card, failed liveness, and the authority checks failing.
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


async def test_throttling_until_retries_run_out_is_an_error_not_a_verdict(
    tmp_path: Path, image_dir: Path
) -> None:
    """Code 4003 on every attempt ends in ``error`` (retryable), not ``rejected``."""
    # The service never judged the images.
    client = ScriptedClient(lambda step, who, n: error(None, 4003) if step == "front" else None)
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    (line,) = results(tmp_path)
    assert (line["outcome"], line["error_type"], line["error_code"]) == (
        "error",
        "TooManyAttemptsError",
        4003,
    )


async def test_an_unexpected_error_fails_one_applicant_not_the_job(
    tmp_path: Path, image_dir: Path
) -> None:
    """An unforeseen exception fails its applicant (by class, no message); the others go on."""

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


async def test_server_messages_reach_neither_results_nor_journal(
    tmp_path: Path, image_dir: Path
) -> None:
    """The server's free text is replaced by the client's message; code and type are kept."""
    # The server's error_message may name the person.

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
    """stop() during a long backoff ends the job at once, the failed attempt journaled."""
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
