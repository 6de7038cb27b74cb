"""Unit tests for reading bulk manifests (CSV and JSONL) lazily and reporting bad rows."""

from __future__ import annotations

import csv
import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from vlens_async.bulk._manifest import (
    MAX_ID_LENGTH,
    BulkApplicant,
    InvalidRow,
    _csv_records,
    count_manifest_rows,
    iter_manifest,
)
from vlens_async.errors import BulkInputError

HEADER = "applicant_id,front,back,face_1,face_2,face_3,name_check_value,client_transaction_id"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder with the image files the manifests below name."""
    folder = tmp_path / "img"
    folder.mkdir()
    for name in ("f.jpg", "b.jpg", "1.jpg", "2.jpg", "3.jpg"):
        (folder / name).write_bytes(b"\xff\xd8 not really")
    return folder


def row(applicant_id: str, **override: str) -> dict[str, str]:
    """A manifest record naming the files of the ``images`` fixture."""
    record = {
        "applicant_id": applicant_id,
        "front": "img/f.jpg",
        "back": "img/b.jpg",
        "face_1": "img/1.jpg",
        "face_2": "img/2.jpg",
        "face_3": "img/3.jpg",
    }
    record.update(override)
    return record


def write_csv(path: Path, records: list[dict[str, str]], header: str = HEADER) -> Path:
    """Write ``records`` as CSV under ``header``."""
    columns = header.split(",")
    lines = [header] + [",".join(r.get(c, "") for c in columns) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_rows_become_applicants_with_resolved_paths(tmp_path: Path, images: Path) -> None:
    """A good CSV row gives an applicant whose paths are resolved against the manifest."""
    manifest = write_csv(tmp_path / "m.csv", [row("a1", name_check_value="Ali")])
    (item,) = list(iter_manifest(manifest))
    assert isinstance(item, BulkApplicant)
    assert item.applicant_id == "a1"
    assert item.row == 1
    assert item.front == tmp_path.resolve() / "img/f.jpg"
    assert item.faces[2].name == "3.jpg"
    assert item.name_check_value == "Ali"
    assert item.client_transaction_id is None
    assert "Ali" not in repr(item)


def test_jsonl_rows_become_applicants(tmp_path: Path, images: Path) -> None:
    """JSONL rows work the same, blank lines are skipped and not counted."""
    manifest = tmp_path / "m.jsonl"
    lines = [json.dumps(row("a1")), "", json.dumps(row("a2", client_transaction_id="c-2"))]
    manifest.write_text("\n".join(lines) + "\n")
    items = list(iter_manifest(manifest))
    assert [(i.row, i.applicant_id) for i in items] == [(1, "a1"), (2, "a2")]
    assert isinstance(items[1], BulkApplicant)
    assert items[1].client_transaction_id == "c-2"
    assert count_manifest_rows(manifest) == 2


def test_bad_rows_are_reported_with_row_number_and_reason(tmp_path: Path, images: Path) -> None:
    """Missing values, missing files and extra values fail their row only; the rest go on."""
    manifest = tmp_path / "m.csv"
    write_csv(
        manifest,
        [
            row("a1"),
            row("", front="img/f.jpg"),
            row("a3", back="img/nope.jpg"),
            row("a4", face_2=""),
        ],
    )
    with manifest.open("a") as fh:
        fh.write("a5,img/f.jpg,img/b.jpg,img/1.jpg,img/2.jpg,img/3.jpg,,,surplus\n")
        fh.write(",".join(row("a6").values()) + "\n")
    items = list(iter_manifest(manifest))
    assert [type(i).__name__ for i in items] == [
        "BulkApplicant",
        "InvalidRow",
        "InvalidRow",
        "InvalidRow",
        "InvalidRow",
        "BulkApplicant",
    ]
    bad = {i.row: i for i in items if isinstance(i, InvalidRow)}
    assert "applicant_id" in bad[2].reason
    assert bad[3].reason == "back: file not found"
    assert bad[3].applicant_id == "a3"
    assert "face_2" in bad[4].reason
    assert "more values" in bad[5].reason
    assert count_manifest_rows(manifest) == 6


def test_jsonl_bad_lines_are_rows_not_crashes(tmp_path: Path, images: Path) -> None:
    """Broken JSON, a non-object, bad UTF-8 and a non-text value fail their own row."""
    manifest = tmp_path / "m.jsonl"
    good = json.dumps(row("ok")).encode()
    bad_type = json.dumps(row("x") | {"front": ["a"]}).encode()
    manifest.write_bytes(b"\n".join([b"{nope", b"[1, 2]", b'{"a": "\xff"}', bad_type, good]))
    items = list(iter_manifest(manifest))
    reasons = [i.reason for i in items if isinstance(i, InvalidRow)]
    assert len(reasons) == 4
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "not a JSON object"
    assert reasons[2] == "not valid UTF-8"
    assert "must be text" in reasons[3]
    assert isinstance(items[-1], BulkApplicant)
    assert items[-1].row == 5


def test_header_without_a_required_column_fails_the_manifest(tmp_path: Path) -> None:
    """A CSV header lacking a required column is one clear error, not N bad rows."""
    manifest = write_csv(tmp_path / "m.csv", [], header="applicant_id,front,back,face_1")
    with pytest.raises(BulkInputError, match="face_2, face_3"):
        list(iter_manifest(manifest))


@pytest.mark.parametrize(
    "read", [lambda p: list(iter_manifest(p)), count_manifest_rows], ids=["read", "count"]
)
def test_missing_manifest_is_an_error(tmp_path: Path, read: Callable[[Path], object]) -> None:
    """A manifest that does not exist is a BulkInputError ('not found'), read or counted."""
    with pytest.raises(BulkInputError, match="not found"):
        read(tmp_path / "none.csv")


def test_reading_is_lazy(tmp_path: Path, images: Path) -> None:
    """Reading a long manifest to the end keeps memory flat: rows are not held."""
    manifest = tmp_path / "m.csv"
    with manifest.open("w") as fh:
        fh.write(HEADER + "\n")
        for n in range(8_000):
            fh.write(f"id{n},img/f.jpg,img/b.jpg,img/1.jpg,img/2.jpg,img/3.jpg,,\n")
    tracemalloc.start()
    try:
        seen = sum(1 for _ in iter_manifest(manifest))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 8_000
    # 8,000 applicants held at once would take several megabytes.
    assert peak < 1_000_000


def test_bom_and_tsv_are_understood(tmp_path: Path, images: Path) -> None:
    """A spreadsheet's byte-order mark and tab-separated files are read correctly."""
    manifest = tmp_path / "m.tsv"
    record = row("a1")
    manifest.write_text(
        "\ufeff" + "\t".join(record) + "\n" + "\t".join(record.values()) + "\n", encoding="utf-8"
    )
    (item,) = list(iter_manifest(manifest))
    assert isinstance(item, BulkApplicant)
    assert item.applicant_id == "a1"


def test_repr_hides_image_paths(tmp_path: Path) -> None:
    """A folder is often named after the customer, so an applicant's repr shows no path."""
    folder = tmp_path / "Secret Person"
    applicant = BulkApplicant("a1", folder / "f.jpg", folder / "b.jpg", (folder / "1.jpg",) * 3)
    assert "Secret" not in repr(applicant)
    assert "a1" in repr(applicant)


def test_deeply_nested_jsonl_line_is_an_invalid_row(tmp_path: Path, images: Path) -> None:
    """A line of 100,000 '[' (which exhausts json's recursion) fails its row, not the job."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("[" * 100_000 + "\n" + json.dumps(row("ok")) + "\n")
    items = list(iter_manifest(manifest))
    assert isinstance(items[0], InvalidRow)
    assert items[0].row == 1
    assert "nested too deeply" in items[0].reason
    assert isinstance(items[1], BulkApplicant)
    assert count_manifest_rows(manifest) == 2


def test_csv_field_over_the_size_limit_fails_its_row_only(tmp_path: Path, images: Path) -> None:
    """A CSV field over the csv module's limit fails its row only, and the count agrees."""
    manifest = write_csv(tmp_path / "m.csv", [row("a1"), row("a2", front="x" * 200_000), row("a3")])
    items = list(iter_manifest(manifest))
    assert [(type(i).__name__, i.row) for i in items] == [
        ("BulkApplicant", 1),
        ("InvalidRow", 2),
        ("BulkApplicant", 3),
    ]
    assert isinstance(items[1], InvalidRow)
    assert "field limit" in items[1].reason
    assert "xxxx" not in items[1].reason
    assert count_manifest_rows(manifest) == 3


def test_csv_header_over_the_size_limit_fails_the_manifest(tmp_path: Path, images: Path) -> None:
    """A header the csv module cannot parse is a BulkInputError, from counting and reading."""
    manifest = write_csv(tmp_path / "m.csv", [row("a1")], header=HEADER + "," + "x" * 200_000)
    with pytest.raises(BulkInputError, match="header"):
        count_manifest_rows(manifest)
    with pytest.raises(BulkInputError, match="header"):
        list(iter_manifest(manifest))


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    """Write ``records`` as JSONL with json's ASCII escapes (so lone surrogates survive)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="ascii")
    return path


def kinds(items: list[BulkApplicant | InvalidRow]) -> list[tuple[str, int]]:
    """Each item's class name and row number."""
    return [(type(i).__name__, i.row) for i in items]


def test_unusable_image_path_fails_its_row_only(tmp_path: Path, images: Path) -> None:
    """A path too long or holding a NUL byte fails its row, unquoted; later rows are read."""
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [row("a1", front="img/" + "Mona" * 100), row("a2", back="img/b\0.jpg"), row("a3")],
    )
    items = list(iter_manifest(manifest))
    assert kinds(items) == [("InvalidRow", 1), ("InvalidRow", 2), ("BulkApplicant", 3)]
    assert items[0] == InvalidRow(1, "front: cannot check the file (file name too long)", "a1")
    assert isinstance(items[1], InvalidRow)
    assert items[1].reason.startswith("back:")
    assert "Mona" not in repr(items)


def test_consecutive_unparseable_csv_rows_are_each_invalid(tmp_path: Path, images: Path) -> None:
    """Two CSV rows in a row over the field size limit are two invalid rows, not a dead job."""
    big = "x" * 200_000
    records = [row("a1"), row("a2", front=big), row("a3", back=big), row("a4")]
    manifest = write_csv(tmp_path / "m.csv", records)
    items = list(iter_manifest(manifest))
    assert kinds(items) == [
        ("BulkApplicant", 1),
        ("InvalidRow", 2),
        ("InvalidRow", 3),
        ("BulkApplicant", 4),
    ]
    assert count_manifest_rows(manifest) == 4


def test_a_csv_reader_that_cannot_advance_stops_the_job() -> None:
    """A reader failing again without consuming a line is one bad row, then BulkInputError."""
    # Going on would loop for ever.

    class Stuck:
        def __iter__(self) -> Stuck:
            return self

        def __next__(self) -> list[str]:
            raise csv.Error("stuck")

    records = _csv_records(Stuck(), lambda: 7)
    assert isinstance(next(records), csv.Error)
    with pytest.raises(BulkInputError, match="cannot read the manifest"):
        next(records)


@pytest.mark.parametrize("column", ["applicant_id", "name_check_value", "client_transaction_id"])
def test_lone_surrogate_in_a_text_field_fails_its_row(
    tmp_path: Path, images: Path, column: str
) -> None:
    """A lone surrogate in a stored or sent field fails its row; the item holds no such text."""
    # sqlite and orjson refuse lone surrogates.
    manifest = write_jsonl(tmp_path / "m.jsonl", [row("a1") | {column: "\ud800abc"}, row("a2")])
    items = list(iter_manifest(manifest))
    assert kinds(items) == [("InvalidRow", 1), ("BulkApplicant", 2)]
    bad = items[0]
    assert isinstance(bad, InvalidRow)
    assert bad.reason.startswith(f"{column} is not valid text")
    assert bad.applicant_id == (None if column == "applicant_id" else "a1")
    bad.reason.encode("utf-8")


def test_stray_quote_does_not_carry_later_rows_into_the_journal(
    tmp_path: Path, images: Path
) -> None:
    """A stray quote is one invalid row holding none of the text it swallowed."""
    # Also on the last row, where it swallows only its own cells.
    manifest = tmp_path / "m.csv"
    write_csv(manifest, [row("c-0", name_check_value="Ali Omar")])
    cells = ",".join(row("c-1", name_check_value="Mona Hassan").values())
    later = ",".join(row("c-2", name_check_value="Sara Adel").values())
    with manifest.open("a") as fh:
        fh.write(f'"{cells}\n{later}\n')
    items = list(iter_manifest(manifest))
    assert kinds(items) == [("BulkApplicant", 1), ("InvalidRow", 2)]
    assert items[1] == InvalidRow(2, "applicant_id spans several lines: a stray quote?")
    assert count_manifest_rows(manifest) == 2

    last = write_csv(tmp_path / "last.csv", [])
    with last.open("a") as fh:
        fh.write(f'"{cells}\n')
    (item,) = list(iter_manifest(last))
    assert isinstance(item, InvalidRow)
    assert item.applicant_id is None
    assert "stray quote" in item.reason
    assert "Mona" not in repr(item)


def test_bad_ids_are_not_kept_and_good_ids_still_match(tmp_path: Path, images: Path) -> None:
    """Bad ids fail their row unkept; ids are stripped, so a padded duplicate still matches."""
    records = [
        row("a\tb"),
        row("a" * (MAX_ID_LENGTH + 1)),
        row("a3", client_transaction_id="tx\x00"),
        row(" a4 "),
        row("a4"),
    ]
    items = list(iter_manifest(write_jsonl(tmp_path / "m.jsonl", records)))
    assert items[:3] == [
        InvalidRow(1, "applicant_id contains a control character"),
        InvalidRow(2, f"applicant_id longer than {MAX_ID_LENGTH} characters"),
        InvalidRow(3, "client_transaction_id contains a control character", "a3"),
    ]
    assert [i.applicant_id for i in items[3:]] == ["a4", "a4"]


def test_symlinked_manifest_reads_paths_from_the_folder_of_the_link(
    tmp_path: Path, images: Path
) -> None:
    """Relative paths join the folder of the manifest path given, not a symlink's target's."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = write_csv(elsewhere / "m.csv", [row("a1")])
    link = tmp_path / "m.csv"
    link.symlink_to(target)
    (item,) = list(iter_manifest(link))
    assert isinstance(item, BulkApplicant)
    assert item.front == images / "f.jpg"


def test_undecodable_csv_bytes_fail_a_text_field_but_not_a_path(
    tmp_path: Path, images: Path
) -> None:
    """A non-UTF-8 byte fails an id's row, while a legacy-encoded file name still works."""
    (images / "f\udce9.jpg").write_bytes(b"\xff\xd8")  # the file name's bytes: "f\xe9.jpg"
    manifest = write_csv(tmp_path / "m.csv", [row("a\x00"), row("a2", front="img/f\x01.jpg")])
    data = manifest.read_bytes().replace(b"\x00", b"\xff").replace(b"\x01", b"\xe9")
    manifest.write_bytes(data)
    items = list(iter_manifest(manifest))
    assert items[0] == InvalidRow(
        1, "applicant_id is not valid text (bad UTF-8 or a lone surrogate)"
    )
    assert isinstance(items[1], BulkApplicant)
    assert os.fsencode(items[1].front).endswith(b"f\xe9.jpg")


def test_an_overlong_json_number_is_invalid_json(tmp_path: Path, images: Path) -> None:
    """A number past Python's digit limit is 'not valid JSON', not 'not valid UTF-8'."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"applicant_id": ' + "9" * 5000 + "}\n")
    (item,) = list(iter_manifest(manifest))
    assert isinstance(item, InvalidRow)
    assert item.reason.startswith("not valid JSON")


def test_manifest_errors_quote_no_path(tmp_path: Path) -> None:
    """Errors for a refused or missing manifest path never quote it (it may name a customer)."""
    for manifest in (tmp_path / ("Mona" * 100 + ".csv"), tmp_path / "Mona.csv"):
        for read in (count_manifest_rows, lambda p: list(iter_manifest(p))):
            with pytest.raises(BulkInputError) as caught:
                read(manifest)
            assert "Mona" not in str(caught.value)


def test_an_applicant_built_in_code_takes_str_paths() -> None:
    """BulkApplicant converts str paths to Path (as the rest of the library accepts them), and
    refuses faces that are not three paths with a BulkInputError."""
    from pathlib import Path

    from vlens_async.bulk import BulkApplicant
    from vlens_async.errors import BulkInputError

    applicant = BulkApplicant("a-1", "f.jpg", "b.jpg", ("1.jpg", "2.jpg", "3.jpg"))
    assert applicant.front == Path("f.jpg")
    assert applicant.faces == (Path("1.jpg"), Path("2.jpg"), Path("3.jpg"))
    with pytest.raises(BulkInputError, match="three image paths"):
        BulkApplicant("a-2", "f.jpg", "b.jpg", ("1.jpg", "2.jpg"))  # type: ignore[arg-type]
