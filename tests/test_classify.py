"""_classify: the one table of what each error is (kind) and whom it concerns (audience)."""

from __future__ import annotations

import pytest

from vlens_async import _classify, errors
from vlens_async._classify import Kind
from vlens_async.config import RetryPolicy

VERDICT, INPUT, TRANSIENT, FATAL, FAULT = (
    Kind.VERDICT,
    Kind.INPUT,
    Kind.TRANSIENT,
    Kind.FATAL,
    Kind.FAULT,
)
AUDIENCE = {
    VERDICT: "user",
    INPUT: "user",
    TRANSIENT: "retry",
    FATAL: "operator",
    FAULT: "operator",
}


def api(status: int | None, code: int | None = None) -> errors.APIError:
    """An error as the transport builds it: the class for (status, code), both attributes set."""
    return errors.api_error_class(status, code)("m", status=status, error_code=code)


def too_large(status: int) -> errors.APIError:
    """A ResponseTooLargeError as the transport builds it for ``status`` (with its class)."""
    return errors.too_large_error_class(status)("m", status=status, limit=1024)


def proxy_error(status: int | None) -> errors.ProxyError:
    """A ProxyError as the transport builds it: ``proxy_status`` set when the proxy answered."""
    error = errors.ProxyError("m")
    error.proxy_status = status
    return error


# One instance of every exception class in errors.__all__ (exact type), then combined
# status+code classes and errors that are not ours.
KINDS: list[tuple[BaseException, Kind]] = [
    (errors.VlensError("m"), FAULT),
    (errors.ConfigurationError("m"), FAULT),
    (errors.ClientClosedError("m"), FAULT),
    (errors.FlowError("m", state="NEW", step="liveness"), FAULT),
    (errors.FrameCountError("m"), FAULT),
    (errors.StepOrderError("m", state="NEW", step="liveness"), FAULT),
    (errors.TransactionClosedError("m", state="COMPLETED", step="id_front"), FAULT),
    (errors.MissingInputError("m", missing="id_front"), FAULT),
    (errors.JournalError("m"), FAULT),
    (errors.JournalMismatchError("m"), FAULT),
    (errors.InvalidNationalIdError("m"), INPUT),
    (errors.BulkInputError("m", row=3), FAULT),
    (errors.ImageError("m"), INPUT),
    (errors.UnsupportedImageError("m"), INPUT),
    (errors.ImageTooLargeError("m"), INPUT),
    (errors.CompressionError("m"), INPUT),
    (errors.IdenticalFramesError("m", pair=(0, 1)), INPUT),
    (errors.FrameTimingError("m", spread=0.9), INPUT),
    (errors.APIError("m"), TRANSIENT),
    (errors.APIConnectionError("m"), TRANSIENT),
    (errors.APITimeoutError("m"), TRANSIENT),
    # the same certificate on every connection, a proxy's 4xx for every request: operators'
    (errors.UntrustedCertificateError("m"), FATAL),
    (errors.ClientCertificateError("m"), FATAL),  # mutual TLS: every connection ends the same
    (proxy_error(407), FATAL),
    (proxy_error(403), FATAL),
    (proxy_error(408), TRANSIENT),  # the proxy timed out waiting: not a setting
    (proxy_error(429), TRANSIENT),  # the proxy asks to slow down
    (proxy_error(502), TRANSIENT),
    (proxy_error(None), TRANSIENT),  # the proxy refused the connection (restarting, say)
    (errors.ResponseDecodeError("m", body=b"<html>"), TRANSIENT),
    # past max_response_bytes: the same answer would come back; someone has to look
    (errors.ResponseTooLargeError("m", status=200, limit=1024), FAULT),
    (errors.ResponseTooLargeError("m", status=502, limit=1024), FAULT),
    (api(418), FAULT),
    (api(400), VERDICT),
    (api(401), FATAL),
    (api(403), FATAL),
    (api(404), FAULT),
    (api(408), TRANSIENT),
    (api(415), VERDICT),
    (api(422), VERDICT),
    (api(429), TRANSIENT),
    (api(500), TRANSIENT),
    (api(200, 7000), VERDICT),
    (api(200, 3001), VERDICT),
    (api(200, 3010), VERDICT),
    (api(200, 3101), VERDICT),
    (api(200, 7001), VERDICT),
    (api(200, 4001), FATAL),
    (api(200, 4003), TRANSIENT),
    (api(200, 4207), VERDICT),
    (api(200, 5001), VERDICT),
    (errors.ValidationFailedError("m", status=200), VERDICT),
    (errors.VerificationFailedError("m", status=200), VERDICT),
    (errors.LivenessFailedError("m", status=200), VERDICT),
    # status+code: the code decides, except a throttle and the tenant's bundle
    (api(502, 3010), VERDICT),
    (api(422, 7002), VERDICT),
    (api(503, 4206), VERDICT),
    (api(400, 4003), TRANSIENT),
    (api(429, 4003), TRANSIENT),
    (api(422, 4001), FATAL),
    (errors.decode_error_class(502)("m", status=502, body=b"<html>"), TRANSIENT),
    # a body that is not the envelope judged nothing; a 2xx of the wrong shape is a mismatch
    (errors.decode_error_class(400)("m", status=400, body=b"<html>"), TRANSIENT),
    (errors.decode_error_class(401)("m", status=401, body=b"<html>"), FATAL),
    # an unreadable 4xx body: its status decides, and a verdict's status judged nothing
    (errors.decode_error_class(422)("m", status=422, body=b'{"error_code": 31'), TRANSIENT),
    (errors.decode_error_class(415)("m", status=415, body=b"\x1f\x8b"), TRANSIENT),
    (errors.decode_error_class(404)("m", status=404, body=b"<html>"), FAULT),
    (errors.decode_error_class(403)("m", status=403, body=b"<html>"), FATAL),
    (errors.decode_error_class(429)("m", status=429, body=b"<html>"), TRANSIENT),
    # an empty 4xx body, or JSON that is no object, is no envelope either: no verdict
    (errors.decode_error_class(422)("m", status=422, body=b""), TRANSIENT),
    (errors.decode_error_class(400)("m", status=400, body=b"[1]", envelope=[1]), TRANSIENT),
    (errors.decode_error_class(401)("m", status=401, body=b""), FATAL),
    # too large with a status: the status class comes first, so credentials stay FATAL
    (too_large(401), FATAL),
    (too_large(403), FATAL),
    (too_large(422), FAULT),
    (too_large(429), FAULT),
    (too_large(503), FAULT),
    (errors.ResponseDecodeError("m", status=200, body=b"[1]", envelope=[1]), FAULT),
    (errors.ResponseDecodeError("m", body=b"{}", envelope={}), FAULT),
    # not ours
    (ValueError("m"), FAULT),
    (KeyError("m"), FAULT),
]


def case_id(case: tuple[BaseException, Kind]) -> str:
    exc, _ = case
    status, code = getattr(exc, "status", None), getattr(exc, "error_code", None)
    return f"{type(exc).__name__}-{status}-{code}"


@pytest.mark.parametrize(("exc", "expected"), KINDS, ids=[case_id(c) for c in KINDS])
def test_kind_and_audience_of_every_error(exc: BaseException, expected: Kind) -> None:
    """Each error has its kind, the audience that kind stands for, and the matching predicates."""
    assert _classify.kind(exc) is expected
    assert _classify.audience(exc) == AUDIENCE[expected]
    assert _classify.is_verdict(exc) is (expected is VERDICT)
    assert _classify.is_fatal(exc) is (expected is FATAL)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [c for c in KINDS if isinstance(c[0], errors.VlensError)],
    ids=[case_id(c) for c in KINDS if isinstance(c[0], errors.VlensError)],
)
def test_the_audience_property_agrees_with_classify(exc: errors.VlensError, expected: Kind) -> None:
    """VlensError.audience is _classify.audience, for every error of ours."""
    assert exc.audience == _classify.audience(exc) == AUDIENCE[expected]


def test_every_error_class_has_a_decided_kind() -> None:
    """Every exception class in errors.__all__ has an instance of exactly that class above."""
    public = {
        getattr(errors, name)
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), BaseException)
    }
    covered = {type(exc) for exc, _ in KINDS}
    assert public, "errors.__all__ lists no exception class: the lookup is wrong"
    assert public - covered == set(), sorted(cls.__name__ for cls in public - covered)


STATUSES = RetryPolicy().statuses


def test_the_default_policy_statuses_are_the_ones_assumed_below() -> None:
    """429 and 503 are retried by the default policy and 501 is not (the table relies on it)."""
    assert {429, 503} <= STATUSES
    assert 501 not in STATUSES


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api(429), True),
        (api(503), True),
        (api(408), True),
        (api(501), False),
        (api(500, 0), True),
        (errors.APIConnectionError("reset"), True),
        (errors.APITimeoutError("slow"), True),
        (errors.UntrustedCertificateError("untrusted"), False),
        (errors.ClientCertificateError("no client certificate"), False),
        (proxy_error(407), False),
        (proxy_error(408), True),
        (proxy_error(429), True),
        (proxy_error(503), True),
        (proxy_error(None), True),
        (api(502, 3010), False),  # an expired card on a 502 is still an expired card
        (api(503, 4001), False),  # the bundle on a 503 is still the bundle
        (api(503, 4207), False),
        (errors.ResponseDecodeError("cut", body=b'{"services": '), True),
        (errors.ResponseDecodeError("html", body=b"<html>"), True),
        (errors.ResponseDecodeError("shape", body=b"[1]", envelope=[1]), False),
        (errors.ResponseDecodeError("no body"), False),
        (
            errors.decode_error_class(503)("proxy", status=503, body=b"[1]", envelope=[1]),
            True,
        ),
        (
            errors.decode_error_class(400)("shape", status=400, body=b"{}", envelope={}),
            False,
        ),
        (errors.decode_error_class(400)("html", status=400, body=b"<html>"), True),
        (errors.decode_error_class(422)("cut", status=422, body=b'{"error'), True),
        (errors.decode_error_class(404)("html", status=404, body=b"<html>"), False),
        (errors.decode_error_class(401)("html", status=401, body=b"<html>"), False),
        (errors.ResponseTooLargeError("big", status=200, limit=1024), False),
        (errors.ResponseTooLargeError("big", status=503, limit=1024), False),
        (too_large(503), False),
        (too_large(401), False),
        (errors.decode_error_class(422)("empty", status=422, body=b""), True),
        (errors.decode_error_class(422)("list", status=422, body=b"[1]", envelope=[1]), False),
        (api(200, 4003), False),  # a throttle on a 200 is the caller's to pace
        (api(429, 4003), True),
        (api(401), False),
        (api(404), False),
        (api(400), False),
        (errors.APIError("m"), False),
        (errors.IdenticalFramesError("m", pair=(0, 1)), False),
        (errors.ConfigurationError("m"), False),
        (ValueError("m"), False),
        (ConnectionResetError("not ours"), False),
    ],
    ids=lambda value: case_id((value, FAULT)) if isinstance(value, BaseException) else None,
)
def test_is_transient(exc: BaseException, expected: bool) -> None:
    """Only an undecided request may be sent again: no verdict, no fatal, no wrong-shaped JSON."""
    assert _classify.is_transient(exc, STATUSES) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api(200, 4003), True),
        (api(429), True),
        (api(429, 4001), False),  # the bundle, whatever the status says
        (api(429, 3001), False),  # a verdict on the document
        (api(503), True),
        (api(200, 3010), False),
        (errors.ResponseDecodeError("shape", status=200, body=b"{}", envelope={}), False),
    ],
    ids=lambda value: case_id((value, FAULT)) if isinstance(value, BaseException) else None,
)
def test_is_transient_for_a_caller_that_paces_throttles(exc: BaseException, expected: bool) -> None:
    """With ``throttles`` a 4003 is worth another go too, but never a verdict or the bundle."""
    assert _classify.is_transient(exc, STATUSES, throttles=True) is expected


def test_is_transient_follows_the_callers_statuses() -> None:
    """The same 503 is transient or not by the statuses given; a connection error always is."""
    assert _classify.is_transient(api(503), {503}) is True
    assert _classify.is_transient(api(503), set()) is False
    assert _classify.is_transient(errors.APIConnectionError("reset"), set()) is True


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api(429), True),
        (api(200, 4003), True),
        (api(429, 4003), True),
        (api(400, 4003), True),
        (api(503), False),
        (api(200, 4001), False),
        (errors.APIConnectionError("reset"), False),
    ],
    ids=lambda value: case_id((value, FAULT)) if isinstance(value, BaseException) else None,
)
def test_is_throttle(exc: BaseException, expected: bool) -> None:
    """HTTP 429 and code 4003 (on any status) are the two slow-down signals; nothing else is."""
    assert _classify.is_throttle(exc) is expected
