"""vlens-async: an asyncio client and verification-flow orchestrator for the Vlens Digital
Identity API (Egyptian national ID OCR, front and back, then a three-frame liveness check).

Start with :class:`VlensClient`; :meth:`VlensClient.verify` runs the whole flow and
:meth:`VlensClient.transaction` gives the step-by-step :class:`Transaction`. The emulator lives in
:mod:`vlens_async.emulator`, synthetic applicants in :mod:`vlens_async.samples`, and the pytest
fixtures in :mod:`vlens_async.testing`.
"""

from __future__ import annotations

import importlib
import typing

from . import _version
from ._ids import transaction_id_for
from .auth import (
    AdminLogin,
    AuthProvider,
    StaticToken,
)
from .client import (
    VlensClient,
)
from .config import (
    NOT_GIVEN,
    ClientConfig,
    RetryPolicy,
    Timeouts,
)
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BulkInputError,
    BundleError,
    ClientCertificateError,
    ClientClosedError,
    CompressionError,
    ConfigurationError,
    DocumentError,
    DocumentExpiredError,
    DocumentMismatchError,
    FaceError,
    FlowError,
    FrameCountError,
    FrameTimingError,
    IdenticalFramesError,
    ImageError,
    ImageRejectedError,
    ImageTooLargeError,
    InternalServerError,
    InvalidNationalIdError,
    JournalError,
    JournalMismatchError,
    LivenessFailedError,
    MissingInputError,
    NotFoundError,
    PermissionDeniedError,
    ProxyError,
    RateLimitError,
    RequestTimeoutError,
    ResponseDecodeError,
    ResponseTooLargeError,
    StepOrderError,
    TooManyAttemptsError,
    TransactionClosedError,
    UnprocessableEntityError,
    UnsupportedImageError,
    UnsupportedMediaTypeError,
    UntrustedCertificateError,
    ValidationFailedError,
    VerificationFailedError,
    VlensAPIError,
    VlensError,
    WrongSideError,
)
from .flow import (
    FlowState,
    Step,
    StepStatus,
    Transaction,
    VerificationOutcome,
    verify,
)
from .images import (
    ImageInput,
    PreparedFaces,
    PreparedImage,
    prepare_document,
    prepare_document_sync,
    prepare_faces,
    prepare_faces_sync,
)
from .models import (
    AMLCase,
    AMLResult,
    Classification,
    ExistenceResult,
    IdBackData,
    IdentityImageRefs,
    IdFrontData,
    PhoneOtpResult,
    RegistrationResult,
    Services,
    Spoofing,
    SRCResult,
    StepImage,
    Tokens,
    UserInfo,
    ValidationDetail,
    ValidationIssue,
    VerificationData,
    VerificationResponse,
)
from .national_id import (
    CrossCheckFlag,
    NationalId,
    cross_check,
    parse_national_id,
)

if typing.TYPE_CHECKING:
    from . import bulk as bulk
    from .bulk import BulkApplicant, BulkRunner, BulkSummary, RateLimit, run_bulk

    __version__: str

# Loaded on first use: a web app that only wants the client never pays for the bulk runner
# (SQLite, rich, the manifest reader). ``vlens_async.BulkRunner`` works as before.
_LAZY: dict[str, str] = {
    "BulkApplicant": ".bulk",
    "BulkRunner": ".bulk",
    "BulkSummary": ".bulk",
    "RateLimit": ".bulk",
    "run_bulk": ".bulk",
}


def __getattr__(name: str) -> object:
    """Import a lazily exported name on first access."""
    if name == "__version__":
        return _version.version()
    if name == "bulk":  # the subpackage, as an attribute, as when it was imported eagerly
        return importlib.import_module(".bulk", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})


__all__ = [
    "NOT_GIVEN",
    "AMLCase",
    "AMLResult",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AdminLogin",
    "AuthProvider",
    "AuthenticationError",
    "BadRequestError",
    "BulkApplicant",
    "BulkInputError",
    "BulkRunner",
    "BulkSummary",
    "BundleError",
    "Classification",
    "ClientCertificateError",
    "ClientClosedError",
    "ClientConfig",
    "CompressionError",
    "ConfigurationError",
    "CrossCheckFlag",
    "DocumentError",
    "DocumentExpiredError",
    "DocumentMismatchError",
    "ExistenceResult",
    "FaceError",
    "FlowError",
    "FlowState",
    "FrameCountError",
    "FrameTimingError",
    "IdBackData",
    "IdFrontData",
    "IdenticalFramesError",
    "IdentityImageRefs",
    "ImageError",
    "ImageInput",
    "ImageRejectedError",
    "ImageTooLargeError",
    "InternalServerError",
    "InvalidNationalIdError",
    "JournalError",
    "JournalMismatchError",
    "LivenessFailedError",
    "MissingInputError",
    "NationalId",
    "NotFoundError",
    "PermissionDeniedError",
    "PhoneOtpResult",
    "PreparedFaces",
    "PreparedImage",
    "ProxyError",
    "RateLimit",
    "RateLimitError",
    "RegistrationResult",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "SRCResult",
    "Services",
    "Spoofing",
    "StaticToken",
    "Step",
    "StepImage",
    "StepOrderError",
    "StepStatus",
    "Timeouts",
    "Tokens",
    "TooManyAttemptsError",
    "Transaction",
    "TransactionClosedError",
    "UnprocessableEntityError",
    "UnsupportedImageError",
    "UnsupportedMediaTypeError",
    "UntrustedCertificateError",
    "UserInfo",
    "ValidationDetail",
    "ValidationFailedError",
    "ValidationIssue",
    "VerificationData",
    "VerificationFailedError",
    "VerificationOutcome",
    "VerificationResponse",
    "VlensAPIError",
    "VlensClient",
    "VlensError",
    "WrongSideError",
    "cross_check",
    "parse_national_id",
    "prepare_document",
    "prepare_document_sync",
    "prepare_faces",
    "prepare_faces_sync",
    "run_bulk",
    "transaction_id_for",
    "verify",
]
