"""The ids the library mints: request ids (to correlate logs) and transaction ids (sent to Vlens).

Transaction ids come from :func:`uuid.uuid4` (the operating system's randomness): they link a
scan to an account, so they must not be guessable. Request ids only correlate logs, so they come
from :mod:`random` (re-seeded in forked children), which costs far less than ``os.urandom``.
"""

from __future__ import annotations

import random
import uuid

__all__ = ["new_request_id", "new_transaction_id"]


def new_transaction_id() -> str:
    """A fresh transaction id: a lowercase hyphenated UUID-4, as the official iOS SDK makes."""
    return str(uuid.uuid4())


def new_request_id() -> str:
    """A fresh ``X-Request-Id``: a random UUID-4 string (not for anything secret)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))
