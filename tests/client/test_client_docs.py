"""Every public name of the client's modules is documented and listed in ``__all__``."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from vlens_async import _retrying, _telemetry, _transport, _wire, auth, client, config, models, otel

MODULES = [models, auth, client, config, _wire, _transport, _retrying, _telemetry, otel]


def public_members(module: ModuleType) -> list[tuple[str, object]]:
    """Classes and functions defined in ``module`` whose names do not start with ``_``."""
    return [
        (name, obj)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    ]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_names_have_docstrings(module: ModuleType) -> None:
    """Each public class, function and public method carries a docstring."""
    missing = []
    for name, obj in public_members(module):
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member):
                    continue
                if not inspect.getdoc(member):
                    missing.append(f"{name}.{attr}")
    assert missing == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_lists_the_public_names(module: ModuleType) -> None:
    """``__all__`` names exist, and every public class or function defined here is in it."""
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported)
    if not module.__name__.split(".")[-1].startswith("_"):
        assert {name for name, _ in public_members(module)} <= exported
