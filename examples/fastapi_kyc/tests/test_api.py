"""The example's API driven with httpx against the emulator: the flow, refusals, a double submit."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.fastapi_kyc import demo, problems
from examples.fastapi_kyc.app import create_app
from examples.fastapi_kyc.store import KycStore
from vlens_async import VlensClient
from vlens_async.emulator import RunningEmulator

from .conftest import applicant, serve, settings_for

PROBLEM = "application/problem+json"


def faces_body(seed: int, scenario: str = "valid") -> dict[str, Any]:
    """The liveness request the page sends: three base64 frames and their capture times."""
    frames = [base64.b64encode(f).decode() for f in applicant(seed, scenario).faces]
    return {"frames": frames, "capture_times": [10.0, 10.2, 10.4]}


def stored_row(db: Path) -> tuple[str, bytes | None]:
    """The one stored verification: its transaction id and the ID front kept for liveness."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT transaction_id, id_front FROM kyc_transaction").fetchall()
    assert len(rows) == 1
    tx_id, front = rows[0]
    return str(tx_id), front


def files_holding(folder: Path, image: bytes) -> list[str]:
    """The files in ``folder`` that hold any 256-byte piece of ``image``."""
    pieces = [image[i : i + 256] for i in range(0, len(image) - 256, 4096)]
    return [
        path.name
        for path in sorted(folder.iterdir())
        if any(piece in path.read_bytes() for piece in pieces)
    ]


def sent(emulator: RunningEmulator, endpoint: str) -> int:
    """How many requests reached ``endpoint`` of the emulator."""
    return sum(emulator.counters()["requests"].get(endpoint, {}).values())


def assert_problem(response: httpx.Response, status: int, slug: str | None) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of ``status`` and type ``/problems/<slug>`` (or
    ``about:blank``, a plain HTTP error, when ``slug`` is None)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == (f"/problems/{slug}" if slug else "about:blank")
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"].startswith("urn:uuid:")
    return body


async def test_back_front_then_liveness_verifies(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator, db_path: Path
) -> None:
    """Back, front, then liveness, each a request restoring the stored transaction: verified."""
    a = applicant(41)
    answer = (await http.post("/api/kyc/back", content=a.back)).json()
    assert answer["state"] == "BACK_SCANNED"
    answer = (await http.post("/api/kyc/front", content=a.front)).json()
    assert answer["state"] == "ID_SCANNED"
    tx_id, front = stored_row(db_path)
    assert front is not None  # kept: a restored transaction needs it for liveness
    assert files_holding(db_path.parent, front)

    response = await http.post("/api/kyc/liveness", json=faces_body(41))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "state": "COMPLETED",
        "message": "You are verified. Thank you!",
        "verified": True,
    }
    assert stored_row(db_path) == (tx_id, None)  # the card's image is gone once finished
    assert files_holding(db_path.parent, front) == []  # nor left in a journal or freed pages
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 1
    assert counters["steps"][tx_id] == {"front": 1, "back": 1, "liveness": 1}
    assert (await http.get("/api/kyc")).json()["state"] == "COMPLETED"


async def test_a_completed_verification_refuses_the_card_and_repeats_its_answer_to_liveness(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator
) -> None:
    """Once completed: the card's sides are refused (409 verification-finished), and the
    liveness that completed it, sent twice at once (a double submit), is answered alike to both;
    one liveness reached the service."""
    a = applicant(53)
    await http.post("/api/kyc/front", content=a.front)
    await http.post("/api/kyc/back", content=a.back)
    first, second = await asyncio.gather(
        http.post("/api/kyc/liveness", json=faces_body(53)),
        http.post("/api/kyc/liveness", json=faces_body(53)),
    )
    assert first.status_code == second.status_code == 200, [first.text, second.text]
    assert first.json() == second.json()
    assert first.json()["message"] == "You are verified. Thank you!"
    requests_sent = vlens_emulator.counters()["requests_total"]
    for path, image in (("/api/kyc/front", a.front), ("/api/kyc/back", a.back)):
        assert_problem(await http.post(path, content=image), 409, "verification-finished")
    assert vlens_emulator.counters()["requests_total"] == requests_sent
    assert sent(vlens_emulator, "liveness") == 1


async def test_liveness_first_is_refused_and_nothing_sent(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator
) -> None:
    """Liveness before the card: 409, and the emulator saw no verification request at all."""
    response = await http.post("/api/kyc/liveness", json=faces_body(42))
    assert_problem(response, 409, "card-first")
    assert sent(vlens_emulator, "liveness") == 0
    assert vlens_emulator.counters()["transactions_created"] == 0
    assert (await http.get("/api/kyc")).json()["state"] == "NEW"


async def test_expired_card_fails_then_the_user_starts_over(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator, db_path: Path
) -> None:
    """An expired card: a message the user understands, the verification failed; starting over
    gives a new transaction that can succeed."""
    expired = applicant(43, "expired")
    await http.post("/api/kyc/front", content=expired.front)
    body = assert_problem(
        await http.post("/api/kyc/back", content=expired.back), 422, "expired-card"
    )
    assert body["title"] == "Your ID card has expired"
    failed_tx, front = stored_row(db_path)
    assert front is None
    status = (await http.get("/api/kyc")).json()
    assert status["state"] == "FAILED"

    requests_sent = vlens_emulator.counters()["requests_total"]
    refused = [
        await http.post("/api/kyc/back", content=applicant(44).back),
        await http.post("/api/kyc/front", content=expired.front),  # it succeeded: refused alike
        await http.post("/api/kyc/liveness", json=faces_body(43)),
    ]
    for response in refused:
        assert_problem(response, 409, "verification-finished")
    assert vlens_emulator.counters()["requests_total"] == requests_sent
    for _ in range(2):  # starting over twice opens one new transaction
        assert (await http.post("/api/kyc/start-over")).json()["state"] == "NEW"
    new_tx, _ = stored_row(db_path)
    assert new_tx != failed_tx

    valid = applicant(44)
    await http.post("/api/kyc/front", content=valid.front)
    await http.post("/api/kyc/back", content=valid.back)
    done = await http.post("/api/kyc/liveness", json=faces_body(44))
    assert done.json()["state"] == "COMPLETED"
    assert vlens_emulator.counters()["transactions_created"] == 2


async def test_double_submit_sends_one_front(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator, db_path: Path
) -> None:
    """Two concurrent submits of the front: both answered, one request sent, one transaction."""
    front = applicant(45).front
    first, second = await asyncio.gather(
        http.post("/api/kyc/front", content=front), http.post("/api/kyc/front", content=front)
    )
    assert first.json()["state"] == second.json()["state"] == "FRONT_SCANNED"
    tx_id, _ = stored_row(db_path)
    assert vlens_emulator.counters()["transactions_created"] == 1
    assert vlens_emulator.counters()["steps"][tx_id] == {"front": 1}


async def test_two_workers_on_one_database_open_one_transaction(
    vlens_emulator: RunningEmulator, db_path: Path, user_token: str
) -> None:
    """Two app processes' worth (two servers, one SQLite file) and a double submit: one front
    sent; the request that found the other worker busy was told to try again."""
    settings = settings_for(vlens_emulator, db_path)
    headers = {"Authorization": f"Bearer {user_token}"}
    front = applicant(46).front
    async with (
        serve(create_app(settings)) as one,
        serve(create_app(settings)) as two,
        httpx.AsyncClient(headers=headers, timeout=60) as http,
    ):
        answers = await asyncio.gather(
            http.post(f"{one}/api/kyc/front", content=front),
            http.post(f"{two}/api/kyc/front", content=front),
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses in ([200, 200], [200, 409])
    for busy in (r for r in answers if r.status_code == 409):
        assert_problem(busy, 409, "in-progress")
        assert busy.headers["retry-after"] == "2"
    tx_id, _ = stored_row(db_path)
    assert vlens_emulator.counters()["transactions_created"] == 1
    assert vlens_emulator.counters()["steps"][tx_id] == {"front": 1}


async def test_transient_failure_asks_to_try_again(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator, no_backoff: None
) -> None:
    """The service keeps answering 503: the user is asked to try again (503, Retry-After), and
    the same request then succeeds."""
    vlens_emulator.set_faults("503:1@front")
    response = await http.post("/api/kyc/front", content=applicant(47).front)
    assert_problem(response, 503, "try-again")
    assert int(response.headers["retry-after"]) > 0
    vlens_emulator.set_faults(None)
    assert (await http.post("/api/kyc/front", content=applicant(47).front)).status_code == 200


async def test_operator_problem_alerts_without_personal_data(
    vlens_emulator: RunningEmulator,
    db_path: Path,
    user_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused credentials: a generic message to the user, an alert in the log that names the
    error and the problem instance and holds neither the token nor the image."""
    app = create_app(settings_for(vlens_emulator, db_path, api_key="not-the-key"))
    with caplog.at_level(logging.WARNING, logger="fastapi_kyc"):
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            response = await http.post(
                "/api/kyc/front",
                content=applicant(48).front,
                headers={"Authorization": f"Bearer {user_token}"},
            )
    body = assert_problem(response, 500, "internal")
    assert "credential" not in body["detail"].lower()
    alerts = [r.getMessage() for r in caplog.records if "ALERT" in r.getMessage()]
    assert len(alerts) == 1
    assert "AuthenticationError" in alerts[0]
    assert body["instance"] in alerts[0]
    assert user_token not in caplog.text
    assert applicant(48).fields.national_id not in caplog.text


async def test_no_token_is_a_problem(app_url: str) -> None:
    """Without a bearer token the API answers with a problem, not a page or plain text."""
    async with httpx.AsyncClient(base_url=app_url) as http:
        response = await http.get("/api/kyc")
    body = assert_problem(response, response.status_code, None)
    assert body["status"] in (401, 403)


async def test_oversized_upload_is_refused(http: httpx.AsyncClient) -> None:
    """A body over the limit is refused with 413 before being read whole."""
    response = await http.post("/api/kyc/front", content=b"\xff" * (21 * 1024 * 1024))
    assert assert_problem(response, 413, None)["detail"] == "The upload is larger than 20 MB."


def liveness_body(**changes: Any) -> bytes:
    """A liveness request body with ``changes`` made to the valid one (seed 49)."""
    return json.dumps({**faces_body(49), **changes}).encode()


FRAME = faces_body(49)["frames"][0]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"frames": [1: 2]}', "The request body is not valid JSON."),
        (b"", "The upload is empty."),  # refused before parsing (400, about:blank)
        (b'["' + FRAME.encode() + b'"]', "The request body must be a JSON object."),
        (liveness_body(frames=[FRAME[:-1], FRAME, FRAME]), "Frame 1 is not valid base64."),
        (
            liveness_body(frames=[FRAME, FRAME]),
            "The list of frames must hold at least 3 items.",
        ),
        (
            liveness_body(capture_times=[0, "soon", 1e999]),
            "Capture time 2 must be a number. Capture time 3 must be a finite number.",
        ),
        (b"{}", "The list of frames is missing. The list of capture times is missing."),
    ],
    ids=["not-json", "empty", "not-an-object", "bad-base64", "two-frames", "bad-times", "{}"],
)
async def test_an_invalid_liveness_request_is_told_in_plain_words_echoing_nothing(
    http: httpx.AsyncClient, vlens_emulator: RunningEmulator, body: bytes, detail: str
) -> None:
    """A liveness body that is not the three frames and times: a 422 invalid-request problem
    whose detail names each field and what is wrong in plain words (not pydantic's, never the
    data); nothing is sent."""
    response = await http.post(
        "/api/kyc/liveness", content=body, headers={"Content-Type": "application/json"}
    )
    slug, status = ("invalid-request", 422) if body else (None, 400)
    assert assert_problem(response, status, slug)["detail"] == detail
    assert FRAME[:40] not in response.text
    assert sent(vlens_emulator, "liveness") == 0
    assert vlens_emulator.counters()["transactions_created"] == 0


async def test_many_users_at_once_are_all_answered(app_url: str, db_path: Path) -> None:
    """Twenty users' requests at the same moment, each holding its own row on the one
    connection: every one answered, every row stored."""
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:

        async def user(n: int) -> httpx.Response:
            return await http.post(
                "/api/kyc/start-over", headers={"Authorization": f"Bearer user-{n}"}
            )

        answers = await asyncio.gather(*(user(n) for n in range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(lease_owner) FROM kyc_transaction").fetchone()
    assert rows == (20, 0)  # all made, all leases released


async def test_status_of_a_stranger_stores_nothing(app_url: str, db_path: Path) -> None:
    """GET /api/kyc with a token never seen: a new verification's answer, and no row made."""
    headers = {"Authorization": "Bearer anything-at-all"}
    async with httpx.AsyncClient(base_url=app_url, headers=headers) as http:
        response = await http.get("/api/kyc")
    assert response.json() == {
        "state": "NEW",
        "message": "Take a photo of the front and of the back of your national ID card.",
        "verified": False,
    }
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM kyc_transaction").fetchone() == (0,)


async def test_refused_user_token_asks_to_sign_in_again(
    app_url: str, vlens_emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """An expired or bogus Vlens token: 401 sign-in-again with WWW-Authenticate, a warning in the
    log and no alert (anyone can send one), and the token in neither."""
    bogus = "not-a-vlens-token-3f9a"
    with caplog.at_level(logging.WARNING, logger="fastapi_kyc"):
        async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
            response = await http.post(
                "/api/kyc/front",
                content=applicant(50).front,
                headers={"Authorization": f"Bearer {bogus}"},
            )
    body = assert_problem(response, 401, "sign-in-again")
    assert body["title"] == "Please sign in again"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "ALERT" not in caplog.text
    assert "sign in again" in caplog.text
    assert bogus not in caplog.text
    assert bogus not in response.text


async def test_last_failed_liveness_says_start_over(http: httpx.AsyncClient) -> None:
    """Liveness refused on the last allowed try: the verification has failed, and the answer
    says to start over instead of retaking the photos."""
    a = applicant(52, "different_person")
    await http.post("/api/kyc/front", content=a.front)
    await http.post("/api/kyc/back", content=a.back)
    details = []
    for _ in range(3):  # the flow's default: three liveness attempts
        response = await http.post("/api/kyc/liveness", json=faces_body(52, "different_person"))
        details.append(assert_problem(response, 422, "not-live")["detail"])
    assert details[0] == "Take the three photos again, facing the camera."
    assert details[-1] == "That was the last try for this verification. Start over to try again."
    assert (await http.get("/api/kyc")).json()["state"] == "FAILED"


async def test_every_problem_type_is_a_page(app_url: str) -> None:
    """Each problem type's URI is served: a short page with its title; an unknown one is 404."""
    async with httpx.AsyncClient(base_url=app_url) as http:
        for slug, problem in problems.PROBLEMS.items():
            page = await http.get(f"/problems/{slug}")
            assert page.status_code == 200, slug
            assert page.headers["content-type"].startswith("text/html")
            assert html.escape(problem.title) in page.text
        assert_problem(await http.get("/problems/no-such-thing"), 404, None)
    readme = (Path(problems.__file__).parent / "README.md").read_text()
    assert set(re.findall(r"/problems/([a-z-]+)", readme)) == set(problems.PROBLEMS)


async def test_card_inputs_offer_camera_and_files(app_url: str) -> None:
    """The card's inputs take any image and force no camera (a phone offers camera or file)."""
    async with httpx.AsyncClient(base_url=app_url) as http:
        page = (await http.get("/")).text
    inputs = {attrs["id"]: attrs for attrs in file_inputs(page)}
    assert set(inputs) == {"front", "back"}
    for attributes in inputs.values():
        assert attributes["accept"] == "image/*"
        assert "capture" not in attributes


def file_inputs(page: str) -> list[dict[str, str | None]]:
    """The attributes of each ``<input type="file">`` of ``page``."""
    found: list[dict[str, str | None]] = []

    class Inputs(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "input" and ("type", "file") in attrs:
                found.append(dict(attrs))

    Inputs().feed(page)
    return found


async def test_shutdown_stops_the_purge_task_before_closing_the_store(
    vlens_emulator: RunningEmulator, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the app stops, its purge task has finished before the store's connection closes."""
    pending_at_close: list[int] = []
    close = KycStore.__aexit__

    async def closing(store: KycStore, *exc_info: object) -> None:
        pending_at_close.append(len(purge_tasks()))
        await close(store, *exc_info)

    monkeypatch.setattr(KycStore, "__aexit__", closing)
    app = create_app(settings_for(vlens_emulator, db_path))
    async with app.router.lifespan_context(app):
        assert len(purge_tasks()) == 1
    assert pending_at_close == [0]


def purge_tasks() -> list[asyncio.Task[object]]:
    """The running event loop's unfinished purge tasks."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and getattr(task.get_coro(), "__qualname__", "") == "_purge_forever"
    ]


async def test_test_user_sign_up_with_a_given_phone_is_refused_the_second_time(
    vlens_client: VlensClient, vlens_emulator: RunningEmulator
) -> None:
    """The demo's sign-up for a given phone number and password makes the account and gives its
    token; a second sign-up for the number is refused before any OTP is sent."""
    phone, password = "+201000000777", "Demo-pass-1"
    token = await demo.register_test_user(vlens_client, vlens_emulator, phone, password)
    assert token
    assert (await vlens_client.check_existence(phone_number=phone)).exists
    otps_sent = sent(vlens_emulator, "verify_phone")
    assert otps_sent == 2  # the OTP sent, then confirmed
    with pytest.raises(ValueError, match="log in"):
        await demo.register_test_user(vlens_client, vlens_emulator, phone)
    assert sent(vlens_emulator, "verify_phone") == otps_sent
