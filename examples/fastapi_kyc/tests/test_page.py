"""The capture page in headless Chromium (Debian's), its fake camera fed a synthetic applicant."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from playwright.async_api import FilePayload, async_playwright, expect

from vlens_async.emulator import RunningEmulator
from vlens_async.samples._faces import capture  # more poses of one person than .faces holds

from .conftest import applicant

CHROMIUM = "/usr/bin/chromium"
FPS = 6  # the fake camera's frame rate: the page's three photos are about 0.33 s apart
POSES = 4  # keys of three poses each: 12 distinct frames, so no two photos can be alike
STEP_MS = 30_000  # the longest a step may take on a loaded machine (expect()'s default is 5 s)


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
    person = a.fields.person_id
    frames = [f for key in range(POSES) for f in capture(person, f"page-{key}", identical=False)]
    video = write_y4m(frames, tmp_path / "face.y4m")

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
            await expect(page.locator("#shoot")).to_be_enabled(timeout=STEP_MS)
            await page.click("#shoot")
            await expect(page.locator("#answer")).to_have_text(
                "You are verified. Thank you!", timeout=STEP_MS
            )
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
