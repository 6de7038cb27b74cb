"""``python -m examples.fastapi_kyc.walkthrough``: a test user verified through the running app.

What the capture page does, as a script: sign a test user up (the emulator's demo route), send
the front and the back of a synthetic card, then three face frames, printing each answer. Run it
while ``make example`` serves the app (it waits up to two minutes for the app to come up: a fresh
clone's ``make example`` installs first); ``--url`` points elsewhere. Standard library only.

Exit status: 0 verified, 1 a step was refused (its problem printed), 2 no example app to walk
through (one line saying why).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from vlens_async.samples import make_applicant

from .demo import SAMPLE_SEED

__all__ = ["WAIT_SECONDS", "WalkthroughError", "main", "post", "wait_for_app", "walk"]

DEFAULT_URL: Final = "http://127.0.0.1:8000"
WAIT_SECONDS: Final = 120.0  # a fresh clone's `make example` installs for about 1.5 minutes
_POLL_EVERY: Final = 1.0
_POLL_TIMEOUT: Final = 5.0
_STEP_TIMEOUT: Final = 240.0  # above the client's 180 s deadline for one call, retries included
_START_AGAIN: Final = "start it with `make example` (in another terminal), or give --url"
# The app is this machine's, or one reached directly: never through the environment's proxy.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WalkthroughError(Exception):
    """There is no example app to walk through at the URL; the message is one line saying why."""


def _not_the_example(base_url: str, answer: str) -> WalkthroughError:
    return WalkthroughError(
        f"the server at {base_url} is not the example app with its embedded emulator "
        f"(GET /demo/info: {answer}): is another server using the port? Stop it, or give"
        " --url"
    )


def wait_for_app(base_url: str, wait: float = WAIT_SECONDS) -> None:
    """Return once the example app with its embedded emulator answers at ``base_url`` (its
    ``GET /demo/info``). While nothing answers there, ask again every second for up to ``wait``
    seconds, saying so once. :class:`WalkthroughError`: still nothing after ``wait``, a host
    that does not resolve, or a server that is not the example."""
    polls = max(1, math.ceil(wait / _POLL_EVERY))
    deadline = time.monotonic() + wait
    for poll in range(polls + 1):
        try:
            with _OPENER.open(f"{base_url}/demo/info", timeout=_POLL_TIMEOUT) as response:
                info = json.load(response)
        except urllib.error.HTTPError as refused:
            refused.close()
            raise _not_the_example(base_url, f"HTTP {refused.code}") from None
        except ValueError:  # an answer that is not JSON: a web page, another API
            raise _not_the_example(base_url, "not JSON") from None
        except OSError as exc:  # URLError included: nothing listens yet, or it is starting
            if isinstance(getattr(exc, "reason", exc), socket.gaierror):
                raise WalkthroughError(f"cannot find the host of {base_url}: check --url") from None
            if poll == polls or time.monotonic() >= deadline:
                raise WalkthroughError(
                    f"no app answered at {base_url} within {wait:g} s: {_START_AGAIN}"
                ) from None
            if poll == 0:
                print(f"waiting for the app at {base_url} ...", file=sys.stderr, flush=True)
            time.sleep(_POLL_EVERY)
            continue
        if not (isinstance(info, dict) and info.get("service") == "emulator"):
            raise _not_the_example(base_url, "another answer")
        return


def post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """POST ``body`` to ``url``; the JSON answer, a problem's included (4xx/5xx).
    :class:`WalkthroughError` when the app stops answering or answers without JSON."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=_STEP_TIMEOUT) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as problem:
        with problem:
            try:
                answer = json.load(problem)
            except ValueError:
                raise WalkthroughError(
                    f"{url}: HTTP {problem.code} without problem details: is it the example app?"
                ) from None
    except ValueError:
        raise WalkthroughError(f"{url}: the answer is not JSON: is it the example app?") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise WalkthroughError(f"{url}: no answer ({type(reason).__name__})") from None
    return answer


def walk(base_url: str) -> list[dict[str, Any]]:
    """Verify a new test user through the app at ``base_url``, printing each answer; returns
    every answer, up to the first problem (the steps after it could not succeed)."""
    applicant = make_applicant(SAMPLE_SEED)
    faces = {
        "frames": [base64.b64encode(frame).decode() for frame in applicant.faces],
        "capture_times": [0.0, 0.2, 0.4],
    }
    signed_up = post(f"{base_url}/demo/test-user", b"", {})
    if "token" not in signed_up:
        raise WalkthroughError(f"no test user: {signed_up.get('title', 'no token in the answer')}")
    auth = {"Authorization": f"Bearer {signed_up['token']}"}
    answers = []
    for path, body, kind in (
        ("/api/kyc/front", applicant.front, "image/jpeg"),
        ("/api/kyc/back", applicant.back, "image/jpeg"),
        ("/api/kyc/liveness", json.dumps(faces).encode(), "application/json"),
    ):
        answer = post(f"{base_url}{path}", body, {**auth, "Content-Type": kind})
        answers.append(answer)
        if "state" not in answer:  # a problem: its title and what to do
            print(f"{path}: {answer.get('title')}: {answer.get('detail')}")
            break
        print(f"{path}: {answer['message']}")
    return answers


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def _seconds(value: str) -> float:
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--url`` and ``--wait``, wait for the app, walk; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.fastapi_kyc.walkthrough", description=__doc__
    )
    parser.add_argument("--url", type=_base_url, default=DEFAULT_URL, help="the example app")
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=WAIT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for the app to come up (default {WAIT_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    try:
        wait_for_app(args.url, args.wait)
        answers = walk(args.url)
    except WalkthroughError as exc:
        print(f"walkthrough: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if answers[-1].get("verified") else 1


if __name__ == "__main__":
    sys.exit(main())
