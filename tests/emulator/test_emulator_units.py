"""Unit tests of the emulator's pure parts: body parsing, image checks, specs, rules, limiter."""

from __future__ import annotations

import base64
import io
import json
import random
import uuid
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers.emulator import small_jpeg
from vlens_async import samples
from vlens_async.emulator.cache import LruCache
from vlens_async.emulator.faults import FaultConfig, FaultKind, FaultPlan, Latency, parse_duration
from vlens_async.emulator.identity import derive_identity, from_card_fields
from vlens_async.emulator.payload import PayloadError, check_image, parse_body
from vlens_async.emulator.ratelimit import SlidingWindowLimiter
from vlens_async.emulator.readers import FaceInfo
from vlens_async.emulator.rules import check_national_id, liveness_verdict, name_matches

MB5 = 5 * 1024 * 1024
LATER = date(2035, 1, 1)  # after every synthetic release date


def _check(data: bytes | str) -> object:
    value = data if isinstance(data, str) else base64.b64encode(data).decode()
    return check_image("image", value, max_bytes=MB5, max_pixels=25_000_000)


# --- body parsing ---


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=30)),
        max_size=6,
    ),
    st.binary(min_size=1100, max_size=3000),
)
def test_parse_body_matches_json(small: dict[str, object], blob: bytes) -> None:
    """The fast path gives the same object as json.loads (long strings may come as bytes)."""
    doc = {**small, "image": base64.b64encode(blob).decode()}
    body = json.dumps(doc, ensure_ascii=False).encode()
    parsed = parse_body(body)
    expected = json.loads(body)
    image = parsed["image"]
    assert (image.decode() if isinstance(image, bytes) else image) == expected["image"]
    assert {k: v for k, v in parsed.items() if k != "image"} == {
        k: v for k, v in expected.items() if k != "image"
    }


def test_parse_body_refuses_non_objects() -> None:
    """Arrays, garbage and empty bodies are a 400."""
    for body in (b"[1, 2]", b"{nope", b"", b'{"image": "' + b"A" * 2000):
        with pytest.raises(PayloadError) as info:
            parse_body(body)
        assert info.value.status == 400


def test_parse_body_restores_nested_long_strings() -> None:
    """A long string below the top level comes back as a plain string."""
    body = json.dumps({"meta": {"note": "n" * 2000}, "image": "A" * 2000}).encode()
    assert parse_body(body) == {"meta": {"note": "n" * 2000}, "image": "A" * 2000}


def test_parse_body_with_escapes_uses_the_plain_path() -> None:
    """Escaped slashes in base64 (some encoders write \\/) still parse."""
    text = base64.b64encode(bytes(range(256)) * 8).decode()
    body = json.dumps({"image": text}).replace("/", "\\/").encode()
    assert parse_body(body)["image"] == text


# --- image checks ---


def test_check_image_reads_jpeg_and_png_headers() -> None:
    """Dimensions come from the headers: baseline and progressive JPEG, PNG, data URLs."""
    img = Image.new("RGB", (321, 123), (10, 20, 30))
    for fmt, kwargs in (("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {})):
        out = io.BytesIO()
        img.save(out, fmt, **kwargs)
        data = _check(out.getvalue())
        assert (data.width, data.height) == (321, 123)  # type: ignore[attr-defined]
    url = "data:image/jpeg;base64," + base64.b64encode(small_jpeg()).decode()
    assert _check(url).fmt == "jpeg"  # type: ignore[attr-defined]


def test_check_image_finds_the_frame_header_after_a_big_exif() -> None:
    """A JPEG whose frame header sits past 64 KB of metadata is still measured."""
    img = Image.new("RGB", (40, 30))
    out = io.BytesIO()
    img.save(out, "JPEG", exif=b"Exif\x00\x00" + bytes(60_000), icc_profile=bytes(60_000))
    data = _check(out.getvalue())
    assert (data.width, data.height) == (40, 30)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "status", "code"),
    [
        ("abc", 400, None),  # length not a multiple of 4
        ("ab=c", 400, None),  # padding in the middle
        ("", 400, None),
        (base64.b64encode(b"RIFF....WEBP").decode(), 415, None),
        (base64.b64encode(b"\xff\xd8\xff\xd9").decode(), 415, None),  # EOI before a frame
        (base64.b64encode(b"\xff\xd8\xff" + bytes(MB5)).decode(), 422, 5002),
    ],
)
def test_check_image_refusals(value: str, status: int, code: int | None) -> None:
    """Bad base64 is 400, not an image 415, over 5 MB 5002."""
    with pytest.raises(PayloadError) as info:
        _check(value)
    assert (info.value.status, info.value.error_code) == (status, code)


def test_check_image_caches_headers() -> None:
    """A repeated image is answered from the cache."""
    cache: LruCache[tuple[int, int], object] = LruCache(4)
    value = base64.b64encode(small_jpeg()).decode()
    for _ in range(3):
        check_image("image", value, max_bytes=MB5, max_pixels=10**8, cache=cache)  # type: ignore[arg-type]
    assert (cache.hits, cache.misses) == (2, 1)


# --- specs ---


def test_parse_duration() -> None:
    """Durations in ms, s, or bare seconds."""
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("2") == 2.0
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("soon")


def test_latency_specs_round_trip() -> None:
    """Every latency kind parses and prints back to the same spec."""
    for spec in ("fixed:200ms", "uniform:50ms-150ms", "lognormal:median=200ms,sigma=0.5", "none"):
        assert Latency.parse(spec).spec() == spec
    rng = random.Random(1)
    assert 0.05 <= Latency.parse("uniform:50ms-150ms").sample(rng) <= 0.15
    for bad in ("uniform:150ms-50ms", "lognormal:median=1s", "gamma:1"):
        with pytest.raises(ValueError, match="latency"):
            Latency.parse(bad)


def test_fault_spec_parsing() -> None:
    """Kinds, percentages, counts, endpoints and parameters parse; unknown names are refused."""
    config = FaultConfig.parse("500:5%,429:0.1x3@front,retry_after=3s,slow_duration=500ms")
    assert config.retry_after == 3.0
    assert config.slow_duration == 0.5
    rules = {(r.kind, r.endpoint): (r.probability, r.count) for r in config.rules}
    assert rules == {
        (FaultKind.HTTP_500, "*"): (0.05, None),
        (FaultKind.HTTP_429, "id_front"): (0.1, 3),
    }
    for bad in ("teapot:0.1", "500:2", "500:0.1@nowhere", "wait=1s", "500"):
        with pytest.raises(ValueError, match=r"fault|endpoint|probability"):
            FaultConfig.parse(bad)


def test_fault_plan_is_seeded_per_endpoint() -> None:
    """Each endpoint's sequence depends on the seed only, not on other endpoints' traffic."""
    config = FaultConfig.parse("500:0.3,reset_after:0.2")
    a, b = FaultPlan(config, 5), FaultPlan(config, 5)
    seq_a = [a.draw("liveness") for _ in range(50)]
    seq_b = []
    for _ in range(50):
        b.draw("id_front")  # interleaved traffic elsewhere
        seq_b.append(b.draw("liveness"))
    assert seq_a == seq_b
    assert seq_a != [FaultPlan(config, 6).draw("liveness") for _ in range(50)]


def test_fault_plan_counts_limit_injections() -> None:
    """xCOUNT stops a rule after that many injections."""
    plan = FaultPlan(FaultConfig.parse("503:1x2"), 0)
    assert [plan.draw("login") for _ in range(4)] == [
        FaultKind.HTTP_503,
        FaultKind.HTTP_503,
        None,
        None,
    ]


# --- rules ---


def test_derived_identities_pass_src() -> None:
    """Fields derived from a transaction id are deterministic and structurally valid."""
    for _ in range(50):
        tx = str(uuid.uuid4())
        fields = derive_identity(tx)
        assert derive_identity(tx) == fields
        assert check_national_id(fields, LATER) == []


def test_sample_fields_pass_src() -> None:
    """Fields of synthetic applicants pass the structural check."""
    for seed in range(30):
        fields = from_card_fields(samples.make_fields(seed))
        assert check_national_id(fields, LATER) == []


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda n: n[:13], 3001),
        (lambda n: "4" + n[1:], 3001),
        (lambda n: n[:3] + "13" + n[5:], 3002),  # month 13
        (lambda n: n[:7] + "99" + n[9:], 3003),  # no such governorate
    ],
)
def test_src_structure(mutate: object, code: int) -> None:
    """Length, century, date and governorate errors carry their codes."""
    import attrs

    fields = derive_identity("12345678-1234-4234-8234-123456789abc")
    bad = attrs.evolve(fields, national_id=mutate(fields.national_id))  # type: ignore[operator]
    assert code in [i.code for i in check_national_id(bad, LATER)]


def test_src_gender_and_birth_date_mismatch() -> None:
    """The 13th digit's parity and the birth date must agree with the card."""
    import attrs

    fields = derive_identity("12345678-1234-4234-8234-123456789abc")
    other = "F" if fields.gender == "M" else "M"
    codes = [i.code for i in check_national_id(attrs.evolve(fields, gender=other), LATER)]
    assert codes == [3005]
    older = attrs.evolve(fields, date_of_birth=date(1901, 1, 1))
    assert [i.code for i in check_national_id(older, LATER)] == [3002]


def test_liveness_verdict() -> None:
    """Identical, unrelated, mixed or foreign faces fail; three poses of the holder pass."""
    face = [FaceInfo(7, (float(i), 0.0, 0.0, 0.0)) for i in range(3)]
    frames = [(bytes([i]), f) for i, f in enumerate(face)]
    assert liveness_verdict(frames, 7) == (True, "")
    assert liveness_verdict(frames, 8)[0] is False
    assert liveness_verdict([frames[0], frames[0], frames[1]], 7)[0] is False
    same_pose = [
        (b"a", FaceInfo(7, (1.0, 2.0, 0.0, 0.0))),
        (b"b", FaceInfo(7, (1.0, 2.0, 0.0, 0.0))),
    ]
    assert liveness_verdict(same_pose, 7)[0] is False
    other = (b"z", FaceInfo(9, (5.0, 0.0, 0.0, 0.0)))
    assert liveness_verdict([frames[0], frames[1], other], 7)[0] is False
    plain = (b"p", FaceInfo(None, None, bytes(256)))
    assert liveness_verdict([frames[0], frames[1], plain], 7)[0] is False


def test_name_matches() -> None:
    """Names match ignoring case and spacing, first or full, Arabic or English."""
    fields = from_card_fields(samples.make_fields(3))
    assert name_matches(f"  {fields.first_name_english.upper()} ", fields)
    assert name_matches(f"{fields.first_name} {fields.last_names}", fields)
    assert not name_matches("Nobody", fields)


# --- rate limit ---


def test_sliding_window_limiter() -> None:
    """At most 10 in any second and 60 in any minute; a refusal says how long to wait."""
    limiter = SlidingWindowLimiter(10, 60)
    assert all(limiter.acquire(0.0) is None for _ in range(10))
    assert limiter.acquire(0.5) == pytest.approx(0.5)
    t = 1.0
    admitted = 10
    while t < 60.0:
        if limiter.acquire(t) is None:
            admitted += 1
        t += 0.05
    assert admitted == 60
    assert limiter.acquire(59.99) is not None
    assert limiter.acquire(60.01) is None
