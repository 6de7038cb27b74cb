"""The verification flow: the ``Transaction`` state machine and the pipelined :func:`verify`.

- :mod:`._machine`: states, events and every transition, failures included (pure, no I/O).
- :mod:`._transaction`: :class:`Transaction`, one verification on one transaction id: the lock,
  the per-step records, snapshot and restore.
- :mod:`._outcome`: :class:`VerificationOutcome` and :class:`StepRecord`, and their JSON.
- :mod:`._pipeline`: :func:`verify`, the whole flow in one await.

The machine::

    NEW ──front──► FRONT_SCANNED ──back───┐
     │                                    ├──► ID_SCANNED ──liveness──► COMPLETED
     └──back───► BACK_SCANNED ───front────┘

    any non-final state ──expired card (3010) / front and back of two cards (3101)──► FAILED
    ID_SCANNED ──frames rejected (the last allowed attempt) / verification not passed──► FAILED
    a side already done ──its rescan rejected──► that side undone

Front and back go in either order; liveness is legal only in ``ID_SCANNED``, and an illegal step
raises a :class:`~vlens_async.errors.FlowError` before anything is sent:
:class:`~vlens_async.errors.StepOrderError` (out of order),
:class:`~vlens_async.errors.TransactionClosedError` (completed or failed), or
:class:`~vlens_async.errors.MissingInputError` (an input the step needs is not held, such as the
ID front after a restore).
"""

from __future__ import annotations

from .._classify import is_verdict
from ._machine import FlowState, Step, StepStatus, next_state
from ._outcome import StepRecord, VerificationOutcome, error_type_name
from ._pipeline import verify
from ._transaction import (
    DEFAULT_MAX_LIVENESS_ATTEMPTS,
    SNAPSHOT_VERSION,
    FlowClient,
    Transaction,
)

__all__ = [
    "DEFAULT_MAX_LIVENESS_ATTEMPTS",
    "SNAPSHOT_VERSION",
    "FlowClient",
    "FlowState",
    "Step",
    "StepRecord",
    "StepStatus",
    "Transaction",
    "VerificationOutcome",
    "error_type_name",
    "is_verdict",
    "next_state",
    "verify",
]
