"""Redaction of personal data and secrets in free text (a leaf module: stdlib only).

Server messages, URLs and our own diagnostics pass through :func:`redact` before they reach a log
line, a repr or an exception message. National ID numbers keep their last 4 digits; phone numbers,
e-mail addresses, bearer tokens and long base64 runs are replaced entirely.
"""

from __future__ import annotations

import re

__all__ = ["mask_id", "redact"]

_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{64,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+\d[\d\s-]{6,}\d")
_LONG_DIGITS = re.compile(r"\d{8,}")


def mask_id(value: str | None) -> str:
    """Show only the last 4 characters of an identifier such as a national ID number."""
    if not value:
        return ""
    return "*" * max(len(value) - 4, 0) + value[-4:]


def redact(text: str, *, limit: int = 300) -> str:
    """Return ``text`` with secrets and personal data masked, cut to ``limit`` characters."""
    out = _BASE64_RUN.sub("<redacted>", text)
    out = _BEARER.sub("Bearer <redacted>", out)
    out = _EMAIL.sub("<email>", out)
    out = _PHONE.sub("<phone>", out)
    out = _LONG_DIGITS.sub(lambda m: mask_id(m.group(0)), out)
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out
