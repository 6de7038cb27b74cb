"""Spans and metrics of real flows against the emulator, read from the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.emulator import applicant
from tests.otel.conftest import Recorded
from vlens_async import VlensClient
from vlens_async.client import BACK_PATH, EXISTENCE_PATH, FRONT_PATH, LIVENESS_PATH
from vlens_async.emulator import RunningEmulator
from vlens_async.errors import DocumentExpiredError, StepOrderError
from vlens_async.flow import FlowState


async def test_verify_nests_steps_and_calls(traced_client: VlensClient, recorded: Recorded) -> None:
    """verify() is one span, each step a child of it, each call a child of its step."""
    a = applicant(40)
    outcome = await traced_client.verify(a.front, a.back, a.faces)
    assert outcome.verified
    root = recorded.span("vlens.verify")
    assert root.parent is None
    assert root.attributes is not None
    assert root.attributes["vlens.transaction_id"] == outcome.transaction_id
    assert root.attributes["vlens.outcome"] == "verified"
    assert root.attributes["vlens.flow.state"] == "COMPLETED"
    for step, path in (("front", FRONT_PATH), ("back", BACK_PATH), ("liveness", LIVENESS_PATH)):
        span = recorded.span(f"vlens.step {step}")
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id
        assert span.attributes is not None
        assert span.attributes["vlens.step"] == step
        assert span.attributes["vlens.outcome"] == "succeeded"
        assert span.attributes["vlens.transaction_id"] == outcome.transaction_id
        call = recorded.span(f"POST {path}")
        assert call.parent is not None
        assert call.parent.span_id == span.context.span_id
        assert call.attributes is not None
        assert call.attributes["vlens.endpoint"] == path
        assert call.attributes["http.request.method"] == "POST"
        assert call.attributes["http.response.status_code"] == 200
        assert call.attributes["vlens.attempts"] == 1
        assert call.attributes["vlens.transaction_id"] == outcome.transaction_id
        assert isinstance(call.attributes["vlens.request_id"], str)
        assert call.context.trace_id == root.context.trace_id


async def test_metrics_count_calls_and_outcomes(
    traced_client: VlensClient, recorded: Recorded
) -> None:
    """The duration histogram has one call per endpoint; outcomes are counted per operation."""
    a = applicant(41)
    await traced_client.verify(a.front, a.back, a.faces)
    durations = recorded.metrics()["vlens.client.request.duration"]
    by_endpoint = {dict(p.attributes)["vlens.endpoint"]: p for p in durations}
    assert set(by_endpoint) == {FRONT_PATH, BACK_PATH, LIVENESS_PATH}
    for point in by_endpoint.values():
        assert point.count == 1
        assert point.sum > 0
        assert dict(point.attributes)["http.response.status_code"] == 200
    outcomes = recorded.counts("vlens.flow.outcomes")
    assert outcomes == {
        (("vlens.operation", "front"), ("vlens.outcome", "succeeded")): 1,
        (("vlens.operation", "back"), ("vlens.outcome", "succeeded")): 1,
        (("vlens.operation", "liveness"), ("vlens.outcome", "succeeded")): 1,
        (("vlens.operation", "verify"), ("vlens.outcome", "verified")): 1,
    }
    assert "vlens.client.retries" not in recorded.metrics()


@pytest.mark.usefixtures("no_backoff")
async def test_retries_are_counted_on_the_call(
    traced_client: VlensClient, recorded: Recorded, vlens_emulator: RunningEmulator
) -> None:
    """Two injected 503s: one call span with three attempts, two retry events, the counter 2."""
    vlens_emulator.set_faults("503:1x2@id_front")
    tx = traced_client.transaction()
    await tx.scan_front(applicant(42).front)
    assert vlens_emulator.counters()["requests"]["id_front"] == {"503": 2, "200": 1}
    call = recorded.span(f"POST {FRONT_PATH}")
    assert call.attributes is not None
    assert call.attributes["vlens.attempts"] == 3
    assert call.attributes["http.response.status_code"] == 200
    assert "error.type" not in call.attributes
    retries = [e for e in call.events if e.name == "vlens.retry"]
    assert [dict(e.attributes or {}) for e in retries] == [
        {"vlens.attempt": n, "error.type": "InternalServerError", "http.response.status_code": 503}
        for n in (2, 3)
    ]
    assert recorded.counts("vlens.client.retries") == {
        (
            ("error.type", "InternalServerError"),
            ("http.request.method", "POST"),
            ("http.response.status_code", 503),
            ("vlens.endpoint", FRONT_PATH),
        ): 2
    }


async def test_a_failed_step_records_the_error_class_and_code(
    traced_client: VlensClient, recorded: Recorded
) -> None:
    """An expired card: the call and the step carry the error class and code, never its text."""
    a = applicant(43, "expired")
    tx = traced_client.transaction()
    await tx.scan_front(a.front)
    with pytest.raises(DocumentExpiredError) as info:
        await tx.scan_back(a.back)
    assert tx.state is FlowState.FAILED
    call = recorded.span(f"POST {BACK_PATH}")
    step = recorded.span("vlens.step back")
    for span in (call, step):
        assert span.attributes is not None
        assert span.attributes["error.type"] == "DocumentExpiredError"
        assert span.attributes["vlens.error_code"] == 3010
        assert not span.status.is_ok
        assert span.status.description == "DocumentExpiredError"
        assert not [e for e in span.events if e.name == "exception"]
    assert step.attributes is not None
    assert step.attributes["vlens.outcome"] == "expired_or_mismatched"
    assert step.attributes["vlens.flow.state"] == "FAILED"
    assert call.attributes is not None
    assert call.attributes["http.response.status_code"] == info.value.status
    points = recorded.metrics()["vlens.client.request.duration"]
    back = [dict(p.attributes) for p in points if dict(p.attributes)["vlens.endpoint"] == BACK_PATH]
    assert back == [
        {
            "vlens.endpoint": BACK_PATH,
            "http.request.method": "POST",
            "http.response.status_code": info.value.status,
            "error.type": "DocumentExpiredError",
        }
    ]


async def test_a_refused_step_has_a_span_and_no_call(
    traced_client: VlensClient, recorded: Recorded, vlens_emulator: RunningEmulator
) -> None:
    """Liveness before the sides: a step span with StepOrderError, not_sent, and nothing sent."""
    a = applicant(44)
    tx = traced_client.transaction()
    with pytest.raises(StepOrderError):
        await tx.check_liveness(a.faces, a.front)
    step = recorded.span("vlens.step liveness")
    assert step.attributes is not None
    assert step.attributes["vlens.outcome"] == "not_sent"
    assert step.attributes["error.type"] == "StepOrderError"
    assert [s.name for s in recorded.spans()] == ["vlens.step liveness"]
    assert vlens_emulator.counters()["requests_total"] == 0
    assert recorded.counts("vlens.flow.outcomes") == {
        (("vlens.operation", "liveness"), ("vlens.outcome", "not_sent")): 1
    }


@pytest.mark.parametrize(
    ("scenario", "label", "state"),
    [
        ("aml_watchlisted", "needs_review", "COMPLETED"),
        ("expired", "failed", "FAILED"),
        ("different_person", "incomplete", "ID_SCANNED"),
    ],
)
async def test_each_verification_outcome_is_labelled(
    traced_client: VlensClient, recorded: Recorded, scenario: str, label: str, state: str
) -> None:
    """verify() of each scenario: its outcome word and state on the span and in the counter."""
    a = applicant(45, scenario)
    outcome = await traced_client.verify(a.front, a.back, a.faces)
    assert outcome.state.value == state
    root = recorded.span("vlens.verify")
    assert root.attributes is not None
    assert root.attributes["vlens.outcome"] == label
    assert root.attributes["vlens.flow.state"] == state
    counts = recorded.counts("vlens.flow.outcomes")
    assert counts[(("vlens.operation", "verify"), ("vlens.outcome", label))] == 1


async def test_views_report_to_their_client(
    traced_client: VlensClient, recorded: Recorded, vlens_emulator: RunningEmulator
) -> None:
    """A for_user view shares the telemetry; its calls are spans like its client's."""
    view = traced_client.for_user("some-user-token")
    assert view.telemetry is traced_client.telemetry is recorded.telemetry
    await view.check_existence(phone_number="+201001112233")
    call = recorded.span(f"POST {EXISTENCE_PATH}")
    assert call.attributes is not None
    assert call.attributes["vlens.endpoint"] == EXISTENCE_PATH
    assert "vlens.transaction_id" not in call.attributes
    assert vlens_emulator.counters()["requests_total"] == 1


async def test_a_cancelled_step_ends_its_spans(
    traced_client: VlensClient, recorded: Recorded, vlens_emulator: RunningEmulator
) -> None:
    """A step cancelled mid-call (a timeout around it) ends both spans (CancelledError,
    not_sent) and leaves no current span behind: the next call in the task is a root."""
    vlens_emulator.set_faults(None, latency="fixed:5000ms@id_front")
    tx = traced_client.transaction()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await tx.scan_front(applicant(46).front)
    step = recorded.span("vlens.step front")
    call = recorded.span(f"POST {FRONT_PATH}")
    for span in (step, call):
        assert span.attributes is not None
        assert span.attributes["error.type"] == "CancelledError"
    assert step.attributes is not None
    assert step.attributes["vlens.outcome"] == "not_sent"
    vlens_emulator.set_faults(None)
    await traced_client.check_existence(phone_number="+201001112244")
    later = recorded.span("POST /api/DigitalIdentity/CheckExistenceOfEmailOrPhone")
    assert later.parent is None


async def test_aiohttp_spans_through_trace_configs_nest_under_the_call(
    vlens_emulator: RunningEmulator, recorded: Recorded
) -> None:
    """The aiohttp instrumentation given as trace_configs: one span per attempt under the call."""
    from vlens_async.otel import aiohttp_trace_config

    trace_config = aiohttp_trace_config(
        tracer_provider=recorded.tracer_provider, meter_provider=recorded.meter_provider
    )
    async with VlensClient(
        vlens_emulator.api_key,
        base_url=vlens_emulator.base_url,
        telemetry=recorded.telemetry,
        trace_configs=[trace_config],
    ) as client:
        a = applicant(41)
        outcome = await client.verify(a.front, a.back, a.faces)
    assert outcome.verified
    calls = {s.context.span_id: s for s in recorded.spans() if s.name.startswith("POST /api/")}
    http = [s for s in recorded.spans() if s.parent is not None and s.parent.span_id in calls]
    assert len(calls) == 3
    assert len(http) == 3  # one HTTP attempt under each call
    for span in http:
        assert span.attributes is not None
        for value in span.attributes.values():
            assert "?" not in str(value)
