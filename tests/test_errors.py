"""The error tree: class selection by status and error_code."""

from __future__ import annotations

import pickle

import pytest

from vlens_async import errors


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, None, errors.BadRequestError),
        (401, None, errors.AuthenticationError),
        (403, None, errors.PermissionDeniedError),
        (404, None, errors.NotFoundError),
        (408, None, errors.RequestTimeoutError),
        (415, None, errors.UnsupportedMediaTypeError),
        (422, None, errors.UnprocessableEntityError),
        (429, None, errors.RateLimitError),
        (500, None, errors.InternalServerError),
        (502, 0, errors.InternalServerError),
        (418, None, errors.APIStatusError),
        (200, 3001, errors.DocumentError),
        (200, 3010, errors.DocumentExpiredError),
        (200, 3101, errors.DocumentMismatchError),
        (200, 4003, errors.TooManyAttemptsError),
        (200, 4001, errors.BundleError),
        (200, 4207, errors.FaceError),
        (200, 5002, errors.ImageRejectedError),
        (200, 1050, errors.ImageRejectedError),
        (200, 7000, errors.VlensAPIError),
        (None, 400, errors.VlensAPIError),
    ],
)
def test_api_error_class_picks_by_status_and_code(
    status: int | None, code: int | None, expected: type[errors.APIError]
) -> None:
    """Each status and error-code family maps to its documented class."""
    assert errors.api_error_class(status, code) is expected


def test_status_with_code_is_both_classes() -> None:
    """A 422 carrying code 3010 is caught by either the status or the code family."""
    cls = errors.api_error_class(422, 3010)
    err = cls("expired", status=422, error_code=3010)
    assert isinstance(err, errors.UnprocessableEntityError)
    assert isinstance(err, errors.DocumentExpiredError)
    assert errors.api_error_class(422, 3010) is cls


def test_api_error_message_is_redacted_and_picklable() -> None:
    """Server text with an ID number, a phone and base64 never reaches str() or repr()."""
    secret = "A" * 80
    err = errors.api_error_class(422, 3001)(
        f"bad id 29901011234567 for +201234567890 {secret}", status=422, error_code=3001
    )
    for text in (str(err), repr(err)):
        assert "29901011234567" not in text
        assert "+201234567890" not in text
        assert secret not in text
        assert "4567" in text
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, errors.DocumentError)
    assert clone.status == 422
