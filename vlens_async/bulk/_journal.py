"""The bulk runner's journal: an SQLite file that survives a crash and drives ``resume``.

What it holds: the service it was started with (the client's base URL) and the manifest's
identity (its resolved path and the SHA-256 of its bytes), so that a resume against another
service or another manifest is refused (:class:`~vlens_async.errors.JournalMismatchError`); a
random secret made with the journal; and per applicant: the manifest row, the state of its flow
and the transaction id (written *before* the first request, and derived from the applicant id
and the job's secret with :func:`~vlens_async.transaction_id_for`, so that neither a crash nor a
claim lost with the write-ahead log can lead to a second transaction), the flow's snapshot
without personal data after every step, each HTTP attempt (step, outcome, status, error code,
duration) and, once finished, the line of the results file. No images, no names, addresses, birth
dates or national ID numbers, no server free text: the national-ID cross-check's *result* is kept
instead of what it compares (see :data:`SNAPSHOT_ALLOW`).

The file is created readable by its owner only (0600, and SQLite gives its ``-wal`` and ``-shm``
the same mode), and locked with ``flock`` on an open descriptor of the file itself, so a second
job is refused whatever path names it (a symlink). A file with more than one hard link is
refused: SQLite finds the ``-wal`` by the name it is opened with, so through another link it
would miss a crashed job's last writes. A resume opens only a journal it recognises (a vlens
journal of this schema, intact, started against the same service and manifest) and otherwise
refuses with :class:`~vlens_async.errors.JournalError` saying why; every check reads the file
through a read-only connection first, so a refused journal, its ``-wal`` and ``-shm`` keep their
bytes and modes (only a ``-wal`` whose ``-shm`` was deleted gets its index rebuilt). Starting
afresh is a new job, never a fallback.

Why SQLite: atomic transactions (a write either happened or did not, even under SIGKILL), an
index for duplicate-id detection without holding every id in memory, and percentile queries over
the step timings without loading them. WAL mode with ``synchronous=NORMAL`` keeps a commit cheap
(no fsync per step) and still survives the process being killed; only a power cut (or a lost
``-wal``) may lose the last few commits, which resume then repeats with the same transaction ids.

Every call runs on one dedicated thread (sqlite3 connections are tied to the thread that made them,
and one writer needs no locking); the event loop only awaits. Each method is one SQLite
transaction, so cancelling the coroutine that awaits it leaves the file consistent either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import hashlib
import math
import os
import sqlite3
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar

import attrs
import orjson

from .._ids import MIN_SECRET_BYTES, new_job_secret, transaction_id_for
from ..errors import BulkInputError, JournalError, JournalMismatchError
from ._manifest import BulkApplicant, InvalidRow

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the rest works
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PENDING",
    "SCHEMA_VERSION",
    "SNAPSHOT_ALLOW",
    "AttemptRecord",
    "Claim",
    "ClaimKind",
    "JobIdentity",
    "Journal",
    "JournalCounts",
    "LatencyStats",
    "check_output_path",
    "dump_snapshot",
    "export_line",
    "load_snapshot",
    "manifest_digest",
    "needs_review",
    "same_file",
    "strip_snapshot",
]

# 2: the service and manifest it was started with; snapshots without personal data. A journal of
# schema 1 (which kept national IDs and birth dates) is refused: finish it with the release that
# wrote it, or start a new journal.
SCHEMA_VERSION: Final = 2
PENDING: Final = "pending"
_TABLES: Final = frozenset({"meta", "runs", "applicants", "invalid_rows", "steps"})
_OWNER_ONLY: Final = 0o600
# The meta row of the job's secret, from which each applicant's transaction id is derived.
_SECRET_KEY: Final = "job_secret"
# Results-line words that make an applicant need a person's review (the flow's review reasons).
_REVIEW_FLAGS: Final = frozenset({"aml_matched", "fake_document", "src_invalid"})
# What of a flow snapshot the journal keeps: an allow-list, so that a field the service adds
# later (or one we forgot) is dropped rather than stored. ``True`` keeps a plain value (a string,
# number, boolean or null, never a structure); a dict keeps those keys of a mapping (``"*"``:
# every key); a one-item list keeps each item of a list by that spec. It keeps what resume and the
# results need: state, ids, step records (without the server's free-text message), the
# cross-check's result and, of the services, only the flags the results line reports. The
# runner journals the flow's snapshot *without* personal data; this list is the second line of
# defence: extracted fields (names, addresses, birth dates, national IDs), the name check, AML
# case names and validation values never reach the file.
_Spec: TypeAlias = "bool | Mapping[str, _Spec] | list[_Spec]"
_ERROR: Final[Mapping[str, _Spec]] = {"error_type": True, "error_code": True, "request_id": True}
_STEP: Final[_Spec] = {"status": True, "attempts": True, "duration": True, **_ERROR}
_SERVICES: Final[_Spec] = {
    "validations": [{"field": True, "errors": [{"code": True}]}],  # never the value
    "spoofing": {"fake": True},
    "classification": {"doc_type": True},
    "liveness": True,
    "aml": {"aml_matched": True},
    "src": {"is_valid": True, "error_code": True},
}
_RESPONSE: Final[_Spec] = {
    "services": _SERVICES,
    "data": {"is_verification_process_completed": True, "is_digital_identity_verified": True},
    "error_code": True,
    "sent_transaction_id": True,
    "request_id": True,
}
SNAPSHOT_ALLOW: Final[_Spec] = {
    **dict.fromkeys(
        (
            "version",
            "personal_data",
            "transaction_id",
            "client_transaction_id",
            "state",
            "max_liveness_attempts",
            "liveness_attempts",
            "get_extracted_data",
            "prepare",
            "name_check",
        ),
        True,
    ),
    "failure": _ERROR,
    "steps": {"*": _STEP},
    "responses": {"*": _RESPONSE},
    "timings": {"*": True},
    "cross_check": [True],
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
    snapshot TEXT,                   -- Transaction.snapshot() (no personal data), SNAPSHOT_ALLOW
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
    """The journal's answer to :meth:`Journal.claim`. ``state`` is the journaled state;
    ``snapshot_error`` says why a journaled snapshot could not be read (``snapshot`` is then
    None and the applicant is recorded as an error)."""

    kind: ClaimKind
    transaction_id: str | None = None
    snapshot: Any = None
    attempts: int = 0
    first_row: int | None = None
    outcome: str | None = None
    state: str = "NEW"
    snapshot_error: str | None = None


@attrs.frozen
class JobIdentity:
    """What a journal was started with, and a resume must match: the service's base URL (as
    :attr:`VlensClient.base_url` gives it) and the manifest's resolved path and SHA-256 digest
    (None for applicants given as an iterable, see :func:`manifest_digest`)."""

    base_url: str | None = None
    manifest_path: str | None = None
    manifest_sha256: str | None = None

    def meta(self) -> dict[str, str]:
        """The journal's ``meta`` rows for this identity (an empty string for None)."""
        return {
            "base_url": self.base_url or "",
            "manifest_path": self.manifest_path or "",
            "manifest_sha256": self.manifest_sha256 or "",
        }

    def mismatch(self, stored: Mapping[str, str]) -> str | None:
        """Why a journal whose ``meta`` is ``stored`` was started with something else, or None."""
        mine = self.meta()
        if stored.get("base_url", "") != mine["base_url"]:
            return (
                f"it was started against {_service(stored.get('base_url', ''))}, not"
                f" {_service(mine['base_url'])}"
            )
        if stored.get("manifest_path", "") != mine["manifest_path"]:
            return (
                f"it was started from the manifest {stored.get('manifest_path') or '(none)'},"
                f" not {mine['manifest_path'] or '(applicants given in code)'}"
            )
        if stored.get("manifest_sha256", "") != mine["manifest_sha256"]:
            return (
                f"the manifest {mine['manifest_path']} changed since the journal was started"
                f" (SHA-256 {stored.get('manifest_sha256', '')[:12]}..., now"
                f" {mine['manifest_sha256'][:12]}...)"
            )
        return None


def _service(base_url: str) -> str:
    """A base URL as it may be shown: scheme, host, port and path, never user or password."""
    if not base_url:
        return "(no service recorded)"
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def manifest_digest(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The manifest's identity: its resolved path and the SHA-256 of its bytes (blocking: call
    it in a thread)."""
    resolved = Path(path).resolve()
    digest = hashlib.sha256()
    with resolved.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return str(resolved), digest.hexdigest()


def check_output_path(
    out: Path, *, manifest: Path | None = None, journal: Path | None = None
) -> None:
    """Refuse a results path before anything is sent (blocking: call it in a thread): a folder,
    a path in a folder that does not exist or cannot be written (none is created), the manifest
    itself, or the journal. Raises :class:`~vlens_async.errors.BulkInputError`."""
    if out.is_dir():
        raise BulkInputError(f"the results path {out} is a folder: give a file name")
    parent = out.parent
    if not parent.is_dir():
        raise BulkInputError(f"the folder of the results path {out} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BulkInputError(f"cannot write the results file in {parent}")
    for other, what in ((manifest, "the manifest"), (journal, "the journal")):
        if other is not None and same_file(out, other):
            raise BulkInputError(f"the results path {out} is {what}: give another file name")


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same resolved path, or the same inode)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def needs_review(result: str | bytes | None) -> int:
    """1 when a journaled results line says the applicant needs review (its ``needs_review``,
    or for a line without one, its service flags), else 0; a line that is not JSON needs it."""
    if result is None:
        return 0
    try:
        line = orjson.loads(result)
    except orjson.JSONDecodeError:
        return 1
    if not isinstance(line, dict):
        return 1
    if "needs_review" in line:
        return int(bool(line["needs_review"]))
    flags = line.get("service_flags")
    return int(isinstance(flags, list) and bool(_REVIEW_FLAGS.intersection(map(str, flags))))


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
    ones, ``invalid`` for bad rows), failures by error code or class, and how many finished
    applicants need a person's review (AML matched, spoofing, SRC failed)."""

    by_outcome: dict[str, int]
    by_error: dict[str, int]
    needs_review: int = 0


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
        self._target = ""  # the journal file's real path (a symlink resolved)
        self._secret = ""  # the job's secret (see _job_secret)

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str] | None,
        *,
        resume: bool = False,
        identity: JobIdentity | None = None,
    ) -> Journal:
        """Open the journal at ``path`` (``None``: in memory) and start a run.

        Without ``resume`` the journal is created (its folder must exist: none is made), and an
        existing file is used only if it is empty or a vlens journal holding no applicant yet:
        starting over on one that holds some would open a second transaction for each of them.
        With ``resume`` it must be a journal this release recognises, intact, started with the
        same ``identity`` (service and manifest). Every refusal is a
        :class:`~vlens_async.errors.JournalError` (``JournalMismatchError`` for another service
        or manifest) raised before anything is written, saying why: the checks read the file
        through a read-only connection, so a refused journal, its ``-wal`` and ``-shm`` keep
        their bytes and modes.

        Cancelled while the journal thread opens the file, it waits for that thread (without
        blocking the event loop) and closes what it opened before the cancellation goes on, so
        the file is never left locked by a journal nobody holds.
        """
        journal = cls(None if path is None else Path(path))
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(
            journal._executor, journal._open_sync, resume, identity or JobIdentity()
        )
        try:
            await asyncio.shield(opening)
        except BaseException:
            # The open goes on in its thread whatever stopped this coroutine (a cancellation):
            # close what it opens, on that thread right after it, and wait for both.
            closing = loop.run_in_executor(journal._executor, journal._abandon_sync)
            journal._executor.shutdown(wait=False)
            await _wait_out(opening, closing)
            raise
        return journal

    async def close(self, *, interrupted: bool = False) -> None:
        """Record the end of this run and close the file.

        The close is queued behind every pending write on the journal thread, so they land first;
        the thread then ends (the interpreter waits for it at exit even if this is cancelled).
        Should the end of the run fail to be recorded, the error is raised, but the file is
        closed and unlocked all the same.
        """
        try:
            if self._conn is not None:
                await self._call(self._close_sync, interrupted)
        finally:
            self._executor.shutdown(wait=False)

    async def claim(self, applicant: BulkApplicant) -> Claim:
        """Look ``applicant`` up and take it for this run (see :class:`ClaimKind`)."""
        return await self._call(self._claim_sync, applicant)

    async def hold(self, applicant_id: str) -> None:
        """Always held: one job owns this journal (its file lock)."""

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

    def _open_sync(self, resume: bool, identity: JobIdentity) -> None:
        if self.path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            blank = True
        else:
            self._check_path(resume)
            self._lock(resume)
            try:
                # Every check on a read-only connection first: a refusal changes nothing.
                blank = self._inspect(resume, identity)
                conn = self._connect()
            except BaseException:
                self._unlock()
                raise
        try:
            conn.create_function("vlens_needs_review", 1, needs_review, deterministic=True)
            if blank:
                self._create(conn, identity)
            elif not resume:
                with _transaction(conn):  # a journal that never claimed anyone: a fresh start
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)", identity.meta().items()
                    )
            self._secret = self._job_secret(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            with _transaction(conn):
                # Bad rows stay until their row is read again (a fixed row then clears its entry,
                # see _claim_sync): a resume stopped before reaching them must not lose them.
                cur = conn.execute("INSERT INTO runs (started_at) VALUES (?)", (time.time(),))
                self.run = int(cur.lastrowid or 0)
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._unlock()
            raise JournalError(
                f"journal {self.path} is not a vlens journal or is damaged ({_why(exc)})"
            ) from None
        except BaseException:
            conn.close()
            self._unlock()
            raise
        self._conn = conn

    def _check_path(self, resume: bool) -> None:
        """Refuse a journal path that cannot be what is asked, before anything is opened."""
        path = self.path
        assert path is not None
        if path.is_dir():
            raise JournalError(f"the journal path {path} is a folder: give a file name")
        if not path.parent.is_dir():
            raise JournalError(f"the folder of the journal {path} does not exist")
        if resume and not path.exists():
            raise JournalError(
                f"there is no journal at {path} to resume: run without resume to start a job"
            )
        if resume and path.stat().st_size == 0:
            raise JournalError(
                f"journal {path} is empty (0 bytes), so there is nothing to resume (its write-ahead"
                " log lost, or the file truncated?): move it away and run without resume to"
                " start afresh"
            )
        # The file the lock is on: through a symlink, its -wal sits beside the target.
        self._target = os.path.realpath(path)

    def _inspect(self, resume: bool, identity: JobIdentity) -> bool:
        """Run every check on a read-only connection; True when the file is blank (a new
        journal is made in it). Raises :class:`~vlens_async.errors.JournalError` saying why
        the journal cannot be used as asked."""
        conn = self._read_only()
        try:
            if not resume and self._is_blank(conn):
                return True
            self._check(conn, resume, identity)
            return False
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"journal {self.path} is not a vlens journal or is damaged ({_why(exc)})"
            ) from None
        finally:
            conn.close()

    def _read_only(self) -> sqlite3.Connection:
        """A connection that reads the journal as a crash left it and writes no byte of it, its
        ``-wal`` or its ``-shm``: a refused journal is left exactly as it was."""
        target = self._target
        if not os.path.exists(target + "-wal"):
            # Nothing but the main file to read: read it as it is, without a lock or side file
            # (a read-only connection would create an empty -wal and -shm beside it).
            query = "immutable=1"
        elif os.path.exists(target + "-shm"):
            # A crashed job's log and its index: read both, write neither (SQLite builds a
            # private index instead when the -shm cannot be trusted).
            query = "mode=ro&readonly_shm=1"
        else:
            # A log whose index was deleted: SQLite must build the -shm (an index of the log,
            # holding no data) before it can read the log; the journal and its log stay as they
            # are.
            query = "mode=ro"
        uri = f"file:{urllib.parse.quote(target)}?{query}"
        try:
            return sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path} ({_why(exc)})") from None

    def _connect(self) -> sqlite3.Connection:
        """Make the checked journal owner-only and connect to it for writing."""
        # Owner-only whatever the umask or the file's history, once the checks passed: SQLite
        # gives the -wal and -shm it creates the mode of the database file.
        assert self._lock_fd is not None
        with contextlib.suppress(PermissionError):
            os.fchmod(self._lock_fd, _OWNER_ONLY)
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE), one per method.
        uri = f"file:{urllib.parse.quote(self._target)}?mode=rw"
        try:
            return sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path} ({_why(exc)})") from None

    @staticmethod
    def _is_blank(conn: sqlite3.Connection) -> bool:
        """True for a file without a single table: a new (or 0-byte) journal."""
        return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)

    def _create(self, conn: sqlite3.Connection, identity: JobIdentity) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        with _transaction(conn):
            rows = {
                "schema": str(SCHEMA_VERSION),
                _SECRET_KEY: new_job_secret(),
                **identity.meta(),
            }
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows.items())

    def _job_secret(self, conn: sqlite3.Connection) -> str:
        """The job's secret, made at random with the journal: an applicant's transaction id is
        derived from it and the applicant id, so a claim lost with the write-ahead log comes
        back with the same id. A journal made before there was one gets one now, checkpointed
        into the main file at once, so that a log lost later cannot take it along."""
        row = conn.execute("SELECT value FROM meta WHERE key=?", (_SECRET_KEY,)).fetchone()
        if row is not None:
            return str(row[0])
        secret = new_job_secret()
        with _transaction(conn):
            conn.execute("INSERT INTO meta VALUES (?, ?)", (_SECRET_KEY, secret))
        if self.path is not None:
            conn.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
        return secret

    def _check(self, conn: sqlite3.Connection, resume: bool, identity: JobIdentity) -> None:
        """Refuse a file that is not a journal of this schema, a damaged one, one already used
        (without resume), or one started with another service or manifest (with resume). Reads
        only: ``conn`` is read-only."""
        where = f"journal {self.path}"
        found = conn.execute("PRAGMA quick_check").fetchone()[0]
        if found != "ok":
            raise JournalError(f"{where} is damaged (integrity check: {str(found)[:80]})")
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if not tables:
            raise JournalError(
                f"{where} holds no tables, so there is nothing to resume (its -wal deleted after a"
                " crash?): move it away and run without resume to start afresh"
            )
        if not tables & _TABLES:
            raise JournalError(f"{where} is not a vlens journal (an SQLite file of other tables)")
        if missing := _TABLES - tables:
            raise JournalError(
                f"{where} lacks its table(s) {', '.join(sorted(missing))}: damaged (a -wal file"
                " deleted after a crash?) or not a vlens journal"
            )
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        schema = meta.get("schema")
        if schema is None or not str(schema).isdigit():
            raise JournalError(f"{where} has no valid schema version ({schema!r} is not a number)")
        if int(schema) != SCHEMA_VERSION:
            raise JournalError(
                f"{where} has schema {schema}, not {SCHEMA_VERSION}: it was written by another"
                " release of vlens-async (schema 1 kept national IDs); finish it with that release,"
                " or start a new journal"
            )
        secret = meta.get(_SECRET_KEY)
        if secret is not None and len(str(secret).encode()) < MIN_SECRET_BYTES:
            raise JournalError(f"{where} is damaged (its job secret is too short)")
        known = conn.execute("SELECT count(*) FROM applicants").fetchone()[0]
        if not resume:
            if known:
                raise JournalError(
                    f"{where} already holds {known} applicant(s): resume it, or give a new"
                    " journal path"
                )
            return
        if not conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
            raise JournalError(f"{where} records no run: there is nothing to resume")
        why = identity.mismatch(meta)
        if why is not None:
            raise JournalMismatchError(f"will not resume {where}: {why}")

    def _lock(self, resume: bool) -> None:
        # Two jobs on one journal would both resume the same applicants and send their steps
        # twice. An advisory lock on an open descriptor of the journal file itself (its inode),
        # so every path that names it (a symlink) finds it taken; not SQLite's exclusive mode,
        # which would also shut out readers such as a monitoring query. The OS drops it if the
        # process dies. flock and SQLite's own (fcntl) locks do not interact.
        assert self.path is not None
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (0 if resume else os.O_CREAT)
        try:
            fd = os.open(self.path, flags, _OWNER_ONLY)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path} ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise JournalError(f"the journal path {self.path} is not a regular file")
            if info.st_nlink > 1:
                # SQLite finds the write-ahead log by the name it is given (<name>-wal): through
                # another link it would miss a crashed job's last commits, and claim afresh
                # applicants whose transactions were already opened.
                raise JournalError(
                    f"journal {self.path} has {info.st_nlink} hard links: SQLite finds its"
                    " write-ahead log (-wal) by the name it is opened with, so through another"
                    " name a crashed job's last writes would be missed; remove the other link(s)"
                    " and keep one name for the journal"
                )
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise JournalError(
                        f"journal {self.path} is in use by another bulk job"
                    ) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _close_sync(self, interrupted: bool) -> None:
        conn = self._db
        try:
            with _transaction(conn):
                conn.execute(
                    "UPDATE runs SET finished_at=?, interrupted=? WHERE run=?",
                    (time.time(), int(interrupted), self.run),
                )
        finally:
            # Whatever the write did, the file is closed and unlocked: a job that cannot record
            # its end must not keep the next one (in this process too) out.
            self._conn = None
            try:
                conn.close()
            finally:
                self._unlock()

    def _abandon_sync(self) -> None:
        """Close what an open nobody waits for any more opened (queued right behind it)."""
        if self._conn is not None:
            self._close_sync(interrupted=True)
        else:
            self._unlock()

    def _claim_sync(self, applicant: BulkApplicant) -> Claim:
        conn = self._db
        with _transaction(conn):
            # This row reads well now: whatever was wrong with it in an earlier run is gone.
            conn.execute(
                "DELETE FROM invalid_rows WHERE row=? AND run < ?", (applicant.row, self.run)
            )
            found = conn.execute(
                "SELECT row, run, status, transaction_id, snapshot, attempts, outcome, state"
                " FROM applicants WHERE applicant_id=?",
                (applicant.applicant_id,),
            ).fetchone()
            if found is None:
                # Derived, not random: should this claim be lost (the -wal lost after a
                # checkpoint), claiming the applicant again gives the same transaction.
                transaction_id = transaction_id_for(applicant.applicant_id, self._secret)
                conn.execute(
                    "INSERT INTO applicants (applicant_id, row, run, status, state,"
                    " transaction_id, updated_at) VALUES (?, ?, ?, 'active', 'NEW', ?, ?)",
                    (applicant.applicant_id, applicant.row, self.run, transaction_id, time.time()),
                )
                return Claim(ClaimKind.NEW, transaction_id=transaction_id)
            row, run, status, transaction_id, snapshot, attempts, outcome, state = found
            if run == self.run:
                return Claim(ClaimKind.DUPLICATE, first_row=row)
            conn.execute(
                "UPDATE applicants SET run=?, row=? WHERE applicant_id=?",
                (self.run, applicant.row, applicant.applicant_id),
            )
        restored, error = load_snapshot(snapshot)
        return Claim(
            ClaimKind.DONE if status == "done" else ClaimKind.RESUME,
            transaction_id=transaction_id,
            snapshot=restored,
            attempts=attempts if isinstance(attempts, int) else 0,
            outcome=outcome,
            state=state if isinstance(state, str) and state else "NEW",
            snapshot_error=error,
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
            snap = None if snapshot is None else dump_snapshot(snapshot)
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
        review = conn.execute(
            f"SELECT coalesce(sum(vlens_needs_review(result)), 0) FROM applicants a"
            f" WHERE status='done' AND {_LIVE}"
        ).fetchone()[0]
        return JournalCounts(by_outcome=by_outcome, by_error=by_error, needs_review=int(review))

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
        # Never a folder the user did not ask for: the runner checked the path before the job.
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        tmp = Path(tmp_name)  # mkstemp: owner-only (0600), whatever the umask
        lines = 0
        # A cursor streams the rows: memory stays flat however long the job is.
        cursor = conn.execute(
            "SELECT row, applicant_id, state, transaction_id, outcome, result, NULL"
            f" FROM applicants a WHERE {_LIVE}"
            " UNION ALL SELECT row, applicant_id, NULL, NULL, 'invalid', NULL, reason"
            " FROM invalid_rows ORDER BY 1",
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                for row in cursor:
                    fh.write(orjson.dumps(export_line(*row)))
                    fh.write(b"\n")
                    lines += 1
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return lines


async def _wait_out(*futures: asyncio.Future[Any]) -> None:
    """Wait until every one of ``futures`` is done, without blocking the event loop, whatever
    happens to the caller meanwhile: a cancellation is held back until then, and raised after.
    Their exceptions are taken (and dropped: the caller has its own to raise)."""
    cancelled = False
    while not all(future.done() for future in futures):
        try:
            await asyncio.wait(futures)
        except asyncio.CancelledError:
            cancelled = True
    for future in futures:
        if not future.cancelled():
            future.exception()
    if cancelled:
        raise asyncio.CancelledError


def export_line(
    row: int,
    applicant_id: str | None,
    state: str | None,
    transaction_id: str | None,
    outcome: str | None,
    result: Any,
    reason: str | None,
) -> dict[str, Any]:
    """The results-file line of one manifest row (the bulk journal's export and the queue's):
    the journaled line when it reads back, else one built from the row's columns (an unfinished
    applicant as ``pending``, a bad row with its ``reason``, a line that cannot be read back
    flagged for review)."""
    line = _result_line(result)
    if line is not None:
        return line
    line = {
        "applicant_id": applicant_id,
        "row": row,
        "outcome": outcome or PENDING,
        "state": state,
        "transaction_id": transaction_id,
        "needs_review": False,
        "error_message": reason,
    }
    if result is not None:  # finished, but its line cannot be read back
        line["needs_review"] = True
        line["error_message"] = "the journaled result could not be read"
    return line


def _result_line(result: Any) -> dict[str, Any] | None:
    """A journaled results line, read back (None when there is none or it is not a JSON
    object: such a line is rebuilt, never copied verbatim); ``needs_review`` always set."""
    if result is None:
        return None
    try:
        line = orjson.loads(result)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(line, dict):
        return None
    if "needs_review" not in line:
        line["needs_review"] = bool(needs_review(result))
    return line


def load_snapshot(text: Any) -> tuple[Any, str | None]:
    """A journaled snapshot, or None and why it cannot be read."""
    if text is None:
        return None, None
    try:
        return orjson.loads(text), None
    except (orjson.JSONDecodeError, TypeError):
        return None, "the journaled snapshot is not JSON"


def dump_snapshot(snapshot: Mapping[str, Any]) -> str:
    """A snapshot as the journal keeps it: the allow-list only, marked as holding no personal
    data (whatever it was taken with)."""
    kept = strip_snapshot(snapshot)
    if isinstance(kept, dict) and kept.get("personal_data"):
        kept["personal_data"] = False
        kept["name_check"] = bool(snapshot.get("name_check") or snapshot.get("name_check_value"))
    return orjson.dumps(kept).decode()


def _why(exc: BaseException) -> str:
    """SQLite's own short reason (it names no personal data)."""
    return str(exc)[:100] or type(exc).__name__


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
