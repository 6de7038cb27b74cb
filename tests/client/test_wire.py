"""The private converter: golden seed responses into models, casing, dates, strictness, bodies."""

from __future__ import annotations

import base64
import re
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import cattrs
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.helpers.client import golden
from vlens_async import _wire
from vlens_async.errors import ResponseDecodeError
from vlens_async.models import (
    AMLCase,
    Envelope,
    ExistenceResult,
    IdentityImageRefs,
    PhoneOtpResult,
    RegistrationResult,
    Services,
    StepImage,
    Tokens,
    ValidationIssue,
    VerificationResponse,
)

VERIFY_FIXTURES = [
    "gitbook_verify_response.json",
    "readme_verify_id_back_response.json",
    "readme_link_existing_transaction_response.json",
    "guide_liveness_success_response.json",
]


@pytest.mark.parametrize("name", VERIFY_FIXTURES)
def test_every_seed_verification_response_parses(name: str) -> None:
    """Each verification response shape shown in the seeds decodes into VerificationResponse."""
    model = _wire.structure(golden(name), VerificationResponse)
    assert isinstance(model, VerificationResponse)
    assert model.data.is_verification_process_completed is True


def test_gitbook_response_reads_every_field() -> None:
    """The GitBook example (both casings of validations/transaction id) lands on every field."""
    r = _wire.structure(golden("gitbook_verify_response.json"), VerificationResponse)
    s = r.services
    # "Validations" and "validations" carry the same entry: merged, not duplicated, not lost.
    assert s.validations == (
        ValidationIssue(field="text", value="text", errors=(_detail(1, "text"),)),
    )
    assert s.spoofing is not None
    assert s.spoofing.fake is True
    assert s.classification is not None
    assert s.classification.doc_type == "text"
    assert s.liveness is True
    assert s.aml is not None
    assert s.aml.aml_matched is True
    case = s.aml.cases[0]
    assert case == AMLCase(
        case_no="text",
        case_year=1,
        record_date=datetime(2025, 11, 8, 3, 50, 48, 69000, tzinfo=UTC),
        full_name="text",
        id_number="text",
        date_of_birth=datetime(2025, 11, 8, 3, 50, 48, 69000, tzinfo=UTC),
        score="text",
    )
    assert s.src is not None
    assert (s.src.is_valid, s.src.error_code, s.src.error_key, s.src.error_message) == (
        True,
        1,
        "text",
        "text",
    )
    d = r.data
    assert d.is_digital_identity_verified is True
    assert d.device_info == "text"
    assert d.user is not None
    assert d.user.id == 1
    assert d.user.full_name == "text"
    assert d.user.email_address == "text"
    assert d.user.phone_number == "text"
    front, back = d.id_front_data, d.id_back_data
    assert front is not None
    assert back is not None
    for name in (
        "first_name",
        "last_names",
        "name",
        "first_name_english",
        "last_names_english",
        "name_english",
        "address",
        "address_1",
        "address_2",
        "address_english",
        "address_1_english",
        "address_2_english",
        "govern",
        "govern_english",
        "city",
        "district",
        "id_number",
        "id_key",
        "gender",
        "client_transaction_id",
    ):
        assert getattr(front, name) == "text", name
    assert front.transaction_id == "123e4567-e89b-12d3-a456-426614174000"
    assert front.request_id == "123e4567-e89b-12d3-a456-426614174000"
    assert front.date_of_birth == datetime(2025, 11, 8, 3, 50, 48, 69000, tzinfo=UTC)
    for name in (
        "marital_status",
        "marital_status_english",
        "job",
        "job_english",
        "job_title",
        "job_title_english",
        "religion",
        "religion_english",
        "husband_name",
        "husband_name_english",
        "id_number",
        "gender",
        "gender_english",
        "client_transaction_id",
    ):
        assert getattr(back, name) == "text", name
    assert back.release_date == datetime(2025, 11, 8, 3, 50, 48, 69000, tzinfo=UTC)
    assert back.id_expiry == datetime(2025, 11, 8, 3, 50, 48, 69000, tzinfo=UTC)
    assert back.transaction_id == "123e4567-e89b-12d3-a456-426614174000"
    assert r.error_code == 1
    assert r.error_message == "text"
    assert r.error_descriptions is None
    assert r.transaction_id == "123e4567-e89b-12d3-a456-426614174000"


def test_readme_response_reads_lowercase_validations_and_whole_second_dates() -> None:
    """The readme.io example (lowercase validations, dates without a fraction) decodes fully."""
    r = _wire.structure(golden("readme_verify_id_back_response.json"), VerificationResponse)
    assert len(r.services.validations) == 1
    assert r.services.validations[0].errors[0].code == 1
    back = r.data.id_back_data
    assert back is not None
    assert back.husband_name_english == "string"
    assert back.id_expiry == datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
    assert r.data.user is not None
    assert r.data.user.address == "string"
    assert r.transaction_id == "string"


def test_guide_liveness_response() -> None:
    """The guide's small liveness success: flags, SRC, AML, and the user's ID number."""
    r = _wire.structure(golden("guide_liveness_success_response.json"), VerificationResponse)
    assert r.validated
    assert r.verified
    assert r.services.liveness is True
    assert r.services.spoofing is not None
    assert r.services.spoofing.fake is False
    assert r.services.src is not None
    assert r.services.src.is_valid is True
    assert r.services.aml is not None
    assert r.services.aml.aml_matched is False
    assert r.services.aml.cases == ()
    assert r.data.user is not None
    assert r.data.user.id_number == "29901234567890"
    assert r.error_code is None
    assert r.services.validations == ()


@pytest.mark.parametrize(
    ("name", "data_type", "check"),
    [
        (
            "readme_list_identity_images_response.json",
            IdentityImageRefs,
            lambda d: (
                d.liveness_face03_image == "user123_liveness_face3_20240601.jpg"
                and d.id_front_image == "user123_id_front_20240601.jpg"
            ),
        ),
        (
            "apimd_login_response.json",
            Tokens,
            lambda d: (
                d.refresh_token_expire_in_seconds == 604800
                and d.current_refresh_token == "admin-refresh-token-1"
            ),
        ),
        (
            "apimd_refresh_token_response.json",
            Tokens,
            lambda d: (
                d.current_refresh_token == "admin-refresh-token-2"
                and d.encrypted_access_token is not None
            ),
        ),
        ("apimd_check_existence_response.json", ExistenceResult, lambda d: d.exists is False),
        (
            "apimd_phone_otp_response.json",
            PhoneOtpResult,
            lambda d: (
                d.phone_number_otp_request_id.startswith("5b0b")
                and d.is_phone_number_confirmed is False
            ),
        ),
        (
            "apimd_register_response.json",
            RegistrationResult,
            lambda d: d.user.id == 42 and d.user.phone_number == "+201234567890",
        ),
        ("apimd_step_image_response.json", StepImage, lambda d: d.image.startswith("/9j/")),
    ],
)
def test_other_envelopes_parse(name: str, data_type: type[Any], check: Any) -> None:
    """The image-reference, token, OTP, existence, registration and image envelopes decode."""
    envelope = _wire.structure(golden(name), Envelope[data_type])  # type: ignore[valid-type]
    assert isinstance(envelope.data, data_type)
    assert check(envelope.data)
    assert not envelope.error_code  # 0 and null both mean success


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-06-01T10:30:00Z", datetime(2024, 6, 1, 10, 30, tzinfo=UTC)),
        ("2024-06-01T10:30:00.1Z", datetime(2024, 6, 1, 10, 30, 0, 100000, tzinfo=UTC)),
        ("2024-06-01T10:30:00.069Z", datetime(2024, 6, 1, 10, 30, 0, 69000, tzinfo=UTC)),
        ("2024-06-01T10:30:00.123456Z", datetime(2024, 6, 1, 10, 30, 0, 123456, tzinfo=UTC)),
        ("2024-06-01T10:30:00.1234567Z", datetime(2024, 6, 1, 10, 30, 0, 123456, tzinfo=UTC)),
        ("2024-06-01T10:30:00.1234567", datetime(2024, 6, 1, 10, 30, 0, 123456, tzinfo=UTC)),
        ("2024-06-01T10:30:00", datetime(2024, 6, 1, 10, 30, tzinfo=UTC)),
        ("2024-06-01T10:30Z", datetime(2024, 6, 1, 10, 30, tzinfo=UTC)),
        ("2024-06-01 10:30:00.5", datetime(2024, 6, 1, 10, 30, 0, 500000, tzinfo=UTC)),
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC)),
        (
            "2024-06-01T10:30:00.1234567+02:00",
            datetime(2024, 6, 1, 10, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2024-06-01T10:30:00+0200", datetime(2024, 6, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_dates_with_0_to_7_fraction_digits(text: str, expected: datetime) -> None:
    """ISO dates parse whatever the fraction length (7 is .NET's) and zone form; naive is UTC."""
    assert _wire.parse_datetime(text) == expected


@pytest.mark.parametrize("text", ["", "15/01/2024", "2024-13-01", "2024-02-30T00:00:00Z", "soon"])
def test_bad_dates_are_refused_without_echoing_them(text: str) -> None:
    """A non-date raises ValueError whose message does not repeat the value."""
    with pytest.raises(ValueError, match="date") as info:
        _wire.parse_datetime(text)
    assert not text or text not in str(info.value)


def test_key_variants_unknown_keys_and_nulls() -> None:
    """transactionId, AML/aml, SRC, maritalStatus variants map; unknown keys and nulls ignored."""
    payload = {
        "services": {"aml": {"aml_matched": False}, "src": {"IsValid": False}, "newThing": 1},
        "data": {
            "idBackData": {"marital_status": "x", "transactionId": "t-1", "future": [1]},
            "user": None,
        },
        "ERROR_CODE": 0,
        "brandNewTopLevel": {"a": 1},
    }
    r = _wire.structure(payload, VerificationResponse)
    assert r.services.aml is not None
    assert r.services.aml.aml_matched is False
    assert r.services.src is not None
    assert r.services.src.is_valid is False
    assert r.data.id_back_data is not None
    assert r.data.id_back_data.marital_status == "x"
    assert r.transaction_id == "t-1"
    assert r.data.user is None
    assert r.error_code == 0


def test_both_validation_spellings_are_merged() -> None:
    """Different entries under Validations and validations are all kept."""
    payload = {
        "services": {
            "Validations": {"validation_errors": [{"field": "a"}]},
            "validations": {"validation_errors": [{"field": "b"}, {"field": "a"}]},
        }
    }
    s = _wire.structure(payload, VerificationResponse).services
    assert [i.field for i in s.validations] == ["a", "b"]


def test_numbers_for_strings_and_strict_booleans() -> None:
    """An ID number sent as a JSON number becomes text; 'false' is False, not truthy."""
    payload = {
        "data": {"idFrontData": {"idNumber": 29901011234567}},
        "services": {"liveness": "false", "spoofing": {"fake": 0}},
    }
    r = _wire.structure(payload, VerificationResponse)
    assert r.data.id_front_data is not None
    assert r.data.id_front_data.id_number == "29901011234567"
    assert r.services.liveness is False
    assert r.services.spoofing is not None
    assert r.services.spoofing.fake is False


def test_blank_optional_values_are_absent_and_bools_read_as_text() -> None:
    """A date, number or bool OCR could not read comes back as "": absent, not a broken reply.

    A blank string field stays blank, and a validation value the server sent as a JSON bool is
    text ("true"/"false") like every other value.
    """
    payload = {
        "error_code": "",
        "data": {
            "idFrontData": {"idNumber": "29901011234567", "dateOfBirth": "", "firstName": ""},
            "idBackData": {"releaseDate": " ", "idExpiry": "2030-01-01"},
        },
        "services": {
            "liveness": "",
            "validations": {"validation_errors": [{"field": "married", "value": False}]},
        },
    }
    r = _wire.structure(payload, VerificationResponse)
    assert r.error_code is None
    assert r.data.id_front_data is not None
    assert r.data.id_front_data.date_of_birth is None
    assert r.data.id_front_data.first_name == ""
    assert r.data.id_back_data is not None
    assert r.data.id_back_data.release_date is None
    assert r.data.id_back_data.id_expiry == datetime(2030, 1, 1, tzinfo=UTC)
    assert r.services.liveness is None
    assert [i.value for i in r.services.validations] == ["false"]


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"services": {"liveness": "maybe"}}, "$.services.liveness"),
        ({"services": []}, "$.services"),
        ({"data": {"user": {"id": {"x": 1}}}}, "$.data.user.id"),
        ({"data": {"idFrontData": {"dateOfBirth": "29901011234567"}}}, "date_of_birth"),
        ({"data": {"idFrontData": {"first_name": {"a": "b"}}}}, "first_name"),
        ({"services": {"validations": "oops"}}, "$.services"),
        ({"services": {"AML": {"data": [None]}}}, "$.services.aml.cases"),
        ([], "$"),
    ],
)
def test_shape_errors_become_response_decode_errors(payload: Any, where: str) -> None:
    """cattrs failures surface as ResponseDecodeError with a readable path, never the value."""
    with pytest.raises(ResponseDecodeError) as info:
        _wire.structure(payload, VerificationResponse)
    assert where in str(info.value)
    assert "29901011234567" not in str(info.value)
    assert isinstance(info.value.__cause__, Exception)


def test_required_fields_are_required() -> None:
    """A token response without an access token is a decode error, not a half-built model."""
    with pytest.raises(ResponseDecodeError, match="access_token"):
        _wire.structure({"data": {"expireInSeconds": 5}}, Envelope[Tokens])


def test_converter_is_private() -> None:
    """The factory builds a fresh converter; cattrs' global one is left untouched."""
    assert _wire.make_converter() is not _wire.make_converter()
    assert cattrs.global_converter.structure("true", bool) is True  # global rules unchanged
    with pytest.raises(ResponseDecodeError):
        _wire.structure({"services": {"liveness": "yes"}}, VerificationResponse)


def test_to_plain_round_trips() -> None:
    """to_plain gives JSON-safe data that structure reads back into an equal model."""
    r = _wire.structure(golden("gitbook_verify_response.json"), VerificationResponse)
    plain = _wire.to_plain(r)
    assert orjson.loads(orjson.dumps(plain)) == plain
    assert _wire.structure(plain, VerificationResponse) == r


def test_encode_body_matches_plain_json() -> None:
    """The spliced base64 body equals what json.dumps of the base64 strings would give."""
    images = {"image": b"\xff\xd8front", "face_1": bytes(range(256))}
    fields = {"transaction_id": "t", "getExtractedData": True, "name_check_value": "أحمد"}
    body = _wire.encode_body(fields, images)
    expected = {**fields, **{k: base64.b64encode(v).decode() for k, v in images.items()}}
    assert orjson.loads(body) == expected
    assert orjson.loads(_wire.encode_body({}, {"image": b"x"})) == {"image": "eA=="}
    assert orjson.loads(_wire.encode_body({"a": 1}, {})) == {"a": 1}


def test_b64decode_accepts_data_urls_and_rejects_junk() -> None:
    """Server base64 decodes with or without a data: prefix; junk is a ResponseDecodeError."""
    assert _wire.b64decode("data:image/jpeg;base64,/9j/") == b"\xff\xd8\xff"
    assert _wire.b64decode("/9j/\n") == b"\xff\xd8\xff"
    with pytest.raises(ResponseDecodeError):
        _wire.b64decode("not*base64!")


def test_services_default_when_absent() -> None:
    """A response without services or data still yields empty Services/VerificationData."""
    r = _wire.structure({"error_code": None}, VerificationResponse)
    assert r.services == Services()
    assert r.data.user is None
    assert r.transaction_id is None


# String leaves the converter must never echo: a marker no message of ours contains, then at least
# five letters or digits (short enough that redact() would not hide a leak as a base64 run).
DISTINCTIVE = re.compile(r"~[A-Za-z0-9]{5,20}")
distinctive_text = st.from_regex(DISTINCTIVE, fullmatch=True)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | distinctive_text
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "services",
                    "data",
                    "Validations",
                    "validations",
                    "validation_errors",
                    "errors",
                    "AML",
                    "SRC",
                    "data",
                    "idFrontData",
                    "idBackData",
                    "user",
                    "dateOfBirth",
                    "liveness",
                    "spoofing",
                    "fake",
                    "error_code",
                    "id",
                    "transactionId",
                    "expireInSeconds",
                    "accessToken",
                    "idFrontImage",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)

# One reported problem: "<what> @ <path>", the path as cattrs' transform_error writes it.
PROBLEM_PATH = re.compile(r" @ (\$[^;\s…]*)")
PATH_SEGMENT = re.compile(r"\.([a-z_0-9]+)|\[(\d+)\]")


def string_leaves(value: Any) -> set[str]:
    """Every distinctive string value (not key) anywhere in ``value``."""
    if isinstance(value, str):
        return {value} if DISTINCTIVE.fullmatch(value) else set()
    if isinstance(value, list):
        return set().union(*map(string_leaves, value))
    if isinstance(value, dict):
        return set().union(*map(string_leaves, value.values()))
    return set()


def names_a_field(cls: Any, path: str) -> bool:
    """True when ``path`` ($.a.b[0].c) walks real attrs fields and tuple items of ``cls``."""
    rest = path.removeprefix("$")
    if "".join(m.group(0) for m in PATH_SEGMENT.finditer(rest)) != rest:
        return False
    current = cls
    for match in PATH_SEGMENT.finditer(rest):
        current = without_none(current)
        origin, args = typing.get_origin(current) or current, typing.get_args(current)
        name = match.group(1)
        if name is None:  # [n]: an item of a tuple[X, ...]
            if origin is not tuple:
                return False
            current = args[0]
            continue
        if not attrs.has(origin) or name not in attrs.fields_dict(origin):
            return False
        hint = typing.get_type_hints(origin)[name]
        bound = dict(zip(getattr(origin, "__parameters__", ()), args, strict=True))
        if getattr(hint, "__parameters__", ()):  # T | None in Envelope[Tokens]: Tokens | None
            hint = hint[tuple(bound[p] for p in hint.__parameters__)]
        current = bound.get(hint, hint)
    return True


def without_none(type_: Any) -> Any:
    """X for ``X | None``, else the type itself."""
    if isinstance(type_, types.UnionType) or typing.get_origin(type_) is typing.Union:
        return next(arg for arg in typing.get_args(type_) if arg is not type(None))
    return type_


def assert_decode_error_is_safe(cls: Any, exc: ResponseDecodeError, secrets: set[str]) -> None:
    """The error is a plain ResponseDecodeError naming field paths of ``cls``, no values."""
    assert type(exc) is ResponseDecodeError
    paths = PROBLEM_PATH.findall(str(exc))
    assert paths, str(exc)
    for path in paths:
        assert names_a_field(cls, path), (path, str(exc))
    for secret in secrets:
        assert secret not in str(exc), (secret, str(exc))
        assert secret not in repr(exc), (secret, repr(exc))


def test_path_checker_tells_fields_from_non_fields() -> None:
    """names_a_field (used below) accepts real paths and refuses made-up or cut ones."""
    assert names_a_field(VerificationResponse, "$")
    assert names_a_field(VerificationResponse, "$.services.aml.cases[2].date_of_birth")
    assert names_a_field(VerificationResponse, "$.services.validations[0].errors[1].code")
    assert names_a_field(Envelope[Tokens], "$.data.access_token")
    assert not names_a_field(Envelope[Tokens], "$.data.id_front_image")
    assert not names_a_field(VerificationResponse, "$.servic")
    assert not names_a_field(VerificationResponse, "$.services[0]")
    assert not names_a_field(VerificationResponse, "$.data.idFrontData")


@settings(max_examples=300, deadline=None)
@given(json_value)
@example({"services": {"aml": {"data": "~abcdefgh"}}})  # more problems than fit in a message
@example({"data": {"idFrontData": {"dateOfBirth": "~BCDEFG", "idNumber": {"a": "~xyz123"}}}})
@example(["~leaked1"])
def test_structure_errors_name_paths_and_never_values(payload: Any) -> None:
    """Any JSON decodes to the model, or raises ResponseDecodeError naming real field paths only,
    with no string value from the input in its str() or repr()."""
    secrets = string_leaves(payload)
    for cls in (VerificationResponse, Envelope[Tokens], Envelope[IdentityImageRefs]):
        try:
            model = _wire.structure(payload, cls)
        except ResponseDecodeError as exc:
            assert_decode_error_is_safe(cls, exc, secrets)
        else:
            assert isinstance(model, typing.get_origin(cls) or cls)


def test_too_many_problems_show_whole_ones_then_a_count() -> None:
    """When the problems do not all fit, the message shows whole ones and says how many more."""
    with pytest.raises(ResponseDecodeError) as info:
        _wire.structure({"services": {"aml": {"data": "~abcdefgh"}}}, VerificationResponse)
    message = str(info.value)
    assert len(message) < 300
    assert message.endswith("(and 6 more)"), message
    assert "…" not in message
    assert message.count("@ $.services.aml.cases[") == 3


def _detail(code: int, message: str) -> Any:
    from vlens_async.models import ValidationDetail

    return ValidationDetail(code=code, message=message)


def test_models_import_only_attrs_and_the_standard_library() -> None:
    """models.py imports attrs and stdlib only (ARCHITECTURE.md), nothing of ours."""
    import ast
    import sys
    from pathlib import Path

    from vlens_async import models

    tree = ast.parse(Path(models.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else (node.module or "").split(".")[0])
    allowed = {"attrs", "__future__"} | set(sys.stdlib_module_names)
    assert imported <= allowed, imported - allowed


def test_national_id_repr_keeps_only_the_last_four_digits() -> None:
    """The models' own mask shows the last 4 characters of an id number and stars the rest."""
    from vlens_async.models import IdFrontData

    assert "'**********4567'" in repr(IdFrontData(id_number="29901011234567"))
    assert "id_number=None" in repr(IdFrontData())
    assert "id_number=''" in repr(IdFrontData(id_number=""))


def test_step_image_base64_with_surplus_padding_still_decodes() -> None:
    """Over-padded base64 (accepted by the stdlib) decodes; garbage is a ResponseDecodeError."""
    assert _wire.b64decode("QUJD====") == b"ABC"
    assert _wire.b64decode("data:image/jpeg;base64,QU JD\n") == b"ABC"
    with pytest.raises(ResponseDecodeError):
        _wire.b64decode("QU*D")
