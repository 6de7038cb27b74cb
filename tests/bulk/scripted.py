"""A scripted stand-in for the client, and the helpers the bulk runner's offline tests share:
applicants on shared images, a fast-retrying unlimited runner, its results and journal."""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from vlens_async import _wire
from vlens_async.bulk import BulkRunner, RateLimit
from vlens_async.bulk._manifest import BulkApplicant
from vlens_async.config import RetryPolicy
from vlens_async.errors import APIError, api_error_class
from vlens_async.models import VerificationResponse

FAST_RETRY = RetryPolicy(max_attempts=8, initial=0.001, max_backoff=0.005, jitter=0)


NID = "29901011234567"

# fault(step, applicant id, attempt number of that step) -> an error to raise, or None.
Fault = Callable[[str, str, int], BaseException | None]


def jpeg(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    """A small noisy JPEG, different for each seed (so frames are never identical)."""
    rng = random.Random(seed)
    image = Image.frombytes(
        "RGB", size, bytes(rng.randrange(256) for _ in range(3 * size[0] * size[1]))
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def applicants(folder: Path, count: int, start: int = 1) -> list[BulkApplicant]:
    """``count`` applicants named a1, a2, ... all using the shared images; each sends its id as
    ``client_transaction_id``."""
    faces = (folder / "face_1.jpg", folder / "face_2.jpg", folder / "face_3.jpg")
    return [
        BulkApplicant(
            f"a{n}",
            folder / "front.jpg",
            folder / "back.jpg",
            faces,
            row=n,
            client_transaction_id=f"a{n}",  # lets the scripted client know who is calling
        )
        for n in range(start, start + count)
    ]


def envelope(
    tx: str, step: str, *, verified: bool = True, aml: bool = False
) -> VerificationResponse:
    """A successful answer for ``step`` in the wire shape, parsed by the real converter."""
    data: dict[str, Any] = {}
    services: dict[str, Any] = {}
    if step == "front":
        data["idFrontData"] = {"idNumber": NID, "firstName": "Secret", "transaction_id": tx}
    elif step == "back":
        data["idBackData"] = {"idNumber": NID, "transactionId": tx}
    else:
        services["liveness"] = True
        services["AML"] = {"AML_matched": aml}
        data["isVerificationProcessCompleted"] = True
        data["isDigitalIdentityVerified"] = verified
    body = {"services": services, "data": data, "error_code": None}
    return _wire.structure(body, VerificationResponse)


class ScriptedClient:
    """Stands in for VlensClient: answers each call, optionally failing it via ``fault``,
    and records (step, transaction id, outcome) for every call it receives."""

    base_url = "http://scripted.invalid"  # what the journal records as the service

    def __init__(self, fault: Fault | None = None, delay: float = 0.0) -> None:
        self.fault = fault
        self.delay = delay
        self.calls: list[tuple[str, str, str]] = []
        self.options: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None
        self.max_tasks = 0
        self.unverified: set[str] = set()
        self.in_flight = 0
        self.images: list[Any] = []  # what scan_id_front was given
        self.reached = asyncio.Event()  # set once notify_calls calls or notify_in_flight at once
        self.notify_calls = self.notify_in_flight = 10**9

    def with_options(self, **options: Any) -> ScriptedClient:
        self.options.append(options)
        return self

    async def _answer(self, step: str, tx: str, **options: Any) -> VerificationResponse:
        self.max_tasks = max(self.max_tasks, len(asyncio.all_tasks()))
        self.in_flight += 1
        if self.in_flight >= self.notify_in_flight:
            self.reached.set()
        if self.gate is not None:
            await self.gate.wait()
        self.in_flight -= 1
        await asyncio.sleep(self.delay)
        attempt = sum(1 for s, t, _ in self.calls if (s, t) == (step, tx)) + 1
        who = str(options.get("client_transaction_id"))
        exc = self.fault(step, who, attempt) if self.fault else None
        self.calls.append((step, tx, "error" if exc else "ok"))
        if len(self.calls) >= self.notify_calls:
            self.reached.set()
        if exc is not None:
            raise exc
        return envelope(tx, step, verified=who not in self.unverified, aml=who in self.unverified)

    async def scan_id_front(self, image: Any, *, transaction_id: str, **options: Any) -> Any:
        self.images.append(image)
        return await self._answer("front", transaction_id, **options)

    async def scan_id_back(self, image: Any, *, transaction_id: str, **options: Any) -> Any:
        return await self._answer("back", transaction_id, **options)

    async def check_liveness(
        self, faces: Any, *, id_front: Any, transaction_id: str, **options: Any
    ) -> Any:
        assert id_front is not None
        assert len(faces) == 3
        return await self._answer("liveness", transaction_id, **options)

    def ok_steps(self) -> Counter[tuple[str, str]]:
        """How many times each (transaction, step) succeeded."""
        return Counter((tx, step) for step, tx, outcome in self.calls if outcome == "ok")


def runner(client: ScriptedClient, tmp_path: Path, **kwargs: Any) -> BulkRunner:
    """A runner on ``client`` with fast retries and no rate limit, journaling in tmp_path."""
    options: dict[str, Any] = {
        "concurrency": 4,
        "rate_limit": RateLimit.unlimited(),
        "journal": tmp_path / "journal.db",
        "results": tmp_path / "results.jsonl",
        "step_retry": FAST_RETRY,
    }
    options.update(kwargs)
    return BulkRunner(client, **options)  # type: ignore[arg-type]


def results(tmp_path: Path) -> list[dict[str, Any]]:
    """The results file's lines."""
    text = (tmp_path / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def error(cls_status: int | None, code: int | None = None, **kwargs: Any) -> APIError:
    """The error the client raises for a status and/or an envelope error code."""
    return api_error_class(cls_status, code)(
        "scripted", status=cls_status, error_code=code, **kwargs
    )


def journal_bytes(tmp_path: Path) -> bytes:
    """Every byte of the journal on disk (the write-ahead log included)."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("journal.db*")))
