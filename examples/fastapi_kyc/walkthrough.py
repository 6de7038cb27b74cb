"""``python -m examples.fastapi_kyc.walkthrough``: a test user verified through the running app.

What the capture page does, as a script: sign a test user up (the emulator's demo route), send
the front and the back of a synthetic card, then three face frames, printing each answer. Run it
while ``make example`` serves the app; ``--url`` points elsewhere. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import json
import urllib.error
import urllib.request
from typing import Any

from vlens_async.samples import make_applicant

from .demo import SAMPLE_SEED


def post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """POST ``body`` to ``url``; the JSON answer, a problem's included (4xx/5xx)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as problem:
        with problem:
            answer = json.load(problem)
    return answer


def walk(base_url: str) -> list[dict[str, Any]]:
    """Verify a new test user through the app at ``base_url``; returns every answer."""
    applicant = make_applicant(SAMPLE_SEED)
    faces = {
        "frames": [base64.b64encode(frame).decode() for frame in applicant.faces],
        "capture_times": [0.0, 0.2, 0.4],
    }
    signed_up = post(f"{base_url}/demo/test-user", b"", {})
    if "token" not in signed_up:
        raise SystemExit(f"no test user: {signed_up.get('title', 'the app did not answer')}")
    auth = {"Authorization": f"Bearer {signed_up['token']}"}
    answers = []
    for path, body, kind in (
        ("/api/kyc/front", applicant.front, "image/jpeg"),
        ("/api/kyc/back", applicant.back, "image/jpeg"),
        ("/api/kyc/liveness", json.dumps(faces).encode(), "application/json"),
    ):
        answer = post(f"{base_url}{path}", body, {**auth, "Content-Type": kind})
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
