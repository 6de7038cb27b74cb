"""The per-applicant client every HTTP attempt passes: counted, timed, journaled, throttling fed
back to the limiter."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.bulk.scripted import FAST_RETRY, ScriptedClient, applicants, error, runner
from vlens_async.bulk._context import JobContext, RunCounters, StopSignal
from vlens_async.bulk._metered import MeteredClient
from vlens_async.bulk._ratelimit import RateLimit, RateLimiter
from vlens_async.errors import RateLimitError


async def test_journal_step_records_name_the_public_error_class(
    tmp_path: Path, image_dir: Path
) -> None:
    """A 422 with code 3010 is journaled as DocumentExpiredError, not its combined class name."""
    client = ScriptedClient(lambda step, who, n: error(422, 3010) if step == "back" else None)
    await runner(client, tmp_path).run(applicants(image_dir, 1))
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        types = conn.execute("SELECT error_type FROM steps WHERE ok=0").fetchall()
    assert types == [("DocumentExpiredError",)]


async def test_every_attempt_is_counted_and_recorded_and_a_throttle_slows_the_limiter() -> None:
    """Each attempt counts as a request and is recorded once; a 429 slows the shared limiter."""
    client = ScriptedClient(lambda step, who, n: error(429, retry_after=0.001) if n == 1 else None)
    limiter = RateLimiter(RateLimit.unlimited())
    counters = RunCounters()
    context = JobContext(
        client=client,  # type: ignore[arg-type]
        journal=None,  # type: ignore[arg-type]
        limiter=limiter,
        step_retry=FAST_RETRY,
        prepare=False,
        executor=None,  # type: ignore[arg-type]
        counters=counters,
        stop=StopSignal(),
        finished=lambda outcome: None,
        halt=lambda reason: None,
    )
    metered = MeteredClient(context)
    with pytest.raises(RateLimitError):
        await metered.scan_id_front(b"front", transaction_id="t1", client_transaction_id="a1")
    await metered.scan_id_front(b"front", transaction_id="t1", client_transaction_id="a1")
    attempts = metered.take_attempts()
    assert [(a.step, a.attempt, a.ok, a.status, a.error_type) for a in attempts] == [
        ("front", 1, False, 429, "RateLimitError"),
        ("front", 2, True, None, None),
    ]
    assert metered.take_attempts() == []
    assert counters.requests == 2
    assert limiter.bucket.throttle_signals == 1
