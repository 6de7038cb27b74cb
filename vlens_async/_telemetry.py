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

Telemetry never changes what a call or a flow does: :func:`guarded` wraps an implementation so
that an exception from any of its methods is logged (its type, once) and ignored, and an exit
never suppresses the error leaving the scope.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Final, Protocol

__all__ = [
    "NO_TELEMETRY",
    "CallScope",
    "FlowScope",
    "NoTelemetry",
    "Telemetry",
    "guarded",
    "telemetry_of",
    "unguarded",
]

logger: Final = logging.getLogger("vlens_async")


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
    """The telemetry of a flow's client, :func:`guarded`: its ``telemetry`` attribute, or
    :data:`NO_TELEMETRY` for a client without one (a test double, a user's own ``FlowClient``)."""
    telemetry: Telemetry | None = getattr(client, "telemetry", None)
    return NO_TELEMETRY if telemetry is None else guarded(telemetry)


def guarded(telemetry: Telemetry) -> Telemetry:
    """``telemetry`` with every method of it and of its scopes made harmless: an exception
    (never a cancellation) is logged by its type, once per implementation, method and type, and
    ignored. The no-op default and an already guarded one are returned as they are."""
    if telemetry is NO_TELEMETRY or isinstance(telemetry, _Guarded):
        return telemetry
    return _Guarded(telemetry)


def unguarded(telemetry: Telemetry) -> Telemetry:
    """The implementation inside :func:`guarded`'s wrapper (anything else as it is)."""
    return telemetry.wrapped if isinstance(telemetry, _Guarded) else telemetry


# (implementation, method, exception type) already logged, process-wide so that a broken
# implementation is reported once however many clients and transactions use it; bounded, so
# that one raising ever new types is not logged past it.
_LOGGED: Final[set[tuple[type, str, type]]] = set()
_MAX_LOGGED: Final = 64


def _log_failure(implementation: object, method: str, exc: Exception) -> None:
    """Log that ``method`` raised: the type only (the message may quote what the
    implementation was handed or holds), once."""
    key = (type(implementation), method, type(exc))
    if key in _LOGGED or len(_LOGGED) >= _MAX_LOGGED:
        return
    _LOGGED.add(key)
    logger.warning(
        "telemetry %s.%s raised %s.%s: ignored, the call goes on (logged once)",
        type(implementation).__qualname__,
        method,
        type(exc).__module__,
        type(exc).__qualname__,
    )


class _Guarded:
    """A user's :class:`Telemetry` whose failures cannot reach the call or the flow."""

    __slots__ = ("wrapped",)

    def __init__(self, wrapped: Telemetry) -> None:
        self.wrapped = wrapped

    def __repr__(self) -> str:
        return repr(self.wrapped)

    def failed(self, method: str, exc: Exception) -> None:
        """``method`` of the implementation or of one of its scopes raised ``exc``."""
        _log_failure(self.wrapped, method, exc)

    def call(
        self, method: str, endpoint: str, *, request_id: str, transaction_id: str | None
    ) -> CallScope:
        """The implementation's call scope, guarded."""
        try:
            scope = self.wrapped.call(
                method, endpoint, request_id=request_id, transaction_id=transaction_id
            )
        except Exception as exc:
            self.failed("call", exc)
            return _NO_SCOPE
        return _GuardedScope(self, scope)

    def step(self, step: str, *, transaction_id: str) -> FlowScope:
        """The implementation's step scope, guarded."""
        try:
            scope = self.wrapped.step(step, transaction_id=transaction_id)
        except Exception as exc:
            self.failed("step", exc)
            return _NO_SCOPE
        return _GuardedScope(self, scope)

    def verification(self, *, transaction_id: str) -> FlowScope:
        """The implementation's ``verify()`` scope, guarded."""
        try:
            scope = self.wrapped.verification(transaction_id=transaction_id)
        except Exception as exc:
            self.failed("verification", exc)
            return _NO_SCOPE
        return _GuardedScope(self, scope)


class _GuardedScope:
    """A scope of a guarded implementation: the hooks go to what its ``__enter__`` returned,
    as ``with scope as entered`` would; one whose ``__enter__`` raised is never exited."""

    __slots__ = ("_guard", "_open", "_scope", "_target")

    def __init__(self, guard: _Guarded, scope: CallScope | FlowScope) -> None:
        self._guard = guard
        self._scope = scope
        self._target: object = _NO_SCOPE  # until entered
        self._open = False

    def __enter__(self) -> _GuardedScope:
        try:
            self._target = self._scope.__enter__()
        except Exception as exc:
            self._guard.failed("__enter__", exc)
        else:
            self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # None whatever the implementation's exit returns: the error leaving the scope goes on.
        if self._open:
            self._open = False
            self._hook(self._scope, "__exit__", exc_type, exc, tb)

    def attempt(self, number: int) -> None:
        """Passed on."""
        self._hook(self._target, "attempt", number)

    def attempt_failed(self, error: BaseException) -> None:
        """Passed on."""
        self._hook(self._target, "attempt_failed", error)

    def response(self, status: int) -> None:
        """Passed on."""
        self._hook(self._target, "response", status)

    def result(self, outcome: str, state: str) -> None:
        """Passed on."""
        self._hook(self._target, "result", outcome, state)

    def _hook(self, target: object, method: str, *args: object) -> None:
        try:
            getattr(target, method)(*args)
        except Exception as exc:
            self._guard.failed(method, exc)
