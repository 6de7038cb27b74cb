"""The ids the library mints: request ids (to correlate logs) and transaction ids (sent to Vlens).

Transaction ids come from :func:`uuid.uuid4` (the operating system's randomness): they link a
scan to an account, so they must not be guessable. :func:`transaction_id_for` derives one from a
key of the caller's (a user or application id) and a secret instead: every process that knows the
key and the secret reaches the same server transaction, and nobody without the secret can guess it.
Request ids only correlate logs, so they come from :mod:`random` (re-seeded in forked children),
which costs far less than ``os.urandom``.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import uuid
from typing import Final

__all__ = [
    "MIN_SECRET_BYTES",
    "new_job_secret",
    "new_request_id",
    "new_transaction_id",
    "transaction_id_for",
]

MIN_SECRET_BYTES: Final = 16
_JOB_SECRET_BYTES: Final = 32
_DOMAIN: Final = b"vlens-async transaction id v1\x00"


def new_transaction_id() -> str:
    """A fresh transaction id: a lowercase hyphenated UUID-4, as the official iOS SDK makes."""
    return str(uuid.uuid4())


def transaction_id_for(key: str, secret: str | bytes) -> str:
    """The transaction id for ``key`` (an application id, say): the same key and secret always
    give the same id, so two copies of one verification (two restored snapshots, two web
    workers, a retried request) can never open two server transactions; without ``secret`` it
    cannot be guessed.

    A lowercase hyphenated UUID in the version-4 layout, its 122 free bits taken from
    HMAC-SHA256(secret, key). ``secret`` is the application's own (keep it out of the code and
    the logs) and at least 16 bytes; a shorter one, or an empty key, raises :class:`ValueError`.
    ``key`` must be a :class:`str` (pass ``str(user_id)`` for a number: ``1234`` and ``"1234"``
    are not silently taken as one key) and ``secret`` a :class:`str` or bytes-like object;
    anything else raises :class:`TypeError`. Use a new key for a new verification of the same
    person (``f"{user_id}:{attempt}"``): a transaction that has completed or failed cannot be
    used again.
    """
    if not isinstance(key, str):
        raise TypeError(f"the key must be a str, not {type(key).__name__}: pass str(key)")
    if isinstance(secret, str):
        secret_bytes = secret.encode()
    elif isinstance(secret, bytes | bytearray | memoryview):
        secret_bytes = bytes(secret)
    else:  # bytes(32) would be 32 zero bytes: a secret anyone can guess
        raise TypeError(f"the secret must be str or bytes, not {type(secret).__name__}")
    if len(secret_bytes) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
    if not key:
        raise ValueError("the key must not be empty")
    digest = hmac.new(secret_bytes, _DOMAIN + key.encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def new_job_secret() -> str:
    """A fresh secret for :func:`transaction_id_for` (32 random bytes, as hex): a bulk journal's
    or a queue run's, stored with it, so its applicants' transaction ids can be derived again."""
    return secrets.token_hex(_JOB_SECRET_BYTES)


def new_request_id() -> str:
    """A fresh ``X-Request-Id``: a random UUID-4 string (not for anything secret)."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))
