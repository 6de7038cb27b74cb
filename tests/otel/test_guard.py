"""A telemetry implementation that raises never fails a call, loses a result or hides an error."""

from __future__ import annotations

import logging
from collections import Counter
from types import TracebackType

import pytest

from tests.helpers.emulator import applicant
from tests.otel.conftest import Recorded
from vlens_async import VlensClient
from vlens_async._telemetry import NO_TELEMETRY, CallScope, FlowScope, Telemetry, guarded
from vlens_async.emulator import RunningEmulator
from vlens_async.errors import DocumentExpiredError
from vlens_async.flow import FlowState, Transaction, VerificationOutcome

HOOKS = [
    "call",
    "step",
    "verification",
    "__enter__",
    "__exit__",
    "attempt",
    "attempt_failed",
    "response",
    "result",
]
# What a careless implementation's error could quote: it must never reach the log.
LEAKY_MESSAGE = "exporter broke on applicant +201001234567"


class Broken(Exception):
    """An exporter's failure."""


def raising_telemetry(hook: str) -> tuple[Telemetry, Counter[str]]:
    """A telemetry whose ``hook`` raises each time, and the count of those raises. Its scopes'
    exits also ask to swallow the error leaving them. A class of its own per call: the guard
    logs once per implementation."""
    raised: Counter[str] = Counter()

    def reached(name: str) -> None:
        if name == hook:
            raised[name] += 1
            raise Broken(LEAKY_MESSAGE)

    class Scope:
        def __enter__(self) -> Scope:
            reached("__enter__")
            return self

        def __exit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool:
            reached("__exit__")
            return True  # a buggy exit that would swallow the call's error

        def attempt(self, number: int) -> None:
            reached("attempt")

        def attempt_failed(self, error: BaseException) -> None:
            reached("attempt_failed")

        def response(self, status: int) -> None:
            reached("response")

        def result(self, outcome: str, state: str) -> None:
            reached("result")

    class Raising:
        def call(
            self, method: str, endpoint: str, *, request_id: str, transaction_id: str | None
        ) -> CallScope:
            reached("call")
            return Scope()

        def step(self, step: str, *, transaction_id: str) -> FlowScope:
            reached("step")
            return Scope()

        def verification(self, *, transaction_id: str) -> FlowScope:
            reached("verification")
            return Scope()

    return Raising(), raised


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.usefixtures("no_backoff")
async def test_a_raising_hook_never_breaks_a_verification(
    vlens_emulator: RunningEmulator, caplog: pytest.LogCaptureFixture, hook: str
) -> None:
    """Each hook raising in turn: a verification with a retried 503 completes, every step sent
    once; an expired card still raises DocumentExpiredError; the log names the hook and the
    error's type once, never its message."""
    caplog.set_level(logging.WARNING, logger="vlens_async")
    telemetry, raised = raising_telemetry(hook)
    vlens_emulator.set_faults("503:1x1@id_front")
    async with VlensClient(
        vlens_emulator.api_key, base_url=vlens_emulator.base_url, telemetry=telemetry
    ) as client:
        assert client.telemetry is telemetry
        a, expired = applicant(60), applicant(61, "expired")
        outcome = await client.verify(a.front, a.back, a.faces)
        with pytest.raises(DocumentExpiredError):
            await client.verify(expired.front, expired.back, expired.faces, raise_on_failure=True)
    assert outcome.state is FlowState.COMPLETED
    assert outcome.verified
    assert outcome.error is None
    assert raised[hook] >= 2  # the hook was reached, and raised, more than once
    requests = vlens_emulator.counters()["requests"]
    assert requests["id_front"] == {"503": 1, "200": 2}  # the retry, then the expired card's
    assert sum(requests["id_back"].values()) == 2
    assert requests["liveness"] == {"200": 1}
    logged = [r.getMessage() for r in caplog.records if "telemetry" in r.getMessage()]
    assert len(logged) == 1, logged
    assert f"Raising.{hook} raised {__name__}.Broken" in logged[0]
    assert LEAKY_MESSAGE not in caplog.text
    assert "+20" not in caplog.text


def test_guarding_is_done_once() -> None:
    """The no-op default is left as it is, and a guarded telemetry is not wrapped again."""
    telemetry, _ = raising_telemetry("call")
    once = guarded(telemetry)
    assert guarded(NO_TELEMETRY) is NO_TELEMETRY
    assert once is not telemetry
    assert guarded(once) is once
    assert repr(once) == repr(telemetry)


@pytest.mark.parametrize("traced", [False, True], ids=["no_telemetry", "telemetry"])
async def test_an_unreadable_outcome_never_hides_the_error_verify_raises(
    vlens_emulator: RunningEmulator,
    recorded: Recorded,
    monkeypatch: pytest.MonkeyPatch,
    traced: bool,
) -> None:
    """verify(raise_on_failure=True) of an expired card raises DocumentExpiredError even if the
    outcome cannot be read; without telemetry the outcome is not even read."""
    reads: list[BaseException | None] = []

    def unreadable(self: Transaction, error: BaseException | None = None) -> VerificationOutcome:
        reads.append(error)
        raise RuntimeError("the outcome could not be read")

    monkeypatch.setattr(Transaction, "outcome", unreadable)
    expired = applicant(62, "expired")
    async with VlensClient(
        vlens_emulator.api_key,
        base_url=vlens_emulator.base_url,
        telemetry=recorded.telemetry if traced else None,
    ) as client:
        with pytest.raises(DocumentExpiredError):
            await client.verify(expired.front, expired.back, expired.faces, raise_on_failure=True)
    assert len(reads) == (1 if traced else 0)
    if traced:
        span = recorded.span("vlens.verify")
        assert span.attributes is not None
        assert span.attributes["error.type"] == "DocumentExpiredError"


@pytest.mark.parametrize("traced", [False, True], ids=["no_telemetry", "telemetry"])
async def test_verify_reads_its_outcome_once(
    vlens_emulator: RunningEmulator,
    recorded: Recorded,
    monkeypatch: pytest.MonkeyPatch,
    traced: bool,
) -> None:
    """A verification that completes builds its outcome once, with or without telemetry, and
    the span is labelled from that outcome."""
    reads: list[BaseException | None] = []
    read = Transaction.outcome

    def counted(self: Transaction, error: BaseException | None = None) -> VerificationOutcome:
        reads.append(error)
        return read(self, error)

    monkeypatch.setattr(Transaction, "outcome", counted)
    a = applicant(63)
    async with VlensClient(
        vlens_emulator.api_key,
        base_url=vlens_emulator.base_url,
        telemetry=recorded.telemetry if traced else None,
    ) as client:
        outcome = await client.verify(a.front, a.back, a.faces)
    assert outcome.verified
    assert reads == [None]
    assert "total" in outcome.timings
    if traced:
        span = recorded.span("vlens.verify")
        assert span.attributes is not None
        assert span.attributes["vlens.outcome"] == "verified"
