"""What the example needs to run is what ``pip install 'vlens-async[example]'`` installs."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXAMPLE = Path(__file__).parents[1]
PYPROJECT = EXAMPLE.parents[1] / "pyproject.toml"


def imported_modules(folder: Path) -> set[str]:
    """The top-level modules the example's own files (not its tests) import, absolute only."""
    names: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return names


def installed_with(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install, their own requirements included (no extras)."""
    found: set[str] = set()
    pending = [Requirement(r).name for r in requirements]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        found.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def test_the_example_extra_installs_everything_the_example_imports() -> None:
    """Every third-party module of the example comes with the library or its ``example`` extra
    (the walkthrough included)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    available = installed_with(
        project["dependencies"] + project["optional-dependencies"]["example"]
    )
    providers = importlib.metadata.packages_distributions()
    third_party = imported_modules(EXAMPLE) - set(sys.stdlib_module_names) - {"vlens_async"}
    assert third_party  # the scan found the example's imports
    missing = {
        module
        for module in third_party
        if not {canonicalize_name(d) for d in providers.get(module, [])} & available
    }
    assert missing == set()
