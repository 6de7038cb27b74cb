"""The bulk runner's journal: an SQLite file that survives a crash and drives ``resume``.

What it holds, per applicant: the manifest row, the state of its flow and the transaction id
(written *before* the first request, so a crash can never lead to a second transaction), the
flow's snapshot after every step, each HTTP attempt (step, outcome, status, error code, duration)
and, once finished, the line of the results file. No images, no names or addresses, no server
free text: only what resume and the national-ID cross-check need (see :data:`SNAPSHOT_ALLOW`).

Why SQLite: atomic transactions (a write either happened or did not, even under SIGKILL), an
index for duplicate-id detection without holding every id in memory, and percentile queries over
the step timings without loading them. WAL mode with ``synchronous=NORMAL`` keeps a commit cheap
(no fsync per step) and still survives the process being killed; only a power cut may lose the
last few commits, which resume then repeats with the same transaction id.

Every call runs on one dedicated thread (sqlite3 connections are tied to the thread that made them,
and one writer needs no locking); the event loop only awaits. Each method is one SQLite
transaction, so cancelling the coroutine that awaits it leaves the file consistent either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar

import attrs
import orjson

from .._ids import new_transaction_id
from ..errors import BulkInputError
from ._manifest import BulkApplicant, InvalidRow

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the rest works
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PENDING",
    "SNAPSHOT_ALLOW",
    "AttemptRecord",
    "Claim",
    "ClaimKind",
    "Journal",
    "JournalCounts",
    "LatencyStats",
    "strip_snapshot",
]

SCHEMA_VERSION: Final = 1
PENDING: Final = "pending"
# What of a flow snapshot the journal keeps: an allow-list, so that a field the service adds
# later (or one we forgot) is dropped rather than stored. ``True`` keeps a plain value (a string,
# number, boolean or null, never a structure); a dict keeps those keys of a mapping (``"*"``:
# every key); a one-item list keeps each item of a list by that spec. It keeps what resume and the
# results need: state, ids, step records (without the server's free-text message), and of the
# extracted data only what the national-ID cross-check reads; of the services, only the flags the
# results line reports. Names, addresses, jobs, the name check, AML case names and validation
# values never reach the file.
_Spec: TypeAlias = "bool | Mapping[str, _Spec] | list[_Spec]"
_ERROR: Final[Mapping[str, _Spec]] = {"error_type": True, "error_code": True, "request_id": True}
_STEP: Final[_Spec] = {"status": True, "attempts": True, "duration": True, **_ERROR}
_FRONT: Final[_Spec] = dict.fromkeys(
    (
        "id_number",
        "date_of_birth",
        "gender",
        "transaction_id",
        "request_id",
        "client_transaction_id",
    ),
    True,
)
_BACK: Final[_Spec] = dict.fromkeys(
    (
        "id_number",
        "gender",
        "gender_english",
        "id_expiry",
        "release_date",
        "transaction_id",
        "request_id",
        "client_transaction_id",
    ),
    True,
)
_SERVICES: Final[_Spec] = {
    "validations": [{"field": True}],  # the field's name only: its value is personal data
    "spoofing": {"fake": True},
    "liveness": True,
    "aml": {"aml_matched": True},
    "src": {"is_valid": True},
}
_RESPONSE: Final[_Spec] = {
    "services": _SERVICES,
    "data": {
        "is_verification_process_completed": True,
        "is_digital_identity_verified": True,
        "id_front_data": _FRONT,
        "id_back_data": _BACK,
    },
    "error_code": True,
    "sent_transaction_id": True,
    "request_id": True,
}
SNAPSHOT_ALLOW: Final[_Spec] = {
    **dict.fromkeys(
        (
            "version",
            "transaction_id",
            "client_transaction_id",
            "state",
            "max_liveness_attempts",
            "liveness_attempts",
            "get_extracted_data",
            "prepare",
        ),
        True,
    ),
    "failure": _ERROR,
    "steps": {"*": _STEP},
    "responses": {"*": _RESPONSE},
    "timings": {"*": True},
}
_PLAIN: Final = (str, int, float, bool, type(None))

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    interrupted INTEGER
);
CREATE TABLE IF NOT EXISTS applicants (
    applicant_id TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    run INTEGER NOT NULL,            -- the last run that read it: a second sighting is a duplicate
    status TEXT NOT NULL,            -- 'active' or 'done'
    state TEXT NOT NULL,             -- the flow's state after the last journaled step
    transaction_id TEXT NOT NULL,
    snapshot TEXT,                   -- Transaction.snapshot() as JSON, SNAPSHOT_ALLOW only
    attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    error_key TEXT,                  -- the error code, or the error class when there is none
    result TEXT,                     -- the results-file line, once done
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS applicants_row ON applicants (row);
CREATE TABLE IF NOT EXISTS invalid_rows (
    row INTEGER PRIMARY KEY,
    applicant_id TEXT,
    reason TEXT NOT NULL,
    run INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY,
    applicant_id TEXT NOT NULL,
    run INTEGER NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    status INTEGER,
    error_code INTEGER,
    error_type TEXT,
    duration REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_latency ON steps (run, step, duration);
"""

# An applicant counts unless it is unfinished and its row is bad now (its scans moved away, say):
# that row is reported invalid instead, and the journaled transaction waits for a fixed row.
_LIVE: Final = (
    "NOT (a.status != 'done' AND EXISTS (SELECT 1 FROM invalid_rows i"
    " WHERE i.row = a.row AND i.applicant_id = a.applicant_id))"
)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def strip_snapshot(value: Any, spec: _Spec = SNAPSHOT_ALLOW) -> Any:
    """Return a copy of a flow snapshot with only what :data:`SNAPSHOT_ALLOW` lets through
    (``None`` for a value that does not have the allowed shape)."""
    if isinstance(spec, bool):
        return value if spec and isinstance(value, _PLAIN) else None
    if isinstance(spec, list):
        if not isinstance(value, list | tuple):
            return None
        return [strip_snapshot(item, spec[0]) for item in value]
    if not isinstance(value, Mapping):
        return None
    out = {}
    for key, item in value.items():
        item_spec = spec.get(key, spec.get("*"))
        if item_spec is not None:
            out[key] = strip_snapshot(item, item_spec)
    return out


class ClaimKind(enum.Enum):
    """What the journal says about an applicant read from the manifest."""

    NEW = "new"  # never seen: a transaction id was just assigned and journaled
    RESUME = "resume"  # seen in an earlier run and not finished: continue from its snapshot
    DONE = "done"  # finished in an earlier run: skip
    DUPLICATE = "duplicate"  # a second row with an id already read in this run


@attrs.frozen
class Claim:
    """The journal's answer to :meth:`Journal.claim`."""

    kind: ClaimKind
    transaction_id: str | None = None
    snapshot: dict[str, Any] | None = None
    attempts: int = 0
    first_row: int | None = None
    outcome: str | None = None


@attrs.frozen
class AttemptRecord:
    """One HTTP attempt of one step, as journaled (and used for the latency percentiles)."""

    step: str
    attempt: int
    ok: bool
    duration: float
    status: int | None = None
    error_code: int | None = None
    error_type: str | None = None
    at: float = attrs.field(factory=time.time)


@attrs.frozen
class LatencyStats:
    """Latency percentiles of one endpoint, in seconds, over ``count`` attempts."""

    count: int
    p50: float
    p95: float
    p99: float


@attrs.frozen
class JournalCounts:
    """Totals over the whole job (every run): applicants by outcome (``pending`` for unfinished
    ones, ``invalid`` for bad rows) and failures by error code or class."""

    by_outcome: dict[str, int]
    by_error: dict[str, int]


class Journal:
    """The SQLite journal of a bulk job; every method runs on the journal's own thread.

    Open with :meth:`open` (one *run* of the job begins), close with :meth:`close`.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.run = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vlens-journal"
        )
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    @classmethod
    async def open(cls, path: str | os.PathLike[str] | None, *, resume: bool = False) -> Journal:
        """Open (or create) the journal at ``path`` (``None``: in memory) and start a run.

        Without ``resume`` a journal that already holds applicants is refused: starting over would
        open a second transaction for each of them.
        """
        journal = cls(None if path is None else Path(path))
        try:
            await journal._call(journal._open_sync, resume)
        except BaseException:
            journal._executor.shutdown(wait=True)
            raise
        return journal

    async def close(self, *, interrupted: bool = False) -> None:
        """Record the end of this run and close the file.

        The close is queued behind every pending write on the journal thread, so they land first;
        the thread then ends (the interpreter waits for it at exit even if this is cancelled).
        """
        try:
            if self._conn is not None:
                await self._call(self._close_sync, interrupted)
        finally:
            self._executor.shutdown(wait=False)

    async def claim(self, applicant: BulkApplicant) -> Claim:
        """Look ``applicant`` up and take it for this run (see :class:`ClaimKind`)."""
        return await self._call(self._claim_sync, applicant)

    async def save_step(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
    ) -> None:
        """Journal one finished step: its attempts and the flow's snapshot after it."""
        await self._call(self._save_sync, applicant_id, state, snapshot, attempts, None)

    async def finish(
        self,
        applicant_id: str,
        *,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any],
    ) -> None:
        """Journal the applicant's terminal outcome (``result`` is its results-file line) with
        the attempts since the last write."""
        await self._call(self._save_sync, applicant_id, state, snapshot, attempts, result)

    async def record_invalid(self, item: InvalidRow) -> bool:
        """Record a manifest row that cannot be processed; False when the row's applicant
        finished in an earlier run, whose result stands (its scans may have been archived)."""
        return await self._call(self._invalid_sync, item)

    async def counts(self) -> JournalCounts:
        """Totals over the whole job."""
        return await self._call(self._counts_sync)

    async def finished_before(self, *, excluding: Sequence[str] = ()) -> int:
        """Applicants finished in earlier runs (a resume skips them), leaving out those whose
        outcome is in ``excluding`` (the ones it will try again)."""
        return await self._call(self._finished_sync, tuple(excluding))

    async def latencies(self) -> dict[str, LatencyStats]:
        """Latency percentiles per step (endpoint) over this run's attempts."""
        return await self._call(self._latencies_sync)

    async def export_results(self, out: str | os.PathLike[str]) -> int:
        """Write the results file (JSONL, in manifest order) from the journal; return its lines.

        Written from the journal rather than as applicants finish, so that a crash between the
        two can never leave an applicant out of the file; replaced atomically.
        """
        return await self._call(self._export_sync, Path(out))

    # --- the journal thread ---

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        # Shielded: a caller cancelled by a hard stop must not take its write off the queue (the
        # step it records was sent; dropped, a resume would send it again). close() is queued
        # behind it, so it lands before the file closes.
        return await asyncio.shield(
            loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        )

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("journal is closed")
        return self._conn

    def _open_sync(self, resume: bool) -> None:
        target = ":memory:" if self.path is None else str(self.path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE), one per method.
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            with _transaction(conn):
                version = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if version is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(version[0]) != SCHEMA_VERSION:
                    raise BulkInputError(f"journal schema {version[0]} is not {SCHEMA_VERSION}")
                known = conn.execute("SELECT count(*) FROM applicants").fetchone()[0]
                if known and not resume:
                    raise BulkInputError(
                        f"journal {self.path} already holds {known} applicant(s): resume it, "
                        "or give a new journal path"
                    )
                # Bad rows stay until their row is read again (a fixed row then clears its entry,
                # see _claim_sync): a resume stopped before reaching them must not lose them.
                cur = conn.execute("INSERT INTO runs (started_at) VALUES (?)", (time.time(),))
                self.run = int(cur.lastrowid or 0)
        except sqlite3.DatabaseError:
            conn.close()
            self._unlock()
            # An old results file given as --journal, say: refuse it rather than touch it.
            raise BulkInputError(
                "the journal file is not a vlens journal (not an SQLite database)"
            ) from None
        except BaseException:
            conn.close()
            self._unlock()
            raise
        self._conn = conn

    def _lock(self) -> None:
        # Two jobs on one journal would both resume the same applicants and send their steps
        # twice. An advisory lock beside the file (not SQLite's exclusive mode, which would also
        # shut out readers such as a monitoring query); the OS drops it if the process dies.
        if fcntl is None or self.path is None:
            return
        fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BulkInputError(f"journal {self.path} is in use by another bulk job") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _close_sync(self, interrupted: bool) -> None:
        conn = self._db
        with _transaction(conn):
            conn.execute(
                "UPDATE runs SET finished_at=?, interrupted=? WHERE run=?",
                (time.time(), int(interrupted), self.run),
            )
        conn.close()
        self._conn = None
        self._unlock()

    def _claim_sync(self, applicant: BulkApplicant) -> Claim:
        conn = self._db
        with _transaction(conn):
            # This row reads well now: whatever was wrong with it in an earlier run is gone.
            conn.execute(
                "DELETE FROM invalid_rows WHERE row=? AND run < ?", (applicant.row, self.run)
            )
            found = conn.execute(
                "SELECT row, run, status, transaction_id, snapshot, attempts, outcome"
                " FROM applicants WHERE applicant_id=?",
                (applicant.applicant_id,),
            ).fetchone()
            if found is None:
                transaction_id = new_transaction_id()
                conn.execute(
                    "INSERT INTO applicants (applicant_id, row, run, status, state,"
                    " transaction_id, updated_at) VALUES (?, ?, ?, 'active', 'NEW', ?, ?)",
                    (applicant.applicant_id, applicant.row, self.run, transaction_id, time.time()),
                )
                return Claim(ClaimKind.NEW, transaction_id=transaction_id)
            row, run, status, transaction_id, snapshot, attempts, outcome = found
            if run == self.run:
                return Claim(ClaimKind.DUPLICATE, first_row=row)
            conn.execute(
                "UPDATE applicants SET run=?, row=? WHERE applicant_id=?",
                (self.run, applicant.row, applicant.applicant_id),
            )
        return Claim(
            ClaimKind.DONE if status == "done" else ClaimKind.RESUME,
            transaction_id=transaction_id,
            snapshot=None if snapshot is None else orjson.loads(snapshot),
            attempts=attempts,
            outcome=outcome,
        )

    def _save_sync(
        self,
        applicant_id: str,
        state: str,
        snapshot: Mapping[str, Any] | None,
        attempts: Sequence[AttemptRecord],
        result: Mapping[str, Any] | None,
    ) -> None:
        conn = self._db
        with _transaction(conn):
            self._insert_attempts(conn, applicant_id, attempts)
            snap = None if snapshot is None else orjson.dumps(strip_snapshot(snapshot)).decode()
            if result is None:
                conn.execute(
                    "UPDATE applicants SET state=?, snapshot=coalesce(?, snapshot),"
                    " attempts=attempts+?, updated_at=? WHERE applicant_id=?",
                    (state, snap, len(attempts), time.time(), applicant_id),
                )
                return
            code = result.get("error_code")
            error_key = str(code) if code else result.get("error_type")
            conn.execute(
                "UPDATE applicants SET status='done', state=?, snapshot=coalesce(?, snapshot),"
                " attempts=attempts+?, outcome=?, error_key=?, result=?, updated_at=?"
                " WHERE applicant_id=?",
                (
                    state,
                    snap,
                    len(attempts),
                    result["outcome"],
                    error_key,
                    orjson.dumps(dict(result)).decode(),
                    time.time(),
                    applicant_id,
                ),
            )

    def _insert_attempts(
        self, conn: sqlite3.Connection, applicant_id: str, attempts: Iterable[AttemptRecord]
    ) -> None:
        # The table is named ``steps`` since the first journal: kept, so old journals resume.
        conn.executemany(
            "INSERT INTO steps (applicant_id, run, step, attempt, ok, status, error_code,"
            " error_type, duration, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    applicant_id,
                    self.run,
                    s.step,
                    s.attempt,
                    int(s.ok),
                    s.status,
                    s.error_code,
                    s.error_type,
                    s.duration,
                    s.at,
                )
                for s in attempts
            ],
        )

    def _invalid_sync(self, item: InvalidRow) -> bool:
        conn = self._db
        with _transaction(conn):
            if item.applicant_id is not None:
                done = conn.execute(
                    "SELECT 1 FROM applicants WHERE applicant_id=? AND row=? AND status='done'"
                    " AND run < ?",
                    (item.applicant_id, item.row, self.run),
                ).fetchone()
                if done is not None:
                    return False  # finished in an earlier run (its scans since archived, say)
            conn.execute(
                "INSERT OR REPLACE INTO invalid_rows (row, applicant_id, reason, run)"
                " VALUES (?, ?, ?, ?)",
                (item.row, item.applicant_id, item.reason, self.run),
            )
        return True

    def _counts_sync(self) -> JournalCounts:
        conn = self._db
        by_outcome: dict[str, int] = {}
        for outcome, n in conn.execute(
            f"SELECT coalesce(outcome, ?), count(*) FROM applicants a WHERE {_LIVE} GROUP BY 1",
            (PENDING,),
        ):
            by_outcome[outcome] = n
        invalid = conn.execute("SELECT count(*) FROM invalid_rows").fetchone()[0]
        if invalid:
            by_outcome["invalid"] = by_outcome.get("invalid", 0) + invalid
        by_error = {
            key: n
            for key, n in conn.execute(
                "SELECT error_key, count(*) FROM applicants a WHERE error_key IS NOT NULL"
                f" AND {_LIVE} GROUP BY 1 ORDER BY 2 DESC"
            )
        }
        return JournalCounts(by_outcome=by_outcome, by_error=by_error)

    def _finished_sync(self, excluding: tuple[str, ...]) -> int:
        marks = ", ".join("?" * len(excluding))
        query = "SELECT count(*) FROM applicants WHERE status='done' AND run < ?"
        if excluding:
            query += f" AND outcome NOT IN ({marks})"
        return int(self._db.execute(query, (self.run, *excluding)).fetchone()[0])

    def _latencies_sync(self) -> dict[str, LatencyStats]:
        conn = self._db
        out: dict[str, LatencyStats] = {}
        for step, count in conn.execute(
            "SELECT step, count(*) FROM steps WHERE run=? GROUP BY step ORDER BY step", (self.run,)
        ).fetchall():

            def nth(p: float, step: str = step, count: int = count) -> float:
                # Nearest-rank percentile, read from the index without loading every duration.
                offset = max(0, math.ceil(p * count) - 1)
                return float(
                    conn.execute(
                        "SELECT duration FROM steps WHERE run=? AND step=?"
                        " ORDER BY duration LIMIT 1 OFFSET ?",
                        (self.run, step, offset),
                    ).fetchone()[0]
                )

            out[step] = LatencyStats(count=count, p50=nth(0.50), p95=nth(0.95), p99=nth(0.99))
        return out

    def _export_sync(self, out: Path) -> int:
        conn = self._db
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        lines = 0
        # A cursor streams the rows: memory stays flat however long the job is.
        cursor = conn.execute(
            "SELECT row, applicant_id, state, transaction_id, outcome, result, NULL"
            f" FROM applicants a WHERE {_LIVE}"
            " UNION ALL SELECT row, applicant_id, NULL, NULL, 'invalid', NULL, reason"
            " FROM invalid_rows ORDER BY 1",
        )
        with tmp.open("wb") as fh:
            for row, applicant_id, state, transaction_id, outcome, result, reason in cursor:
                if result is not None:
                    fh.write(result.encode() if isinstance(result, str) else result)
                else:
                    line = {
                        "applicant_id": applicant_id,
                        "row": row,
                        "outcome": outcome or PENDING,
                        "state": state,
                        "transaction_id": transaction_id,
                        "error_message": reason,
                    }
                    fh.write(orjson.dumps(line))
                fh.write(b"\n")
                lines += 1
        os.replace(tmp, out)
        return lines


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
