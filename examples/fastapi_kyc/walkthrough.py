"""``python -m examples.fastapi_kyc.walkthrough``: a test user verified through the running app.

What the capture page does, as a script: sign a test user up (the emulator's demo route), send
the front and the back of a synthetic card, then three face frames, printing each answer. Run it
while ``make example`` serves the app; ``--url`` points elsewhere.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

import httpx

from vlens_async.samples import make_applicant

from .demo import SAMPLE_SEED


def walk(base_url: str) -> list[dict[str, Any]]:
    """Verify a new test user through the app at ``base_url``; returns every answer."""
    applicant = make_applicant(SAMPLE_SEED)
    faces = {
        "frames": [base64.b64encode(frame).decode() for frame in applicant.faces],
        "capture_times": [0.0, 0.2, 0.4],
    }
    answers = []
    with httpx.Client(base_url=base_url, timeout=60) as http:
        token = http.post("/demo/test-user").raise_for_status().json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for path, request in (
            ("/api/kyc/front", {"content": applicant.front}),
            ("/api/kyc/back", {"content": applicant.back}),
            ("/api/kyc/liveness", {"json": faces}),
        ):
            answer = http.post(path, **request).json()
            print(f"{path}: {answer.get('message') or answer.get('title')}")
            answers.append(answer)
    return answers


def main() -> None:
    """Parse ``--url`` and walk."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    walk(parser.parse_args().url)


if __name__ == "__main__":
    main()
