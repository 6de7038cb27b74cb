"""Errors as RFC 9457 problem details (``application/problem+json``), worded for whom they concern.

- The end user (a retake, the wrong side, an expired card): what happened and what to do, in
  words they understand, status 422 (409 for a step out of order).
- Nobody's fault, nothing decided (a connection, a timeout, a 5xx, a throttle): try again,
  status 503 with ``Retry-After``.
- The operators (credentials, the tenant's bundle, a bug): a generic message to the user, status
  500, and an alert in the log, with what the team needs (error type, status, code, the Vlens
  request id, the problem's ``instance``) and no personal data.
- The user's own Vlens token refused (expired, bogus: :class:`SignInAgain`): status 401 with
  ``WWW-Authenticate: Bearer``, and a warning in the log, not an alert.

The library says whom an error concerns (``VlensError.audience``); this module adds only the
words. Problem types are relative URIs, ``/problems/<slug>``: each is a short page served by the
app (:func:`install`), and listed in the README.
"""

from __future__ import annotations

import html
import logging
import math
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from vlens_async import (
    DocumentError,
    DocumentExpiredError,
    DocumentMismatchError,
    FaceError,
    FrameTimingError,
    IdenticalFramesError,
    ImageError,
    ImageRejectedError,
    LivenessFailedError,
    StepOrderError,
    TransactionClosedError,
    ValidationFailedError,
    VerificationFailedError,
    VlensError,
    WrongSideError,
)

from .store import Busy

__all__ = ["PROBLEMS", "Problem", "SignInAgain", "VerificationEnded", "install", "problem_for"]

logger: Final = logging.getLogger("fastapi_kyc")

MEDIA_TYPE: Final = "application/problem+json"
DEFAULT_RETRY_AFTER: Final = 5  # seconds, when the service named no delay


class SignInAgain(Exception):
    """Vlens refused the end user's token (expired or not a token) while the app's key works."""


class VerificationEnded(Exception):
    """``error`` was the verification's last word: the transaction is now ``FAILED``."""

    def __init__(self, error: VlensError) -> None:
        super().__init__(type(error).__name__)
        self.error = error


@attrs.frozen
class Problem:
    """What a problem details response says: its status, type (``/problems/<slug>``, or
    ``about:blank`` without a slug: a plain HTTP error titled by its status), title and detail.
    ``ends``: the detail already tells the user to start over."""

    status: int
    slug: str | None
    title: str
    detail: str
    ends: bool = attrs.field(default=False, kw_only=True)


# Steps the flow refused before sending anything: the page asked out of order.
_ORDER: Final[tuple[tuple[type[VlensError], Problem], ...]] = (
    (StepOrderError, Problem(
        409, "card-first", "Scan your card first",
        "Take the photos of the front and the back of your ID card before those of your face.",
    )),
    (TransactionClosedError, Problem(
        409, "verification-finished", "This verification has already finished",
        "There is nothing more to send. If it did not succeed, start over.",
    )),
)  # fmt: skip

# The end user's problems, first match wins.
_USER: Final[tuple[tuple[type[VlensError], Problem], ...]] = (
    (DocumentExpiredError, Problem(
        422, "expired-card", "Your ID card has expired",
        "This card is no longer valid. Start over with a national ID card that has not expired.",
        ends=True,
    )),
    (DocumentMismatchError, Problem(
        422, "different-cards", "The front and the back are from different cards",
        "Start over and photograph both sides of the same card.",
        ends=True,
    )),
    (WrongSideError, Problem(
        422, "wrong-side", "That is the other side of the card",
        "Turn the card over and take the photo again.",
    )),
    (DocumentError, Problem(
        422, "unreadable-card", "We could not read your card",
        "Take the photo again: the whole card, flat, in good light and without glare.",
    )),
    (FaceError, Problem(
        422, "face-not-clear", "We could not see your face clearly",
        "Face the camera in good light, alone in the picture, and take the photos again.",
    )),
    (LivenessFailedError, Problem(
        422, "not-live", "We could not confirm that it is you in front of the camera",
        "Take the three photos again, facing the camera.",
    )),
    (VerificationFailedError, Problem(
        422, "not-verified", "Your identity could not be verified",
        "Start over, or contact us if it happens again.",
        ends=True,
    )),
    (ValidationFailedError, Problem(
        422, "details-not-checked", "Some details on your card could not be checked",
        "Take the photo again, sharp and in good light.",
    )),
    (IdenticalFramesError, Problem(
        422, "same-photos", "The three photos are the same",
        "Hold the phone naturally and take the three photos again.",
    )),
    (FrameTimingError, Problem(
        422, "photos-too-slow", "The three photos were not taken quickly enough",
        "Take them again: they must be taken within half a second.",
    )),
    (ImageError, Problem(
        422, "unusable-photo", "We could not use that photo",
        "Take it again, or choose a JPEG or PNG photo.",
    )),
    (ImageRejectedError, Problem(
        422, "unusable-photo", "We could not use that photo",
        "Take it again, sharp and in good light.",
    )),
)  # fmt: skip

_UNUSABLE: Final = Problem(
    422, "unusable-input", "We could not use what you sent", "Please take the photo again."
)
TRY_AGAIN: Final = Problem(
    503,
    "try-again",
    "Please try again in a moment",
    "The verification service could not be reached or was busy. Nothing was lost.",
)
OUR_FAULT: Final = Problem(
    500,
    "internal",
    "Something went wrong on our side",
    "We have been alerted and are looking into it. Please try again later.",
)
IN_PROGRESS: Final = Problem(
    409,
    "in-progress",
    "Your previous step is still being checked",
    "Wait a moment and try again.",
)
SIGN_IN_AGAIN: Final = Problem(
    401,
    "sign-in-again",
    "Please sign in again",
    "Your session with the verification service has ended. Sign in again to continue.",
)
INVALID_REQUEST: Final = Problem(
    422,
    "invalid-request",
    "The request is not valid",
    "The detail names each field that is wrong and why.",
)
# After the verification's last try: what a retake problem says instead.
LAST_TRY: Final = "That was the last try for this verification. Start over to try again."


def _by_slug(*problems: Problem) -> dict[str, Problem]:
    by_slug: dict[str, Problem] = {}
    for problem in problems:
        if problem.slug is not None:
            by_slug.setdefault(problem.slug, problem)
    return by_slug


PROBLEMS: Final[Mapping[str, Problem]] = _by_slug(
    *(p for _, p in _ORDER),
    *(p for _, p in _USER),
    _UNUSABLE,
    TRY_AGAIN,
    OUR_FAULT,
    IN_PROGRESS,
    SIGN_IN_AGAIN,
    INVALID_REQUEST,
)
"""Every problem type by slug (the first of a slug's problems), each served at its URI."""


def problem_for(exc: VlensError, *, ended: bool = False) -> Problem:
    """The problem to show for ``exc``: by whom it concerns, in that audience's words.
    ``ended``: the error left the verification ``FAILED``, so a retake is no longer possible."""
    for cls, problem in _ORDER:
        if isinstance(exc, cls):
            return problem
    if exc.audience == "user":
        problem = next((p for cls, p in _USER if isinstance(exc, cls)), _UNUSABLE)
        if ended and not problem.ends:
            return attrs.evolve(problem, detail=LAST_TRY, ends=True)
        return problem
    return TRY_AGAIN if exc.audience == "retry" else OUR_FAULT


def problem_response(
    problem: Problem,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    """The ``application/problem+json`` response; ``instance`` names this occurrence (a fresh
    URN unless given; logged with any alert, so a user's report can be matched to it)."""
    body = {
        "type": f"/problems/{problem.slug}" if problem.slug else "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": detail or problem.detail,
        "instance": instance or f"urn:uuid:{uuid.uuid4()}",
    }
    return JSONResponse(body, problem.status, headers=headers, media_type=MEDIA_TYPE)


async def _vlens_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VlensError)
    return _answer(exc, ended=False)


async def _ended(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VerificationEnded)
    return _answer(exc.error, ended=True)


def _answer(exc: VlensError, *, ended: bool) -> JSONResponse:
    problem, instance = problem_for(exc, ended=ended), f"urn:uuid:{uuid.uuid4()}"
    headers = None
    if problem is OUR_FAULT:
        _alert(exc, instance)
    elif problem is TRY_AGAIN:
        retry_after = getattr(exc, "retry_after", None) or DEFAULT_RETRY_AFTER
        headers = {"Retry-After": str(math.ceil(retry_after))}
        logger.warning("vlens unavailable (%s): the user was asked to retry", type(exc).__name__)
    return problem_response(problem, headers=headers, instance=instance)


def _alert(exc: BaseException, instance: str) -> None:
    # Only what the error carries about the call: never its images, fields or the user's token.
    logger.error(
        "ALERT vlens needs an operator: %s status=%s error_code=%s vlens_request_id=%s problem=%s",
        type(exc).__name__,
        getattr(exc, "status", None),
        getattr(exc, "error_code", None),
        getattr(exc, "request_id", None),
        instance,
    )


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    # Starlette still re-raises it afterwards, so the server logs the traceback.
    instance = f"urn:uuid:{uuid.uuid4()}"
    _alert(exc, instance)
    return problem_response(OUR_FAULT, instance=instance)


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(IN_PROGRESS, headers={"Retry-After": "2"})


async def _sign_in_again(request: Request, exc: Exception) -> JSONResponse:
    # Anyone can send a bogus token: a warning, never an alert, and never the token.
    logger.warning("vlens refused the user's token: they were asked to sign in again")
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return problem_response(SIGN_IN_AGAIN, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    problem = Problem(exc.status_code, None, HTTPStatus(exc.status_code).phrase, str(exc.detail))
    return problem_response(problem, headers=exc.headers)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    sentences = dict.fromkeys(_plainly(error) for error in exc.errors())  # once each, in order
    return problem_response(INVALID_REQUEST, detail=" ".join(sentences))


# The request's fields in plain words: the whole of a list, and one of its items (from 1).
_FIELDS: Final = {
    "frames": ("The list of frames", "Frame {}"),
    "capture_times": ("The list of capture times", "Capture time {}"),
}
# What is wrong, by pydantic's error type: plain words, never the input (an image, a token).
_WRONG: Final = {
    "json_invalid": "is not valid JSON",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "missing": "is missing",
    "list_type": "must be a list",
    "too_short": "must hold at least {min_length} items",
    "too_long": "must hold at most {max_length} items",
    "base64_decode": "is not valid base64",
    "bytes_type": "must be a string",
    "string_type": "must be a string",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "literal_error": "is not one of the accepted values",
    "enum": "is not one of the accepted values",
}


def _plainly(error: Mapping[str, Any]) -> str:
    """One sentence for one of pydantic's errors: which field, and what is wrong with it
    ("Frame 1 is not valid base64."); pydantic's own words name parsers and may quote data."""
    where = [part for part in error["loc"] if part not in ("body", "path", "query", "header")]
    if not where:
        subject = "The request body"
    elif where[0] in _FIELDS and len(where) == 1:
        subject = _FIELDS[where[0]][0]
    elif where[0] in _FIELDS and len(where) == 2 and isinstance(where[1], int):
        subject = _FIELDS[where[0]][1].format(where[1] + 1)
    else:
        subject = "The field " + ".".join(str(part) for part in where)
    try:
        wrong = _WRONG.get(error["type"], "is not valid").format(**(error.get("ctx") or {}))
    except (KeyError, IndexError):  # a template's numbers not given: say less
        wrong = "is not valid"
    return f"{subject} {wrong}."


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>HTTP status {status}. What the user is told:</p><p>{detail}</p></body>
</html>
"""


async def _problem_page(slug: str) -> HTMLResponse:
    """The page a problem type's URI names: its title, status and what the user reads."""
    problem = PROBLEMS.get(slug)
    if problem is None:
        raise HTTPException(404, "There is no such problem type.")
    fields = {name: html.escape(str(value)) for name, value in attrs.asdict(problem).items()}
    return HTMLResponse(_PAGE.format(**fields))


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with problem details, and serve each problem type's page
    at ``/problems/<slug>``."""
    app.add_api_route("/problems/{slug}", _problem_page, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(VlensError, _vlens_error)
    app.add_exception_handler(VerificationEnded, _ended)
    app.add_exception_handler(SignInAgain, _sign_in_again)
    app.add_exception_handler(Busy, _busy)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _bug)
