"""The API surface the emulator serves: one short name per endpoint, its method and path.

The names are what counters report and what fault specs target (``500:0.1@liveness``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALIASES", "ENDPOINTS", "canonical_endpoint"]

ENDPOINTS: Final[dict[str, tuple[str, str]]] = {
    "login": ("POST", "/api/credentials/Login"),
    "refresh": ("POST", "/api/credentials/RefreshToken"),
    "check_existence": ("POST", "/api/DigitalIdentity/CheckExistenceOfEmailOrPhone"),
    "verify_phone": ("POST", "/api/DigitalIdentity/Register/StepVerifyPhone"),
    "register": ("POST", "/api/DigitalIdentity/Register"),
    "id_front": ("POST", "/api/DigitalIdentity/verify/id/front"),
    "id_back": ("POST", "/api/DigitalIdentity/verify/id/back"),
    "liveness": ("POST", "/api/DigitalIdentity/verify/liveness/multi"),
    "link": ("POST", "/api/DigitalIdentity/LinkUserWithExistingTransaction"),
    "identity_images": ("GET", "/api/DigitalIdentity/GetUserDigitalIdentityImages"),
    "step_image": ("GET", "/api/DigitalIdentity/GetStepImage"),
}

ALIASES: Final[dict[str, str]] = {
    "front": "id_front",
    "back": "id_back",
    "images": "identity_images",
    "otp": "verify_phone",
}


def canonical_endpoint(name: str) -> str:
    """The canonical endpoint name for ``name`` or an alias; ``"*"`` stays ``"*"``.

    Raises ``ValueError`` for an unknown name.
    """
    key = name.strip().lower()
    if key == "*" or key in ENDPOINTS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    known = ", ".join(sorted([*ENDPOINTS, *ALIASES]))
    raise ValueError(f"unknown endpoint {name!r} (known: {known})")
