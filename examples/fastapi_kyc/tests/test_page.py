"""The capture page in headless Chromium (Debian's), its fake camera fed a synthetic applicant."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from PIL import Image
from playwright.async_api import FilePayload, Page, async_playwright, expect

from vlens_async.emulator import RunningEmulator
from vlens_async.samples import Applicant
from vlens_async.samples._faces import capture  # more poses of one person than .faces holds

from .conftest import applicant

CHROMIUM = "/usr/bin/chromium"
FPS = 6  # the fake camera's frame rate: the page's three photos are about 0.33 s apart
POSES = 4  # keys of three poses each: 12 distinct frames, so no two photos can be alike
STEP_MS = 30_000  # the longest a step may take on a loaded machine (expect()'s default is 5 s)


VERIFIED = "You are verified. Thank you!"
TOO_SLOW = "not taken quickly enough"


async def shoot_until_verified(page: Page) -> None:
    """Take the three photos, again as a user would when a loaded machine's browser took them
    more than half a second apart (the page refuses those, sending nothing; three tries)."""
    answer = page.locator("#answer")
    for _ in range(3):
        await expect(page.locator("#shoot")).to_be_enabled(timeout=STEP_MS)
        await answer.evaluate("node => { node.textContent = '' }")  # so as to wait for this try's
        await page.click("#shoot")
        await expect(answer).to_contain_text(re.compile(f"{VERIFIED}|{TOO_SLOW}"), timeout=STEP_MS)
        if TOO_SLOW not in await answer.inner_text():
            break
    await expect(answer).to_have_text(VERIFIED)


def write_y4m(frames: list[bytes], path: Path) -> Path:
    """A YUV4MPEG2 (4:2:0) video of the JPEG ``frames``, one video frame each, for Chromium's
    ``--use-file-for-fake-video-capture`` (played in a loop)."""
    images = [Image.open(io.BytesIO(f)).convert("YCbCr") for f in frames]
    width, height = images[0].size
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for image in images:
            y, cb, cr = image.split()
            half = (width // 2, height // 2)
            out.write(b"FRAME\n")
            out.write(y.tobytes())
            out.write(cb.resize(half, Image.Resampling.BOX).tobytes())
            out.write(cr.resize(half, Image.Resampling.BOX).tobytes())
    return path


def face_video(a: Applicant, path: Path) -> Path:
    """The fake camera's video: ``a``'s face in twelve distinct poses."""
    person = a.fields.person_id
    frames = [f for key in range(POSES) for f in capture(person, f"page-{key}", identical=False)]
    return write_y4m(frames, path)


def chromium_args(video: Path) -> list[str]:
    """Headless, offline, the camera allowed and fed from ``video``."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]


async def test_page_walks_a_test_user_to_a_completed_verification(
    app_url: str,
    vlens_emulator: RunningEmulator,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """Sign up a test user, choose the card's two sides, take the face photos with the camera:
    the page says the user is verified, and a screenshot of it is saved."""
    a = applicant(51)
    video = face_video(a, tmp_path / "face.y4m")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=chromium_args(video)
        )
        try:
            page = await browser.new_page(viewport={"width": 412, "height": 915})  # a phone
            await page.goto(app_url)
            await page.click("#test-user")
            await expect(page.locator("#card")).to_be_visible(timeout=STEP_MS)
            for side, data in (("front", a.front), ("back", a.back)):
                upload = FilePayload(name=f"{side}.jpg", mimeType="image/jpeg", buffer=data)
                await page.set_input_files(f"#{side}", files=[upload])
                await expect(page.locator(f"#{side}-status")).to_have_text(
                    "Done ✓", timeout=STEP_MS
                )
            await expect(page.locator("#answer")).to_contain_text(
                "three quick photos", timeout=STEP_MS
            )
            await page.click("#camera")
            await shoot_until_verified(page)
            assert await page.locator("#shots img").count() == 3
            await expect(page.locator("#face")).to_be_hidden()
            screenshot = tmp_path / "verified.png"
            await page.screenshot(path=screenshot, full_page=True)
        finally:
            await browser.close()

    record_property("screenshot", str(screenshot))
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG"
        assert shot.width >= 412
    counters = vlens_emulator.counters()
    assert counters["transactions_created"] == 1
    (steps,) = counters["steps"].values()
    assert steps == {"front": 1, "back": 1, "liveness": 1}


@asynccontextmanager
async def phone_page(app_url: str, video: Path, init_script: str = "") -> AsyncIterator[Page]:
    """A phone-sized page of the app in headless Chromium, its camera fed ``video``;
    ``init_script`` runs before the page's own."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=chromium_args(video)
        )
        try:
            page = await browser.new_page(viewport={"width": 412, "height": 915})
            if init_script:
                await page.add_init_script(init_script)
            await page.goto(app_url)
            yield page
        finally:
            await browser.close()


async def card_scanned(app_url: str, a: Applicant) -> str:
    """A new test user whose card's two sides were sent through the API; their token."""
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        token = str((await http.post("/demo/test-user")).json()["token"])
        headers = {"Authorization": f"Bearer {token}"}
        for side in ("front", "back"):
            image = a.front if side == "front" else a.back
            response = await http.post(f"/api/kyc/{side}", content=image, headers=headers)
            response.raise_for_status()
    return token


def signed_in_as(token: str) -> str:
    """An init script: the page finds ``token`` in its session, as after a sign-in."""
    return f"sessionStorage.setItem('vlensToken', {json.dumps(token)});"


async def test_a_refused_token_signs_the_user_out(app_url: str, tmp_path: Path) -> None:
    """A token Vlens refuses (expired, bogus): the page forgets it and asks to sign in again."""
    video = face_video(applicant(53), tmp_path / "face.y4m")
    async with phone_page(app_url, video, signed_in_as("expired-or-bogus")) as page:
        await expect(page.locator("#card")).to_be_visible(timeout=STEP_MS)
        upload = FilePayload(name="front.jpg", mimeType="image/jpeg", buffer=applicant(53).front)
        await page.set_input_files("#front", files=[upload])
        await expect(page.locator("#answer")).to_contain_text(
            "Please sign in again", timeout=STEP_MS
        )
        await expect(page.locator("#signin")).to_be_visible()
        await expect(page.locator("#card")).to_be_hidden()
        assert await page.evaluate("sessionStorage.getItem('vlensToken')") is None


# A slow phone: encoding a frame as JPEG takes 0.4 s (three of them: more than the half second).
SLOW_ENCODER = """
const encode = HTMLCanvasElement.prototype.toDataURL;
HTMLCanvasElement.prototype.toDataURL = function (...args) {
  const until = performance.now() + 400;
  while (performance.now() < until) { /* busy, as a slow phone's encoder */ }
  return encode.apply(this, args);
};
"""


async def test_slow_encoding_stays_out_of_the_half_second(
    app_url: str, vlens_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """On a phone slow to encode JPEGs, the frames are still captured within the half second
    (encoded after), and the user is verified."""
    a = applicant(54)
    token = await card_scanned(app_url, a)
    video = face_video(a, tmp_path / "face.y4m")
    async with phone_page(app_url, video, signed_in_as(token) + SLOW_ENCODER) as page:
        await expect(page.locator("#face")).to_be_visible(timeout=STEP_MS)
        await page.click("#camera")
        await shoot_until_verified(page)
    assert sent_liveness(vlens_emulator) == 1


# The camera's frames reported 0.4 s apart: the three span 0.8 s, too slow for the service.
FRAMES_FAR_APART = """
let fakeClock = 0;
const onFrame = HTMLVideoElement.prototype.requestVideoFrameCallback;
HTMLVideoElement.prototype.requestVideoFrameCallback = function (callback) {
  return onFrame.call(this, () => callback((fakeClock += 400)));
};
"""


async def test_frames_too_far_apart_are_refused_on_the_phone(
    app_url: str, vlens_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Three frames spread over more than half a second: the page says so and sends nothing."""
    a = applicant(55)
    token = await card_scanned(app_url, a)
    video = face_video(a, tmp_path / "face.y4m")
    async with phone_page(app_url, video, signed_in_as(token) + FRAMES_FAR_APART) as page:
        liveness_requests: list[str] = []
        page.on(
            "request",
            lambda request: (
                liveness_requests.append(request.url)
                if request.url.endswith("/api/kyc/liveness")
                else None
            ),
        )
        await expect(page.locator("#face")).to_be_visible(timeout=STEP_MS)
        await page.click("#camera")
        await expect(page.locator("#shoot")).to_be_enabled(timeout=STEP_MS)
        await page.click("#shoot")
        await expect(page.locator("#answer")).to_contain_text(
            "not taken quickly enough", timeout=STEP_MS
        )
        await expect(page.locator("#shoot")).to_be_enabled()  # the user can try again
    assert liveness_requests == []
    assert sent_liveness(vlens_emulator) == 0


# The first three frames 0.4 s apart, the rest 40 ms apart: a first try too slow, then a good one.
FIRST_TRY_TOO_SLOW = """
let fakeClock = 0, framesSeen = 0;
const onFrame = HTMLVideoElement.prototype.requestVideoFrameCallback;
HTMLVideoElement.prototype.requestVideoFrameCallback = function (callback) {
  return onFrame.call(this, () => callback((fakeClock += ++framesSeen <= 3 ? 400 : 40)));
};
"""


async def test_after_a_try_too_slow_the_next_one_verifies(
    app_url: str, vlens_emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A first try too slow is refused on the phone; the user takes the photos again and is
    verified, one liveness call in all."""
    a = applicant(56)
    token = await card_scanned(app_url, a)
    video = face_video(a, tmp_path / "face.y4m")
    async with phone_page(app_url, video, signed_in_as(token) + FIRST_TRY_TOO_SLOW) as page:
        await expect(page.locator("#face")).to_be_visible(timeout=STEP_MS)
        await page.click("#camera")
        await expect(page.locator("#shoot")).to_be_enabled(timeout=STEP_MS)
        await page.click("#shoot")
        await expect(page.locator("#answer")).to_contain_text(TOO_SLOW, timeout=STEP_MS)
        await shoot_until_verified(page)
    assert sent_liveness(vlens_emulator) == 1


def sent_liveness(emulator: RunningEmulator) -> int:
    """How many liveness requests reached the emulator."""
    return sum(emulator.counters()["requests"].get("liveness", {}).values())
