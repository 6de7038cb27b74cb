"""The package version, read once from the installed distribution's metadata (pyproject.toml is
its only source): ``__version__``, the User-Agent and ``vlens --version`` all use it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

__all__ = ["__version__"]

try:
    __version__: Final = version("vlens-async")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"  # type: ignore[misc]
