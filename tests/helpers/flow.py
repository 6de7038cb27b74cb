"""A scripted FlowClient (no network) and responses built from the seed's wire shape."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from vlens_async import _wire
from vlens_async.flow import Transaction
from vlens_async.models import VerificationResponse

NID = "29901011234567"


def envelope(
    *,
    tx: str,
    side: str | None = None,
    liveness: bool | None = None,
    completed: bool | None = None,
) -> VerificationResponse:
    """A response built from the seed's wire shape, parsed by the real converter."""
    data: dict[str, Any] = {}
    if side == "front":
        data["idFrontData"] = {
            "idNumber": NID,
            "dateOfBirth": "1999-01-01T00:00:00Z",
            "gender": "F",
            "transaction_id": tx,
        }
    if side == "back":
        data["idBackData"] = {
            "idNumber": NID,
            "gender": "F",
            "idExpiry": "2031-01-01T00:00:00.1234567Z",
            "transactionId": tx,
        }
    if completed is not None:
        data["isVerificationProcessCompleted"] = completed
        data["isDigitalIdentityVerified"] = completed
    services: dict[str, Any] = {"spoofing": {"fake": False}}
    if liveness is not None:
        services["liveness"] = liveness
    body = {"services": services, "data": data, "error_code": None, "error_message": None}
    return _wire.structure(body, VerificationResponse)


class ScriptedClient:
    """Answers each endpoint from a queue of responses or exceptions and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.options: list[dict[str, Any]] = []
        self.script: dict[str, list[Any]] = {"front": [], "back": [], "liveness": []}
        self.gate: asyncio.Event | None = None

    def queue(self, step: str, *answers: Any) -> None:
        """Queue the answers (responses or exceptions) of the next calls to ``step``."""
        self.script[step].extend(answers)

    async def _answer(self, step: str, tx: str | None) -> VerificationResponse:
        assert tx is not None
        self.calls.append((step, tx))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.script[step].pop(0) if self.script[step] else None
        if isinstance(answer, BaseException):
            raise answer
        if answer is not None:
            assert isinstance(answer, VerificationResponse)
            return answer
        if step == "liveness":
            return envelope(tx=tx, liveness=True, completed=True)
        return envelope(tx=tx, side=step)

    async def scan_id_front(
        self, image: Any, *, transaction_id: str | None = None, **options: Any
    ) -> Any:
        self.options.append(options)
        return await self._answer("front", transaction_id)

    async def scan_id_back(
        self, image: Any, *, transaction_id: str | None = None, **options: Any
    ) -> Any:
        self.options.append(options)
        return await self._answer("back", transaction_id)

    async def check_liveness(
        self, faces: Sequence[Any], *, id_front: Any, transaction_id: str, **options: Any
    ) -> Any:
        assert id_front is not None
        self.options.append(options)
        return await self._answer("liveness", transaction_id)


IMG = b"image"
FACES = (b"f1", b"f2", b"f3")


def make_tx(client: ScriptedClient, **kwargs: Any) -> Transaction:
    """A Transaction on ``client`` that sends images as given."""
    return Transaction(client, prepare=False, **kwargs)
