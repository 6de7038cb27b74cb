"""The error tree: class selection by status and error_code, plain names, pickling, the three-
frames refusal."""

from __future__ import annotations

import pickle

import pytest

import vlens_async
from tests.helpers.flow import ScriptedClient
from vlens_async import VlensClient, errors, flow
from vlens_async.emulator import RunningEmulator


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


# (status, code, plain name): combined status+code classes and the status family they also join.
COMBINED = [
    (422, 3010, "DocumentExpiredError"),
    (502, 3101, "DocumentMismatchError"),
    (422, 3001, "DocumentError"),
    (422, 7001, "WrongSideError"),
    (400, 4003, "TooManyAttemptsError"),
    (429, 4001, "BundleError"),
    (503, 4206, "FaceError"),
    (415, 5001, "ImageRejectedError"),
    (400, 9999, "VlensAPIError"),
]


@pytest.mark.parametrize(("status", "code", "name"), COMBINED)
def test_combined_classes_keep_the_plain_name(status: int, code: int, name: str) -> None:
    """A status+code error shows its plain family name in type, repr and error_type_name."""
    err = errors.api_error_class(status, code)("m", status=status, error_code=code)
    assert type(err) is not getattr(errors, name)  # a combined class, not the plain one
    assert type(err).__name__ == type(err).__qualname__ == name
    assert repr(err).startswith(f"{name}(message='m', status={status}, error_code={code}")
    assert flow.error_type_name(err) == name
    assert "[" not in repr(err) + str(err)


@pytest.mark.parametrize(("status", "code", "name"), COMBINED)
def test_combined_classes_are_both_families(status: int, code: int, name: str) -> None:
    """A status+code error is caught by its code family and by its status family."""
    err = errors.api_error_class(status, code)("m", status=status, error_code=code)
    assert isinstance(err, getattr(errors, name))
    assert isinstance(err, errors.api_error_class(status, None))


@pytest.mark.parametrize(("status", "code", "name"), COMBINED)
def test_combined_errors_pickle_as_both_families(status: int, code: int, name: str) -> None:
    """Pickling keeps both families, the plain name and every attribute the server gave."""
    err = errors.api_error_class(status, code)(
        "m", status=status, error_code=code, request_id="req-1", retry_after=2.0
    )
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert type(clone).__name__ == name
    assert (clone.message, clone.status, clone.error_code, clone.request_id, clone.retry_after) == (
        "m",
        status,
        code,
        "req-1",
        2.0,
    )
    assert str(clone) == str(err)
    assert repr(clone) == repr(err)


def test_a_pickled_combined_error_is_still_its_status_family() -> None:
    """An unpickled 422+3010 is still caught by `except UnprocessableEntityError`, and an
    unpickled HTML 502 by `except InternalServerError`."""
    err = errors.api_error_class(422, 3010)("m", status=422, error_code=3010)
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, errors.UnprocessableEntityError)
    assert isinstance(clone, errors.DocumentExpiredError)
    assert type(clone) is type(err)
    page = errors.decode_error_class(502)("html", status=502)
    assert isinstance(pickle.loads(pickle.dumps(page)), errors.InternalServerError)


@pytest.mark.parametrize("code", [7001, 7002])
@pytest.mark.parametrize("status", [200, 422])
def test_wrong_side_codes_map_to_wrong_side_error(status: int, code: int) -> None:
    """Codes 7001 and 7002 are a WrongSideError (a DocumentError) on a 200 and with a 422."""
    cls = errors.api_error_class(status, code)
    assert issubclass(cls, errors.WrongSideError)
    assert issubclass(cls, errors.DocumentError)
    assert issubclass(cls, errors.VlensAPIError)
    assert cls.__name__ == "WrongSideError"
    assert (cls is errors.WrongSideError) is (status == 200)
    assert issubclass(cls, errors.UnprocessableEntityError) is (status == 422)


def test_neighbouring_codes_are_not_wrong_side() -> None:
    """Only 7001 and 7002 are WrongSideError: 7000 and 7003 stay generic VlensAPIErrors."""
    assert errors.api_error_class(200, 7000) is errors.VlensAPIError
    assert errors.api_error_class(200, 7003) is errors.VlensAPIError


@pytest.mark.parametrize(
    "family", [errors.FlowError, errors.ConfigurationError, ValueError, errors.VlensError]
)
def test_frame_count_error_is_every_family_it_claims(family: type[Exception]) -> None:
    """FrameCountError is a FlowError, a ConfigurationError, a ValueError and a VlensError."""
    assert isinstance(errors.FrameCountError("two frames"), family)


TWO_FACES = (b"face-1", b"face-2")


async def test_verify_refuses_two_frames_before_sending() -> None:
    """vlens_async.verify() with two frames raises FrameCountError; no step reaches the client."""
    client = ScriptedClient()
    with pytest.raises(errors.FrameCountError, match="3 face frames"):
        await vlens_async.verify(client, b"front", b"back", TWO_FACES, prepare=False)
    assert client.calls == []


async def test_transaction_refuses_two_frames_before_sending() -> None:
    """Transaction.check_liveness with two frames in ID_SCANNED raises FrameCountError, sends
    nothing and leaves the transaction where it was."""
    client = ScriptedClient()
    tx = vlens_async.Transaction(client, prepare=False)
    await tx.scan_front(b"front")
    await tx.scan_back(b"back")
    sent = list(client.calls)
    with pytest.raises(errors.FrameCountError):
        await tx.check_liveness(TWO_FACES)
    assert client.calls == sent
    assert tx.state is vlens_async.FlowState.ID_SCANNED
    assert tx.liveness_attempts == 0


async def test_client_calls_refuse_two_frames_before_sending(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """The client's check_liveness, verify() and vlens_async.verify() with two frames raise
    FrameCountError and the emulator receives no request."""
    before = vlens_emulator.counters()
    with pytest.raises(errors.FrameCountError):
        await vlens_client.check_liveness(TWO_FACES, id_front=b"front", transaction_id="t-1")
    with pytest.raises(errors.FrameCountError):
        await vlens_client.verify(b"front", b"back", TWO_FACES)
    with pytest.raises(errors.FrameCountError):
        await vlens_async.verify(vlens_client, b"front", b"back", TWO_FACES)
    after = vlens_emulator.counters()
    assert after["requests_total"] == before["requests_total"] == 0
    assert after["transactions_created"] == before["transactions_created"] == 0


@pytest.mark.parametrize(
    "err",
    [
        errors.IdenticalFramesError("face_1 and face_2", pair=(0, 1), difference=0.01),
        errors.FrameTimingError("too far apart", spread=0.9),
        errors.FlowError("not now", state="NEW", step="liveness"),
        errors.BulkInputError("bad row", row=7),
        errors.FrameCountError("got 2"),
        errors.UnsupportedImageError("front: empty file"),
    ],
    ids=lambda err: type(err).__name__,
)
def test_local_errors_pickle_with_their_attributes(err: errors.VlensError) -> None:
    """Errors with keyword-only arguments survive pickling, class, message and attributes."""
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert str(clone) == str(err)
    assert vars(clone) == vars(err)


def test_response_too_large_is_a_decode_error_that_pickles_with_its_limit() -> None:
    """ResponseTooLargeError is a ResponseDecodeError, exported, and keeps ``limit`` pickled."""
    err = errors.ResponseTooLargeError("GET /x failed: too large", status=200, limit=1024)
    assert isinstance(err, errors.ResponseDecodeError)
    assert vlens_async.ResponseTooLargeError is errors.ResponseTooLargeError
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is errors.ResponseTooLargeError
    assert (clone.limit, clone.status, clone.body) == (1024, 200, None)


def test_one_table_says_what_each_code_means() -> None:
    """describe_code reads the one table of documented codes; the client's exception message
    for a code uses the same words."""
    assert errors.describe_code(3010) == errors.ERROR_CODE_MEANINGS[3010]
    assert errors.describe_code(3010) == "the document has expired"
    assert errors.describe_code(9999) is None
    with pytest.raises(TypeError):
        errors.ERROR_CODE_MEANINGS[3010] = "changed"  # type: ignore[index]
    from vlens_async._transport import _code_reason

    assert _code_reason(4207) == "no face found"
    assert _code_reason(9999) == "the service refused the request"


@pytest.mark.parametrize(
    ("key", "secret", "words"),
    [
        (1234, "s" * 16, "the key must be a str, not int: pass str"),
        (b"user-1", "s" * 16, "the key must be a str, not bytes"),
        ("user-1", 32, "the secret must be str or bytes, not int"),
    ],
)
def test_transaction_id_for_refuses_other_types_clearly(
    key: object, secret: object, words: str
) -> None:
    """transaction_id_for given a key that is not a str, or a secret that is neither str nor
    bytes (bytes(32) would be 32 zero bytes), raises a TypeError that says so."""
    with pytest.raises(TypeError, match=words):
        vlens_async.transaction_id_for(key, secret)  # type: ignore[arg-type]
    assert vlens_async.transaction_id_for("1234", bytearray(b"s" * 16)) == (
        vlens_async.transaction_id_for("1234", "s" * 16)
    )
