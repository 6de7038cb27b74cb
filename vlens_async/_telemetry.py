"""The hooks through which the client and the flow report calls, steps and outcomes.

The core never imports OpenTelemetry. It reports at three points to a :class:`Telemetry`: one
logical API call (its attempts, retries and status), one flow step (front, back, liveness) and one
``verify()``. By default that is :data:`NO_TELEMETRY`, whose scopes do nothing (the cost of a
method call). :class:`vlens_async.otel.OpenTelemetry` turns the reports into spans and metrics.

What is handed over is free of personal data by construction: the endpoint's path (a fixed route,
never a URL or its query), the HTTP method and status, our request id, the transaction id, counts,
flow states and outcomes, and errors as objects from which an implementation must take only the
class and the Vlens ``error_code`` (their messages and envelopes are not for traces). Never a body,
a header, a name, a phone number or a national ID.

A scope is a context manager: entered where the work starts and left where it ends, in the same
task, so an implementation may make it the current span (the call's spans nest under the step's,
the step's under ``verify()``'s).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Final, Protocol

__all__ = ["NO_TELEMETRY", "CallScope", "FlowScope", "NoTelemetry", "Telemetry", "telemetry_of"]


class CallScope(Protocol):
    """One logical API call, which may take several HTTP attempts."""

    def __enter__(self) -> CallScope:
        """The call starts."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """The call ends: ``exc`` is the error it raised (never suppressed)."""
        ...

    def attempt(self, number: int) -> None:
        """An HTTP attempt starts; ``number`` counts from 1 within the retry loop (above 1 it is a
        retry of the failed attempt reported last)."""
        ...

    def attempt_failed(self, error: BaseException) -> None:
        """The attempt failed with ``error`` (the call may retry it)."""
        ...

    def response(self, status: int) -> None:
        """A response with this HTTP status arrived for the current attempt."""
        ...


class FlowScope(Protocol):
    """One flow step or one ``verify()``."""

    def __enter__(self) -> FlowScope:
        """The step starts."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """The step ends: ``exc`` is the error it raised (never suppressed)."""
        ...

    def result(self, outcome: str, state: str) -> None:
        """How it ended: a fixed ``outcome`` word and the transaction's ``state`` after it."""
        ...


class Telemetry(Protocol):
    """What the client and the flow report to; ``VlensClient(..., telemetry=...)`` takes one."""

    def call(
        self, method: str, endpoint: str, *, request_id: str, transaction_id: str | None
    ) -> CallScope:
        """A scope for one logical call of ``method`` on ``endpoint`` (the path, no query)."""
        ...

    def step(self, step: str, *, transaction_id: str) -> FlowScope:
        """A scope for one flow step (``front``, ``back``, ``liveness``)."""
        ...

    def verification(self, *, transaction_id: str) -> FlowScope:
        """A scope for one ``verify()``."""
        ...


class _NoScope:
    """A scope that records nothing (one shared instance)."""

    __slots__ = ()

    def __enter__(self) -> _NoScope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def attempt(self, number: int) -> None:
        """Nothing."""

    def attempt_failed(self, error: BaseException) -> None:
        """Nothing."""

    def response(self, status: int) -> None:
        """Nothing."""

    def result(self, outcome: str, state: str) -> None:
        """Nothing."""


_NO_SCOPE: Final = _NoScope()


class NoTelemetry:
    """The default: reports go nowhere and cost a method call."""

    __slots__ = ()

    def call(
        self, method: str, endpoint: str, *, request_id: str, transaction_id: str | None
    ) -> CallScope:
        """The shared scope that records nothing."""
        return _NO_SCOPE

    def step(self, step: str, *, transaction_id: str) -> FlowScope:
        """The shared scope that records nothing."""
        return _NO_SCOPE

    def verification(self, *, transaction_id: str) -> FlowScope:
        """The shared scope that records nothing."""
        return _NO_SCOPE

    def __repr__(self) -> str:
        return "NoTelemetry()"


NO_TELEMETRY: Final = NoTelemetry()


def telemetry_of(client: Any) -> Telemetry:
    """The telemetry of a flow's client: its ``telemetry`` attribute, or :data:`NO_TELEMETRY`
    for a client without one (a test double, a user's own ``FlowClient``)."""
    telemetry: Telemetry | None = getattr(client, "telemetry", None)
    return NO_TELEMETRY if telemetry is None else telemetry
