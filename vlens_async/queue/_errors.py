"""The queue's one error: bad input a user must fix (the CLI's exit status 2)."""

from __future__ import annotations

from ..errors import BulkInputError

__all__ = ["QueueError"]


class QueueError(BulkInputError):
    """The queue cannot do what was asked, and nothing was lost: an unreachable or wrong
    database URL, a missing or newer schema, an unknown run, a manifest submitted to a run made
    from another manifest or for another service. The message is one line without secrets."""
