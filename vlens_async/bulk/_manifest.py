"""Reading a bulk manifest (CSV or JSONL) lazily, one applicant a row.

A manifest of a million rows must not be loaded at once, so :func:`iter_manifest` is a generator
that reads one record at a time and checks it as it goes. A bad row does not stop the job: it comes
out as an :class:`InvalidRow` with its row number and the reason, and the runner records it as
failed. Only a manifest that cannot be read at all (no such file, a CSV header that cannot be
parsed or lacks a required column) raises :class:`~vlens_async.errors.BulkInputError`.

Duplicate applicant ids are *not* detected here: that needs memory proportional to the job, so the
runner asks its journal (an indexed SQLite table on disk) instead.

This module does blocking file I/O (reading, ``stat``); the runner calls it from a worker thread.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from ..errors import BulkInputError

__all__ = [
    "FACE_COLUMNS",
    "MANIFEST_COLUMNS",
    "OPTIONAL_COLUMNS",
    "BulkApplicant",
    "InvalidRow",
    "ManifestItem",
    "count_manifest_rows",
    "iter_manifest",
    "manifest_format",
]

FACE_COLUMNS: Final = ("face_1", "face_2", "face_3")
MANIFEST_COLUMNS: Final = ("applicant_id", "front", "back", *FACE_COLUMNS)
OPTIONAL_COLUMNS: Final = ("name_check_value", "client_transaction_id")
IMAGE_COLUMNS: Final = ("front", "back", *FACE_COLUMNS)
ALL_COLUMNS: Final = (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS)
MAX_ID_LENGTH: Final = 200
# Stored in the journal and the results, or sent to the service: checked as text, not as paths.
_TEXT_COLUMNS: Final = ("applicant_id", "name_check_value", "client_transaction_id")
_ID_COLUMNS: Final = ("applicant_id", "client_transaction_id")
# C0 and C1 controls and the Unicode line breaks: no id or name holds one.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# An id holding the delimiter or a quote is, in practice, a stray quote that merged cells.
_NOT_IN_ID: Final = re.compile(r'[,"]')
# Undecodable bytes become lone surrogates: a bad id or name then fails its row (see _text),
# while a path keeps its bytes (os.fsencode undoes the escape).
_CSV_ERRORS: Final = "surrogateescape"

_R = TypeVar("_R")


def _three_paths(
    faces: tuple[str | os.PathLike[str], str | os.PathLike[str], str | os.PathLike[str]],
) -> tuple[Path, Path, Path]:
    # str paths work everywhere else in the library; here too.
    if isinstance(faces, str | bytes) or len(faces) != 3:
        raise BulkInputError("faces must be three image paths")
    return Path(faces[0]), Path(faces[1]), Path(faces[2])


@attrs.frozen
class BulkApplicant:
    """One applicant of a bulk job: where their images are, and what to send with them.

    ``row`` is the 1-based number of the record in the manifest (a CSV header is not counted).
    Relative paths are joined to the folder of the manifest path as given (a symlinked manifest's
    own folder, not its target's). The repr shows no personal data: neither the name check nor
    the image paths (a folder is often named after the customer).
    """

    applicant_id: str
    front: Path = attrs.field(repr=False, converter=Path)
    back: Path = attrs.field(repr=False, converter=Path)
    faces: tuple[Path, Path, Path] = attrs.field(repr=False, converter=_three_paths)
    row: int = 0
    name_check_value: str | None = attrs.field(default=None, repr=False)
    client_transaction_id: str | None = None


@attrs.frozen
class InvalidRow:
    """A manifest row that cannot be processed: its row number, its id if it had one, and why.

    ``applicant_id`` is None when the row has no valid id: the raw text of a bad one (which may be
    the rest of the file after a stray quote) is never kept, and ``reason`` quotes no cell.
    """

    row: int
    reason: str
    applicant_id: str | None = None


ManifestItem = BulkApplicant | InvalidRow


def manifest_format(path: Path) -> str:
    """``"csv"`` or ``"jsonl"``, from the file name, else from the first non-blank character."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    return "jsonl" if head.startswith(b"{") else "csv"


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestItem]:
    """Yield each row of the manifest at ``path`` as a :class:`BulkApplicant` or an
    :class:`InvalidRow`, reading one record at a time (blocking; call it from a thread)."""
    manifest, kind = _open_manifest(path)
    # The folder the user named, not a symlink's target: relative image paths are theirs.
    base = Path(os.path.abspath(manifest)).parent
    if kind == "jsonl":
        yield from _iter_jsonl(manifest, base)
    else:
        yield from _iter_csv(manifest, base)


def count_manifest_rows(path: str | os.PathLike[str]) -> int:
    """Count the records of a manifest without keeping them (for a progress bar's total).

    Counts what :func:`iter_manifest` yields: a CSV record it cannot parse is one (invalid) row.
    Raises :class:`~vlens_async.errors.BulkInputError` when the file or its header cannot be read.
    """
    manifest, kind = _open_manifest(path)
    if kind == "jsonl":
        with manifest.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    with manifest.open(newline="", encoding="utf-8-sig", errors=_CSV_ERRORS) as fh:
        reader = csv.reader(fh, dialect=_dialect(manifest))
        _csv_header(lambda: next(reader, None))
        count = 0
        for record in _csv_records(reader, lambda: reader.line_num):
            if isinstance(record, csv.Error) or any(cell.strip() for cell in record):
                count += 1
        return count


def _open_manifest(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The manifest and its format; a :class:`BulkInputError` that quotes no path (it may name
    a customer) when it is not a readable file."""
    manifest = Path(path)
    try:
        if manifest.is_file():
            return manifest, manifest_format(manifest)
    except (OSError, ValueError) as exc:
        raise BulkInputError(f"cannot read the manifest ({_os_reason(exc)})") from None
    raise BulkInputError("manifest not found")


def _os_reason(exc: OSError | ValueError) -> str:
    """Why a file operation failed, without the path that ``str(exc)`` would quote."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "not a usable file name"


def _dialect(path: Path) -> type[csv.Dialect]:
    return csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel


def _csv_header(read: Callable[[], Sequence[str] | None]) -> list[str]:
    """The header's column names; a header the csv module cannot parse fails the manifest."""
    try:
        names = read()
    except csv.Error as exc:
        # The csv module's own words quote no data ("field larger than field limit (131072)").
        raise BulkInputError(f"cannot read the manifest header: {exc}") from None
    return [name.strip() for name in names or ()]


def _csv_records(reader: Iterator[_R], line_num: Callable[[], int]) -> Iterator[_R | csv.Error]:
    """The reader's records, with the error for one it cannot parse (a field over the csv
    module's size limit, say): the reader drops the rest of that line and goes on after it.

    ``line_num`` must count the lines the parser consumed, failed records included (a
    ``csv.reader``'s, not a ``DictReader``'s, which moves on success only).
    """
    failed_at = -1
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if line_num() == failed_at:
                # Nothing was read since the last error: going on would never end.
                raise BulkInputError(f"cannot read the manifest: {exc}") from None
            failed_at = line_num()
            yield exc


def _iter_csv(manifest: Path, base: Path) -> Iterator[ManifestItem]:
    # utf-8-sig: spreadsheets often save a byte-order mark that would stick to the first header.
    with manifest.open(newline="", encoding="utf-8-sig", errors=_CSV_ERRORS) as fh:
        reader = csv.DictReader(fh, dialect=_dialect(manifest))
        header = _csv_header(lambda: reader.fieldnames)
        missing = [column for column in MANIFEST_COLUMNS if column not in header]
        if missing:
            # Every row would fail the same way; say it once instead.
            raise BulkInputError(f"manifest header lacks column(s): {', '.join(missing)}")
        reader.fieldnames = header
        row = 0
        for record in _csv_records(reader, lambda: reader.reader.line_num):
            if isinstance(record, csv.Error):
                row += 1
                yield InvalidRow(row, f"cannot parse the row as CSV: {record}")
                continue
            if not any((value or "").strip() for key, value in record.items() if key is not None):
                continue  # a blank line
            row += 1
            if None in record:
                yield InvalidRow(row, "row has more values than the header has columns")
                continue
            yield _check(record, row, base)


def _iter_jsonl(manifest: Path, base: Path) -> Iterator[ManifestItem]:
    # Bytes, decoded line by line: one badly encoded line is one bad row, not a dead job.
    with manifest.open("rb") as fh:
        row = 0
        for line in fh:
            if not line.strip():
                continue
            row += 1
            try:
                record = json.loads(line.removeprefix(b"\xef\xbb\xbf"))
            except json.JSONDecodeError as exc:
                yield InvalidRow(row, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            except UnicodeDecodeError:
                yield InvalidRow(row, "not valid UTF-8")
                continue
            except ValueError:
                # json's own words quote no data ("Exceeds the limit (4300 digits) ...").
                yield InvalidRow(row, "not valid JSON (a number too long)")
                continue
            except RecursionError:
                # json recurses once per nesting level: "[[[[..." deep enough exhausts the stack.
                yield InvalidRow(row, "not valid JSON (nested too deeply)")
                continue
            if not isinstance(record, dict):
                yield InvalidRow(row, "not a JSON object")
                continue
            yield _check(record, row, base)


def _text(record: Mapping[str, Any], column: str) -> str | None:
    """The column's value as stripped text, or None when absent or empty.

    Raises ValueError, with a reason that quotes none of the value, when it cannot be used.
    """
    value = record.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"column {column!r} must be text")
    text = str(value).strip()
    if column in _TEXT_COLUMNS:
        _check_text(column, text)
    return text or None


def _check_text(column: str, text: str) -> None:
    """Refuse what sqlite and orjson cannot store, and what betrays merged cells."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{column} is not valid text (bad UTF-8 or a lone surrogate)") from None
    if "\n" in text or "\r" in text:
        raise ValueError(f"{column} spans several lines: a stray quote?")
    if _CONTROL.search(text):
        raise ValueError(f"{column} contains a control character")
    if column not in _ID_COLUMNS:
        return
    if _NOT_IN_ID.search(text):
        raise ValueError(f"{column} contains a comma or a quote: a stray quote?")
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"{column} longer than {MAX_ID_LENGTH} characters")


def _valid_id(record: Mapping[str, Any]) -> str | None:
    """The row's applicant id when it is a valid one, else None (never a bad id's text)."""
    try:
        return _text(record, "applicant_id")
    except ValueError:
        return None


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image of the row, or None; the reason never shows the path."""
    try:
        found = path.is_file()
    except (OSError, ValueError) as exc:
        # A name too long, a NUL byte, a folder we may not enter: this row's problem only.
        return f"cannot check the file ({_os_reason(exc)})"
    return None if found else "file not found"


def _check(record: Mapping[str, Any], row: int, base: Path) -> ManifestItem:
    """Turn one raw record into an applicant, or say what is wrong with it."""
    try:
        values = {column: _text(record, column) for column in ALL_COLUMNS}
    except ValueError as exc:
        return InvalidRow(row, str(exc), _valid_id(record))
    applicant_id = values["applicant_id"]
    missing = [column for column in MANIFEST_COLUMNS if values[column] is None]
    if missing:
        return InvalidRow(row, f"missing value(s) for {', '.join(missing)}", applicant_id)
    assert applicant_id is not None  # checked with the other required columns
    paths: dict[str, Path] = {}
    for column in IMAGE_COLUMNS:
        path = base / str(values[column])  # an absolute path replaces the base
        problem = _file_problem(path)
        if problem is not None:
            return InvalidRow(row, f"{column}: {problem}", applicant_id)
        paths[column] = path
    return BulkApplicant(
        applicant_id=applicant_id,
        front=paths["front"],
        back=paths["back"],
        faces=(paths["face_1"], paths["face_2"], paths["face_3"]),
        row=row,
        name_check_value=values["name_check_value"],
        client_transaction_id=values["client_transaction_id"],
    )
