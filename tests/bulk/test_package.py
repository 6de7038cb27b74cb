"""The bulk package: its public names, and the direction of its imports."""

from __future__ import annotations

import ast
from pathlib import Path

import vlens_async.bulk

PUBLIC = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SCENARIO_MIX",
    "DEFAULT_STEP_RETRY",
    "MAX_CONCURRENCY",
    "BulkApplicant",
    "BulkRunner",
    "BulkSummary",
    "InvalidRow",
    "LatencyStats",
    "NullProgress",
    "PlainProgress",
    "ProgressReporter",
    "ProgressStats",
    "RateLimit",
    "RateLimiter",
    "RichProgress",
    "check_concurrency",
    "format_summary",
    "frozen_heap",
    "handle_signals",
    "make_progress",
    "read_manifest",
    "run_bulk",
    "write_demo_manifest",
]
# Bottom to top: a module may import only the modules before it.
LAYERS = [
    "_heap",
    "_manifest",
    "_ratelimit",
    "_journal",
    "_report",
    "_outcome",
    "_context",
    "_inputs",
    "_metered",
    "_applicant",
    "_runner",
]
PACKAGE = Path(vlens_async.bulk.__file__).parent


def imports(module: str) -> tuple[set[str], set[str]]:
    """The sibling modules and the vlens_async modules that ``module`` imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    siblings, parents = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            siblings.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level == 2:
            parents.add(node.module or "")
    return siblings, parents


def test_all_is_the_public_names_sorted_and_importable() -> None:
    """__all__ is the bulk module's public names (those before the split, frozen_heap,
    MAX_CONCURRENCY and check_concurrency), each
    importable."""
    assert vlens_async.bulk.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(vlens_async.bulk, name) is not None


def test_no_module_imports_upward() -> None:
    """Each bulk module imports only those below it, and nothing of ours above bulk."""
    modules = {p.stem for p in PACKAGE.glob("_*.py")} - {"__init__"}
    assert modules == {*LAYERS, "_demo"}
    for module in modules:
        siblings, parents = imports(module)
        below = set(LAYERS[: LAYERS.index(module)]) if module in LAYERS else set()
        assert siblings <= below, module
        assert not parents & {"cli", "queue"}, module
