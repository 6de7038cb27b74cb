"""The layers of ARCHITECTURE.md, checked on the source: nothing imports upward."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import vlens_async

PACKAGE = Path(vlens_async.__file__).parent

ARCHITECTURE = Path(__file__).resolve().parent.parent / "ARCHITECTURE.md"
# Parts that may use everything: the package root and the command line.
TOP = {"__init__", "__main__", "cli"}


def _name(cell: str) -> str:
    """```flow/``` or ```errors.py``` -> ``flow`` / ``errors``."""
    return cell.strip().strip("`").removesuffix("/").removesuffix(".py")


def _allowed() -> dict[str, set[str]]:
    """ARCHITECTURE.md's layer table: each part and the parts (in backticks) it may import.

    Imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
    """
    table: dict[str, set[str]] = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        cells = line.split(" | ")
        if len(cells) != 3 or not cells[0].startswith("| `"):
            continue
        part = _name(cells[0].removeprefix("| "))
        if part not in TOP:
            table[part] = {_name(m) for m in re.findall(r"`[^`]+`", cells[2])}
    return table


ALLOWED = _allowed()


def _part(module: str) -> str:
    """``vlens_async.flow._machine`` -> ``flow``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _annotation_only(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(n.lineno for n in ast.walk(node) if hasattr(n, "lineno"))
    return lines


def _imported(path: Path) -> Iterator[str]:
    """Every ``vlens_async`` module ``path`` imports, lazy imports inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _annotation_only(tree)
    package = ["vlens_async", *path.parent.relative_to(PACKAGE).parts]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and node.lineno not in skip:
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.lineno not in skip:
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            if module == "vlens_async":
                yield from (f"vlens_async.{alias.name}" for alias in node.names)
            else:
                yield module


@functools.cache
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _part(".".join(["vlens_async", *path.relative_to(PACKAGE).with_suffix("").parts]))
        used = {_part(m) for m in _imported(path) if m.startswith("vlens_async")}
        graph.setdefault(me, set()).update(used - {me, "__init__"})
    return graph


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_its_layer_allows(part: str) -> None:
    """A part imports nothing of ours beyond its row of the layer table."""
    assert _graph().get(part, set()) - ALLOWED[part] == set()


def test_every_part_is_in_the_layer_table() -> None:
    """A new module or package gets a row (so the table stays the map), except the top: the
    package root and the command line, which may use everything."""
    assert len(ALLOWED) > 15  # the table was found and read
    assert set(_graph()) - TOP <= set(ALLOWED)


def test_the_package_root_never_imports_the_bulk_runner() -> None:
    """``vlens_async/__init__.py`` reaches the bulk runner only lazily, by name."""
    assert "bulk" not in _graph()["__init__"]
