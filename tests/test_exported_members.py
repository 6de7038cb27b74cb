"""The package's public surface: ``__all__`` is exactly what ``vlens_async`` exports."""

from __future__ import annotations

import subprocess
import sys
import types

import vlens_async


def test_all_is_exactly_the_public_names() -> None:
    """Every public, non-module attribute is in __all__, and every __all__ name exists."""
    exported = {
        name
        for name, value in ((n, getattr(vlens_async, n)) for n in dir(vlens_async))
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert exported == set(vlens_async.__all__)


def test_all_is_sorted_and_unique() -> None:
    """__all__ has no duplicates and is sorted (constants first, as ruff orders it)."""
    names = list(vlens_async.__all__)
    assert len(names) == len(set(names))
    upper = [n for n in names if n.isupper()]
    assert names[: len(upper)] == sorted(upper)
    assert names[len(upper) :] == sorted(names[len(upper) :])


def test_contract_names_are_exported() -> None:
    """The names the README promises users are importable from the package root."""
    for name in (
        "VlensClient",
        "Transaction",
        "FlowState",
        "prepare_faces",
        "prepare_document",
        "VlensError",
        "AdminLogin",
        "StaticToken",
        "BulkRunner",
        "RateLimit",
        "parse_national_id",
        "cross_check",
    ):
        assert name in vlens_async.__all__


def test_every_public_name_is_documented() -> None:
    """Each exported class and function carries a docstring."""
    for name in vlens_async.__all__:
        value = getattr(vlens_async, name)
        if isinstance(value, type) or callable(value):
            assert (value.__doc__ or "").strip(), name


def test_importing_the_package_loads_no_bulk_runner() -> None:
    """``import vlens_async`` loads neither the bulk runner nor sqlite3 nor rich; the lazy
    ``vlens_async.BulkRunner`` still resolves to the bulk package's class."""
    code = (
        "import sys, vlens_async\n"
        "heavy = [m for m in ('sqlite3', 'rich', 'vlens_async.bulk') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert vlens_async.bulk.BulkRunner is vlens_async.BulkRunner\n"
        "assert '__version__' in dir(vlens_async)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_version_has_one_source() -> None:
    """``__version__`` is the installed distribution's version, and the User-Agent carries it."""
    from importlib.metadata import version

    from vlens_async._version import user_agent

    assert vlens_async.__version__ == version("vlens-async")
    assert f"vlens-async/{vlens_async.__version__}" == user_agent()
