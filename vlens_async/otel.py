"""Spans and metrics through OpenTelemetry, the ``otel`` extra (``pip install 'vlens-async[otel]'``)
and how to keep the aiohttp instrumentation from recording phone numbers.

Opt in per client; nothing is global::

    from vlens_async.otel import OpenTelemetry

    async with VlensClient(api_key, telemetry=OpenTelemetry()) as client:
        outcome = await client.for_user(token).verify(front, back, faces)

:class:`OpenTelemetry` takes the tracer and meter from the providers given, or from the global
ones (``opentelemetry.trace.set_tracer_provider``, ``opentelemetry.metrics.set_meter_provider``;
set them before or after: the API's proxies follow). Views from ``for_user`` and
``with_options`` report to their client's telemetry.

Spans (instrumentation scope ``vlens_async``):

- ``vlens.verify``: one ``verify()``; the step spans nest under it.
- ``vlens.step front`` / ``back`` / ``liveness``: one step of a transaction; the call spans nest
  under it.
- ``POST /api/DigitalIdentity/verify/id/front`` and the like: one logical API call, which may take
  several HTTP attempts (each retry is a ``vlens.retry`` event with the attempt number and what
  failed before it).

Attributes: ``vlens.endpoint`` (the path: a fixed route, never a URL or its query),
``http.request.method``, ``http.response.status_code`` (the last one received), ``vlens.attempts``,
``vlens.request_id``, ``vlens.transaction_id``, ``vlens.operation`` and ``vlens.step``,
``vlens.outcome``, ``vlens.flow.state`` (the state after the step), and on failure
``error.type`` (the error's class name) and ``vlens.error_code`` (the Vlens code). An error's
message is never recorded (no ``exception`` event): the server's own words may name the
applicant. No attribute holds a body, a header, a name, a phone number or a national ID.

Metrics:

- ``vlens.client.request.duration`` (histogram, seconds): one logical call, its retries and their
  waits included, by ``vlens.endpoint``, ``http.request.method``, ``http.response.status_code``
  and ``error.type``.
- ``vlens.client.retries`` (counter): attempts repeated, by endpoint, method and what failed
  (``error.type``, ``http.response.status_code``).
- ``vlens.flow.outcomes`` (counter): steps and verifications by ``vlens.operation`` (``front``,
  ``back``, ``liveness``, ``verify``) and ``vlens.outcome``. A step's outcome is the state
  machine's reading of its answer (``succeeded``, ``rejected``, ``frames_rejected``,
  ``expired_or_mismatched``, ``not_verified``, ``no_verdict``) or ``not_sent`` (refused before
  sending, an image error, cancelled); a verification's is ``verified``, ``needs_review``,
  ``not_verified``, ``failed`` or ``incomplete``.

The HTTP requests themselves: ``opentelemetry-instrumentation-aiohttp-client`` records the full
request URL, and ``GET .../GetUserDigitalIdentityImages`` carries the user's phone number in its
query (``emailOrPhoneNumber``); its connection-timeout error quotes that URL too, and the
instrumentation records the error's text. :func:`aiohttp_trace_config` makes that instrumentation
safe for this client (URLs without their query, errors recorded by type only): pass
``VlensClient(..., trace_configs=[aiohttp_trace_config()])``, and each HTTP attempt is a span
under its call's span. With the global
``AioHttpClientInstrumentor().instrument()`` pass ``url_filter=strip_query``; connection errors'
texts still reach its ``exception`` events, so also exclude that endpoint:
``OTEL_PYTHON_AIOHTTP_CLIENT_EXCLUDED_URLS=GetUserDigitalIdentityImages``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
except ImportError as exc:  # pragma: no cover - the otel extra is a dev dependency
    raise ImportError(
        f"vlens_async.otel needs OpenTelemetry ({exc.name or 'opentelemetry-api'} is missing):"
        " pip install 'vlens-async[otel]'",
        name=exc.name,
    ) from None

from ._telemetry import CallScope, FlowScope
from ._version import version

if TYPE_CHECKING:
    import aiohttp
    import yarl

__all__ = ["OpenTelemetry", "aiohttp_trace_config", "strip_query"]

_SCOPE_NAME: Final = "vlens_async"

# Seconds: a token call takes tens of milliseconds, a liveness call several seconds, a call
# retried under the default policy up to a minute.
_DURATION_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class OpenTelemetry:
    """Spans and metrics of a :class:`~vlens_async.VlensClient` through OpenTelemetry.

    Pass it as ``VlensClient(..., telemetry=OpenTelemetry())``. ``tracer_provider`` and
    ``meter_provider`` default to the global providers. See the module docstring for the spans,
    their attributes and the metrics; none of them holds personal data.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE_NAME, version(), tracer_provider)
        meter = metrics.get_meter(_SCOPE_NAME, version(), meter_provider)
        self._duration = meter.create_histogram(
            "vlens.client.request.duration",
            unit="s",
            description="Duration of one logical Vlens API call, retries and waits included.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._retries = meter.create_counter(
            "vlens.client.retries",
            unit="{retry}",
            description="Vlens API attempts repeated after a failed one.",
        )
        self._outcomes = meter.create_counter(
            "vlens.flow.outcomes",
            unit="{outcome}",
            description="Verification steps and verify() runs, by outcome.",
        )

    def __repr__(self) -> str:
        return "OpenTelemetry()"

    def call(
        self, method: str, endpoint: str, *, request_id: str, transaction_id: str | None
    ) -> CallScope:
        """A span (and the duration and retry metrics) for one logical call."""
        return _CallSpan(self, method, endpoint, request_id, transaction_id)

    def step(self, step: str, *, transaction_id: str) -> FlowScope:
        """A span (and the outcome metric) for one flow step."""
        return _FlowSpan(self, f"vlens.step {step}", step, transaction_id)

    def verification(self, *, transaction_id: str) -> FlowScope:
        """A span (and the outcome metric) for one ``verify()``."""
        return _FlowSpan(self, "vlens.verify", "verify", transaction_id)


class _Span:
    """A span made current while its scope is entered (so later spans nest under it)."""

    def __init__(self, telemetry: OpenTelemetry, name: str, attributes: Mapping[str, Any]) -> None:
        self._telemetry = telemetry
        self._name = name
        self._attributes = dict(attributes)
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: Token[otel_context.Context] | None = None

    def _start(self) -> None:
        self._span = self._telemetry._tracer.start_span(self._name, attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def _end(self, exc: BaseException | None, attributes: Mapping[str, Any]) -> None:
        # Only the error's class and code: its message may quote the server's words.
        span = self._span
        span.set_attributes({**attributes, **_error_attributes(exc)})
        if exc is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        if self._token is not None:
            otel_context.detach(self._token)
        span.end()


def _error_attributes(exc: BaseException | None) -> dict[str, Any]:
    if exc is None:
        return {}
    attributes: dict[str, Any] = {"error.type": type(exc).__name__}
    code = getattr(exc, "error_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        attributes["vlens.error_code"] = code
    return attributes


def _ids(request_id: str | None, transaction_id: str | None) -> dict[str, str]:
    ids = {"vlens.request_id": request_id, "vlens.transaction_id": transaction_id}
    return {key: value for key, value in ids.items() if value}


class _CallSpan(_Span):
    """One logical call: attempts, statuses and retries, then the duration metric."""

    def __init__(
        self,
        telemetry: OpenTelemetry,
        method: str,
        endpoint: str,
        request_id: str,
        transaction_id: str | None,
    ) -> None:
        self._route = {"vlens.endpoint": endpoint, "http.request.method": method}
        super().__init__(
            telemetry, f"{method} {endpoint}", {**self._route, **_ids(request_id, transaction_id)}
        )
        self._attempts = 0
        self._status: int | None = None
        self._failure: dict[str, Any] = {}
        self._started = 0.0

    def __enter__(self) -> _CallSpan:
        self._started = time.perf_counter()
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status = {} if self._status is None else {"http.response.status_code": self._status}
        self._end(exc, {"vlens.attempts": self._attempts, **status})
        error = {} if exc is None else {"error.type": type(exc).__name__}
        self._telemetry._duration.record(
            time.perf_counter() - self._started, {**self._route, **status, **error}
        )

    def attempt(self, number: int) -> None:
        """Count the attempt; one after a failed one is a retry (an event and the counter)."""
        self._attempts += 1
        if number > 1 and self._failure:
            self._telemetry._retries.add(1, {**self._route, **self._failure})
            self._span.add_event("vlens.retry", {"vlens.attempt": number, **self._failure})
        self._status = None
        self._failure = {}

    def attempt_failed(self, error: BaseException) -> None:
        """Keep what failed (its class and status) for the retry that may follow."""
        self._failure = {"error.type": type(error).__name__}
        if self._status is not None:
            self._failure["http.response.status_code"] = self._status

    def response(self, status: int) -> None:
        """Keep the status of the current attempt."""
        self._status = status


class _FlowSpan(_Span):
    """One step or ``verify()``: its outcome and the state after it."""

    def __init__(
        self, telemetry: OpenTelemetry, name: str, operation: str, transaction_id: str
    ) -> None:
        self._operation = operation
        attributes: dict[str, Any] = {"vlens.operation": operation, **_ids(None, transaction_id)}
        if operation != "verify":
            attributes["vlens.step"] = operation
        super().__init__(telemetry, name, attributes)
        self._result: dict[str, str] = {}

    def __enter__(self) -> _FlowSpan:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(exc, self._result)
        outcome = self._result.get("vlens.outcome", "not_sent")
        self._telemetry._outcomes.add(
            1, {"vlens.operation": self._operation, "vlens.outcome": outcome}
        )

    def result(self, outcome: str, state: str) -> None:
        """Keep the outcome and the state for the span's end."""
        self._result = {"vlens.outcome": outcome, "vlens.flow.state": state}


# --- the aiohttp instrumentation, made safe for this client ---


def strip_query(url: yarl.URL) -> str:
    """``url`` without its query, fragment and credentials: a ``url_filter`` for
    ``opentelemetry-instrumentation-aiohttp-client`` (the query can hold a phone number)."""
    return str(url.with_query(None).with_fragment(None).with_user(None))


def aiohttp_trace_config(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> aiohttp.TraceConfig:
    """The aiohttp instrumentation's trace config, made safe for this client: a span per HTTP
    attempt (nested under the call's span) whose URL has no query, and whose failures are
    recorded by type only (aiohttp's texts quote the URL, query included).

    Needs ``opentelemetry-instrumentation-aiohttp-client``; give the result to the client's
    aiohttp session (``trace_configs=[aiohttp_trace_config()]``).
    """
    try:
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config
    except ImportError:
        raise ImportError(
            "aiohttp_trace_config needs the aiohttp instrumentation:"
            " pip install opentelemetry-instrumentation-aiohttp-client",
            name="opentelemetry.instrumentation.aiohttp_client",
        ) from None
    config = create_trace_config(
        url_filter=strip_query, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    handlers = list(config.on_request_exception)
    config.on_request_exception.clear()
    config.on_request_exception.extend(_type_only(handler) for handler in handlers)
    return config


def _type_only(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Call ``handler`` with the request's error replaced by a stand-in of the same name whose
    text says nothing of the request."""
    import aiohttp

    async def on_request_exception(
        session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        stand_in = _stand_in(type(params.exception))("withheld: aiohttp's text quotes the URL")
        await handler(
            session,
            ctx,
            aiohttp.TraceRequestExceptionParams(
                params.method, params.url.with_query(None), params.headers, stand_in
            ),
        )

    return on_request_exception


_STAND_INS: Final[dict[type[BaseException], type[Exception]]] = {}


def _stand_in(kind: type[BaseException]) -> type[Exception]:
    # Same module and qualified name, so ``error.type`` and ``exception.type`` are unchanged;
    # one class per kind, made once.
    cls = _STAND_INS.get(kind)
    if cls is None:
        namespace = {"__module__": kind.__module__, "__qualname__": kind.__qualname__}
        cls = _STAND_INS.setdefault(kind, type(kind.__name__, (Exception,), namespace))
    return cls
